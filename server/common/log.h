// Minimal leveled logging to stderr for the server. Debian 12's Abseil
// (20220623) predates absl/log, so this stands in for LOG(INFO) with the same
// shape: QLAYER_LOG(INFO) << "layer " << name << " kernel " << kernel;
// One line per statement, written with a single write(2) so lines from
// different threads never interleave.
#ifndef QLAYER_SERVER_COMMON_LOG_H_
#define QLAYER_SERVER_COMMON_LOG_H_

#include <sstream>

namespace qlayer {

enum class LogLevel { kInfo = 0, kWarning = 1, kError = 2 };

// Lines below this level are dropped. Default kInfo; QLAYER_LOG_LEVEL=warning
// or error in the environment raises it (tests keep their output short).
LogLevel MinLogLevel();

class LogMessage {
 public:
  LogMessage(LogLevel level, const char* file, int line);
  ~LogMessage();
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;
  std::ostream& stream() { return stream_; }

 private:
  LogLevel level_;
  std::ostringstream stream_;
};

}  // namespace qlayer

#define QLAYER_LOG_LEVEL_INFO ::qlayer::LogLevel::kInfo
#define QLAYER_LOG_LEVEL_WARNING ::qlayer::LogLevel::kWarning
#define QLAYER_LOG_LEVEL_ERROR ::qlayer::LogLevel::kError

// The `if` keeps the message (and its arguments) unevaluated below the level.
#define QLAYER_LOG(severity)                                   \
  if (QLAYER_LOG_LEVEL_##severity < ::qlayer::MinLogLevel()) { \
  } else                                                       \
    ::qlayer::LogMessage(QLAYER_LOG_LEVEL_##severity, __FILE__, __LINE__).stream()

#endif  // QLAYER_SERVER_COMMON_LOG_H_
