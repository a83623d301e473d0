#include "server/metrics/server_metrics.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <utility>

#include "absl/strings/str_cat.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "server/metrics/metrics_http.h"
#include "server/wire/status_codec.h"

namespace qlayer {
namespace {

// 10 us .. ~10 s, doubling: a decode GEMV on a small layer takes tens of
// microseconds, a prefill batch on a large one up to seconds.
prometheus::Histogram::BucketBoundaries SecondsBuckets() {
  prometheus::Histogram::BucketBoundaries b;
  for (int i = 0; i <= 20; ++i) b.push_back(1e-5 * std::ldexp(1.0, i));
  return b;
}

// 1 .. 4096 rows, doubling (kernel crossovers sit at powers of two).
prometheus::Histogram::BucketBoundaries RowBuckets() {
  prometheus::Histogram::BucketBoundaries b;
  for (int i = 0; i <= 12; ++i) b.push_back(std::ldexp(1.0, i));
  return b;
}

}  // namespace

absl::string_view RpcMethodName(RpcMethod m) {
  switch (m) {
    case RpcMethod::kForward:
      return "Forward";
    case RpcMethod::kMoEForward:
      return "MoEForward";
    case RpcMethod::kListLayers:
      return "ListLayers";
    case RpcMethod::kDescribeLayer:
      return "DescribeLayer";
  }
  return "unknown";
}

RequestMetrics::RequestMetrics(prometheus::Family<prometheus::Counter>& requests,
                               prometheus::Histogram& duration, std::string layer, RpcMethod method,
                               std::initializer_list<absl::StatusCode> expected)
    : requests_(requests), duration_(duration), layer_(std::move(layer)), method_(method) {
  for (absl::StatusCode c : expected) CounterFor(c);
}

prometheus::Counter& RequestMetrics::CounterFor(absl::StatusCode code) {
  int i = static_cast<int>(code);
  if (i < 0 || i >= kNumCodes) i = static_cast<int>(absl::StatusCode::kUnknown);
  prometheus::Counter* c = codes_[static_cast<size_t>(i)].load(std::memory_order_acquire);
  if (c != nullptr) return *c;
  // First use of a rare code. Family::Add returns the same series for the
  // same labels, so two racing threads store the same pointer. The label
  // values are fixed strings and a layer name that was accepted at startup,
  // so Add cannot throw here.
  c = &requests_.Add({{"layer", layer_},
                      {"method", std::string(RpcMethodName(method_))},
                      {"code", StatusCodeName(static_cast<absl::StatusCode>(i))}});
  codes_[static_cast<size_t>(i)].store(c, std::memory_order_release);
  return *c;
}

void RequestMetrics::Record(absl::StatusCode code, double seconds) {
  CounterFor(code).Increment();
  duration_.Observe(seconds);
}

void LayerMetrics::OnDequeued(double queue_seconds) { queue_->Observe(queue_seconds); }

void LayerMetrics::OnBatch(int kernel_index, int64_t rows, double compute_seconds) {
  if (kernel_index < 0 || static_cast<size_t>(kernel_index) >= kernels_.size()) return;
  const KernelSeries& k = kernels_[static_cast<size_t>(kernel_index)];
  k.compute->Observe(compute_seconds);
  k.batch_rows->Observe(static_cast<double>(rows));
}

void LayerMetrics::OnQueueDepth(int64_t depth) { depth_->Set(static_cast<double>(depth)); }

void LayerMetrics::OnExpertTokens(const std::vector<int64_t>& tokens_per_expert) {
  const size_t n = std::min(tokens_per_expert.size(), expert_tokens_.size());
  for (size_t e = 0; e < n; ++e) {
    if (tokens_per_expert[e] > 0) {
      expert_tokens_[e]->Increment(static_cast<double>(tokens_per_expert[e]));
    }
  }
}

absl::StatusOr<std::unique_ptr<ServerMetrics>> ServerMetrics::Create(const Model& model) {
  auto metrics = std::unique_ptr<ServerMetrics>(new ServerMetrics);
  try {
    metrics->Build(model);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("registering metrics: ", e.what()));
  }
  return metrics;
}

ServerMetrics::~ServerMetrics() = default;

