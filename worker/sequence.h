// Sequence: one running generation on a Model on the CPU: its KV cache (blocks of 16 tokens) and
// attention. It is the CPU backend's per-sequence state (NewCpuBackend, worker/backend.h), stepped
// only by BatchForward; callers run it as a BackendSequence. A step of several tokens is a prefill
// chunk with dense causal attention; a step of one token (no observer) decodes and may attend only
// selected KV blocks per layer and KV head (sparse decode).
//
// BatchForward runs one forward step over several sequences of one Model at once (continuous
// batching, worker/service/scheduler.h): their token rows go through each weight matrix together,
// and attention runs per sequence, each with its own hook and block source. A sequence alone is a
// batch of one (BackendSequence's Prefill and Decode), so every path runs the same code. Each row's
// arithmetic does not depend on the other rows of its step (the weight products are per row,
// worker/weight_matrix.h), so a sequence's logits are the same alone and batched, bit for bit, on
// the Q4/Q8 models the engine serves (for other weight types, see WeightMatrix: many rows take the
// sgemm path).
//
// Thread-safety: none; one thread drives a Sequence or a BatchForward (the kernels use all cores
// through OpenMP).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "common/status.h"
#include "worker/kv_cache.h"
#include "worker/model.h"
#include "worker/transformer_kernels.h"

namespace foresight::worker {

// Chooses, per layer, which KV blocks each KV head attends in a decode step, and hears back how
// attention fell. Implemented over predictor/ policies (worker/policy_attention.h).
class DecodeAttentionHook {
 public:
  virtual ~DecodeAttentionHook() = default;
  // Before layer `layer` attends: `queries` are the roped queries [n_heads x head_dim] of the new
  // token at `position`, whose KV is already in the cache (n_blocks blocks). Fill `blocks` (one
  // ascending list per KV head) and return true, or return false to attend densely.
  virtual bool SelectBlocks(int32_t layer, int64_t position, const float* queries, const KvCache& kv,
                            std::vector<std::vector<int32_t>>* blocks) = 0;
  // After attention, per query head over the sequence's n_blocks blocks: the max probability and
  // the probability mass in each block, [n_heads x n_blocks] each (0 where not attended).
  // `queries` as in SelectBlocks; `dense` tells whether every block was attended.
  virtual void OnAttention(int32_t layer, int64_t position, const float* queries, bool dense, const float* block_max,
                           const float* block_sum, int64_t n_blocks) {}
  // Query lookahead: when true, while layer l (< n_layers - 1) of a decode step computes, the hook
  // hears OnLookaheadQuery(l + 1, ...) with layer l + 1's queries estimated from layer l's input (its
  // attention norm, Wq and RoPE applied to the residual stream one layer early: the stream changes
  // little between adjacent layers, as InfiniGen observed), before layer l's SelectBlocks.
  virtual bool WantsLookaheadQueries() const { return false; }
  virtual void OnLookaheadQuery(int32_t layer, int64_t position, const float* queries) {}
};

// Hears every causal softmax row of a dense prefill (e.g. predictor::PrefillRecorder). Called
// concurrently for different query heads; rows of one head arrive in query order.
class PrefillAttentionObserver {
 public:
  virtual ~PrefillAttentionObserver() = default;
  // `probs`: the row of prompt query `query` over keys 0..query (query + 1 values).
  virtual void OnRow(int32_t layer, int32_t q_head, int64_t query, const float* probs) = 0;
};

// Where decode attention reads KV blocks that the Sequence's own KvCache no longer holds (offload:
// worker/offload/offloaded_sequence.h). Called on the Sequence's thread, once per layer and step.
class KvBlockSource {
 public:
  virtual ~KvBlockSource() = default;
  // Before layer `layer` attends `blocks` (ascending, per KV head) for the token at `position`:
  // fill heads[kvh][i] with the bytes of KV head kvh of block blocks[kvh][i] (K then V, as
  // BlockLayout::head_range), or nullptr to read the Sequence's KvCache (which must then hold the
  // block). Those bytes stay valid until ReleaseLayer. An error fails the step: attention never
  // runs over KV that could not be had.
  virtual Status AcquireLayer(int32_t layer, int64_t position, const std::vector<std::vector<int32_t>>& blocks,
                              std::vector<std::vector<const uint16_t*>>* heads) = 0;
  // After the layer's attention (the hook's OnAttention has run): the bytes may be reused.
  virtual void ReleaseLayer(int32_t layer, int64_t position) = 0;
};

struct SequenceStats {
  int64_t prefill_tokens = 0;
  double prefill_seconds = 0;
  int64_t decode_tokens = 0;
  double decode_seconds = 0;
  double attention_seconds = 0;  // decode attention only
  int64_t blocks_attended = 0;   // over decode steps, layers and KV heads
  int64_t blocks_total = 0;      // what dense attention would have read
};

// One causal row of prefill attention, as both backends' prefills report it to a
// PrefillAttentionObserver: the softmax of query `q` (head_dim values, already rounded to half)
// over the keys at positions 0..visible-1 of KV head `kv_head` of layer `layer`, scaled by
// 1/sqrt(head_dim), in row[0..visible), rounded to half. Half dot products in llama.cpp's order
// (worker/transformer_kernels.h). Every block up to `visible` must be in `kv`.
void PrefillAttentionRow(const KvCache& kv, int32_t layer, int32_t kv_head, const float* q, int64_t visible,
                         float* row);

class Sequence;

// What one sequence does in a forward step, whichever kind of sequence it is (ForwardItem below;
// StepItem over any backend's sequences, worker/backend.h).
struct StepWork {
  const TokenId* tokens = nullptr;
  int64_t n = 0;            // 1 without an observer: a decode step (the hook may make it sparse); else dense
  float* logits = nullptr;  // the last token's logits [vocab] (every token's with all_logits); null: none
  bool all_logits = false;
  DecodeAttentionHook* hook = nullptr;           // decode only; null: dense
  KvBlockSource* source = nullptr;               // decode only; null: the KvCache
  PrefillAttentionObserver* observer = nullptr;  // dense chunks only
  bool prefill = false;                          // counted as prefill (else decode) in the sequence's statistics
  Status status;                                 // set by Run: OK when the sequence advanced by n tokens
};

// One sequence's part of a BatchForward step.
struct ForwardItem : StepWork {
  Sequence* sequence = nullptr;
};

class BatchForward {
 public:
  explicit BatchForward(const Model& model) : model_(model) {}
  // Advances every item's sequence by its tokens. Items must name distinct sequences of this
  // Model. An item that fails (a bad token, the context full, a block its source cannot supply)
  // gets its error and leaves its sequence as it was; the others go on.
  void Run(std::vector<ForwardItem>* items);

