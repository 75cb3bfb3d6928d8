#include "predictor/trace.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "common/safetensors.h"

namespace foresight::predictor {
namespace {

std::string LayerName(int layer, const char* what) { return "layer" + std::to_string(layer) + "." + what; }

Status CheckSize(const std::string& what, size_t got, size_t expected) {
  if (got == expected) return Status::OK();
  return InvalidArgument("trace: " + what + " has " + std::to_string(got) + " values, expected " +
                         std::to_string(expected));
}

StatusOr<int64_t> MetaInt(const std::map<std::string, std::string>& meta, const std::string& key,
                          const std::string& path) {
  auto it = meta.find(key);
  if (it == meta.end()) {
    return InvalidArgument("trace " + path + ": metadata lacks '" + key +
                           "' (is this a foresight trace? see docs/trace-format.md)");
  }
  try {
    return static_cast<int64_t>(std::stoll(it->second));
  } catch (...) {
    return InvalidArgument("trace " + path + ": metadata '" + key + "' is not an integer: " + it->second);
  }
}

}  // namespace

Status TraceGeometry::Validate() const {
  if (layers <= 0 || q_heads <= 0 || kv_heads <= 0 || head_dim <= 0 || block_tokens <= 0) {
    return InvalidArgument(
        "trace geometry: layers, q_heads, kv_heads, head_dim and block_tokens "
        "must be positive");
  }
  if (q_heads % kv_heads != 0) {
    return InvalidArgument("trace geometry: q_heads (" + std::to_string(q_heads) + ") is not a multiple of kv_heads (" +
                           std::to_string(kv_heads) + ")");
  }
  if (prompt_tokens <= 0) return InvalidArgument("trace geometry: prompt_tokens must be positive");
  return Status::OK();
}

// ---- Writer ----

struct TraceWriter::LayerRecord {
  bool has_prefill = false;
  Trace::Layer layer;
  std::vector<std::vector<float>> step_max, step_sum;  // compact rows, padded at Finish
  bool has_digests = false;
};

TraceWriter::~TraceWriter() = default;

StatusOr<std::unique_ptr<TraceWriter>> TraceWriter::Create(std::string path, const TraceGeometry& geometry,
                                                           std::map<std::string, std::string> metadata) {
  FS_RETURN_IF_ERROR(geometry.Validate());
  std::unique_ptr<TraceWriter> w(new TraceWriter());
  w->path_ = std::move(path);
  w->geometry_ = geometry;
  w->metadata_ = std::move(metadata);
  for (int l = 0; l < geometry.layers; ++l) w->layers_.push_back(std::make_unique<LayerRecord>());
  return w;
}

Status TraceWriter::RecordPrefill(int layer, const PrefillObservation& prefill) {
  if (layer < 0 || layer >= geometry_.layers) return OutOfRange("trace: layer out of range");
  const size_t rows = geometry_.prefill_rows(), bp = geometry_.prompt_blocks();
  const size_t q = geometry_.q_heads;
  if (prefill.prompt_tokens != geometry_.prompt_tokens || prefill.rows != static_cast<int64_t>(rows)) {
    return InvalidArgument("trace: prefill of layer " + std::to_string(layer) +
                           " does not match the geometry's prompt length");
  }
  FS_RETURN_IF_ERROR(CheckSize("prefill block_max", prefill.block_max.size(), q * rows * bp));
  FS_RETURN_IF_ERROR(CheckSize("prefill block_sum", prefill.block_sum.size(), q * rows * bp));
  if (!prefill.block_sum_total.empty()) {
    FS_RETURN_IF_ERROR(CheckSize("prefill block_sum_total", prefill.block_sum_total.size(), q * bp));
  }
  LayerRecord& r = *layers_[layer];
  r.layer.prefill_block_max.assign(prefill.block_max.begin(), prefill.block_max.end());
  r.layer.prefill_block_sum.assign(prefill.block_sum.begin(), prefill.block_sum.end());
  if (prefill.block_sum_total.empty()) {
    r.layer.prefill_block_sum_total.assign(q * bp, 0.0f);
  } else {
    r.layer.prefill_block_sum_total.assign(prefill.block_sum_total.begin(), prefill.block_sum_total.end());
  }
  r.has_prefill = true;
  return Status::OK();
}

Status TraceWriter::RecordDecodeStep(int layer, int64_t step, std::span<const float> query,
                                     std::span<const float> block_max, std::span<const float> block_sum) {
  if (layer < 0 || layer >= geometry_.layers) return OutOfRange("trace: layer out of range");
  LayerRecord& r = *layers_[layer];
  if (step != static_cast<int64_t>(r.step_max.size())) {
    return InvalidArgument("trace: layer " + std::to_string(layer) + " expected decode step " +
                           std::to_string(r.step_max.size()) + ", got " + std::to_string(step));
  }
  const size_t q = geometry_.q_heads, nb = geometry_.blocks_at(step);
  FS_RETURN_IF_ERROR(CheckSize("decode query", query.size(), q * geometry_.head_dim));
  FS_RETURN_IF_ERROR(CheckSize("decode block_max", block_max.size(), q * nb));
  FS_RETURN_IF_ERROR(CheckSize("decode block_sum", block_sum.size(), q * nb));
  r.layer.decode_query.insert(r.layer.decode_query.end(), query.begin(), query.end());
  r.step_max.emplace_back(block_max.begin(), block_max.end());
  r.step_sum.emplace_back(block_sum.begin(), block_sum.end());
  return Status::OK();
}

Status TraceWriter::RecordKeyDigests(int layer, const KeyDigests& digests) {
  if (layer < 0 || layer >= geometry_.layers) return OutOfRange("trace: layer out of range");
  if (digests.kv_heads() != geometry_.kv_heads || digests.head_dim() != geometry_.head_dim ||
      digests.block_tokens() != geometry_.block_tokens) {
    return InvalidArgument("trace: key digests of layer " + std::to_string(layer) + " do not match the geometry");
  }
  layers_[layer]->layer.digests = digests;
  layers_[layer]->has_digests = true;
  return Status::OK();
}

Status TraceWriter::Finish() {
  const int64_t steps = static_cast<int64_t>(layers_[0]->step_max.size());
  const size_t q = geometry_.q_heads;
  const int64_t bmax = steps == 0 ? 0 : geometry_.blocks_at(steps - 1);
  std::vector<Trace::Layer> out;
  for (int l = 0; l < geometry_.layers; ++l) {
    LayerRecord& r = *layers_[l];
    if (!r.has_prefill) return FailedPrecondition("trace: layer " + std::to_string(l) + " has no prefill");
    if (!r.has_digests) return FailedPrecondition("trace: layer " + std::to_string(l) + " has no key digests");
    if (static_cast<int64_t>(r.step_max.size()) != steps) {
      return FailedPrecondition("trace: layer " + std::to_string(l) + " has " + std::to_string(r.step_max.size()) +
                                " decode steps, layer 0 has " + std::to_string(steps));
    }
    Trace::Layer layer = std::move(r.layer);
    layer.decode_block_max.assign(steps * q * bmax, 0.0f);
    layer.decode_block_sum.assign(steps * q * bmax, 0.0f);
    for (int64_t s = 0; s < steps; ++s) {
      const int64_t nb = geometry_.blocks_at(s);
      for (size_t h = 0; h < q; ++h) {
        std::copy_n(&r.step_max[s][h * nb], nb, &layer.decode_block_max[(s * q + h) * bmax]);
        std::copy_n(&r.step_sum[s][h * nb], nb, &layer.decode_block_sum[(s * q + h) * bmax]);
      }
    }
    r.step_max.clear();
    r.step_sum.clear();
    out.push_back(std::move(layer));
  }
  FS_ASSIGN_OR_RETURN(Trace trace, Trace::FromLayers(geometry_, steps, std::move(out), metadata_));
  return trace.Save(path_);
}

// ---- Trace ----

Status Trace::Check() const {
  FS_RETURN_IF_ERROR(geometry_.Validate());
  const size_t q = geometry_.q_heads, rows = geometry_.prefill_rows(), bp = geometry_.prompt_blocks();
  const size_t s = decode_steps_, bmax = max_blocks_, hd = geometry_.head_dim;
  if (static_cast<int>(layers_.size()) != geometry_.layers) {
    return InvalidArgument("trace: " + std::to_string(layers_.size()) + " layers, geometry says " +
                           std::to_string(geometry_.layers));
  }
  for (int l = 0; l < geometry_.layers; ++l) {
    const Layer& L = layers_[l];
    const std::string p = "layer " + std::to_string(l) + " ";
    FS_RETURN_IF_ERROR(CheckSize(p + "prefill.block_max", L.prefill_block_max.size(), q * rows * bp));
    FS_RETURN_IF_ERROR(CheckSize(p + "prefill.block_sum", L.prefill_block_sum.size(), q * rows * bp));
    FS_RETURN_IF_ERROR(CheckSize(p + "prefill.block_sum_total", L.prefill_block_sum_total.size(), q * bp));
    FS_RETURN_IF_ERROR(CheckSize(p + "decode.block_max", L.decode_block_max.size(), s * q * bmax));
    FS_RETURN_IF_ERROR(CheckSize(p + "decode.block_sum", L.decode_block_sum.size(), s * q * bmax));
    FS_RETURN_IF_ERROR(CheckSize(p + "decode.query", L.decode_query.size(), s * q * hd));
    const int64_t needed_tokens = geometry_.key_tokens(decode_steps_ - 1);
    if (L.digests.kv_heads() != geometry_.kv_heads || L.digests.head_dim() != geometry_.head_dim ||
        L.digests.block_tokens() != geometry_.block_tokens ||
        L.digests.tokens() < std::max<int64_t>(geometry_.prompt_tokens, needed_tokens)) {
      return InvalidArgument("trace: " + p + "key digests do not match the geometry or cover " +
                             "fewer tokens than the trace");
    }
  }
  return Status::OK();
}

StatusOr<Trace> Trace::FromLayers(const TraceGeometry& geometry, int64_t decode_steps, std::vector<Layer> layers,
                                  std::map<std::string, std::string> metadata) {
  Trace t;
  t.geometry_ = geometry;
  t.decode_steps_ = decode_steps;
  t.max_blocks_ = decode_steps == 0 ? 0 : geometry.blocks_at(decode_steps - 1);
  t.layers_ = std::move(layers);
  t.metadata_ = std::move(metadata);
  FS_RETURN_IF_ERROR(t.Check());
  return t;
}

Status Trace::Save(const std::string& path) const {
  const TraceGeometry& g = geometry_;
  std::map<std::string, std::string> meta = metadata_;
  meta["format"] = "foresight-trace";
  meta["version"] = std::to_string(kTraceFormatVersion);
  meta["layers"] = std::to_string(g.layers);
  meta["q_heads"] = std::to_string(g.q_heads);
  meta["kv_heads"] = std::to_string(g.kv_heads);
  meta["head_dim"] = std::to_string(g.head_dim);
  meta["block_tokens"] = std::to_string(g.block_tokens);
  meta["prompt_tokens"] = std::to_string(g.prompt_tokens);
  meta["decode_steps"] = std::to_string(decode_steps_);
  const int64_t q = g.q_heads, rows = g.prefill_rows(), bp = g.prompt_blocks();
  std::vector<TensorToWrite> tensors;
  for (int l = 0; l < g.layers; ++l) {
    const Layer& L = layers_[l];
    tensors.push_back(TensorToWrite::F32(LayerName(l, "prefill.block_max"), {q, rows, bp}, L.prefill_block_max.data()));
    tensors.push_back(TensorToWrite::F32(LayerName(l, "prefill.block_sum"), {q, rows, bp}, L.prefill_block_sum.data()));
    tensors.push_back(
        TensorToWrite::F32(LayerName(l, "prefill.block_sum_total"), {q, bp}, L.prefill_block_sum_total.data()));
    tensors.push_back(TensorToWrite::F32(LayerName(l, "decode.block_max"), {decode_steps_, q, max_blocks_},
                                         L.decode_block_max.data()));
    tensors.push_back(TensorToWrite::F32(LayerName(l, "decode.block_sum"), {decode_steps_, q, max_blocks_},
                                         L.decode_block_sum.data()));
    tensors.push_back(
        TensorToWrite::F32(LayerName(l, "decode.query"), {decode_steps_, q, g.head_dim}, L.decode_query.data()));
    tensors.push_back(TensorToWrite::F32(LayerName(l, "key_digests"),
                                         {L.digests.num_blocks(), g.kv_heads, 2, g.head_dim}, L.digests.data().data()));
  }
  meta["key_digest_tokens"] = std::to_string(layers_.empty() ? 0 : layers_[0].digests.tokens());
  Status s = WriteSafetensors(path, tensors, meta);
  return s.ok() ? s : s.WithContext("writing trace " + path);
}

StatusOr<Trace> Trace::Load(const std::string& path) {
  FS_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(path));
  const auto& meta = file->metadata();
  auto fmt = meta.find("format");
  if (fmt == meta.end() || fmt->second != "foresight-trace") {
    return InvalidArgument("trace " + path +
                           ": not a foresight trace (metadata format != "
                           "foresight-trace; see docs/trace-format.md)");
  }
  FS_ASSIGN_OR_RETURN(int64_t version, MetaInt(meta, "version", path));
  if (version != kTraceFormatVersion) {
    return InvalidArgument("trace " + path + ": format version " + std::to_string(version) +
                           " is not supported (this build reads version " + std::to_string(kTraceFormatVersion) + ")");
  }
  TraceGeometry g;
  FS_ASSIGN_OR_RETURN(int64_t layers, MetaInt(meta, "layers", path));
  FS_ASSIGN_OR_RETURN(int64_t q_heads, MetaInt(meta, "q_heads", path));
  FS_ASSIGN_OR_RETURN(int64_t kv_heads, MetaInt(meta, "kv_heads", path));
  FS_ASSIGN_OR_RETURN(int64_t head_dim, MetaInt(meta, "head_dim", path));
  FS_ASSIGN_OR_RETURN(int64_t block_tokens, MetaInt(meta, "block_tokens", path));
  FS_ASSIGN_OR_RETURN(g.prompt_tokens, MetaInt(meta, "prompt_tokens", path));
  FS_ASSIGN_OR_RETURN(int64_t steps, MetaInt(meta, "decode_steps", path));
  FS_ASSIGN_OR_RETURN(int64_t digest_tokens, MetaInt(meta, "key_digest_tokens", path));
  g.layers = static_cast<int>(layers);
  g.q_heads = static_cast<int>(q_heads);
  g.kv_heads = static_cast<int>(kv_heads);
  g.head_dim = static_cast<int>(head_dim);
  g.block_tokens = static_cast<int>(block_tokens);
  FS_RETURN_IF_ERROR(g.Validate().WithContext("trace " + path));
  std::vector<Layer> out(g.layers);
  auto get = [&](int l, const char* what, std::vector<float>* dst) -> Status {
    FS_ASSIGN_OR_RETURN(const TensorView* t, file->Get(LayerName(l, what)));
    *dst = t->ToFloat32();
    return Status::OK();
  };
  for (int l = 0; l < g.layers; ++l) {
    Layer& L = out[l];
    FS_RETURN_IF_ERROR(get(l, "prefill.block_max", &L.prefill_block_max));
    FS_RETURN_IF_ERROR(get(l, "prefill.block_sum", &L.prefill_block_sum));
    FS_RETURN_IF_ERROR(get(l, "prefill.block_sum_total", &L.prefill_block_sum_total));
    FS_RETURN_IF_ERROR(get(l, "decode.block_max", &L.decode_block_max));
    FS_RETURN_IF_ERROR(get(l, "decode.block_sum", &L.decode_block_sum));
    FS_RETURN_IF_ERROR(get(l, "decode.query", &L.decode_query));
    std::vector<float> digests;
    FS_RETURN_IF_ERROR(get(l, "key_digests", &digests));
    auto d = KeyDigests::FromArray(g.kv_heads, g.head_dim, g.block_tokens, digest_tokens, std::move(digests));
    if (!d.ok()) return d.status().WithContext("trace " + path);
    L.digests = std::move(*d);
  }
  auto trace = FromLayers(g, steps, std::move(out), meta);
  if (!trace.ok()) return trace.status().WithContext("trace " + path);
  return trace;
}

