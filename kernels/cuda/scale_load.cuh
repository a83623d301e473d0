// Device helper shared by the CUDA kernels: one scale as stored (f16, bf16
// or f32, by ScaleKind) read as float.
#ifndef QLAYER_KERNELS_CUDA_SCALE_LOAD_CUH_
#define QLAYER_KERNELS_CUDA_SCALE_LOAD_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstddef>

#include "cuda/device_ops.h"

namespace qlayer::cuda {

__device__ __forceinline__ float LoadScale(const void* s, int kind, size_t i) {
  if (kind == kScaleF32) return static_cast<const float*>(s)[i];
  if (kind == kScaleBf16) return __bfloat162float(static_cast<const __nv_bfloat16*>(s)[i]);
  return __half2float(static_cast<const __half*>(s)[i]);
}

}  // namespace qlayer::cuda

#endif  // QLAYER_KERNELS_CUDA_SCALE_LOAD_CUH_