void ServerMetrics::Build(const Model& model) {
  registry_ = std::make_shared<prometheus::Registry>();
  auto& requests = prometheus::BuildCounter()
                       .Name("qlayer_requests_total")
                       .Help("Requests answered, by layer, RPC method and gRPC status code")
                       .Register(*registry_);
  auto& duration = prometheus::BuildHistogram()
                       .Name("qlayer_request_duration_seconds")
                       .Help("Server time of a request from arrival until its answer was queued")
                       .Register(*registry_);
  auto& queue = prometheus::BuildHistogram()
                    .Name("qlayer_queue_duration_seconds")
                    .Help("Time a request waited in its layer's batch queue")
                    .Register(*registry_);
  auto& compute = prometheus::BuildHistogram()
                      .Name("qlayer_compute_duration_seconds")
                      .Help("Duration of one kernel call (one batch)")
                      .Register(*registry_);
  auto& batch_rows = prometheus::BuildHistogram()
                         .Name("qlayer_batch_rows")
                         .Help("Rows (M) of one kernel call: requests batched together")
                         .Register(*registry_);
  auto& info = prometheus::BuildGauge()
                   .Name("qlayer_layer_info")
                   .Help("Hosted layers: format, chosen kernel and device (value 1)")
                   .Register(*registry_);
  auto& weight_bytes = prometheus::BuildGauge()
                           .Name("qlayer_weight_bytes")
                           .Help("Bytes of a layer's decoded quantized weight")
                           .Register(*registry_);
  auto& depth = prometheus::BuildGauge()
                    .Name("qlayer_queue_depth")
                    .Help("Requests waiting in a layer's batch queue")
                    .Register(*registry_);

  using C = absl::StatusCode;
  open_streams_ = &prometheus::BuildGauge()
                       .Name("qlayer_open_streams")
                       .Help("Forward and MoEForward streams currently open")
                       .Register(*registry_)
                       .Add({});

  auto request_metrics = [&](const std::string& layer, RpcMethod method,
                             std::initializer_list<C> expected) {
    auto& h = duration.Add({{"layer", layer}, {"method", std::string(RpcMethodName(method))}},
                           SecondsBuckets());
    return std::make_unique<RequestMetrics>(requests, h, layer, method, expected);
  };
  // The codes each series set commonly ends with: their series exist (at
  // zero) before the first request, so rate() and alerts see them at once.
  const std::initializer_list<C> kForwardCodes = {C::kOk, C::kInvalidArgument,
                                                  C::kResourceExhausted, C::kDeadlineExceeded};
  for (const auto& layer : model.linears()) {
    const std::string& name = layer->name();
    const std::string device = layer->device().ToString();
    auto lm = std::make_unique<LayerMetrics>();
    lm->forward_ = request_metrics(name, RpcMethod::kForward, kForwardCodes);
    lm->moe_forward_ = request_metrics(name, RpcMethod::kMoEForward, {});
    lm->queue_ = &queue.Add({{"layer", name}}, SecondsBuckets());
    lm->depth_ = &depth.Add({{"layer", name}});
    for (const PreparedKernel& k : layer->kernels()) {
      LayerMetrics::KernelSeries s;
      s.compute = &compute.Add({{"layer", name}, {"kernel", k.name}}, SecondsBuckets());
      s.batch_rows = &batch_rows.Add({{"layer", name}, {"kernel", k.name}}, RowBuckets());
      lm->kernels_.push_back(s);
      info.Add({{"layer", name},
                {"format", layer->scheme().origin},
                {"kernel", k.name},
                {"device", device}})
          .Set(1);
    }
    weight_bytes.Add({{"layer", name}, {"device", device}})
        .Set(static_cast<double>(layer->weight_bytes()));
    layers_[name] = std::move(lm);
  }
  // MoE blocks: one compute series (the experts kernel; the router runs in
  // the same call) and a token counter per expert, bounded by E.
  auto& expert_tokens = prometheus::BuildCounter()
                            .Name("qlayer_moe_expert_tokens_total")
                            .Help("Tokens an MoE block routed to each of its experts")
                            .Register(*registry_);
  const std::initializer_list<C> kMoECodes = {C::kOk, C::kInvalidArgument, C::kResourceExhausted,
                                              C::kDeadlineExceeded};
  for (const auto& moe : model.moes()) {
    const std::string& name = moe->name();
    const std::string device = moe->device().ToString();
    const std::string kernel(moe->kernel().name());
    auto lm = std::make_unique<LayerMetrics>();
    lm->forward_ = request_metrics(name, RpcMethod::kForward, {});
    lm->moe_forward_ = request_metrics(name, RpcMethod::kMoEForward, kMoECodes);
    lm->queue_ = &queue.Add({{"layer", name}}, SecondsBuckets());
    lm->depth_ = &depth.Add({{"layer", name}});
    LayerMetrics::KernelSeries series;
    series.compute = &compute.Add({{"layer", name}, {"kernel", kernel}}, SecondsBuckets());
    series.batch_rows = &batch_rows.Add({{"layer", name}, {"kernel", kernel}}, RowBuckets());
    lm->kernels_.push_back(series);
    for (int64_t e = 0; e < moe->num_experts(); ++e) {
      lm->expert_tokens_.push_back(
          &expert_tokens.Add({{"layer", name}, {"expert", std::to_string(e)}}));
    }
    info.Add({{"layer", name},
              {"format", moe->scheme().origin},
              {"kernel", kernel},
              {"device", device}})
        .Set(1);
    weight_bytes.Add({{"layer", name}, {"device", device}})
        .Set(static_cast<double>(moe->weight_bytes()));
    layers_[name] = std::move(lm);
  }
  unknown_forward_ = request_metrics("", RpcMethod::kForward, {C::kNotFound});
  unknown_moe_forward_ = request_metrics("", RpcMethod::kMoEForward, {});
  list_layers_ = request_metrics("", RpcMethod::kListLayers, {C::kOk});
  describe_layer_ = request_metrics("", RpcMethod::kDescribeLayer, {C::kOk, C::kNotFound});
}

absl::Status ServerMetrics::Serve(const std::string& listen,
                                  std::shared_ptr<const BearerTokens> tokens) {
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> http =
      MetricsHttpServer::Start(listen, registry_, std::move(tokens));
  if (!http.ok()) return http.status();
  http_ = std::move(*http);
  port_ = http_->port();
  return absl::OkStatus();
}

void ServerMetrics::SetOpenStreams(size_t n) { open_streams_->Set(static_cast<double>(n)); }

LayerMetrics* ServerMetrics::ForLayer(absl::string_view name) {
  auto it = layers_.find(name);
  return it == layers_.end() ? nullptr : it->second.get();
}

std::string ServerMetrics::Scrape() const {
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

}  // namespace qlayer
