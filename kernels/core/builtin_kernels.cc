// The kernels compiled into qlayer_kernels, listed explicitly so that static
// linking never drops one. Each kernel's file defines its factory function.
#include <vector>

#include "qlayer/kernels/registry.h"

namespace qlayer {

KernelFactory CpuReferenceKernelFactory();  // kernels/cpu/reference
KernelFactory OnednnDenseKernelFactory();   // kernels/cpu/onednn

std::vector<KernelFactory> BuiltinLinearKernels() {
  std::vector<KernelFactory> v;
  v.push_back(CpuReferenceKernelFactory());
  v.push_back(OnednnDenseKernelFactory());
  return v;
}

}  // namespace qlayer