PrefillObservation Trace::prefill(int layer) const {
  const Layer& L = layers_[layer];
  PrefillObservation p;
  p.prompt_tokens = geometry_.prompt_tokens;
  p.rows = geometry_.prefill_rows();
  p.block_max = L.prefill_block_max;
  p.block_sum = L.prefill_block_sum;
  p.block_sum_total = L.prefill_block_sum_total;
  return p;
}

std::span<const float> Trace::query(int layer, int64_t step) const {
  const size_t n = static_cast<size_t>(geometry_.q_heads) * geometry_.head_dim;
  return std::span<const float>(layers_[layer].decode_query).subspan(step * n, n);
}

void Trace::DecodeRows(int layer, int64_t step, std::vector<float>* block_max, std::vector<float>* block_sum) const {
  const Layer& L = layers_[layer];
  const int64_t q = geometry_.q_heads, nb = geometry_.blocks_at(step);
  if (block_max) block_max->resize(q * nb);
  if (block_sum) block_sum->resize(q * nb);
  for (int64_t h = 0; h < q; ++h) {
    const size_t src = (step * q + h) * max_blocks_;
    if (block_max) std::copy_n(&L.decode_block_max[src], nb, &(*block_max)[h * nb]);
    if (block_sum) std::copy_n(&L.decode_block_sum[src], nb, &(*block_sum)[h * nb]);
  }
}

}  // namespace foresight::predictor
