#include "moe/prepared_linear.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "qlayer/kernels/status_macros.h"

namespace qlayer {

absl::Status PreparedLinear::Prepare(const QuantizedLinear& w, const Device& device, DType act,
                                     const SelectOptions& options) {
  entries_.clear();
  QLAYER_ASSIGN_OR_RETURN(Selection sel,
                          SelectLinearKernel(LinearSpec::Of(w, act), device, options));
  for (const ChosenKernel& c : sel.chosen) {
    Entry e;
    e.max_m = c.max_m;
    e.kernel = c.factory->create();
    absl::Status s = e.kernel->Prepare(w, device);
    if (!s.ok()) {
      return absl::Status(s.code(),
                          absl::StrCat("kernel ", c.factory->name, " Prepare: ", s.message()));
    }
    entries_.push_back(std::move(e));
  }
  if (entries_.empty()) return absl::InternalError("linear kernel selection chose nothing");
  return absl::OkStatus();
}

absl::Status PreparedLinear::Forward(const ConstTensorView& x, const TensorView& y,
                                     ExecContext& ctx, absl::string_view* used) const {
  if (entries_.empty()) return absl::FailedPreconditionError("linear Forward before Prepare");
  const int64_t m = x.shape.empty() ? 0 : x.shape[0];
  for (const Entry& e : entries_) {
    if (m <= e.max_m) {
      if (used != nullptr) *used = e.kernel->name();
      return e.kernel->Forward(x, y, ctx);
    }
  }
  return absl::InternalError("no prepared linear kernel covers this M");  // last is unbounded
}

int64_t PreparedLinear::prepared_bytes() const {
  int64_t n = 0;
  for (const Entry& e : entries_) n += e.kernel->prepared_bytes();
  return n;
}

std::string PreparedLinear::Describe() const {
  std::string s;
  for (const Entry& e : entries_) {
    if (!s.empty()) absl::StrAppend(&s, ", ");
    absl::StrAppend(&s, e.kernel->name());
    if (e.max_m != kUnboundedM) absl::StrAppend(&s, " (M<=", e.max_m, ")");
  }
  return s;
}

}  // namespace qlayer
