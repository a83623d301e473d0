// list and describe: what the server hosts, and which kernels it chose.
#include <iomanip>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/cli/commands.h"
#include "google/protobuf/util/json_util.h"
#include "qlayer/kernels/status_macros.h"

namespace qlayer {
namespace {

absl::Status PrintJson(const google::protobuf::Message& m, std::ostream& out) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  const auto status = google::protobuf::util::MessageToJsonString(m, &json, options);
  if (!status.ok()) return absl::InternalError(std::string(status.message()));
  out << json;
  return absl::OkStatus();
}

}  // namespace

absl::Status RunList(Client& client, const std::string& glob, bool json, std::ostream& out) {
  QLAYER_ASSIGN_OR_RETURN(v1::ListLayersResponse layers, client.ListLayers(glob));
  if (json) return PrintJson(layers, out);
  if (layers.layers().empty()) {
    out << "no layers" << (glob.empty() ? "" : absl::StrCat(" match '", glob, "'")) << "\n";
    return absl::OkStatus();
  }
  for (const v1::LayerSummary& l : layers.layers()) {
    out << l.name() << "  " << l.kind() << "  K=" << l.in_features() << " N=" << l.out_features()
        << "  " << l.format() << " " << l.weight_type();
    if (l.group_size() > 0) out << " g" << l.group_size();
    out << "  " << l.device() << "  " << absl::StrJoin(l.kernels(), ",") << "\n";
  }
  return absl::OkStatus();
}

absl::Status RunDescribe(Client& client, const std::string& layer, bool json, std::ostream& out) {
  QLAYER_ASSIGN_OR_RETURN(v1::LayerInfo info, client.DescribeLayer(layer));
  if (json) return PrintJson(info, out);
  out << info.name() << " (" << info.kind() << ")\n"
      << "  shape         K=" << info.in_features() << " -> N=" << info.out_features() << "\n"
      << "  format        " << info.format() << ", " << info.weight_type() << " (" << info.bits()
      << " bits), group size " << info.group_size() << (info.zero_points() ? ", zero points" : "")
      << (info.act_order() ? ", act-order" : "") << (info.has_bias() ? ", bias" : "") << "\n"
      << "  scales        " << info.scale_dtype() << "\n"
      << "  weight bytes  " << info.weight_bytes() << " decoded, " << info.prepared_bytes()
      << " prepared\n"
      << "  device        " << info.device() << "\n";
  for (const v1::KernelChoice& k : info.kernels()) {
    out << "  kernel        " << k.kernel()
        << (k.max_rows() > 0
                ? absl::StrCat(" (batches up to ", k.max_rows(), " rows",
                               k.max_rows_source() == "measured"
                                   ? absl::StrCat(", measured at load: ", k.crossover_timings(),
                                                  " against the next kernel")
                                   : std::string(),
                               ")")
                : std::string(" (any batch)"))
        << "\n";
  }
  for (const v1::KernelRejection& r : info.rejected()) {
    out << "  rejected      " << r.kernel() << ": " << r.reason() << "\n";
  }
  if (info.kind() == "moe" && info.has_moe()) {
    const v1::MoEInfo& m = info.moe();
    out << "  moe           " << m.num_experts() << " experts, top-" << m.top_k() << ", router "
        << m.router() << ", intermediate " << m.intermediate_size() << "\n";
  }
  return absl::OkStatus();
}

}  // namespace qlayer
