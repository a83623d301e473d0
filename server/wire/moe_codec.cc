#include "server/wire/moe_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace qlayer {
namespace {

bool IsInt(DType t) { return t == DType::kI32 || t == DType::kI64; }

std::string Allowed(std::initializer_list<DType> allowed) {
  std::vector<std::string> names;
  for (DType d : allowed) names.push_back(v1::DType_Name(ToProtoDType(d)));
  return absl::StrJoin(names, ", ");
}

absl::Status Bad(absl::string_view layer, absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("layer ", layer, ": ", field, " ", what));
}

}  // namespace

bool TensorIsSet(const v1::Tensor& t) {
  return t.shape_size() > 0 || !t.data().empty() || t.values_size() > 0;
}

absl::StatusOr<DecodedInput> DecodeRoutingTensor(const v1::Tensor& t, absl::string_view field,
                                                 std::initializer_list<DType> allowed,
                                                 absl::string_view layer) {
  const bool has_data = !t.data().empty();
  const bool has_values = t.values_size() > 0;
  if (has_data && has_values) return Bad(layer, field, "sets both data and values; set one");
  DType dtype = FromProtoDType(t.dtype());
  if (t.dtype() == v1::DTYPE_UNSPECIFIED && !has_data) dtype = *allowed.begin();
  if (std::find(allowed.begin(), allowed.end(), dtype) == allowed.end()) {
    return Bad(layer, field,
               absl::StrCat("has dtype ", v1::DType_Name(t.dtype()), ", expected one of ",
                            Allowed(allowed)));
  }
  const size_t elem = DTypeSize(dtype);
  Shape shape(t.shape().begin(), t.shape().end());
  if (shape.empty()) {
    shape.push_back(has_values ? t.values_size() : static_cast<int64_t>(t.data().size() / elem));
  }
  if (shape.size() == 1) shape.insert(shape.begin(), 1);
  if (shape.size() != 2) {
    return Bad(layer, field, absl::StrCat("has shape ", ShapeToString(shape), ", expected 2-D"));
  }
  const int64_t nbytes = CheckedNumBytes(shape, elem);
  if (nbytes < 0)
    return Bad(layer, field, absl::StrCat("shape ", ShapeToString(shape), " overflows"));
  const int64_t numel = nbytes / static_cast<int64_t>(elem);
  DecodedInput out;
  if (!has_values) {
    if (static_cast<int64_t>(t.data().size()) != nbytes) {
      return Bad(layer, field,
                 absl::StrCat("data has ", t.data().size(), " bytes, expected ", nbytes, " (shape ",
                              ShapeToString(shape), " ", DTypeName(dtype), ")"));
    }
    out.view = {dtype, shape, t.data().data()};
    return out;
  }
  if (t.values_size() != numel) {
    return Bad(layer, field,
               absl::StrCat("has ", t.values_size(), " values, expected ", numel, " (shape ",
                            ShapeToString(shape), ")"));
  }
  out.owned = Tensor::Zeros(dtype, shape);
  for (int64_t i = 0; i < numel; ++i) {
    const double v = t.values(static_cast<int>(i));
    if (!IsInt(dtype)) {
      StoreFromDouble(out.owned.data(), dtype, i, v);
      continue;
    }
    const double lim = dtype == DType::kI32 ? 2147483647.0 : 9.007199254740992e15;
    if (!(std::fabs(v) <= lim) || v != std::nearbyint(v)) {
      return Bad(layer, field, absl::StrCat("value ", i, " = ", v, " is not an integer id"));
    }
    if (dtype == DType::kI32) {
      out.owned.as<int32_t>()[i] = static_cast<int32_t>(v);
    } else {
      out.owned.as<int64_t>()[i] = static_cast<int64_t>(v);
    }
  }
  out.view = out.owned.view();
  out.used_values = true;
  return out;
}

void EncodeRouting(const Routing& routing, v1::Encoding encoding, bool request_used_values,
                   v1::Tensor* ids, v1::Tensor* weights) {
  const Shape shape = {routing.num_tokens, routing.top_k};
  const bool values =
      encoding == v1::ENCODING_VALUES || (encoding != v1::ENCODING_DATA && request_used_values);
  ids->set_dtype(v1::DTYPE_I32);
  ids->mutable_shape()->Assign(shape.begin(), shape.end());
  weights->set_dtype(v1::DTYPE_F32);
  weights->mutable_shape()->Assign(shape.begin(), shape.end());
  if (!values) {
    ids->set_data(routing.ids.data(), routing.ids.size() * sizeof(int32_t));
    weights->set_data(routing.weights.data(), routing.weights.size() * sizeof(float));
    return;
  }
  for (int32_t id : routing.ids) ids->add_values(static_cast<float>(id));
  for (float w : routing.weights) weights->add_values(w);
}

}  // namespace qlayer
