// Fuzz target: one .safetensors file (8-byte header length, JSON header,
// byte buffer) through SafetensorsFile::Open. An accepted file's every tensor
// view must lie inside the mapping (every byte is read, so ASan would see an
// out-of-bounds view) and agree with its dtype and shape.
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_util.h"
#include "server/checkpoint/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static qlayer::fuzz::MemFile* file = new qlayer::fuzz::MemFile();
  file->Write(data, size);
  auto f = qlayer::SafetensorsFile::Open(file->path());
  if (!f.ok()) return 0;
  size_t total = 0;
  for (const std::string& name : (*f)->TensorNames()) {
    const qlayer::ConstTensorView* v = (*f)->Find(name);
    if (v == nullptr) qlayer::fuzz::Fail("listed tensor '" + name + "' not found");
    if (qlayer::DTypeSize(v->dtype) == 0) qlayer::fuzz::Fail("tensor '" + name + "' has no dtype");
    const size_t n = v->nbytes();
    total += n;
    qlayer::fuzz::TouchBytes(v->data, n);
  }
  if (total + 8 > (*f)->file_size()) qlayer::fuzz::Fail("tensors larger than the file");
  for (const auto& [k, val] : (*f)->metadata()) qlayer::fuzz::TouchBytes(val.data(), val.size());
  return 0;
}