 private:
  const Model& model_;
  // Scratch for the step's rows, reused across calls.
  std::vector<float> x_, h_, q_, k_, v_, att_, gate_, up_, gemm_, logits_, look_h_, look_q_;
  std::vector<int32_t> row_item_;  // the item of each row
  std::vector<int64_t> row_pos_;   // its position in that item's sequence
  // Per item: its first row, its first position, whether it decodes (one row, no observer).
  std::vector<int64_t> first_, p0_;
  std::vector<char> decode_;
  std::vector<char> looks_;        // per item: it hears lookahead queries this layer
  std::vector<int64_t> decoding_;  // the items that decode
  std::vector<int64_t> out_rows_;  // the rows whose logits are wanted
  std::vector<float*> out_dest_;   // and where they go
};

class Sequence {
 public:
  // An empty sequence; BatchForward steps it.
  explicit Sequence(const Model& model);

  // Shared prefixes: makes an empty sequence `n_blocks` full blocks long with KV it did not compute.
  // `fill(layer, dests)` is called once per layer with the n_blocks destinations of that layer's
  // blocks (layout().block_bytes() each, not zeroed first) and writes every byte of them (e.g.
  // fetched from the cache service, checksum-verified), or fails. The sequence then continues at
  // n_blocks * block_tokens exactly as if it had prefilled those tokens (the KV is the same bytes a
  // prefill would write). On error the sequence is left empty.
  Status ImportKv(int64_t n_blocks,
                  const std::function<Status(int32_t layer, const std::vector<uint8_t*>& dests)>& fill);

  // Tests: prefill attention a row at a time, as before the tiled kernels (the same bits).
  void TEST_set_row_at_a_time_prefill(bool on) { row_at_a_time_ = on; }

  int64_t position() const { return kv_.tokens(); }
  // Forgets everything from `position` on.
  void Rewind(int64_t position) { kv_.Resize(position); }
  const KvCache& kv() const { return kv_; }
  // Offload only (the CPU backend's DropBlocks, worker/backend.h): drops blocks whose bytes live in
  // the cache service.
  KvCache& mutable_kv() { return kv_; }
  // Benchmarks only: makes the sequence `tokens` long with random keys and values and no prefill
  // (decode speed at contexts whose prefill would take hours on a CPU). Never quality.
  void TEST_FillRandomKv(int64_t tokens, uint32_t seed);
  const SequenceStats& stats() const { return stats_; }
  void ResetStats() { stats_ = {}; }

 private:
  friend class BatchForward;
  // The checks BatchForward::Run makes before a step: context, token ids, resident history.
  Status CheckStep(const ForwardItem& item) const;
  void ChunkAttention(int32_t layer, int64_t n, int64_t p0, const float* q, float* out,
                      PrefillAttentionObserver* observer);
  // ChunkAttention in tasks of one KV head and a few query positions (with an observer, each KV
  // head's tasks in order on one thread), the same bits as a row at a time.
  void ChunkAttentionTiled(int32_t layer, int64_t n, int64_t p0, const float* q, float* out,
                           PrefillAttentionObserver* observer);
  Status DecodeAttention(int32_t layer, int64_t pos, const float* q, float* out, DecodeAttentionHook* hook,
                         KvBlockSource* source);

  const ModelConfig& c_;
  Rope rope_;
  KvCache kv_;
  SequenceStats stats_;
  // Attention scratch, reused across calls.
  std::vector<float> scores_, pooled_, pooled_sum_;
  // Per query head, DecodeAttention's 16-lane value sums, positions used per selected block, and
  // each selected block's values.
  std::vector<std::vector<float>> lanes_;
  std::vector<std::vector<int32_t>> counts_;
  std::vector<std::vector<const uint16_t*>> values_;
  std::vector<std::vector<int32_t>> selected_;
  std::vector<std::vector<const uint16_t*>> heads_;
  // ChunkAttentionTiled's scratch, one per OpenMP thread: scores and lane sums, the blocks' counts
  // and values, and per query row its query, scores row, lanes and current block.
  struct TileScratch {
    std::vector<float> floats;
    std::vector<int32_t> counts;
    std::vector<const uint16_t*> values;
    std::vector<const float*> queries;
    std::vector<float*> rows, lanes, probs;
  };
  std::vector<TileScratch> tile_scratch_;
  bool row_at_a_time_ = false;
};

}  // namespace foresight::worker
