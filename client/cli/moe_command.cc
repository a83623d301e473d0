// moe: one MoEForward request from files, the answer (and optionally the
// routing the server used) to files, kernels and timings printed.
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/cli/moe_commands.h"
#include "client/cli/tensor_file.h"
#include "client/moe_stream.h"
#include "qlayer/kernels/status_macros.h"

namespace qlayer {

absl::Status RunMoE(Client& client, const MoECommand& cmd, std::ostream& out) {
  if (cmd.layer.empty()) return absl::InvalidArgumentError("moe needs --layer");
  if (cmd.input.empty() || cmd.output.empty()) {
    return absl::InvalidArgumentError("moe needs --input and --output");
  }
  if (cmd.topk_ids.empty() != cmd.topk_weights.empty()) {
    return absl::InvalidArgumentError("--topk-ids and --topk-weights go together");
  }
  if (!cmd.router_logits.empty() && !cmd.topk_ids.empty()) {
    return absl::InvalidArgumentError(
        "give --router-logits or --topk-ids/--topk-weights, not both");
  }
  QLAYER_ASSIGN_OR_RETURN(const Tensor x, ReadActivationFile(cmd.input, "", cmd.dtype));
  Tensor logits, ids, weights;
  MoERoutingInput routing;
  routing.return_routing = true;
  const char* mode = "server router";
  if (!cmd.router_logits.empty()) {
    QLAYER_ASSIGN_OR_RETURN(logits, ReadTensorFile(cmd.router_logits));
    if (logits.dtype() == DType::kF64) {
      QLAYER_ASSIGN_OR_RETURN(logits, ConvertFloat(logits.view(), DType::kF32));
    }
    routing.router_logits = logits.view();
    mode = "caller router logits";
  }
  if (!cmd.topk_ids.empty()) {
    QLAYER_ASSIGN_OR_RETURN(ids, ReadTensorFile(cmd.topk_ids));
    QLAYER_ASSIGN_OR_RETURN(weights, ReadTensorFile(cmd.topk_weights));
    if (weights.dtype() == DType::kF64) {
      QLAYER_ASSIGN_OR_RETURN(weights, ConvertFloat(weights.view(), DType::kF32));
    }
    routing.topk_ids = ids.view();
    routing.topk_weights = weights.view();
    mode = "caller top-k";
  }
  QLAYER_ASSIGN_OR_RETURN(
      std::unique_ptr<MoEStream> stream,
      MoEStream::Open(client.address(), cmd.timeout, cmd.timeout, client.options().security));
  QLAYER_RETURN_IF_ERROR(stream->Send(cmd.layer, x.view(), routing).status());
  QLAYER_ASSIGN_OR_RETURN(MoEResult r, stream->Read());
  QLAYER_RETURN_IF_ERROR(stream->Close());
  QLAYER_RETURN_IF_ERROR(r.status);
  QLAYER_ASSIGN_OR_RETURN(const std::string note, WriteAnswerFile(cmd.output, r.output.view()));
  if (!cmd.topk_ids_out.empty()) {
    QLAYER_RETURN_IF_ERROR(WriteTensorFile(cmd.topk_ids_out, r.topk_ids.view(), "topk_ids"));
  }
  if (!cmd.topk_weights_out.empty()) {
    QLAYER_RETURN_IF_ERROR(
        WriteTensorFile(cmd.topk_weights_out, r.topk_weights.view(), "topk_weights"));
  }
  // Tokens per expert of this request, from the routing it ran with.
  std::map<int32_t, int64_t> per_expert;
  if (!r.topk_ids.empty()) {
    for (int64_t i = 0; i < r.topk_ids.numel(); ++i) ++per_expert[r.topk_ids.as<int32_t>()[i]];
  }
  std::vector<std::string> counts;
  for (const auto& [e, n] : per_expert) counts.push_back(absl::StrCat(e, ":", n));
  out << cmd.layer << ": " << DTypeName(x.dtype()) << ShapeToString(x.shape()) << " -> "
      << DTypeName(r.output.dtype()) << ShapeToString(r.output.shape()) << " (" << mode << ")\n"
      << "  kernels       " << absl::StrJoin(r.kernels, ", ") << " (batch of " << r.batch_rows
      << " rows)\n"
      << "  experts       " << per_expert.size() << " used, tokens " << absl::StrJoin(counts, " ")
      << "\n";
  PrintAnswerTimings(r.queue_us, r.compute_us, r.total_us, r.latency_us, cmd.output, note, out);
  return absl::OkStatus();
}

}  // namespace qlayer
