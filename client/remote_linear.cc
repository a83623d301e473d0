#include "client/remote_linear.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace qlayer {

absl::StatusOr<std::unique_ptr<RemoteLinear>> RemoteLinear::Create(
    Client* client, absl::string_view layer, const RemoteLinearOptions& options) {
  if (client == nullptr) return absl::InvalidArgumentError("RemoteLinear: client is null");
  absl::StatusOr<v1::LayerInfo> info = client->DescribeLayer(layer);
  if (!info.ok()) return info.status();
  if (info->kind() != "linear") {
    return absl::FailedPreconditionError(absl::StrCat("RemoteLinear: ", layer, " on ",
                                                      client->address(), " is a '", info->kind(),
                                                      "' layer, not a linear one"));
  }
  return std::unique_ptr<RemoteLinear>(new RemoteLinear(
      client, std::string(layer), info->in_features(), info->out_features(), options));
}

RemoteLinear::RemoteLinear(Client* client, std::string layer, int64_t in_features,
                           int64_t out_features, const RemoteLinearOptions& options)
    : client_(client),
      layer_(std::move(layer)),
      in_features_(in_features),
      out_features_(out_features),
      resender_(client, absl::StrCat("Forward ", layer_), "RemoteLinear", options) {}

RemoteLinear::~RemoteLinear() = default;

Shape RemoteLinear::OutputShape(const Shape& input_shape) const {
  Shape out = input_shape;
  if (out.empty()) {
    out.push_back(out_features_);
  } else {
    out.back() = out_features_;
  }
  return out;
}

std::future<absl::StatusOr<ForwardResult>> RemoteLinear::ForwardAsync(const ConstTensorView& x) {
  auto promise = std::make_shared<std::promise<absl::StatusOr<ForwardResult>>>();
  auto future = promise->get_future();
  ForwardAsync(x, [promise](absl::StatusOr<ForwardResult> r) { promise->set_value(std::move(r)); });
  return future;
}

void RemoteLinear::ForwardAsync(const ConstTensorView& x, ForwardCallback done) {
  const absl::Time start = absl::Now();
  if (x.dtype != DType::kF16 && x.dtype != DType::kBF16 && x.dtype != DType::kF32) {
    done(absl::InvalidArgumentError(absl::StrCat("Forward ", layer_, ": input dtype ",
                                                 DTypeName(x.dtype), " is not f16, bf16 or f32")));
    return;
  }
  if (x.shape.empty() || x.shape.back() != in_features_ || x.data == nullptr) {
    done(absl::InvalidArgumentError(absl::StrCat("Forward ", layer_, ": input has shape ",
                                                 ShapeToString(x.shape), ", expected [..., ",
                                                 in_features_, "]")));
    return;
  }
  const int64_t rows = x.numel() / in_features_;
  auto input = std::make_shared<const Tensor>(
      Tensor::CopyOf(ConstTensorView{x.dtype, {rows, in_features_}, x.data}));
  resender_.Start(
      start,
      [this, input](const CallOptions& o, ForwardCallback answer) {
        client_->Forward(layer_, input->view(), o, std::move(answer));
      },
      std::move(done));
}

}  // namespace qlayer
