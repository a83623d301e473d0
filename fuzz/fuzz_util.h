// Helpers shared by the fuzz targets (fuzz/*_fuzz.cc): a byte reader for
// structured inputs, an in-memory file (memfd) for readers that take a path,
// and a scratch directory for readers that take a checkpoint directory.
// Header-only so each target stays one translation unit plus this file.
#ifndef QLAYER_FUZZ_FUZZ_UTIL_H_
#define QLAYER_FUZZ_FUZZ_UTIL_H_

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace qlayer::fuzz {

// Consumes an input front to back; past the end every read yields zeros, so a
// target never has to bail out on a short input.
class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint8_t U8() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint16_t U16() { return static_cast<uint16_t>(U8() | (U8() << 8)); }
  uint32_t U32() { return U16() | (static_cast<uint32_t>(U16()) << 16); }
  size_t remaining() const { return size_ - pos_; }
  const uint8_t* rest() const { return data_ + pos_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Crashes with a message: a broken invariant (not a rejected input) is a
// finding, and the fuzzer must see it as one.
[[noreturn]] inline void Fail(const std::string& what) {
  std::fprintf(stderr, "qlayer fuzz invariant broken: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

// One anonymous in-memory file, rewritten per input; path() names it for
// readers that open by path. Avoids the disk: these run millions of times.
class MemFile {
 public:
  MemFile() {
    fd_ = memfd_create("qlayer-fuzz", MFD_CLOEXEC);
    if (fd_ < 0) Fail("memfd_create failed");
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  void Write(const uint8_t* data, size_t size) {
    if (ftruncate(fd_, 0) != 0) Fail("ftruncate failed");
    size_t done = 0;
    while (done < size) {
      const ssize_t n = pwrite(fd_, data + done, size - done, static_cast<off_t>(done));
      if (n <= 0) Fail("pwrite to memfd failed");
      done += static_cast<size_t>(n);
    }
  }
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
};

// A private directory under $TMPDIR (or /tmp), removed at exit. Targets keep
// theirs in a never-destroyed static, so removal hangs on atexit, which both
// libFuzzer and the replay driver run when they finish.
class ScratchDir {
 public:
  ScratchDir() {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ =
        std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/qlayer-fuzz-XXXXXX";
    if (mkdtemp(templ.data()) == nullptr) Fail("mkdtemp failed");
    path_ = templ;
    static const bool registered = [] {
      std::atexit([] {
        for (const std::string& p : *AllDirs()) {
          std::error_code ec;
          std::filesystem::remove_all(p, ec);
        }
      });
      return true;
    }();
    (void)registered;
    AllDirs()->push_back(path_);
  }
  const std::string& path() const { return path_; }
  void WriteFile(const std::string& name, const void* data, size_t size) const {
    std::ofstream out(path_ + "/" + name, std::ios::binary | std::ios::trunc);
    out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
    if (!out) Fail("cannot write " + path_ + "/" + name);
  }

 private:
  static std::vector<std::string>* AllDirs() {
    static auto* dirs = new std::vector<std::string>();
    return dirs;
  }
  std::string path_;
};

// Reads every byte of a view so that ASan checks it lies inside its buffer;
// the sum is returned so the reads cannot be optimized away.
inline uint64_t TouchBytes(const void* data, size_t n) {
  const auto* p = static_cast<const volatile uint8_t*>(data);
  uint64_t sum = 0;
  for (size_t i = 0; i < n; ++i) sum += p[i];
  return sum;
}

}  // namespace qlayer::fuzz

#endif  // QLAYER_FUZZ_FUZZ_UTIL_H_
