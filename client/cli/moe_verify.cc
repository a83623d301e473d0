// verify on an MoE block: seeded random hidden states through each routing
// mode (the server's router, caller router logits, caller top-k), each answer
// against the float64 family forward of the same checkpoint
// (moe_reference.h). The server's own routing is returned and checked too: a
// wrong router (softmax for sigmoid, no renormalisation, a dropped correction
// bias or group limit) shows as different experts, a wrong expert or weight
// as a relative error near 1.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/cli/moe_commands.h"
#include "client/cli/moe_reference.h"
#include "client/cli/random_input.h"
#include "client/cli/reference.h"
#include "client/cli/tensor_file.h"
#include "client/moe_stream.h"
#include "qlayer/kernels/status_macros.h"

namespace qlayer {
namespace {

// Two chained projections and the SiLU product, each rounded to the
// activation dtype, and onednn_dense computing through bf16 for large
// batches: measured up to 4.3e-3 (f16, f32) and 4.9e-3 (bf16) relative.
double DefaultMoETolerance(const std::string& dtype) {
  return dtype == "bf16" || dtype == "bfloat16" ? 2e-2 : 1e-2;
}

enum class Mode { kServer, kLogits, kTopk };

}  // namespace

absl::StatusOr<bool> RunMoEVerify(Client& client, const VerifyCommand& cmd,
                                  const v1::LayerInfo& info, std::ostream& out) {
  QLAYER_ASSIGN_OR_RETURN(DType dtype, ParseActivationDType(cmd.dtype));
  QLAYER_ASSIGN_OR_RETURN(std::unique_ptr<MoEReferenceBlock> ref,
                          MoEReferenceBlock::Load(cmd.model_dir, cmd.layer));
  const int64_t H = ref->hidden(), E = ref->num_experts();
  const int k = ref->top_k();
  if (H != info.in_features() || E != info.moe().num_experts() || k != info.moe().top_k()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint ", cmd.model_dir, " has ", cmd.layer, " as H=", H, " E=", E, " top-", k,
        " but the server's is H=", info.in_features(), " E=", info.moe().num_experts(), " top-",
        info.moe().top_k(), ": not the checkpoint the server loaded"));
  }
  const uint64_t seed = cmd.seed != 0 ? cmd.seed : ClockSeed();
  const double tolerance = cmd.tolerance > 0 ? cmd.tolerance : DefaultMoETolerance(cmd.dtype);
  out << "verify " << cmd.layer << " (MoE " << info.moe().family() << ", " << E << " experts, "
      << info.moe().router() << "; " << info.format() << " " << info.weight_type() << " g"
      << info.group_size() << ", H=" << H << ") on " << info.device() << ": dtype " << cmd.dtype
      << ", seed " << seed << ", tolerance " << tolerance << "\n";

  QLAYER_ASSIGN_OR_RETURN(
      std::unique_ptr<MoEStream> stream,
      MoEStream::Open(client.address(), cmd.timeout, cmd.timeout, client.options().security));
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ull);
  std::vector<int64_t> row_counts = {1};
  if (cmd.rows > 1) row_counts.push_back(cmd.rows);
  bool pass = true;
  int case_index = 0;
  for (int64_t rows : row_counts) {
    for (Mode mode : {Mode::kServer, Mode::kLogits, Mode::kTopk}) {
      const Tensor x = RandomActivations(dtype, rows, H, seed + case_index++);
      MoERoutingInput routing;
      routing.return_routing = true;
      std::vector<double> logits;
      Tensor logits_t, ids_t, weights_t;
      std::vector<int32_t> ids;
      std::vector<double> weights;
      if (mode == Mode::kServer) {
        logits = ref->Logits(x.view());
      } else if (mode == Mode::kLogits) {
        std::normal_distribution<float> n(0.0f, 2.0f);
        logits_t = Tensor::Zeros(DType::kF32, {rows, E});
        for (int64_t i = 0; i < rows * E; ++i) logits_t.as<float>()[i] = n(rng);
        logits.assign(logits_t.as<float>(), logits_t.as<float>() + rows * E);
        routing.router_logits = logits_t.view();
      } else {
        std::uniform_real_distribution<float> u(0.1f, 1.0f);
        ids_t = Tensor::Zeros(DType::kI32, {rows, k});
        weights_t = Tensor::Zeros(DType::kF32, {rows, k});
        std::vector<int32_t> perm(static_cast<size_t>(E));
        for (int64_t t = 0; t < rows; ++t) {
          std::iota(perm.begin(), perm.end(), 0);
          std::shuffle(perm.begin(), perm.end(), rng);
          for (int j = 0; j < k; ++j) {
            ids_t.as<int32_t>()[t * k + j] = perm[j];
            weights_t.as<float>()[t * k + j] = u(rng);
          }
        }
        ids.assign(ids_t.as<int32_t>(), ids_t.as<int32_t>() + rows * k);
        weights.assign(weights_t.as<float>(), weights_t.as<float>() + rows * k);
        routing.topk_ids = ids_t.view();
        routing.topk_weights = weights_t.view();
      }
      QLAYER_RETURN_IF_ERROR(stream->Send(cmd.layer, x.view(), routing).status());
      QLAYER_ASSIGN_OR_RETURN(MoEResult r, stream->Read());
      QLAYER_RETURN_IF_ERROR(r.status);
      if (r.topk_ids.dtype() != DType::kI32 || r.topk_ids.shape() != Shape{rows, k}) {
        return absl::DataLossError("the answer carries no [T, k] i32 routing");
      }
      const int32_t* got = r.topk_ids.as<int32_t>();
      int64_t routing_mismatches = 0;
      if (mode != Mode::kTopk) {
        // Near ties: either choice is right; the server's is weighed the
        // family's way.
        const ReferenceRouting want = ref->RouteLike(logits, rows, got, &routing_mismatches);
        ids = want.ids;
        weights = want.weights;
      } else {
        routing_mismatches = !std::equal(got, got + rows * k, ids.begin());
      }
      double weight_err = 0;
      for (int64_t i = 0; i < rows * k; ++i) {
        weight_err = std::max(weight_err, std::fabs(r.topk_weights.as<float>()[i] - weights[i]) /
                                              std::max(1.0, std::fabs(weights[i])));
      }
      const Tensor y_ref = ref->Forward(x.view(), ids, weights);
      const double err = RelativeError(r.output.view(), y_ref.view());
      const bool ok = err <= tolerance && r.output.dtype() == dtype && routing_mismatches == 0 &&
                      weight_err <= 1e-4;
      pass = pass && ok;
      const char* name = mode == Mode::kServer   ? "server router"
                         : mode == Mode::kLogits ? "caller logits"
                                                 : "caller top-k";
      out << absl::StrFormat("  rows %-5d %-14s kernels %-40s rel err %.3e  %s", rows, name,
                             absl::StrJoin(r.kernels, ", "), err, ok ? "ok" : "BAD");
      if (routing_mismatches > 0) {
        out << " (" << routing_mismatches << " token(s) routed to other experts)";
      }
      if (weight_err > 1e-4) out << " (routing weights off by " << weight_err << ")";
      if (r.output.dtype() != dtype) {
        out << " (answer is " << DTypeName(r.output.dtype()) << ", expected " << cmd.dtype << ")";
      }
      out << "\n";
    }
  }
  QLAYER_RETURN_IF_ERROR(stream->Close());
  out << (pass ? "PASS" : "FAIL") << "\n";
  return pass;
}

}  // namespace qlayer
