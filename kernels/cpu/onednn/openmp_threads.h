// The OpenMP thread count oneDNN runs with, set per calling thread.
//
// Debian's libdnnl is built with OpenMP threading, so a primitive uses as many
// threads as omp_get_max_threads() on the thread that creates and executes it.
// qlayer_kernels does not link OpenMP itself (its ISA kernels use their own
// pool), so the two entry points are taken from the libgomp that libdnnl
// already loaded. Without them (another oneDNN build), the calls do nothing
// and oneDNN keeps its default.
#ifndef QLAYER_KERNELS_CPU_ONEDNN_OPENMP_THREADS_H_
#define QLAYER_KERNELS_CPU_ONEDNN_OPENMP_THREADS_H_

namespace qlayer {

// omp_get_max_threads() of the calling thread, or 0 when OpenMP is absent.
int OmpMaxThreads();
// omp_set_num_threads(n) for the calling thread; no-op when absent or n <= 0.
void OmpSetNumThreads(int n);

}  // namespace qlayer

#endif  // QLAYER_KERNELS_CPU_ONEDNN_OPENMP_THREADS_H_
