// CompactKeyCopy: one layer's keys in 8 bits (Q8_0: blocks of 32 int8 values with a half-precision
// scale, head_dim * 17/16 bytes per token and KV head, about a quarter of the K+V bytes), kept on
// the worker so that the served AttentionPredictor can estimate every step's attention over the
// whole context without the full keys: the query, also in 8 bits, against every key (integer dot
// products), softmax, pooled per 16-token block. A head_dim that is not a multiple of 32 is
// zero-padded.
//
// Why its own kernel: with head_dim 64 a key row is two Q8_0 blocks, so a general row-dot kernel
// spends most of its time on per-row overhead (a horizontal sum, a scale per block). Here keys are
// laid out per KV head, the group's query heads share each loaded key, and eight keys' integer sums
// are folded together. Values equal a plain dequantise-and-multiply (CompactKeyCopyTest).
//
// Thread-safety: none; DenseRow and Logits use OpenMP threads internally.
#pragma once

#include <cstdint>
#include <vector>

#include "worker/kv_cache.h"
#include "worker/quantized_kernels.h"

namespace foresight::worker {

class CompactKeyCopy {
 public:
  CompactKeyCopy(int32_t n_heads, int32_t kv_heads, int32_t head_dim);

  // Quantises layer `layer`'s keys of positions [tokens(), upto) from `kv`.
  void Append(const KvCache& kv, int32_t layer, int64_t upto);
  // Appends one token's keys, [kv_heads x head_dim] floats.
  void AppendToken(const float* keys);
  int64_t tokens() const { return tokens_; }
  uint64_t bytes() const;

  // logits[h * ctx + p] = (query of head h, in 8 bits) . (key p of h's KV head) / sqrt(head_dim)
  // for the first `ctx` keys; queries are [n_heads x head_dim] floats.
  void Logits(const float* queries, int64_t ctx, std::vector<float>* logits);
  // Per query head over the first `ctx` keys: the softmax of Logits pooled per 16-token block,
  // block max and block sum, [n_heads x ceil(ctx/16)].
  void DenseRow(const float* queries, int64_t ctx, std::vector<float>* block_max, std::vector<float>* block_sum);

 private:
  void QuantizeQueries(const float* queries);  // into query_q8_
  int64_t LogitTasks(int64_t ctx) const;
  void LogitTask(int64_t task, int64_t ctx, float* logits) const;
  int64_t Blocks() const { return (head_dim_ + 31) / 32; }  // Q8_0 blocks per key row
  int64_t PaddedDim() const { return Blocks() * 32; }

  int32_t n_heads_, kv_heads_, head_dim_;
  int64_t tokens_ = 0;
  // Per KV head: int8 values [token][padded_dim], and scales [block][token] (so that eight tokens'
  // scales of one block are one load).
  std::vector<std::vector<int8_t>> values_;
  std::vector<std::vector<std::vector<float>>> scales_;
  std::vector<float> key_row_, token_keys_, logits_;
  std::vector<Q8Activations> query_q8_, key_q8_;
};

}  // namespace foresight::worker
