// Status propagation helpers. Abseil keeps its RETURN_IF_ERROR private, so
// qlayer has its own, used everywhere a Status or StatusOr is returned.
#ifndef QLAYER_KERNELS_STATUS_MACROS_H_
#define QLAYER_KERNELS_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define QLAYER_CONCAT_INNER_(a, b) a##b
#define QLAYER_CONCAT_(a, b) QLAYER_CONCAT_INNER_(a, b)

// Returns from the current function if `expr` (an absl::Status) is not OK.
#define QLAYER_RETURN_IF_ERROR(expr)               \
  do {                                             \
    ::absl::Status qlayer_status_ = (expr);        \
    if (!qlayer_status_.ok()) return qlayer_status_; \
  } while (0)

// `lhs = value of rexpr` (an absl::StatusOr<T>), or returns its error.
#define QLAYER_ASSIGN_OR_RETURN(lhs, rexpr) \
  QLAYER_ASSIGN_OR_RETURN_IMPL_(QLAYER_CONCAT_(qlayer_statusor_, __LINE__), lhs, rexpr)
#define QLAYER_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                                  \
  if (!tmp.ok()) return tmp.status();                  \
  lhs = std::move(tmp).value()

#endif  // QLAYER_KERNELS_STATUS_MACROS_H_
