// MoEForward requests and answer checks shared by the MoE end-to-end tests
// (moe_e2e_test.cc: rich per-family checks; moe_matrix_e2e_test.cc: every
// family x format). A request is built in one routing mode from random
// hidden states, and what was sent is kept; an answer is checked against
// the float64 family forward of MoEReference: the routing the server
// reports (ids exactly, except on near ties, and weights), and the output.
#ifndef QLAYER_TESTS_SERVICE_MOE_REQUEST_UTIL_H_
#define QLAYER_TESTS_SERVICE_MOE_REQUEST_UTIL_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "qlayer/kernels/tensor.h"
#include "qlayer/v1/layer_service.grpc.pb.h"
#include "tests/service/moe_reference_util.h"

namespace qlayer::testing {

enum class MoEMode {
  kGate,          // no routing in the request: the server's router
  kLogits,        // caller router logits ~ N(0, 2)
  kSkewedLogits,  // caller logits with experts 0..k-1 far ahead of the rest
  kTopk,          // caller top-k: k distinct random experts per token
  kSkewedTopk,    // caller top-k: every token on experts 0..k-1, the rest idle
};
const char* MoEModeName(MoEMode m);
// The routing comes from logits (the server's router or the caller's).
bool RoutedByLogits(MoEMode m);

// What a request carried, for checking its answer.
struct MoESent {
  MoEMode mode = MoEMode::kGate;
  Tensor x;                     // [T, H] hidden states
  std::vector<double> logits;   // logits modes: what the router sees [T, E]
  std::vector<int32_t> ids;     // top-k modes: as sent [T, k]
  std::vector<double> weights;  // top-k modes: as sent, rounded to their dtype
};

struct MoERequestOptions {
  // Top-k modes: send ids as i64 (else i32) and weights in this dtype.
  bool i64_ids = false;
  DType weights_dtype = DType::kF32;
};

// A request for `block` with T random tokens of dtype `dt` (return_routing
// set), routed as `mode`; `sent` receives what it carries.
v1::MoEForwardRequest MakeMoERequest(const MoEReference& ref, const std::string& block, uint64_t id,
                                     MoEMode mode, DType dt, int64_t T, std::mt19937_64& rng,
                                     MoESent& sent, const MoERequestOptions& options = {});

// Checks an answer to `sent` (fails the test on a mismatch): no error,
// i32 [T, k] ids and f32 [T, k] weights returned and equal to the family's
// routing (caller top-k echoed; near ties take the server's choice, weighted
// the family's way, at most max(1, T/16) of them outside skewed modes), for
// skewed modes each of experts 0..k-1 gets all T tokens, and the output
// [T, H] in x's dtype within relative error `tol` of the float64 forward.
// Adds the tokens each expert received to `tokens` ([E]) when given.
void CheckMoEAnswer(const MoEReference& ref, const MoESent& sent, const v1::MoEForwardResponse& r,
                    double tol, std::vector<double>* tokens = nullptr);

}  // namespace qlayer::testing

#endif  // QLAYER_TESTS_SERVICE_MOE_REQUEST_UTIL_H_
