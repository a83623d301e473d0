// qlayer-cli: talk to a qlayer-server from a shell.
//
//   qlayer-cli --server 127.0.0.1:50051 list
//   qlayer-cli --server 127.0.0.1:50051 describe model.layers.0.mlp.down_proj
//   qlayer-cli --server 127.0.0.1:50051 forward --layer L --input x.npy --output y.npy
//   qlayer-cli --server 127.0.0.1:50051 moe --layer L --input x.npy [--topk-ids ids.npy
//       --topk-weights w.npy | --router-logits l.npy] --output y.npy
//   qlayer-cli --server 127.0.0.1:50051 verify --layer L --model DIR [--rows 4] [--dtype f16]
//   qlayer-cli --server 127.0.0.1:50051 bench --layer L --rows 1 --streams 8 --seconds 5 --echo
//   qlayer-cli echo-server --listen 127.0.0.1:0 --out-features N
//
// Exit status: 0 on success (verify: PASS), 1 on a failed command or a
// verify FAIL, 2 on a usage error.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "client/cli/commands.h"
#include "client/cli/health_command.h"
#include "client/cli/moe_commands.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051", "qlayer-server gRPC address (host:port)");
ABSL_FLAG(bool, tls, false, "connect over TLS with the system's root CAs (see --tls-ca)");
ABSL_FLAG(std::string, tls_ca, "", "PEM root CA(s) to verify the server with; implies --tls");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM client certificate for a server with --tls-client-ca (with --tls-key)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls-cert");
ABSL_FLAG(std::string, tls_server_name, "",
          "name to verify in the server's certificate instead of --server's host");
ABSL_FLAG(std::string, auth_token_file, "",
          "file with the bearer token (first non-blank line) sent on every call; needs TLS");
ABSL_FLAG(std::string, layer, "", "layer name (forward, moe, verify, bench)");
ABSL_FLAG(std::string, input, "", "forward: input tensor file, .npy or .safetensors");
ABSL_FLAG(std::string, input_name, "", "forward: tensor to send from a .safetensors input");
ABSL_FLAG(std::string, output, "", "forward: output tensor file, .npy or .safetensors");
ABSL_FLAG(std::string, router_logits, "", "moe: router logits [T, E] file (caller routing)");
ABSL_FLAG(std::string, topk_ids, "", "moe: top-k expert ids [T, k] file (with --topk-weights)");
ABSL_FLAG(std::string, topk_weights, "", "moe: top-k weights [T, k] file (with --topk-ids)");
ABSL_FLAG(std::string, topk_ids_out, "", "moe: write the expert ids the server used here");
ABSL_FLAG(std::string, topk_weights_out, "", "moe: write the routing weights the server used here");
ABSL_FLAG(std::string, dtype, "",
          "activation dtype on the wire: f16|bf16|f32 (forward: the input's; verify/bench: f16)");
ABSL_FLAG(std::string, model, "", "verify: the checkpoint directory the server loaded");
ABSL_FLAG(int64_t, rows, 0, "rows M per request (verify: 4, bench: 1)");
ABSL_FLAG(uint64_t, seed, 0, "random seed for verify/bench inputs (0: from the clock, printed)");
ABSL_FLAG(double, tolerance, 0, "verify: max relative error (0: 5e-3 for f16/f32, 1e-2 for bf16)");
ABSL_FLAG(int32_t, streams, 1, "bench: concurrent streams");
ABSL_FLAG(int32_t, depth, 1, "bench: requests in flight per stream");
ABSL_FLAG(double, seconds, 5, "bench: measured seconds");
ABSL_FLAG(double, warmup, -1, "bench: warm-up seconds, not measured (<0: min(1, seconds/5))");
ABSL_FLAG(bool, echo, false, "bench: also measure a plain gRPC echo of the same payloads");
ABSL_FLAG(double, bandwidth_gbs, 0,
          "bench on an MoE block: the server's read bandwidth in GB/s for the floor (0: measure "
          "this machine's)");
