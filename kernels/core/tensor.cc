#include "qlayer/kernels/tensor.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace qlayer {

int64_t NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t CheckedNumBytes(const Shape& shape, size_t elem_size) {
  int64_t n = static_cast<int64_t>(elem_size);
  for (int64_t d : shape) {
    if (d < 0) return -1;
    if (d != 0 && n > INT64_MAX / d) return -1;
    n *= d;
  }
  return n;
}

std::string ShapeToString(const Shape& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

void Tensor::FreeDeleter::operator()(void* p) const { std::free(p); }

Tensor Tensor::Zeros(DType dtype, Shape shape) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.nbytes_ = static_cast<size_t>(NumElements(t.shape_)) * DTypeSize(dtype);
  // Round up to whole 64-byte lines: aligned_alloc requires it, and vector
  // loads may read the tail of the last line.
  const size_t alloc = (t.nbytes_ + 63) / 64 * 64 + 64;
  void* p = std::aligned_alloc(64, alloc);
  // Out of memory: fail like operator new (callers that load weights turn it
  // into a status), not with a write through nullptr.
  if (p == nullptr) throw std::bad_alloc();
  std::memset(p, 0, alloc);
  t.data_.reset(p);
  return t;
}

Tensor Tensor::CopyOf(const ConstTensorView& v) {
  if (v.empty()) return Tensor();
  Tensor t = Zeros(v.dtype, v.shape);
  if (t.nbytes_ > 0 && v.data != nullptr) std::memcpy(t.data(), v.data, t.nbytes_);
  return t;
}

bool SameTensor(const ConstTensorView& a, const ConstTensorView& b) {
  if (a.empty() || b.empty()) return a.empty() == b.empty();
  if (a.dtype != b.dtype || a.shape != b.shape) return false;
  return std::memcmp(a.data, b.data, a.nbytes()) == 0;
}

}  // namespace qlayer
