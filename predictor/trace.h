// Attention traces: what a model records during prefill and decode so that every selection policy
// can be replayed offline (evaluation, training). The format is documented in
// docs/trace-format.md: one safetensors file per sequence, tensors per layer, geometry in the
// metadata.
//
// Recorded per layer: the dense prefill's last min(64, P) pooled attention rows and the per-block
// attention mass summed over all prompt queries; per decode step the dense pooled attention row
// (block max and block mass) and the post-RoPE query of every query head; at the end, the per-block
// key min/max digests (Quest). A replay derives any policy's sparse attention from the dense rows:
// softmax over a subset of blocks is the dense row restricted to it, renormalised.
//
//   FS_ASSIGN_OR_RETURN(auto writer, TraceWriter::Create(path, geometry, {{"model", "smollm2"}}));
//   for (int l ...) FS_RETURN_IF_ERROR(writer->RecordPrefill(l, prefill_obs[l]));
//   for (step ...) for (int l ...)
//     FS_RETURN_IF_ERROR(writer->RecordDecodeStep(l, step, query, block_max, block_sum));
//   for (int l ...) FS_RETURN_IF_ERROR(writer->RecordKeyDigests(l, digests[l]));
//   FS_RETURN_IF_ERROR(writer->Finish());
//
//   FS_ASSIGN_OR_RETURN(Trace trace, Trace::Load(path));
//
// Thread-safety: TraceWriter is not thread-safe (RecordDecodeStep for different layers of one step
// may be called from different threads only if serialised by the caller). A loaded Trace is
// immutable; concurrent readers are fine.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "predictor/key_digests.h"
#include "predictor/selection_policy.h"

namespace foresight::predictor {

inline constexpr int kTraceFormatVersion = 1;
inline constexpr int kHistoryRows = 64;  // prefill rows kept, as the predictor's history

struct TraceGeometry {
  int layers = 0;
  int q_heads = 0;
  int kv_heads = 0;
  int head_dim = 0;
  int block_tokens = 16;
  int64_t prompt_tokens = 0;

  LayerGeometry layer() const { return {q_heads, kv_heads, head_dim}; }
  int64_t prompt_blocks() const { return (prompt_tokens + block_tokens - 1) / block_tokens; }
  int64_t prefill_rows() const { return prompt_tokens < kHistoryRows ? prompt_tokens : kHistoryRows; }
  // Keys attended at decode step s: the prompt, the tokens decoded before, and this one.
  int64_t key_tokens(int64_t step) const { return prompt_tokens + step + 1; }
  int64_t blocks_at(int64_t step) const { return (key_tokens(step) + block_tokens - 1) / block_tokens; }
  Status Validate() const;
};

class TraceWriter {
 public:
  // Nothing is written before Finish; the whole trace is buffered in memory (a few hundred MB at
  // most for 8K contexts and a few hundred steps).
  static StatusOr<std::unique_ptr<TraceWriter>> Create(std::string path, const TraceGeometry& geometry,
                                                       std::map<std::string, std::string> metadata = {});

  // Dense prefill of layer `layer`: spans as in PrefillObservation (rows = prefill_rows(),
  // num_blocks = prompt_blocks()); block_sum_total may be empty (stored as zeros).
  Status RecordPrefill(int layer, const PrefillObservation& prefill);

  // Dense decode step `step` of layer `layer`; steps arrive in order 0, 1, 2, ... for each layer.
  // query: [q_heads, head_dim]; block_max, block_sum: [q_heads, blocks_at(step)].
  Status RecordDecodeStep(int layer, int64_t step, std::span<const float> query, std::span<const float> block_max,
                          std::span<const float> block_sum);

  // Key digests of layer `layer` covering at least the keys of the last recorded step.
  Status RecordKeyDigests(int layer, const KeyDigests& digests);

  // Checks that every layer has a prefill, the same number of decode steps and digests, then
  // writes the file.
  Status Finish();

 private:
  TraceWriter() = default;
  struct LayerRecord;
  std::string path_;
  TraceGeometry geometry_;
  std::map<std::string, std::string> metadata_;
  std::vector<std::unique_ptr<LayerRecord>> layers_;

 public:
  ~TraceWriter();
};

// A loaded trace. Decode rows are stored padded to the last step's block count; the accessors
// below return compact rows for one step.
class Trace {
 public:
  static StatusOr<Trace> Load(const std::string& path);

  const TraceGeometry& geometry() const { return geometry_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  int64_t decode_steps() const { return decode_steps_; }

  // Views into the trace; valid while the Trace lives.
  PrefillObservation prefill(int layer) const;
  // [q_heads, head_dim]
  std::span<const float> query(int layer, int64_t step) const;
  // Compact [q_heads, blocks_at(step)] copies of the dense rows.
  void DecodeRows(int layer, int64_t step, std::vector<float>* block_max, std::vector<float>* block_sum) const;
  const KeyDigests& key_digests(int layer) const { return layers_[layer].digests; }

  // Builds a trace from parts (tests, the synthetic generator); same checks as Load.
  struct Layer {
    std::vector<float> prefill_block_max;        // [q_heads, R, Bp]
    std::vector<float> prefill_block_sum;        // [q_heads, R, Bp]
    std::vector<float> prefill_block_sum_total;  // [q_heads, Bp]
    std::vector<float> decode_block_max;         // [S, q_heads, Bmax]
    std::vector<float> decode_block_sum;         // [S, q_heads, Bmax]
    std::vector<float> decode_query;             // [S, q_heads, head_dim]
    KeyDigests digests;
  };
  static StatusOr<Trace> FromLayers(const TraceGeometry& geometry, int64_t decode_steps, std::vector<Layer> layers,
                                    std::map<std::string, std::string> metadata = {});
  // Writes this trace in the documented format.
  Status Save(const std::string& path) const;

  int64_t max_blocks() const { return max_blocks_; }
  const Layer& layer(int l) const { return layers_[l]; }

 private:
  Status Check() const;
  TraceGeometry geometry_;
  std::map<std::string, std::string> metadata_;
  int64_t decode_steps_ = 0;
  int64_t max_blocks_ = 0;
  std::vector<Layer> layers_;
};

}  // namespace foresight::predictor
