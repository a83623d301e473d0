// forward: one request from a file, the answer to a file, the kernel and the
// timings printed.
#include "absl/strings/str_cat.h"
#include "client/cli/commands.h"
#include "client/cli/tensor_file.h"
#include "qlayer/kernels/status_macros.h"

namespace qlayer {

absl::Status RunForward(Client& client, const ForwardCommand& cmd, std::ostream& out) {
  if (cmd.layer.empty()) return absl::InvalidArgumentError("forward needs --layer");
  if (cmd.input.empty() || cmd.output.empty()) {
    return absl::InvalidArgumentError("forward needs --input and --output");
  }
  QLAYER_ASSIGN_OR_RETURN(Tensor x, ReadTensorFile(cmd.input, cmd.input_name));
  DType wire = x.dtype() == DType::kF64 ? DType::kF32 : x.dtype();
  if (!cmd.dtype.empty()) {
    QLAYER_ASSIGN_OR_RETURN(wire, ParseActivationDType(cmd.dtype));
  }
  if (x.dtype() != wire) {
    QLAYER_ASSIGN_OR_RETURN(x, ConvertFloat(x.view(), wire));
  }
  // Connect first, so that the latency printed is the request's alone.
  QLAYER_RETURN_IF_ERROR(client.WaitForReady(cmd.timeout));
  CallOptions options;
  options.timeout = cmd.timeout;
  QLAYER_ASSIGN_OR_RETURN(ForwardResult r, client.Forward(cmd.layer, x.view(), options).get());
  const DType answer_dtype = r.output.dtype();
  Tensor y = std::move(r.output);
  std::string note;
  if (IsNpyPath(cmd.output) && y.dtype() == DType::kBF16) {
    // numpy has no bfloat16; every bf16 value is exactly an f32.
    QLAYER_ASSIGN_OR_RETURN(y, ConvertFloat(y.view(), DType::kF32));
    note = " (bf16 answer widened to f32: .npy has no bf16)";
  }
  QLAYER_RETURN_IF_ERROR(WriteTensorFile(cmd.output, y.view()));
  out << cmd.layer << ": " << DTypeName(x.dtype()) << ShapeToString(x.shape()) << " -> "
      << DTypeName(answer_dtype) << ShapeToString(y.shape()) << "\n"
      << "  kernel        " << r.kernel << " (batch of " << r.batch_rows << " rows)\n"
      << "  server        queue " << r.queue_us << " us, compute " << r.compute_us << " us, total "
      << r.total_us << " us\n"
      << "  client        " << r.latency_us << " us (transport " << r.latency_us - r.total_us
      << " us)\n"
      << "  wrote         " << cmd.output << note << "\n";
  return absl::OkStatus();
}

}  // namespace qlayer
