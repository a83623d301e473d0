#include "server/common/log.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace qlayer {

LogLevel MinLogLevel() {
  static const LogLevel level = [] {
    const char* env = std::getenv("QLAYER_LOG_LEVEL");
    if (env == nullptr) return LogLevel::kInfo;
    const std::string v = absl::AsciiStrToLower(env);
    if (v == "warning") return LogLevel::kWarning;
    if (v == "error") return LogLevel::kError;
    return LogLevel::kInfo;
  }();
  return level;
}

LogMessage::LogMessage(LogLevel level, const char* file, int line) : level_(level) {
  static constexpr char kLetters[] = {'I', 'W', 'E'};
  const char* base = std::strrchr(file, '/');
  stream_ << kLetters[static_cast<int>(level_)]
          << absl::FormatTime("%m%d %H:%M:%E6S", absl::Now(), absl::LocalTimeZone()) << ' '
          << (base ? base + 1 : file) << ':' << line << "] ";
}

LogMessage::~LogMessage() {
  stream_ << '\n';
  const std::string s = stream_.str();
  // One write per line: stderr is unbuffered, and a single write(2) of a
  // short line is not interleaved with other threads' lines.
  [[maybe_unused]] ssize_t n = ::write(STDERR_FILENO, s.data(), s.size());
}

}  // namespace qlayer
