// Device-side uniform random fill of f16 / bf16 buffers, for the benchmark.
#ifndef QLAYER_TESTS_GPU_GPU_BENCH_FILL_H_
#define QLAYER_TESTS_GPU_GPU_BENCH_FILL_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace qlayer::gputest {

// p[i] = uniform in [-scale, scale) as f16 (bf16 when `bf16`), i < n.
cudaError_t FillRandom16(void* p, size_t n, uint64_t seed, float scale, bool bf16,
                         cudaStream_t stream);

// dst = src (bytes % 16 == 0) by a grid-stride kernel of `sms` * 8 blocks.
cudaError_t CopyWithSms(const void* src, void* dst, size_t bytes, int sms, cudaStream_t stream);

}  // namespace qlayer::gputest

#endif  // QLAYER_TESTS_GPU_GPU_BENCH_FILL_H_
