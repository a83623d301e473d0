// Fuzz target: model.safetensors.index.json of a sharded checkpoint. The
// scratch directory holds two real shards (written once); each input becomes
// the index, and Checkpoint::Open must reject it cleanly or serve a tensor
// set that is consistent (every listed name found, owned by an opened shard,
// its view inside the shard's bytes).
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>

#include "fuzz/fuzz_util.h"
#include "qlayer/kernels/formats.h"
#include "server/checkpoint/checkpoint.h"
#include "server/checkpoint/safetensors.h"

namespace {

const qlayer::fuzz::ScratchDir& Dir() {
  static const qlayer::fuzz::ScratchDir* dir = [] {
    auto* d = new qlayer::fuzz::ScratchDir();
    // Two shards in transformers' naming, a config, and a stray file the
    // index may name.
    for (int shard = 1; shard <= 2; ++shard) {
      qlayer::NamedTensors t;
      for (int i = 0; i < 2; ++i) {
        const std::string name = "model.layers." + std::to_string(shard - 1) + ".mlp." +
                                 (i ? "up" : "down") + "_proj.weight";
        t.emplace(name, qlayer::Tensor::Zeros(qlayer::DType::kF16, {2 + i, 4}));
      }
      const std::string file = "model-0000" + std::to_string(shard) + "-of-00002.safetensors";
      if (!qlayer::WriteSafetensors(d->path() + "/" + file, t, {{"format", "pt"}}).ok()) {
        qlayer::fuzz::Fail("cannot write shard " + file);
      }
    }
    const std::string config = R"({"model_type": "llama", "torch_dtype": "float16"})";
    d->WriteFile("config.json", config.data(), config.size());
    d->WriteFile("notes.txt", "not a safetensors file", 22);
    return d;
  }();
  return *dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const qlayer::fuzz::ScratchDir& dir = Dir();
  dir.WriteFile("model.safetensors.index.json", data, size);
  auto ckpt = qlayer::Checkpoint::Open(dir.path());
  if (!ckpt.ok()) return 0;
  std::set<std::string> files;
  for (const std::string& f : (*ckpt)->WeightFiles()) files.insert(f);
  if (files.empty()) qlayer::fuzz::Fail("a checkpoint opened with no weight files");
  for (const std::string& f : files) {
    if (f.rfind(dir.path() + "/", 0) != 0) qlayer::fuzz::Fail("weight file outside the dir: " + f);
  }
  for (const std::string& name : (*ckpt)->TensorNames()) {
    const qlayer::ConstTensorView* v = (*ckpt)->Find(name);
    if (v == nullptr) qlayer::fuzz::Fail("listed tensor '" + name + "' not found");
    qlayer::fuzz::TouchBytes(v->data, v->nbytes());
  }
  return 0;
}
