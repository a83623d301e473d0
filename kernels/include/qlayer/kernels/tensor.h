// Tensor views (borrowed, e.g. into a checkpoint's mmap or a request payload)
// and an owning Tensor with 64-byte aligned storage (one AVX-512 line).
// All tensors are dense, row-major, little-endian.
#ifndef QLAYER_KERNELS_TENSOR_H_
#define QLAYER_KERNELS_TENSOR_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/container/inlined_vector.h"
#include "qlayer/kernels/dtype.h"

namespace qlayer {

using Shape = absl::InlinedVector<int64_t, 4>;

// Product of the dims; the caller has validated they are non-negative and
// that the product does not overflow (see CheckedNumElements).
int64_t NumElements(const Shape& shape);
// Product of the dims, or -1 when a dim is negative or the product (times
// elem_size) would overflow int64.
int64_t CheckedNumBytes(const Shape& shape, size_t elem_size);
// "[4096, 512]"
std::string ShapeToString(const Shape& shape);

struct ConstTensorView {
  DType dtype = DType::kInvalid;
  Shape shape;
  const void* data = nullptr;

  bool empty() const { return data == nullptr; }
  int64_t dim(int i) const { return shape[static_cast<size_t>(i)]; }
  int64_t numel() const { return NumElements(shape); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype); }
  template <typename T>
  const T* as() const {
    return static_cast<const T*>(data);
  }
};

struct TensorView {
  DType dtype = DType::kInvalid;
  Shape shape;
  void* data = nullptr;

  bool empty() const { return data == nullptr; }
  int64_t dim(int i) const { return shape[static_cast<size_t>(i)]; }
  int64_t numel() const { return NumElements(shape); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype); }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data);
  }
  operator ConstTensorView() const { return {dtype, shape, data}; }  // NOLINT
};

// Owns its bytes. Move-only; Clone() copies explicitly.
class Tensor {
 public:
  Tensor() = default;
  // Zero-filled tensor of the given type and shape.
  static Tensor Zeros(DType dtype, Shape shape);
  // Copy of a view's bytes.
  static Tensor CopyOf(const ConstTensorView& v);

  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(Tensor&&) noexcept = default;
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;

  Tensor Clone() const { return CopyOf(view()); }

  bool empty() const { return data_ == nullptr; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_[static_cast<size_t>(i)]; }
  int64_t numel() const { return NumElements(shape_); }
  size_t nbytes() const { return nbytes_; }
  void* data() { return data_.get(); }
  const void* data() const { return data_.get(); }
  template <typename T>
  T* as() {
    return static_cast<T*>(data());
  }
  template <typename T>
  const T* as() const {
    return static_cast<const T*>(data());
  }
  ConstTensorView view() const { return {dtype_, shape_, data_.get()}; }
  TensorView mutable_view() { return {dtype_, shape_, data_.get()}; }

 private:
  struct FreeDeleter {
    void operator()(void* p) const;
  };
  DType dtype_ = DType::kInvalid;
  Shape shape_;
  size_t nbytes_ = 0;
  std::unique_ptr<void, FreeDeleter> data_;
};

// True when both have the same dtype, shape and bytes (empty equals empty).
bool SameTensor(const ConstTensorView& a, const ConstTensorView& b);

}  // namespace qlayer

#endif  // QLAYER_KERNELS_TENSOR_H_
