// The kernels compiled into qlayer_kernels, listed explicitly so that static
// linking never drops one. Each kernel's file defines its factory function.
#include <vector>

#include "qlayer/kernels/registry.h"

namespace qlayer {

KernelFactory CpuReferenceKernelFactory();  // kernels/cpu/reference
KernelFactory OnednnDenseKernelFactory();   // kernels/cpu/onednn
// kernels/cpu/quant_gemv_kernels.cc (inner loops in cpu/avx512, cpu/avx2)
KernelFactory CpuAvx512W4A16KernelFactory();
KernelFactory CpuAvx512W8A16KernelFactory();
KernelFactory CpuAvx512FmaW4A16KernelFactory();
KernelFactory CpuAvx512FmaW8A16KernelFactory();
KernelFactory CpuAvx2W4A16KernelFactory();
KernelFactory CpuAvx2W8A16KernelFactory();
#ifdef QLAYER_HAVE_CUDA
KernelFactory CudaGemvW4A16KernelFactory();      // kernels/cuda
KernelFactory CudaGemvW8A16KernelFactory();      // kernels/cuda
KernelFactory CudaMmaW4A16KernelFactory();       // kernels/cuda
KernelFactory CudaMmaW8A16KernelFactory();       // kernels/cuda
KernelFactory CudaDequantCublasKernelFactory();  // kernels/cuda
#endif

std::vector<KernelFactory> BuiltinLinearKernels() {
  std::vector<KernelFactory> v;
  v.push_back(CpuReferenceKernelFactory());
  v.push_back(OnednnDenseKernelFactory());
  v.push_back(CpuAvx512W4A16KernelFactory());
  v.push_back(CpuAvx512W8A16KernelFactory());
  v.push_back(CpuAvx512FmaW4A16KernelFactory());
  v.push_back(CpuAvx512FmaW8A16KernelFactory());
  v.push_back(CpuAvx2W4A16KernelFactory());
  v.push_back(CpuAvx2W8A16KernelFactory());
#ifdef QLAYER_HAVE_CUDA
  v.push_back(CudaGemvW4A16KernelFactory());
  v.push_back(CudaGemvW8A16KernelFactory());
  v.push_back(CudaMmaW4A16KernelFactory());
  v.push_back(CudaMmaW8A16KernelFactory());
  v.push_back(CudaDequantCublasKernelFactory());
#endif
  return v;
}

}  // namespace qlayer
