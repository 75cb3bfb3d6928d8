// KeyDigests: per KV head and key block, the per-channel minimum and maximum of the (post-RoPE)
// keys: what Quest scores a block by (upper bound of q.k over the block) and what a trace records
// so Quest can be replayed offline.
//
// A block's digest is final once its `block_tokens` keys have been appended; the partial last
// block is always inside the local window, so policies only read complete blocks.
//
// Thread-safety: not thread-safe for writers; concurrent const readers are fine.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/status.h"

namespace foresight::predictor {

class KeyDigests {
 public:
  KeyDigests() = default;
  KeyDigests(int kv_heads, int head_dim, int block_tokens);

  // Adopts digests laid out [blocks, kv_heads, 2, head_dim] (min row, then max row), as a trace
  // stores them, covering `tokens` keys.
  static StatusOr<KeyDigests> FromArray(int kv_heads, int head_dim, int block_tokens, int64_t tokens,
                                        std::vector<float> data);

  // Appends one token's keys, [kv_heads, head_dim].
  void AppendToken(std::span<const float> keys);

  int kv_heads() const { return kv_heads_; }
  int head_dim() const { return head_dim_; }
  int block_tokens() const { return block_tokens_; }
  int64_t tokens() const { return tokens_; }
  int64_t num_blocks() const { return (tokens_ + block_tokens_ - 1) / block_tokens_; }
  int64_t complete_blocks() const { return tokens_ / block_tokens_; }

  const float* min(int kv_head, int64_t block) const { return &data_[Offset(kv_head, block)]; }
  const float* max(int kv_head, int64_t block) const { return &data_[Offset(kv_head, block) + head_dim_]; }
  // Quest's bound: sum over channels of max(q_c * min_c, q_c * max_c) >= q . k for every key k
  // of the block.
  float UpperBound(int kv_head, int64_t block, const float* query) const;

  // [num_blocks, kv_heads, 2, head_dim], the trace layout.
  const std::vector<float>& data() const { return data_; }

 private:
  size_t Offset(int kv_head, int64_t block) const {
    return (static_cast<size_t>(block) * kv_heads_ + kv_head) * 2 * head_dim_;
  }
  int kv_heads_ = 0;
  int head_dim_ = 0;
  int block_tokens_ = 16;
  int64_t tokens_ = 0;
  std::vector<float> data_;  // [blocks, kv_heads, 2, head_dim]: appending a block is a resize
};

}  // namespace foresight::predictor
