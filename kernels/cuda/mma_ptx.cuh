// Thin wrappers over the PTX the mma kernels use (sm_80 and newer), each with
// the reason it is used.
#ifndef QLAYER_KERNELS_CUDA_MMA_PTX_CUH_
#define QLAYER_KERNELS_CUDA_MMA_PTX_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace qlayer::cuda {

__device__ __forceinline__ uint32_t SmemAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy that bypasses L1 (.cg): the weights are read
// exactly once, so caching them in L1 only evicts the activations. With
// pred == false the 16 bytes are zero-filled and nothing is read. (No
// L2::cache_hint: a createpolicy-based hint died with an illegal instruction
// under CUDA 13.0's ptxas on the lent H100.)
__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem, bool pred) {
  const int bytes = pred ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(SmemAddr(smem)), "l"(gmem),
               "r"(bytes));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

// Four 8x8 b16 matrices from shared memory; lane l gives the row address of
// matrix l / 8, row l % 8, and receives row l / 4, columns 2(l % 4), +1 of
// each: exactly the B fragment of m16n8k16 when the matrix rows are the
// activation rows (x is "B transposed", row-major).
__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], const void* smem_row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SmemAddr(smem_row)));
}

// D = A * B + D, A 16x16 row-major (4 regs), B 16x8 col-major (2 regs), fp32 D.
template <bool kBf16>
__device__ __forceinline__ void Mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  if constexpr (kBf16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

__device__ __forceinline__ uint32_t BytePerm(uint32_t x, uint32_t y, uint32_t s) {
  return __byte_perm(x, y, s);
}

template <typename T>
__device__ __forceinline__ uint32_t Bits2(T v) {
  return *reinterpret_cast<const uint32_t*>(&v);
}
__device__ __forceinline__ __half2 AsHalf2(uint32_t u) {
  return *reinterpret_cast<const __half2*>(&u);
}
__device__ __forceinline__ __nv_bfloat162 AsBf162(uint32_t u) {
  return *reinterpret_cast<const __nv_bfloat162*>(&u);
}

}  // namespace qlayer::cuda

#endif  // QLAYER_KERNELS_CUDA_MMA_PTX_CUH_
