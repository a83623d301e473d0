// cuBLAS, opened with dlopen on first use instead of linked.
//
// Why: libcublasLt 13 carries about 94 KB of initial-exec TLS. A library
// loaded at program start has its TLS carved out of every thread's stack, so
// threads created with small explicit stacks fail to start (civetweb's
// 100 KB /metrics workers died with "Cannot create first worker thread" in
// the CUDA build). A dlopen'ed library's TLS is allocated per thread on first
// use instead. It also lets a CUDA build of qlayer-server run on a machine
// without cuBLAS (--device cpu, or CUDA kernels that do not need it).
#ifndef QLAYER_KERNELS_CUDA_CUBLAS_LOADER_H_
#define QLAYER_KERNELS_CUDA_CUBLAS_LOADER_H_

#include <cublas_v2.h>

#include "absl/status/statusor.h"

namespace qlayer::cuda {

// The entry points qlayer uses, resolved from libcublas.so.13.
struct CublasApi {
  decltype(&cublasCreate_v2) create = nullptr;
  decltype(&cublasDestroy_v2) destroy = nullptr;
  decltype(&cublasSetStream_v2) set_stream = nullptr;
  decltype(&cublasSetWorkspace_v2) set_workspace = nullptr;
  // Spelled out: C++ sees cublasGemmEx overloaded (an inline cudaDataType
  // compute-type shim beside the exported cublasComputeType_t one).
  cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int m, int n,
                            int k, const void* alpha, const void* A, cudaDataType Atype, int lda,
                            const void* B, cudaDataType Btype, int ldb, const void* beta, void* C,
                            cudaDataType Ctype, int ldc, cublasComputeType_t compute,
                            cublasGemmAlgo_t algo) = nullptr;
  decltype(&cublasGetStatusString) status_string = nullptr;
};

// Loads cuBLAS once (thread-safe); later calls return the same table or the
// same error (library or symbol missing, with dlerror's text).
absl::StatusOr<const CublasApi*> LoadCublas();

}  // namespace qlayer::cuda

#endif  // QLAYER_KERNELS_CUDA_CUBLAS_LOADER_H_
