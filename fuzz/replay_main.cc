// The driver of the fuzz targets in the normal (gcc) build, where libFuzzer is
// not available: replays every file given (seed corpus, regressions), then
// feeds random mutations of those files to the target until the time budget
// is spent. No coverage feedback -- that is what scripts/fuzz (clang +
// libFuzzer) is for; this keeps every target compiled, replays its known
// crashers on every CI run and shakes the parsers a little.
//
//   fuzz_<target> [-seconds=N] [-seed=S] [-max_len=BYTES] FILE_OR_DIR...
// -seconds defaults to 0 (replay only); $QLAYER_FUZZ_SECONDS, when set,
// overrides it (CI shortens the ctest entries that way), as $QLAYER_FUZZ_SEED
// does -seed. When the target crashes, the input is first written to
// ./crash-<target>-<pid>.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" __attribute__((weak)) int LLVMFuzzerInitialize(int* argc, char*** argv);
extern "C" __attribute__((weak)) void __sanitizer_set_death_callback(void (*)(void));

namespace {

namespace fs = std::filesystem;

// The input being run, for the crash handlers (plain globals: they must be
// readable from a signal handler).
const uint8_t* g_current = nullptr;
size_t g_current_size = 0;
char g_crash_path[256] = "crash-input";

void SaveCurrentInput() {
  static volatile sig_atomic_t saved = 0;
  if (saved || g_current == nullptr) return;
  saved = 1;
  const int fd = ::open(g_crash_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return;
  size_t done = 0;
  while (done < g_current_size) {
    const ssize_t n = ::write(fd, g_current + done, g_current_size - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  static const char kMsg[] = "\nfuzz replay: crashing input written to ";
  (void)!::write(2, kMsg, sizeof(kMsg) - 1);
  (void)!::write(2, g_crash_path, std::strlen(g_crash_path));
  (void)!::write(2, "\n", 1);
}

void OnSignal(int sig) {
  SaveCurrentInput();
  signal(sig, SIG_DFL);
  raise(sig);
}

std::vector<uint8_t> ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

// Byte-level mutations in the spirit of libFuzzer's, plus a few aimed at the
// JSON and little-endian integers our inputs are made of.
class Mutator {
 public:
  Mutator(uint64_t seed, size_t max_len) : rng_(seed), max_len_(max_len) {}

  std::vector<uint8_t> Mutate(const std::vector<uint8_t>& base,
                              const std::vector<std::vector<uint8_t>>& pool) {
    std::vector<uint8_t> d = base;
    const int n = 1 + static_cast<int>(Below(8));
    for (int i = 0; i < n; ++i) MutateOnce(d, pool);
    if (d.size() > max_len_) d.resize(max_len_);
    return d;
  }

 private:
  uint64_t Below(uint64_t n) { return n == 0 ? 0 : rng_() % n; }

  void MutateOnce(std::vector<uint8_t>& d, const std::vector<std::vector<uint8_t>>& pool) {
    static const char* const kTokens[] = {"-1",
                                          "0",
                                          "1",
                                          "4",
                                          "8",
                                          "-",
                                          "9223372036854775807",
                                          "18446744073709551615",
                                          "1e308",
                                          "null",
                                          "true",
                                          "[]",
                                          "{}",
                                          "\"\"",
                                          "[[[[[[[[",
                                          "]]]]",
                                          "\"re:.*\"",
                                          "\"bits\"",
                                          "\"group_size\"",
                                          ",",
                                          ":",
                                          "\"",
                                          "\\u0000",
                                          "2147483648",
                                          "65536"};
    static const uint64_t kInts[] = {0,          1,      0x7f,       0x80,       0xff,
                                     0x7fff,     0x8000, 0xffff,     0x7fffffff, 0x80000000,
                                     0xffffffff, ~0ull,  1ull << 62, 100000001};
    const size_t size = d.size();
    switch (Below(10)) {
      case 0:  // flip a bit
        if (size) d[Below(size)] ^= static_cast<uint8_t>(1u << Below(8));
        break;
      case 1:  // random byte
        if (size) d[Below(size)] = static_cast<uint8_t>(rng_());
        break;
      case 2: {  // erase a range
        if (!size) break;
        const size_t at = Below(size), len = 1 + Below(std::min<size_t>(16, size - at));
        d.erase(d.begin() + static_cast<ptrdiff_t>(at),
                d.begin() + static_cast<ptrdiff_t>(at + len));
        break;
      }
      case 3: {  // insert random bytes
        const size_t at = Below(size + 1), len = 1 + Below(8);
        std::vector<uint8_t> r(len);
        for (auto& b : r) b = static_cast<uint8_t>(rng_());
        d.insert(d.begin() + static_cast<ptrdiff_t>(at), r.begin(), r.end());
        break;
      }
      case 4: {  // duplicate a range
        if (!size) break;
        const size_t at = Below(size), len = 1 + Below(std::min<size_t>(64, size - at));
        std::vector<uint8_t> r(d.begin() + static_cast<ptrdiff_t>(at),
                               d.begin() + static_cast<ptrdiff_t>(at + len));
        const size_t to = Below(d.size() + 1);
        d.insert(d.begin() + static_cast<ptrdiff_t>(to), r.begin(), r.end());
        break;
      }
      case 5: {  // an interesting little-endian integer
        if (!size) break;
        const uint64_t v = kInts[Below(std::size(kInts))];
        const size_t width = size_t{1} << Below(4);  // 1, 2, 4 or 8 bytes
        const size_t at = Below(size);
        for (size_t i = 0; i < width && at + i < size; ++i)
          d[at + i] = static_cast<uint8_t>(v >> (8 * i));
        break;
      }
      case 6: {  // a JSON-ish token
        const char* t = kTokens[Below(std::size(kTokens))];
        const size_t at = Below(size + 1);
        d.insert(d.begin() + static_cast<ptrdiff_t>(at), t, t + std::strlen(t));
        break;
      }
      case 7: {  // rewrite a decimal digit run
        if (!size) break;
        const size_t at = Below(size);
        for (size_t i = at; i < size && i < at + 20; ++i) {
          if (d[i] >= '0' && d[i] <= '9') {
            d[i] = static_cast<uint8_t>('0' + Below(10));
            break;
          }
        }
        break;
      }
      case 8: {  // splice in a piece of another input
        const auto& o = pool[Below(pool.size())];
        if (o.empty()) break;
        const size_t from = Below(o.size()),
                     len = 1 + Below(std::min<size_t>(128, o.size() - from));
        const size_t at = Below(size + 1);
        d.insert(d.begin() + static_cast<ptrdiff_t>(at), o.begin() + static_cast<ptrdiff_t>(from),
                 o.begin() + static_cast<ptrdiff_t>(from + len));
        break;
      }
      default:  // truncate
        if (size) d.resize(Below(size));
        break;
    }
  }

  std::mt19937_64 rng_;
  size_t max_len_;
};

void Run(const std::vector<uint8_t>& input) {
  // A copy of exactly `size` bytes, so ASan sees reads past the end.
  std::unique_ptr<uint8_t[]> copy(new uint8_t[std::max<size_t>(input.size(), 1)]);
  if (!input.empty()) std::memcpy(copy.get(), input.data(), input.size());
  g_current = copy.get();
  g_current_size = input.size();
  LLVMFuzzerTestOneInput(copy.get(), input.size());
  g_current = nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  if (LLVMFuzzerInitialize != nullptr) LLVMFuzzerInitialize(&argc, &argv);
  double seconds = 0;
  uint64_t seed =
      static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  size_t max_len = 1 << 20;
  std::vector<fs::path> paths;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("-seconds=", 0) == 0) {
      seconds = std::atof(a.c_str() + 9);
    } else if (a.rfind("-seed=", 0) == 0) {
      seed = std::strtoull(a.c_str() + 6, nullptr, 10);
    } else if (a.rfind("-max_len=", 0) == 0) {
      max_len = std::strtoull(a.c_str() + 9, nullptr, 10);
    } else {
      paths.emplace_back(a);
    }
  }
  if (const char* env = std::getenv("QLAYER_FUZZ_SECONDS"); env != nullptr && *env != '\0') {
    seconds = std::atof(env);
  }
  if (const char* env = std::getenv("QLAYER_FUZZ_SEED"); env != nullptr && *env != '\0') {
    seed = std::strtoull(env, nullptr, 10);
  }
  const std::string name = fs::path(argv[0]).filename().string();
  std::snprintf(g_crash_path, sizeof(g_crash_path), "crash-%s-%d", name.c_str(),
                static_cast<int>(getpid()));
  for (int sig : {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL}) signal(sig, OnSignal);
  if (__sanitizer_set_death_callback != nullptr) __sanitizer_set_death_callback(SaveCurrentInput);

  // Every file under the given paths, in a stable order.
  std::vector<fs::path> files;
  for (const fs::path& p : paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      for (const auto& e : fs::recursive_directory_iterator(p, ec)) {
        if (e.is_regular_file()) files.push_back(e.path());
      }
    } else if (fs::is_regular_file(p, ec)) {
      files.push_back(p);
    } else {
      std::fprintf(stderr, "%s: %s is not a file or directory (skipped)\n", name.c_str(),
                   p.c_str());
    }
  }
  std::sort(files.begin(), files.end());
  std::vector<std::vector<uint8_t>> pool;
  for (const fs::path& f : files) {
    pool.push_back(ReadFile(f));
    Run(pool.back());
  }
  std::printf("%s: replayed %zu files\n", name.c_str(), files.size());
  if (pool.empty()) pool.emplace_back();

  if (seconds > 0) {
    std::printf("%s: mutating for %.0f s, seed %llu (QLAYER_FUZZ_SEED=%llu reproduces)\n",
                name.c_str(), seconds, static_cast<unsigned long long>(seed),
                static_cast<unsigned long long>(seed));
    std::fflush(stdout);
    Mutator m(seed, max_len);
    std::mt19937_64 pick(seed ^ 0x9e3779b97f4a7c15ull);
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    uint64_t execs = 0;
    while (std::chrono::steady_clock::now() < end) {
      for (int i = 0; i < 64; ++i, ++execs) Run(m.Mutate(pool[pick() % pool.size()], pool));
    }
    std::printf("%s: %llu mutated inputs, no crash\n", name.c_str(),
                static_cast<unsigned long long>(execs));
  }
  return 0;
}
