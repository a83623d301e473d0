#include "cpu/cpu_spec_checks.h"

#include "absl/strings/str_cat.h"

namespace qlayer {

absl::Status CheckCpuDevice(const Device& device) {
  if (device.backend != Backend::kCpu) {
    return absl::FailedPreconditionError(
        absl::StrCat("runs on the CPU, but the layer is placed on ", device.ToString()));
  }
  return absl::OkStatus();
}

absl::Status CheckValidLinearSpec(const LinearSpec& spec) {
  if (spec.K <= 0 || spec.N <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("bad shape K=", spec.K, " N=", spec.N));
  }
  if (!IsFloatActivation(spec.act)) {
    return absl::InvalidArgumentError(
        absl::StrCat("activation dtype ", DTypeName(spec.act), " is not f16, bf16 or f32"));
  }
  if (!IsFloatActivation(spec.scale_dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat(spec.wtype == WeightType::kDense ? "weight" : "scale", " dtype ",
                     DTypeName(spec.scale_dtype), " is not f16, bf16 or f32"));
  }
  switch (spec.wtype) {
    case WeightType::kDense:
      return absl::OkStatus();
    case WeightType::kUint4:
    case WeightType::kUint4b8:
    case WeightType::kUint8:
    case WeightType::kUint8b128:
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unknown weight type ", static_cast<int>(spec.wtype)));
  }
  const int pack = PackFactor(spec.wtype);
  if (spec.K % pack != 0) {
    return absl::InvalidArgumentError(absl::StrCat("K=", spec.K,
                                                   " is not a multiple of the pack factor ", pack,
                                                   " of ", WeightTypeName(spec.wtype)));
  }
  if (spec.group_size <= 0 || spec.K % spec.group_size != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("K=", spec.K, " is not divisible by group size ", spec.group_size));
  }
  if (spec.zero_points != HasZeroPoints(spec.wtype)) {
    return absl::InvalidArgumentError(absl::StrCat(WeightTypeName(spec.wtype),
                                                   spec.zero_points ? " must not have" : " needs",
                                                   " zero points"));
  }
  return absl::OkStatus();
}

}  // namespace qlayer
