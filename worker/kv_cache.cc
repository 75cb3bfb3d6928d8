#include "worker/kv_cache.h"

#include <algorithm>

namespace foresight::worker {

KvCache::KvCache(int32_t n_layers, int32_t kv_heads, int32_t head_dim, int32_t block_tokens)
    : layout_(block_tokens, kv_heads, head_dim, sizeof(uint16_t)),
      head_dim_(head_dim),
      block_elems_(static_cast<int64_t>(layout_.block_bytes() / sizeof(uint16_t))),
      layers_(n_layers) {
  for (int32_t h = 0; h < kv_heads; ++h) {
    k_off_.push_back(static_cast<int64_t>(layout_.k_offset(h, 0) / sizeof(uint16_t)));
    v_off_.push_back(static_cast<int64_t>(layout_.v_offset(h, 0) / sizeof(uint16_t)));
  }
}

void KvCache::Resize(int64_t tokens) { Grow(tokens, /*zeroed=*/true); }

void KvCache::ResizeForOverwrite(int64_t tokens) { Grow(tokens, /*zeroed=*/false); }

void KvCache::Grow(int64_t tokens, bool zeroed) {
  tokens_ = tokens;
  const int64_t n_blocks = blocks();
  for (auto& layer : layers_) {
    if (static_cast<int64_t>(layer.size()) > n_blocks) layer.resize(n_blocks);
    layer.reserve(n_blocks);
    for (int64_t b = static_cast<int64_t>(layer.size()); b < n_blocks; ++b) {
      // make_unique value-initialises (zeros); the other leaves the bytes to the caller.
      layer.push_back(zeroed ? std::make_unique<uint16_t[]>(block_elems_)
                             : std::make_unique_for_overwrite<uint16_t[]>(block_elems_));
    }
  }
}

void KvCache::RestoreBlock(int32_t layer, int64_t block) {
  if (layers_[layer][block] == nullptr) layers_[layer][block] = std::make_unique<uint16_t[]>(block_elems_);
}

uint64_t KvCache::resident_bytes() const {
  uint64_t n = 0;
  for (const auto& layer : layers_) {
    for (const auto& b : layer) n += b != nullptr ? block_elems_ * sizeof(uint16_t) : 0;
  }
  return n;
}

}  // namespace foresight::worker
