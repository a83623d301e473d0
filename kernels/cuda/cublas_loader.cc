#include "cuda/cublas_loader.h"

#include <dlfcn.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace qlayer::cuda {
namespace {

// The soname of the cuBLAS this build was compiled against, then the
// unversioned development link as a fallback.
constexpr const char* kLibraries[] = {"libcublas.so." QLAYER_CUBLAS_SOVERSION, "libcublas.so"};

template <typename Fn>
absl::Status Resolve(void* lib, const char* name, Fn* fn) {
  *fn = reinterpret_cast<Fn>(dlsym(lib, name));
  if (*fn == nullptr) {
    const char* err = dlerror();
    return absl::FailedPreconditionError(
        absl::StrCat("cuBLAS has no ", name, ": ", err != nullptr ? err : "symbol not found"));
  }
  return absl::OkStatus();
}

absl::StatusOr<CublasApi> Open() {
  void* lib = nullptr;
  std::string errors;
  for (const char* name : kLibraries) {
    // RTLD_LOCAL: nothing else in the process should bind to these symbols.
    lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (lib != nullptr) break;
    const char* err = dlerror();
    absl::StrAppend(&errors, errors.empty() ? "" : "; ", err != nullptr ? err : name);
  }
  if (lib == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("cuBLAS could not be loaded (", errors,
                     "); install it or add its folder to LD_LIBRARY_PATH"));
  }
  CublasApi api;
  // Never dlclose'd: handles made from it live until exit.
  absl::Status s = Resolve(lib, "cublasCreate_v2", &api.create);
  if (s.ok()) s = Resolve(lib, "cublasDestroy_v2", &api.destroy);
  if (s.ok()) s = Resolve(lib, "cublasSetStream_v2", &api.set_stream);
  if (s.ok()) s = Resolve(lib, "cublasSetWorkspace_v2", &api.set_workspace);
  if (s.ok()) s = Resolve(lib, "cublasGemmEx", &api.gemm_ex);
  if (s.ok()) s = Resolve(lib, "cublasGetStatusString", &api.status_string);
  if (!s.ok()) return s;
  return api;
}

}  // namespace

absl::StatusOr<const CublasApi*> LoadCublas() {
  static const absl::StatusOr<CublasApi>* const api = new absl::StatusOr<CublasApi>(Open());
  if (!api->ok()) return api->status();
  return &**api;
}

}  // namespace qlayer::cuda
