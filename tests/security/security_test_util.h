// Helpers for the security tests: a throwaway PKI (tests/security/
// make_test_certs.sh, run once per test process with the openssl command),
// secret files, client channels with TLS / client certificates / tokens, a
// program runner for servers expected to refuse to start, and an HTTP GET
// that sends an Authorization header and reports the status code.
// The qlayer-server process, checkpoints and the float64 reference come
// from tests/service/service_test_util.h.
#ifndef QLAYER_TESTS_SECURITY_SECURITY_TEST_UTIL_H_
#define QLAYER_TESTS_SECURITY_SECURITY_TEST_UTIL_H_

#include <memory>
#include <string>
#include <vector>

#include "client/channel_security.h"
#include "grpcpp/channel.h"

namespace qlayer::security_testing {

// One linear layer (kLayer, K=512 N=384, AWQ int4 g128) written by the real
// qlayer-quantize once per test process (seeded by the run's seed).
inline constexpr char kLayer[] = "model.layers.0.mlp.down_proj";
inline constexpr int kK = 512;
inline constexpr int kN = 384;
const std::string& ModelDir();

// The directory the PKI was written to (ca.pem, server.pem/.key,
// client.pem/.key, other_ca.pem, other_client.pem/.key); made on first use,
// removed at exit. Fails the test (and returns "") if openssl is missing.
const std::string& CertDir();
std::string Cert(const std::string& name);  // CertDir() + "/" + name
std::string ReadFileOrDie(const std::string& path);
// Writes `contents` to dir/name (mode 0600); returns the path.
std::string WriteSecret(const std::string& dir, const std::string& name,
                        const std::string& contents);

// TLS trusting `ca` (a file in CertDir()), with the client certificate
// `client` ("client" -> client.pem + client.key; "" = none) and `token`.
ChannelSecurity Tls(const std::string& ca = "ca.pem", const std::string& client = "",
                    const std::string& token = "");
std::shared_ptr<grpc::Channel> SecureChannel(const std::string& address,
                                             const ChannelSecurity& security);

struct ProgramResult {
  int exit_code = -1;  // 128 + signal when killed
  std::string output;  // stdout and stderr
};
// Runs argv to completion (SIGKILL after `timeout_s`).
ProgramResult RunProgram(const std::vector<std::string>& argv, double timeout_s = 30);

struct HttpResponse {
  int status = 0;  // 0: no HTTP answer
  std::string body;
};
// GET http://127.0.0.1:port/path, with "Authorization: <authorization>"
// when that is not empty.
HttpResponse HttpGet(int port, const std::string& path, const std::string& authorization);

}  // namespace qlayer::security_testing

#endif  // QLAYER_TESTS_SECURITY_SECURITY_TEST_UTIL_H_
