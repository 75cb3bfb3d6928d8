// BlockLayout: where each KV head's K and V sit inside one block's bytes.
//
// A block holds `block_tokens` tokens of one layer for every KV head. Bytes are ordered head-major:
//   [head 0: K[tokens][head_dim], V[tokens][head_dim]] [head 1: K..., V...] ...
// so one KV head's K and V form one contiguous range, and a per-head fetch is one remote read.
// Thread-safety: value type.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/status.h"

namespace foresight {

struct ByteRange {
  uint64_t offset = 0;
  uint64_t length = 0;
  friend bool operator==(const ByteRange&, const ByteRange&) = default;
};

class BlockLayout {
 public:
  BlockLayout(uint32_t block_tokens, uint32_t kv_heads, uint32_t head_dim, uint32_t elem_bytes)
      : block_tokens_(block_tokens), kv_heads_(kv_heads), head_dim_(head_dim), elem_bytes_(elem_bytes) {}

  uint32_t block_tokens() const { return block_tokens_; }
  uint32_t kv_heads() const { return kv_heads_; }
  uint32_t head_dim() const { return head_dim_; }
  uint32_t elem_bytes() const { return elem_bytes_; }

  // K then V of one head.
  uint64_t head_bytes() const { return 2ull * block_tokens_ * head_dim_ * elem_bytes_; }
  uint64_t block_bytes() const { return head_bytes() * kv_heads_; }
  ByteRange head_range(uint32_t head) const { return {head * head_bytes(), head_bytes()}; }
  // Heads [first, first + count) are also one contiguous range.
  ByteRange heads_range(uint32_t first, uint32_t count) const { return {first * head_bytes(), count * head_bytes()}; }
  uint64_t k_offset(uint32_t head, uint32_t token) const {
    return head * head_bytes() + uint64_t{token} * head_dim_ * elem_bytes_;
  }
  uint64_t v_offset(uint32_t head, uint32_t token) const {
    return head * head_bytes() + (uint64_t{block_tokens_} + token) * head_dim_ * elem_bytes_;
  }

 private:
  uint32_t block_tokens_, kv_heads_, head_dim_, elem_bytes_;
};

}  // namespace foresight
