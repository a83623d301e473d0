#include "client/channel_security.h"

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

namespace qlayer {
namespace {

absl::StatusOr<std::string> ReadFile(absl::string_view flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(flag, " ", path, ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(flag, " ", path, ": read error"));
  return ss.str();
}

absl::StatusOr<std::string> ReadPem(absl::string_view flag, const std::string& path) {
  absl::StatusOr<std::string> pem = ReadFile(flag, path);
  if (pem.ok() && !absl::StrContains(*pem, "-----BEGIN ")) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": not a PEM file"));
  }
  return pem;
}

}  // namespace

absl::StatusOr<ChannelSecurity> ChannelSecurity::FromFiles(const ChannelSecurityFiles& files) {
  ChannelSecurity s;
  if (files.tls_cert.empty() != files.tls_key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together: give both or neither");
  }
  s.tls = files.tls || !files.tls_ca.empty() || !files.tls_cert.empty() ||
          !files.tls_server_name.empty();
  if (!files.tls_ca.empty()) {
    absl::StatusOr<std::string> pem = ReadPem("--tls-ca", files.tls_ca);
    if (!pem.ok()) return pem.status();
    s.root_certs_pem = *std::move(pem);
  }
  if (!files.tls_cert.empty()) {
    absl::StatusOr<std::string> cert = ReadPem("--tls-cert", files.tls_cert);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadPem("--tls-key", files.tls_key);
    if (!key.ok()) return key.status();
    s.cert_chain_pem = *std::move(cert);
    s.private_key_pem = *std::move(key);
  }
  s.server_name = files.tls_server_name;
  if (!files.auth_token_file.empty()) {
    absl::StatusOr<std::string> text = ReadFile("--auth-token-file", files.auth_token_file);
    if (!text.ok()) return text.status();
    for (absl::string_view line : absl::StrSplit(*text, '\n')) {
      line = absl::StripAsciiWhitespace(line);
      if (line.empty() || absl::StartsWith(line, "#")) continue;
      s.bearer_token = std::string(line);
      break;
    }
    if (s.bearer_token.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--auth-token-file ", files.auth_token_file, ": no token in the file"));
    }
  }
  return s;
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> CreateSecureChannel(
    const std::string& address, grpc::ChannelArguments args, const ChannelSecurity& security) {
  if (address.empty()) return absl::InvalidArgumentError("server address is empty");
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (!security.tls) {
    if (!security.bearer_token.empty()) {
      return absl::InvalidArgumentError(
          "a bearer token needs TLS (--tls-ca or --tls): gRPC sends call credentials only over "
          "TLS");
    }
    creds = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = security.root_certs_pem;
    ssl.pem_cert_chain = security.cert_chain_pem;
    ssl.pem_private_key = security.private_key_pem;
    creds = grpc::SslCredentials(ssl);
    if (!security.server_name.empty()) args.SetSslTargetNameOverride(security.server_name);
    if (!security.bearer_token.empty()) {
      // Sends "authorization: Bearer <token>" with every call.
      creds = grpc::CompositeChannelCredentials(
          creds, grpc::AccessTokenCredentials(security.bearer_token));
    }
  }
  if (creds == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("cannot make credentials for ", address));
  }
  std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomChannel(address, creds, args);
  if (channel == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("cannot create a channel to ", address));
  }
  return channel;
}

}  // namespace qlayer
