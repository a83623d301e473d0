// verify: the end-to-end correctness check a user can run against a live
// server. The server's answer for seeded random inputs is compared with a
// float64 reference computed here from the same checkpoint; a wrong nibble
// order, zero point or scale shows up as a relative error of order 1, while
// fp16/bf16 rounding of the answer stays near 1e-3.
#include <cstdio>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli/commands.h"
#include "client/cli/moe_commands.h"
#include "client/cli/random_input.h"
#include "client/cli/reference.h"
#include "client/cli/tensor_file.h"
#include "qlayer/kernels/status_macros.h"

namespace qlayer {

double DefaultVerifyTolerance(const std::string& dtype) {
  // bf16 keeps 8 significant bits: rounding the answer alone costs ~1e-3
  // relative, and a kernel may round dequantized weights to bf16 as well.
  if (dtype == "bf16" || dtype == "bfloat16") return 1e-2;
  // f16 answers round at ~3e-4, but a dense-GEMM path may compute through
  // bf16 (onednn_dense measured 2.3e-3 on f16 and f32 inputs): 5e-3 keeps
  // a margin for small samples while any layout bug gives errors near 1.
  return 5e-3;
}

absl::StatusOr<bool> RunVerify(Client& client, const VerifyCommand& cmd, std::ostream& out) {
  if (cmd.layer.empty() || cmd.model_dir.empty()) {
    return absl::InvalidArgumentError("verify needs --layer and --model");
  }
  if (cmd.rows < 1) return absl::InvalidArgumentError(absl::StrCat("--rows ", cmd.rows, " < 1"));
  QLAYER_ASSIGN_OR_RETURN(DType dtype, ParseActivationDType(cmd.dtype));
  QLAYER_ASSIGN_OR_RETURN(v1::LayerInfo info, client.DescribeLayer(cmd.layer));
  if (info.kind() == "moe") return RunMoEVerify(client, cmd, info, out);
  if (info.kind() != "linear") {
    return absl::UnimplementedError(
        absl::StrCat("verify checks linear layers; ", cmd.layer, " is ", info.kind()));
  }
  QLAYER_ASSIGN_OR_RETURN(QuantizedLinear w, LoadReferenceLayer(cmd.model_dir, cmd.layer));
  if (w.K != info.in_features() || w.N != info.out_features()) {
    return absl::FailedPreconditionError(
        absl::StrCat("checkpoint ", cmd.model_dir, " has ", cmd.layer, " as K=", w.K, " N=", w.N,
                     " but the server's is K=", info.in_features(), " N=", info.out_features(),
                     ": not the checkpoint the server loaded"));
  }
  const uint64_t seed = cmd.seed != 0 ? cmd.seed : ClockSeed();
  const double tolerance = cmd.tolerance > 0 ? cmd.tolerance : DefaultVerifyTolerance(cmd.dtype);
  out << "verify " << cmd.layer << " (" << info.format() << ", " << info.weight_type() << ", g"
      << info.group_size() << ", K=" << w.K << " N=" << w.N << ") on " << info.device()
      << ": dtype " << cmd.dtype << ", seed " << seed << ", tolerance " << tolerance << "\n";

  // One row (the decode path) and the requested rows (a batch): a server may
  // pick a different kernel for each.
  std::vector<int64_t> row_counts = {1};
  if (cmd.rows > 1) row_counts.push_back(cmd.rows);
  bool pass = true;
  for (size_t i = 0; i < row_counts.size(); ++i) {
    const int64_t rows = row_counts[i];
    const Tensor x = RandomActivations(dtype, rows, w.K, seed + i);
    QLAYER_ASSIGN_OR_RETURN(Tensor ref, ReferenceForward(w, x.view()));
    CallOptions options;
    options.timeout = cmd.timeout;
    QLAYER_ASSIGN_OR_RETURN(ForwardResult r, client.Forward(cmd.layer, x.view(), options).get());
    const double err = RelativeError(r.output.view(), ref.view());
    const bool ok = err <= tolerance && r.output.dtype() == dtype;
    pass = pass && ok;
    out << absl::StrFormat("  rows %-5d kernel %-28s rel err %.3e  %s", rows, r.kernel, err,
                           ok ? "ok" : "BAD");
    if (r.output.dtype() != dtype) {
      out << " (answer is " << DTypeName(r.output.dtype()) << ", expected " << cmd.dtype << ")";
    }
    if (r.output.shape() != ref.shape()) {
      out << " (answer shape " << ShapeToString(r.output.shape()) << ", expected "
          << ShapeToString(ref.shape()) << ")";
    }
    out << "\n";
  }
  out << (pass ? "PASS" : "FAIL") << "\n";
  return pass;
}

}  // namespace qlayer
