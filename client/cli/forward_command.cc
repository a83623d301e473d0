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
  QLAYER_ASSIGN_OR_RETURN(const Tensor x, ReadActivationFile(cmd.input, cmd.input_name, cmd.dtype));
  // Connect first, so that the latency printed is the request's alone.
  QLAYER_RETURN_IF_ERROR(client.WaitForReady(cmd.timeout));
  CallOptions options;
  options.timeout = cmd.timeout;
  QLAYER_ASSIGN_OR_RETURN(ForwardResult r, client.Forward(cmd.layer, x.view(), options).get());
  QLAYER_ASSIGN_OR_RETURN(const std::string note, WriteAnswerFile(cmd.output, r.output.view()));
  out << cmd.layer << ": " << DTypeName(x.dtype()) << ShapeToString(x.shape()) << " -> "
      << DTypeName(r.output.dtype()) << ShapeToString(r.output.shape()) << "\n"
      << "  kernel        " << r.kernel << " (batch of " << r.batch_rows << " rows)\n";
  PrintAnswerTimings(r.queue_us, r.compute_us, r.total_us, r.latency_us, cmd.output, note, out);
  return absl::OkStatus();
}

void PrintAnswerTimings(int64_t queue_us, int64_t compute_us, int64_t total_us, int64_t latency_us,
                        const std::string& output, const std::string& note, std::ostream& out) {
  out << "  server        queue " << queue_us << " us, compute " << compute_us << " us, total "
      << total_us << " us\n"
      << "  client        " << latency_us << " us (transport " << latency_us - total_us << " us)\n"
      << "  wrote         " << output << note << "\n";
}

}  // namespace qlayer
