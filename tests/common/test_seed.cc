#include "tests/common/test_seed.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace qlayer::test_common {

uint64_t TestSeed() {
  static const uint64_t seed = [] {
    uint64_t s;
    if (const char* env = std::getenv("QLAYER_TEST_SEED")) {
      s = std::strtoull(env, nullptr, 10);
    } else {
      s = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    }
    std::printf("[ seed ] QLAYER_TEST_SEED=%llu\n", static_cast<unsigned long long>(s));
    return s;
  }();
  return seed;
}

}  // namespace qlayer::test_common
