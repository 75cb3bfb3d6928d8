// KvCache: one sequence's keys and values, per layer, in blocks of `block_tokens` (16) tokens laid
// out as common/block_layout.h says (head-major: one KV head's K then V contiguous), IEEE half
// elements (as llama.cpp's default cache: half the memory and traffic of float32). A block's bytes
// are exactly what the cache service stores for (sequence, layer, block).
//
// Each block is its own allocation, so that an offloading worker can drop blocks whose bytes live in
// the cache service (DropBlock) and really give the memory back. Reading a dropped block is a bug
// (its pointer is null); callers check resident() first.
//
// Thread-safety: none; owned by one Sequence. Distinct layers/heads may be written concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "common/block_layout.h"

namespace foresight::worker {

class KvCache {
 public:
  static constexpr int32_t kBlockTokens = 16;  // the default, which every sequence uses
  KvCache(int32_t n_layers, int32_t kv_heads, int32_t head_dim, int32_t block_tokens = kBlockTokens);

  const BlockLayout& layout() const { return layout_; }
  int32_t n_layers() const { return static_cast<int32_t>(layers_.size()); }
  int32_t block_tokens() const { return static_cast<int32_t>(layout_.block_tokens()); }
  int64_t tokens() const { return tokens_; }
  int64_t blocks() const { return (tokens_ + block_tokens() - 1) / block_tokens(); }

  // Grows (or shrinks: rewinding a sequence) to hold `tokens` positions. Growing allocates every
  // new block (zeroed); dropped blocks below the old end stay dropped.
  void Resize(int64_t tokens);
  // Resize for a caller that writes every byte of each new block before anything reads it (a
  // prefix import: whole blocks from the cache service): the new blocks are not zeroed. A 7K-token
  // import is 13K blocks, 165 MB for SmolLM2, written twice otherwise.
  void ResizeForOverwrite(int64_t tokens);

  uint16_t* key(int32_t layer, int32_t head, int64_t pos) {
    return at(layer, pos) + k_off_[head] + (pos % block_tokens()) * head_dim_;
  }
  uint16_t* value(int32_t layer, int32_t head, int64_t pos) {
    return at(layer, pos) + v_off_[head] + (pos % block_tokens()) * head_dim_;
  }
  const uint16_t* key(int32_t layer, int32_t head, int64_t pos) const {
    return const_cast<KvCache*>(this)->key(layer, head, pos);
  }
  const uint16_t* value(int32_t layer, int32_t head, int64_t pos) const {
    return const_cast<KvCache*>(this)->value(layer, head, pos);
  }
  // The bytes of one block (layout().block_bytes() long); null when dropped.
  const uint8_t* block_data(int32_t layer, int64_t block) const {
    return reinterpret_cast<const uint8_t*>(layers_[layer][block].get());
  }
  uint8_t* mutable_block_data(int32_t layer, int64_t block) {
    return reinterpret_cast<uint8_t*>(layers_[layer][block].get());
  }

  // Offload: frees one block of one layer (its bytes live elsewhere now), or brings back storage
  // for it (zeroed) before it is filled again.
  void DropBlock(int32_t layer, int64_t block) { layers_[layer][block].reset(); }
  void RestoreBlock(int32_t layer, int64_t block);
  bool resident(int32_t layer, int64_t block) const { return layers_[layer][block] != nullptr; }
  // Bytes of block storage currently held, all layers.
  uint64_t resident_bytes() const;

 private:
  uint16_t* at(int32_t layer, int64_t pos) { return layers_[layer][pos / block_tokens()].get(); }
  void Grow(int64_t tokens, bool zeroed);

  BlockLayout layout_;
  int32_t head_dim_;
  int64_t block_elems_;
  std::vector<int64_t> k_off_, v_off_;  // per head, in elements within a block
  int64_t tokens_ = 0;
  std::vector<std::vector<std::unique_ptr<uint16_t[]>>> layers_;  // [layer][block]
};

}  // namespace foresight::worker
