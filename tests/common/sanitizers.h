// Whether this test binary is built with AddressSanitizer, and the
// ASAN_OPTIONS a child process gets when a test needs other ones. Every
// target of a build directory has the same -fsanitize flags (CMakeLists.txt,
// QLAYER_SANITIZE), so the qlayer-server a test starts from the same build
// is sanitized exactly when the test is.
#ifndef QLAYER_TESTS_COMMON_SANITIZERS_H_
#define QLAYER_TESTS_COMMON_SANITIZERS_H_

#include <cstdlib>
#include <string>
#include <string_view>

namespace qlayer::test_common {

#if defined(__SANITIZE_ADDRESS__)  // gcc
inline constexpr bool kAddressSanitizer = true;
#elif defined(__has_feature)  // clang
#if __has_feature(address_sanitizer)
inline constexpr bool kAddressSanitizer = true;
#else
inline constexpr bool kAddressSanitizer = false;
#endif
#else
inline constexpr bool kAddressSanitizer = false;
#endif

// "ASAN_OPTIONS=<this process's value>:<extra>", for a child's environment.
// The caller's options (scripts/test sets detect_leaks, init-order checks)
// are kept; ASan reads the list left to right, so `extra` wins where both
// set the same option.
inline std::string AsanOptionsWith(std::string_view extra) {
  const char* now = std::getenv("ASAN_OPTIONS");
  std::string env = "ASAN_OPTIONS=";
  if (now != nullptr && *now != '\0') {
    env += now;
    env += ':';
  }
  env += extra;
  return env;
}

}  // namespace qlayer::test_common

#endif  // QLAYER_TESTS_COMMON_SANITIZERS_H_
