// qlayer-cli for MoE blocks (issue 5): the moe command, and what verify and
// bench do when the layer they are given is an MoE block (DescribeLayer kind
// "moe"). They talk MoEForward through client/moe_stream.h.
#ifndef QLAYER_CLIENT_CLI_MOE_COMMANDS_H_
#define QLAYER_CLIENT_CLI_MOE_COMMANDS_H_

#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/cli/commands.h"
#include "client/client.h"
#include "qlayer/v1/layer_service.pb.h"

namespace qlayer {

// moe --layer L --input x.npy [--router-logits l.npy | --topk-ids ids.npy
//     --topk-weights w.npy] --output y.npy [--topk-ids-out i.npy
//     --topk-weights-out w.npy] [--dtype D]
struct MoECommand {
  std::string layer;
  std::string input;             // hidden states [T, H], .npy or .safetensors
  std::string router_logits;     // optional [T, E]
  std::string topk_ids;          // optional [T, k] integers (with topk_weights)
  std::string topk_weights;      // optional [T, k]
  std::string output;            // [T, H]
  std::string topk_ids_out;      // optional: the routing the server used
  std::string topk_weights_out;  // optional
  std::string dtype;             // hidden states on the wire; empty = the input's (f64 -> f32)
  absl::Duration timeout = absl::Seconds(60);
};
absl::Status RunMoE(Client& client, const MoECommand& cmd, std::ostream& out);

// verify on an MoE block: random hidden states (1 row and cmd.rows rows),
// each through the server's router (its choice checked), caller logits and
// caller top-k, against the float64 family forward from the checkpoint.
absl::StatusOr<bool> RunMoEVerify(Client& client, const VerifyCommand& cmd,
                                  const v1::LayerInfo& info, std::ostream& out);

// bench on an MoE block: the closed-loop load over MoEForward (server
// routing), with the floor of each request -- bytes of the experts its tokens
// touched (plus the shared expert) over the read bandwidth measured in this
// process -- beside the server's compute time. The floor is meaningful when
// the server runs on this machine (or pass the server's bandwidth).
absl::Status RunMoEBench(Client& client, const BenchCommand& cmd, const v1::LayerInfo& info,
                         std::ostream& out);

}  // namespace qlayer

#endif  // QLAYER_CLIENT_CLI_MOE_COMMANDS_H_
