#include "cpu/onednn/openmp_threads.h"

#include <dlfcn.h>

namespace qlayer {
namespace {

struct OmpEntryPoints {
  int (*get_max_threads)() = nullptr;
  void (*set_num_threads)(int) = nullptr;
};

const OmpEntryPoints& Omp() {
  static const OmpEntryPoints e = [] {
    OmpEntryPoints r;
    r.get_max_threads = reinterpret_cast<int (*)()>(dlsym(RTLD_DEFAULT, "omp_get_max_threads"));
    r.set_num_threads = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
    return r;
  }();
  return e;
}

}  // namespace

int OmpMaxThreads() { return Omp().get_max_threads ? Omp().get_max_threads() : 0; }

void OmpSetNumThreads(int n) {
  if (n > 0 && Omp().set_num_threads) Omp().set_num_threads(n);
}

}  // namespace qlayer
