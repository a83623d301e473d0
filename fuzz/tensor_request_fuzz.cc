// Fuzz target: a serialized qlayer.v1.ForwardRequest as it arrives on a
// Forward stream, through the server's input decoding (DecodeLinearInput:
// proto Tensor -> validated [M, K] view). The layer's K is the input's last
// dim when it has a shape (so valid requests get through), else derived from
// request_id; the row limit from timeout_us. An accepted view must have the
// promised shape, all its bytes readable, and encode back (EncodeTensor, as
// answers are written) to a tensor that decodes to the same numbers.
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_util.h"
#include "google/protobuf/stubs/logging.h"
#include "qlayer/kernels/dtype.h"
#include "qlayer/v1/layer_service.pb.h"
#include "server/wire/tensor_codec.h"

namespace {

using qlayer::fuzz::Fail;

bool SameNumber(double a, double b) { return a == b || (std::isnan(a) && std::isnan(b)); }

}  // namespace

// Hostile bytes make protobuf log every invalid UTF-8 string; silence it.
extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qlayer::v1::ForwardRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  const qlayer::v1::Tensor& t = request.input();
  const int64_t K = t.shape_size() > 0 ? t.shape(t.shape_size() - 1)
                                       : static_cast<int64_t>(request.request_id() % 4097);
  const int64_t max_rows = 1 + (request.timeout_us() & 0x3ff);
  auto in = qlayer::DecodeLinearInput(t, K, max_rows, request.layer());
  if (!in.ok()) return 0;
  const qlayer::ConstTensorView& v = in->view;
  if (v.shape.size() != 2 || v.dim(1) != K || v.dim(0) < 1 || v.dim(0) > max_rows) {
    Fail("accepted input has shape " + qlayer::ShapeToString(v.shape));
  }
  if (!qlayer::IsFloatActivation(v.dtype)) Fail("accepted input is not a float activation");
  qlayer::fuzz::TouchBytes(v.data, v.nbytes());

  // The answer path: encode as the request asked, decode again.
  qlayer::v1::Tensor out;
  qlayer::EncodeTensor(v, request.output_encoding(), in->used_values, &out);
  auto back = qlayer::DecodeLinearInput(out, K, max_rows, "echo");
  if (!back.ok()) Fail("encoded answer does not decode: " + back.status().ToString());
  if (back->view.dtype != v.dtype || back->view.shape != v.shape) Fail("echo changed dtype/shape");
  for (int64_t i = 0; i < v.numel(); ++i) {
    if (!SameNumber(qlayer::LoadAsDouble(v.data, v.dtype, i),
                    qlayer::LoadAsDouble(back->view.data, v.dtype, i))) {
      Fail("echo changed element " + std::to_string(i));
    }
  }
  return 0;
}