ABSL_FLAG(bool, json, false, "list/describe/bench: print JSON");
ABSL_FLAG(std::string, glob, "", "list: only layers matching this glob");
ABSL_FLAG(double, timeout, 60, "per-call deadline in seconds");
ABSL_FLAG(std::string, listen, "127.0.0.1:0", "echo-server: address to listen on");
ABSL_FLAG(int64_t, out_features, 0, "echo-server: N of the answers (0: the input's K)");

namespace {

constexpr char kUsage[] =
    "qlayer-cli --server HOST:PORT [--tls-ca ca.pem [--tls-cert c.pem --tls-key c.key]\n"
    "           [--auth-token-file token]] COMMAND [flags]\n"
    "commands:\n"
    "  health   (grpc.health.v1 Check; needs no token: a probe for TLS servers)\n"
    "  list [--glob G] [--json]\n"
    "  describe LAYER [--json]\n"
    "  forward --layer L --input x.npy|x.safetensors --output y.npy|y.safetensors [--dtype D]\n"
    "  moe --layer L --input x.npy [--router-logits l.npy | --topk-ids ids.npy\n"
    "      --topk-weights w.npy] --output y.npy [--topk-ids-out i.npy --topk-weights-out w.npy]\n"
    "      (no routing given: the server routes with the gate it loaded)\n"
    "  verify --layer L --model DIR [--rows M] [--dtype f16|bf16|f32] [--seed S]\n"
    "  bench --layer L [--rows M] [--streams S] [--depth D] [--seconds T] [--echo] [--json]\n"
    "  (verify and bench take MoE blocks too: every routing mode / the server's router)\n"
    "  echo-server [--listen ADDR] [--out-features N]   (bench --echo starts one itself)\n"
    "Flags may be spelled with dashes or underscores (--input-name = --input_name).";

std::string SelfPath(const char* argv0) {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string(argv0);
}

// Abseil names flags with underscores; --input-name and --out-features are
// accepted too (as qlayer-server does): dashes in a flag's name, not in its
// value, become underscores before parsing.
void DashesToUnderscores(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    char* a = argv[i];
    if (a[0] != '-' || a[1] != '-' || a[2] == '\0') continue;
    for (char* c = a + 2; *c != '\0' && *c != '='; ++c) {
      if (*c == '-') *c = '_';
    }
  }
}

