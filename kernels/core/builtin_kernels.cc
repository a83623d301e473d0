// The kernels compiled into qlayer_kernels, listed explicitly so that static
// linking never drops one. Each kernel's file defines its factory function.
#include <vector>

#include "qlayer/kernels/registry.h"

namespace qlayer {

KernelFactory CpuReferenceKernelFactory();  // kernels/cpu/reference
KernelFactory OnednnDenseKernelFactory();   // kernels/cpu/onednn
#ifdef QLAYER_HAVE_CUDA
KernelFactory CudaMmaW4A16KernelFactory();       // kernels/cuda
KernelFactory CudaMmaW8A16KernelFactory();       // kernels/cuda
KernelFactory CudaDequantCublasKernelFactory();  // kernels/cuda
#endif

std::vector<KernelFactory> BuiltinLinearKernels() {
  std::vector<KernelFactory> v;
  v.push_back(CpuReferenceKernelFactory());
  v.push_back(OnednnDenseKernelFactory());
#ifdef QLAYER_HAVE_CUDA
  v.push_back(CudaMmaW4A16KernelFactory());
  v.push_back(CudaMmaW8A16KernelFactory());
  v.push_back(CudaDequantCublasKernelFactory());
#endif
  return v;
}

}  // namespace qlayer
