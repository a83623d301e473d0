#include "client/cli/tensor_file.h"

#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/npy.h"
#include "qlayer/kernels/status_macros.h"
#include "server/checkpoint/safetensors.h"

namespace qlayer {

bool IsNpyPath(absl::string_view path) { return absl::EndsWithIgnoreCase(path, ".npy"); }

static bool IsSafetensorsPath(absl::string_view path) {
  return absl::EndsWithIgnoreCase(path, ".safetensors");
}

absl::StatusOr<Tensor> ReadTensorFile(const std::string& path, absl::string_view name) {
  if (IsNpyPath(path)) return ReadNpy(path);
  if (!IsSafetensorsPath(path)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": unknown tensor file type (use .npy or .safetensors)"));
  }
  QLAYER_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(path));
  const std::vector<std::string> names = file->TensorNames();
  std::string pick(name);
  if (pick.empty()) {
    if (names.size() != 1) {
      return absl::InvalidArgumentError(absl::StrCat(path, " holds ", names.size(), " tensors (",
                                                     absl::StrJoin(names, ", "),
                                                     "); name the one to send"));
    }
    pick = names[0];
  }
  const ConstTensorView* view = file->Find(pick);
  if (view == nullptr) {
    return absl::NotFoundError(absl::StrCat(path, " has no tensor '", pick, "' (it has ",
                                            absl::StrJoin(names, ", "), ")"));
  }
  return Tensor::CopyOf(*view);  // the view dies with the mapping
}

absl::Status WriteTensorFile(const std::string& path, const ConstTensorView& t,
                             absl::string_view name) {
  if (IsNpyPath(path)) return WriteNpy(path, t);
  if (!IsSafetensorsPath(path)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": unknown tensor file type (use .npy or .safetensors)"));
  }
  NamedTensors tensors;
  tensors.emplace(std::string(name), Tensor::CopyOf(t));
  return WriteSafetensors(path, tensors, {{"format", "pt"}});
}

absl::StatusOr<Tensor> ReadActivationFile(const std::string& path, absl::string_view name,
                                          absl::string_view dtype) {
  QLAYER_ASSIGN_OR_RETURN(Tensor x, ReadTensorFile(path, name));
  DType wire = x.dtype() == DType::kF64 ? DType::kF32 : x.dtype();
  if (!dtype.empty()) {
    QLAYER_ASSIGN_OR_RETURN(wire, ParseActivationDType(dtype));
  }
  if (x.dtype() != wire) {
    QLAYER_ASSIGN_OR_RETURN(x, ConvertFloat(x.view(), wire));
  }
  return x;
}

absl::StatusOr<std::string> WriteAnswerFile(const std::string& path, const ConstTensorView& y) {
  if (IsNpyPath(path) && y.dtype == DType::kBF16) {
    QLAYER_ASSIGN_OR_RETURN(const Tensor wide, ConvertFloat(y, DType::kF32));
    QLAYER_RETURN_IF_ERROR(WriteTensorFile(path, wide.view()));
    return std::string(" (bf16 answer widened to f32: .npy has no bf16)");
  }
  QLAYER_RETURN_IF_ERROR(WriteTensorFile(path, y));
  return std::string();
}

absl::StatusOr<Tensor> ConvertFloat(const ConstTensorView& t, DType to) {
  if (!(IsFloatActivation(t.dtype) || t.dtype == DType::kF64) ||
      !(IsFloatActivation(to) || to == DType::kF64)) {
    return absl::InvalidArgumentError(absl::StrCat("cannot convert ", DTypeName(t.dtype), " to ",
                                                   DTypeName(to), ": float tensors only"));
  }
  if (t.dtype == to) return Tensor::CopyOf(t);
  Tensor out = Tensor::Zeros(to, t.shape);
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i)
    StoreFromDouble(out.data(), to, i, LoadAsDouble(t.data, t.dtype, i));
  return out;
}

absl::StatusOr<DType> ParseActivationDType(absl::string_view name) {
  if (name == "f16" || name == "float16" || name == "fp16") return DType::kF16;
  if (name == "bf16" || name == "bfloat16") return DType::kBF16;
  if (name == "f32" || name == "float32" || name == "fp32") return DType::kF32;
  return absl::InvalidArgumentError(
      absl::StrCat("dtype '", name, "' is not one of f16, bf16, f32"));
}

}  // namespace qlayer