int Fail(const absl::Status& s) {
  std::cerr << "qlayer-cli: " << s << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  DashesToUnderscores(argc, argv);
  absl::SetProgramUsageMessage(kUsage);
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() < 2) {
    std::cerr << kUsage << "\n";
    return 2;
  }
  const std::string command = positional[1];
  const absl::Duration timeout = absl::Seconds(absl::GetFlag(FLAGS_timeout));

  if (command == "echo-server") {
    absl::Status s = qlayer::RunEchoServer(absl::GetFlag(FLAGS_listen),
                                           absl::GetFlag(FLAGS_out_features), std::cout);
    return s.ok() ? 0 : Fail(s);
  }

  qlayer::ClientOptions options;
  absl::StatusOr<qlayer::ChannelSecurity> security =
      qlayer::ChannelSecurity::FromFiles({.tls_ca = absl::GetFlag(FLAGS_tls_ca),
                                          .tls_cert = absl::GetFlag(FLAGS_tls_cert),
                                          .tls_key = absl::GetFlag(FLAGS_tls_key),
                                          .auth_token_file = absl::GetFlag(FLAGS_auth_token_file),
                                          .tls_server_name = absl::GetFlag(FLAGS_tls_server_name),
                                          .tls = absl::GetFlag(FLAGS_tls)});
  if (!security.ok()) return Fail(security.status());
  options.security = *std::move(security);
  if (command == "health") {
    absl::Status s =
        qlayer::RunHealth(absl::GetFlag(FLAGS_server), options.security, timeout, std::cout);
    return s.ok() ? 0 : Fail(s);
  }
  auto client = qlayer::Client::Connect(absl::GetFlag(FLAGS_server), options);
  if (!client.ok()) return Fail(client.status());
  qlayer::Client& c = **client;

  if (command == "list") {
    absl::Status s =
        qlayer::RunList(c, absl::GetFlag(FLAGS_glob), absl::GetFlag(FLAGS_json), std::cout);
    return s.ok() ? 0 : Fail(s);
  }
  if (command == "describe") {
    std::string layer = positional.size() > 2 ? positional[2] : absl::GetFlag(FLAGS_layer);
    if (layer.empty()) {
      std::cerr << "describe needs a layer name\n";
      return 2;
    }
    absl::Status s = qlayer::RunDescribe(c, layer, absl::GetFlag(FLAGS_json), std::cout);
    return s.ok() ? 0 : Fail(s);
  }
  if (command == "forward") {
    qlayer::ForwardCommand cmd;
    cmd.layer = absl::GetFlag(FLAGS_layer);
    cmd.input = absl::GetFlag(FLAGS_input);
    cmd.input_name = absl::GetFlag(FLAGS_input_name);
    cmd.output = absl::GetFlag(FLAGS_output);
    cmd.dtype = absl::GetFlag(FLAGS_dtype);
    cmd.timeout = timeout;
    absl::Status s = qlayer::RunForward(c, cmd, std::cout);
    return s.ok() ? 0 : Fail(s);
  }
  if (command == "moe") {
    qlayer::MoECommand cmd;
    cmd.layer = absl::GetFlag(FLAGS_layer);
    cmd.input = absl::GetFlag(FLAGS_input);
    cmd.output = absl::GetFlag(FLAGS_output);
    cmd.router_logits = absl::GetFlag(FLAGS_router_logits);
    cmd.topk_ids = absl::GetFlag(FLAGS_topk_ids);
    cmd.topk_weights = absl::GetFlag(FLAGS_topk_weights);
    cmd.topk_ids_out = absl::GetFlag(FLAGS_topk_ids_out);
    cmd.topk_weights_out = absl::GetFlag(FLAGS_topk_weights_out);
    cmd.dtype = absl::GetFlag(FLAGS_dtype);
    cmd.timeout = timeout;
    absl::Status s = qlayer::RunMoE(c, cmd, std::cout);
    return s.ok() ? 0 : Fail(s);
  }
  if (command == "verify") {
    qlayer::VerifyCommand cmd;
    cmd.layer = absl::GetFlag(FLAGS_layer);
    cmd.model_dir = absl::GetFlag(FLAGS_model);
    if (absl::GetFlag(FLAGS_rows) > 0) cmd.rows = absl::GetFlag(FLAGS_rows);
    if (!absl::GetFlag(FLAGS_dtype).empty()) cmd.dtype = absl::GetFlag(FLAGS_dtype);
    cmd.seed = absl::GetFlag(FLAGS_seed);
    cmd.tolerance = absl::GetFlag(FLAGS_tolerance);
    cmd.timeout = timeout;
    absl::StatusOr<bool> pass = qlayer::RunVerify(c, cmd, std::cout);
    if (!pass.ok()) {
      std::cout << "FAIL\n";
      return Fail(pass.status());
    }
    return *pass ? 0 : 1;
  }
  if (command == "bench") {
    qlayer::BenchCommand cmd;
    cmd.layer = absl::GetFlag(FLAGS_layer);
    if (absl::GetFlag(FLAGS_rows) > 0) cmd.rows = absl::GetFlag(FLAGS_rows);
    cmd.streams = absl::GetFlag(FLAGS_streams);
    cmd.depth = absl::GetFlag(FLAGS_depth);
    cmd.seconds = absl::GetFlag(FLAGS_seconds);
    cmd.warmup_seconds = absl::GetFlag(FLAGS_warmup);
    if (!absl::GetFlag(FLAGS_dtype).empty()) cmd.dtype = absl::GetFlag(FLAGS_dtype);
    cmd.json = absl::GetFlag(FLAGS_json);
    cmd.echo = absl::GetFlag(FLAGS_echo);
    cmd.self_path = SelfPath(argv[0]);
    cmd.seed = absl::GetFlag(FLAGS_seed);
    cmd.read_bandwidth = absl::GetFlag(FLAGS_bandwidth_gbs) * 1e9;
    absl::Status s = qlayer::RunBench(c, cmd, std::cout);
    return s.ok() ? 0 : Fail(s);
  }
  std::cerr << "unknown command '" << command << "'\n" << kUsage << "\n";
  return 2;
}
