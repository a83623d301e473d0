// The seed of a test run, shared by the test folders' helpers.
#ifndef QLAYER_TESTS_COMMON_TEST_SEED_H_
#define QLAYER_TESTS_COMMON_TEST_SEED_H_

#include <cstdint>

namespace qlayer::test_common {

// $QLAYER_TEST_SEED if set, else from the clock. Printed once per process
// ("[ seed ] QLAYER_TEST_SEED=<n>"), so a failure can be replayed.
uint64_t TestSeed();

}  // namespace qlayer::test_common

#endif  // QLAYER_TESTS_COMMON_TEST_SEED_H_
