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

void KvCache::Resize(int64_t tokens) {
  tokens_ = tokens;
  const int64_t n_blocks = (tokens + block_tokens() - 1) / block_tokens();
  for (auto& layer : layers_) {
    if (static_cast<int64_t>(layer.size()) < n_blocks * block_elems_) {
      // Grow geometrically so appending one token at a time stays amortised O(1).
      const size_t want = static_cast<size_t>(n_blocks * block_elems_);
      if (layer.capacity() < want) layer.reserve(std::max(want, layer.capacity() * 2));
      layer.resize(want, 0);
    }
  }
}

}  // namespace foresight::worker
