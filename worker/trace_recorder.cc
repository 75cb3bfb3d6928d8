#include "worker/trace_recorder.h"

#include <algorithm>
#include <chrono>
#include <memory>

#include "predictor/key_digests.h"
#include "predictor/prefill_recorder.h"
#include "predictor/trace.h"
#include "worker/backend.h"
#include "worker/sampler.h"

namespace foresight::worker {
namespace {

class PrefillRecorders : public PrefillAttentionObserver {
 public:
  PrefillRecorders(int layers, int q_heads, int64_t prompt_tokens) {
    for (int l = 0; l < layers; ++l)
      recorders.push_back(std::make_unique<predictor::PrefillRecorder>(q_heads, prompt_tokens));
  }
  void OnRow(int32_t layer, int32_t q_head, int64_t query, const float* probs) override {
    recorders[layer]->AddRow(q_head, query, std::span<const float>(probs, static_cast<size_t>(query + 1)));
  }
  std::vector<std::unique_ptr<predictor::PrefillRecorder>> recorders;
};

// Records each dense decode step; the first error is kept and reported after the step.
class DecodeRecorder : public DecodeAttentionHook {
 public:
  DecodeRecorder(predictor::TraceWriter* writer, const ModelConfig& c) : writer_(writer), c_(c) {}
  bool SelectBlocks(int32_t, int64_t, const float*, const KvCache&, std::vector<std::vector<int32_t>>*) override {
    return false;
  }
  void OnAttention(int32_t layer, int64_t, const float* queries, bool, const float* block_max, const float* block_sum,
                   int64_t n_blocks) override {
    if (!status.ok()) return;
    const size_t q_size = static_cast<size_t>(c_.n_heads) * c_.head_dim;
    const size_t rows = static_cast<size_t>(c_.n_heads) * n_blocks;
    status =
        writer_->RecordDecodeStep(layer, step, std::span<const float>(queries, q_size),
                                  std::span<const float>(block_max, rows), std::span<const float>(block_sum, rows));
  }
  int64_t step = 0;
  Status status;

 private:
  predictor::TraceWriter* writer_;
  const ModelConfig& c_;
};

}  // namespace

StatusOr<TraceSummary> RecordTrace(const Model& model, const std::vector<TokenId>& prompt, int32_t decode_steps,
                                   const std::string& out_path, std::map<std::string, std::string> metadata) {
  const auto t0 = std::chrono::steady_clock::now();
  const ModelConfig& c = model.config();
  if (prompt.empty()) return InvalidArgument("trace: the prompt is empty");
  if (c.max_context > 0 && static_cast<int64_t>(prompt.size()) + decode_steps > c.max_context) {
    return OutOfRange("trace: " + std::to_string(prompt.size()) + " prompt tokens + " + std::to_string(decode_steps) +
                      " decode steps exceed the model's context of " + std::to_string(c.max_context));
  }
  predictor::TraceGeometry g;
  g.layers = c.n_layers;
  g.q_heads = c.n_heads;
  g.kv_heads = c.n_kv_heads;
  g.head_dim = c.head_dim;
  g.block_tokens = 16;
  g.prompt_tokens = static_cast<int64_t>(prompt.size());
  metadata.emplace("model", model.source());
  metadata.emplace("recorded_by", "foresight trace");
  FS_ASSIGN_OR_RETURN(std::unique_ptr<predictor::TraceWriter> writer,
                      predictor::TraceWriter::Create(out_path, g, metadata));

  // The CPU backend: the key digests below read its host KV.
  std::unique_ptr<Backend> cpu = NewCpuBackend(model);
  FS_ASSIGN_OR_RETURN(std::unique_ptr<BackendSequence> seq, cpu->NewSequence());
  PrefillRecorders prefill(c.n_layers, c.n_heads, g.prompt_tokens);
  std::vector<float> logits;
  FS_RETURN_IF_ERROR(seq->Prefill(prompt, &logits, false, &prefill));
  for (int l = 0; l < c.n_layers; ++l) {
    FS_RETURN_IF_ERROR(writer->RecordPrefill(l, prefill.recorders[l]->Observation()));
  }
  prefill.recorders.clear();

  TraceSummary summary;
  summary.prompt_tokens = g.prompt_tokens;
  DecodeRecorder recorder(writer.get(), c);
  for (int32_t s = 0; s < decode_steps; ++s) {
    const TokenId next = Argmax(logits.data(), static_cast<int64_t>(logits.size()));
    summary.generated.push_back(next);
    recorder.step = s;
    FS_RETURN_IF_ERROR(seq->Decode(next, &logits, &recorder));
    FS_RETURN_IF_ERROR(recorder.status);
  }
  summary.decode_steps = decode_steps;

  const KvCache& kv = *seq->host_kv();
  std::vector<float> keys(static_cast<size_t>(c.n_kv_heads) * c.head_dim);
  for (int l = 0; l < c.n_layers; ++l) {
    predictor::KeyDigests digests(c.n_kv_heads, c.head_dim, g.block_tokens);
    for (int64_t p = 0; p < kv.tokens(); ++p) {
      for (int h = 0; h < c.n_kv_heads; ++h) HalfToFloatRow(kv.key(l, h, p), c.head_dim, keys.data() + h * c.head_dim);
      digests.AppendToken(keys);
    }
    FS_RETURN_IF_ERROR(writer->RecordKeyDigests(l, digests));
  }
  FS_RETURN_IF_ERROR(writer->Finish());
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return summary;
}

}  // namespace foresight::worker
