// qlayer-fuzz-seeds: seed inputs for the fuzz targets (fuzz/make_corpus.sh).
//   qlayer-fuzz-seeds formats CKPT_DIR OUT_DIR      one linear_record.h record per layer
//   qlayer-fuzz-seeds moe_catalog CKPT_DIR OUT_FILE  the moe_catalog_fuzz.cc text layout
//   qlayer-fuzz-seeds requests OUT_DIR              ForwardRequest / MoEForwardRequest
// Checkpoints come from qlayer-quantize; requests are built the way the C++
// client builds them (ToWireTensor), plus the `values` form grpcurl users send.
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/wire_tensor.h"
#include "fuzz/linear_record.h"
#include "qlayer/v1/layer_service.pb.h"
#include "server/checkpoint/checkpoint.h"
#include "server/checkpoint/layer_catalog.h"
#include "server/checkpoint/quant_config.h"

namespace {

int Die(const std::string& what) {
  std::fprintf(stderr, "qlayer-fuzz-seeds: %s\n", what.c_str());
  return 1;
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

std::string Basename(const std::string& dir) {
  std::string d = dir;
  while (!d.empty() && d.back() == '/') d.pop_back();
  const size_t slash = d.rfind('/');
  return slash == std::string::npos ? d : d.substr(slash + 1);
}

int Formats(const std::string& ckpt_dir, const std::string& out_dir) {
  auto ckpt = qlayer::Checkpoint::Open(ckpt_dir);
  if (!ckpt.ok()) return Die(ckpt.status().ToString());
  auto qc = qlayer::QuantConfig::Parse((*ckpt)->config());
  if (!qc.ok()) return Die(qc.status().ToString());
  auto layers = qlayer::ListLinearLayers(**ckpt, *qc);
  if (!layers.ok()) return Die(layers.status().ToString());
  for (const qlayer::LinearLayerEntry& layer : *layers) {
    std::vector<std::pair<int, qlayer::ConstTensorView>> tensors;
    for (int i = 0; i < qlayer::fuzz::kNumSuffixes; ++i) {
      const qlayer::ConstTensorView* v =
          (*ckpt)->Find(absl::StrCat(layer.name, ".", qlayer::fuzz::kSuffixes[i]));
      if (v != nullptr) tensors.emplace_back(i, *v);
    }
    const std::vector<uint8_t> rec = qlayer::fuzz::SerializeLinearRecord(layer.scheme, tensors);
    WriteBytes(absl::StrCat(out_dir, "/", Basename(ckpt_dir), "-", layer.name),
               std::string(rec.begin(), rec.end()));
  }
  return 0;
}

int MoECatalog(const std::string& ckpt_dir, const std::string& out_file) {
  auto ckpt = qlayer::Checkpoint::Open(ckpt_dir);
  if (!ckpt.ok()) return Die(ckpt.status().ToString());
  std::ifstream in(ckpt_dir + "/config.json", std::ios::binary);
  std::stringstream config;
  config << in.rdbuf();
  std::string lines, bytes;
  for (const std::string& name : (*ckpt)->TensorNames()) {
    const qlayer::ConstTensorView* v = (*ckpt)->Find(name);
    absl::StrAppend(&lines, name, " ", qlayer::DTypeToSafetensors(v->dtype), " ",
                    absl::StrJoin(v->shape, ","), "\n");
    bytes.append(static_cast<const char*>(v->data), v->nbytes());
  }
  WriteBytes(out_file, absl::StrCat(config.str(), "\n---\n", lines, "\n---\n", bytes));
  return 0;
}

qlayer::Tensor RandomTensor(std::mt19937& rng, qlayer::DType dtype, qlayer::Shape shape) {
  qlayer::Tensor t = qlayer::Tensor::Zeros(dtype, std::move(shape));
  std::normal_distribution<double> normal(0.0, 1.0);
  for (int64_t i = 0; i < t.numel(); ++i) qlayer::StoreFromDouble(t.data(), dtype, i, normal(rng));
  return t;
}

void Save(const std::string& path, const google::protobuf::Message& m) {
  WriteBytes(path, m.SerializeAsString());
}

int Requests(const std::string& out_dir) {
  std::mt19937 rng(12345);
  const std::string fwd = out_dir + "/tensor_request";
  const std::string moe = out_dir + "/moe_request";
  int n = 0;
  for (qlayer::DType dt : {qlayer::DType::kF16, qlayer::DType::kBF16, qlayer::DType::kF32}) {
    for (int64_t M : {1, 3}) {
      for (int64_t K : {16, 64}) {
        qlayer::v1::ForwardRequest r;
        r.set_request_id(static_cast<uint64_t>(++n));
        r.set_layer("model.layers.0.mlp.down_proj");
        r.set_timeout_us(255);  // the target's row limit: 256
        if (!qlayer::ToWireTensor(RandomTensor(rng, dt, {M, K}).view(), r.mutable_input()).ok()) {
          return Die("ToWireTensor failed");
        }
        Save(absl::StrCat(fwd, "/data-", qlayer::DTypeName(dt), "-", M, "x", K), r);
      }
    }
  }
  {  // grpcurl style: values, no dtype, no shape
    qlayer::v1::ForwardRequest r;
    r.set_request_id(16);
    r.set_layer("model.layers.0.self_attn.q_proj");
    for (int i = 0; i < 16; ++i) r.mutable_input()->add_values(0.25f * static_cast<float>(i - 7));
    r.set_output_encoding(qlayer::v1::ENCODING_VALUES);
    Save(fwd + "/values-f32-16", r);
  }
  // MoE: request_id even -> the target's Mixtral block (E 8, k 2), odd ->
  // DeepSeek-V3 (E 16, k 4); H = 16.
  for (uint64_t id : {2, 3}) {
    const int64_t E = id % 2 ? 16 : 8, k = id % 2 ? 4 : 2, T = 3;
    for (const char* mode : {"gate", "logits", "topk", "topk64", "values"}) {
      qlayer::v1::MoEForwardRequest r;
      r.set_request_id(id);
      r.set_layer(id % 2 ? "model.layers.3.mlp" : "model.layers.1.block_sparse_moe");
      r.set_return_routing(true);
      const std::string m = mode;
      if (m == "values") {
        r.mutable_hidden_states()->add_shape(T);
        r.mutable_hidden_states()->add_shape(16);
        for (int i = 0; i < T * 16; ++i)
          r.mutable_hidden_states()->add_values(0.1f * static_cast<float>(i % 7));
        for (int t = 0; t < T; ++t) {
          for (int j = 0; j < k; ++j) {
            r.mutable_topk_ids()->add_values(static_cast<float>((t + j * 3) % E));
            r.mutable_topk_weights()->add_values(1.0f / static_cast<float>(k));
          }
        }
        r.set_output_encoding(qlayer::v1::ENCODING_VALUES);
      } else {
        (void)qlayer::ToWireTensor(RandomTensor(rng, qlayer::DType::kBF16, {T, 16}).view(),
                                   r.mutable_hidden_states());
      }
      if (m == "logits") {
        (void)qlayer::ToWireTensor(RandomTensor(rng, qlayer::DType::kF32, {T, E}).view(),
                                   r.mutable_router_logits());
      }
      if (m == "topk" || m == "topk64") {
        const qlayer::DType idt = m == "topk" ? qlayer::DType::kI32 : qlayer::DType::kI64;
        qlayer::Tensor ids = qlayer::Tensor::Zeros(idt, {T, k});
        for (int64_t i = 0; i < T * k; ++i) {
          const int64_t e = (i / k + (i % k) * 5) % E;
          if (idt == qlayer::DType::kI32)
            ids.as<int32_t>()[i] = static_cast<int32_t>(e);
          else
            ids.as<int64_t>()[i] = e;
        }
        (void)qlayer::ToWireTensor(ids.view(), r.mutable_topk_ids());
        (void)qlayer::ToWireTensor(RandomTensor(rng, qlayer::DType::kF16, {T, k}).view(),
                                   r.mutable_topk_weights());
      }
      Save(absl::StrCat(moe, "/", m, "-E", E), r);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> a(argv + 1, argv + argc);
  if (a.size() == 3 && a[0] == "formats") return Formats(a[1], a[2]);
  if (a.size() == 3 && a[0] == "moe_catalog") return MoECatalog(a[1], a[2]);
  if (a.size() == 2 && a[0] == "requests") return Requests(a[1]);
  return Die(
      "usage: qlayer-fuzz-seeds formats CKPT OUT_DIR | moe_catalog CKPT OUT_FILE | requests "
      "OUT_DIR");
}
