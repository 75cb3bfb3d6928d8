#include "predictor/key_digests.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace foresight::predictor {

KeyDigests::KeyDigests(int kv_heads, int head_dim, int block_tokens)
    : kv_heads_(kv_heads), head_dim_(head_dim), block_tokens_(block_tokens) {}

StatusOr<KeyDigests> KeyDigests::FromArray(int kv_heads, int head_dim, int block_tokens, int64_t tokens,
                                           std::vector<float> data) {
  if (kv_heads <= 0 || head_dim <= 0 || block_tokens <= 0 || tokens < 0) {
    return InvalidArgument("key digests: kv_heads, head_dim and block_tokens must be positive");
  }
  KeyDigests d(kv_heads, head_dim, block_tokens);
  d.tokens_ = tokens;
  const size_t expected = static_cast<size_t>(d.num_blocks()) * kv_heads * 2 * head_dim;
  if (data.size() != expected) {
    return InvalidArgument("key digests: expected " + std::to_string(expected) + " floats for " +
                           std::to_string(tokens) + " tokens, got " + std::to_string(data.size()));
  }
  d.data_ = std::move(data);
  return d;
}

void KeyDigests::AppendToken(std::span<const float> keys) {
  const int64_t block = tokens_ / block_tokens_;
  const bool first_in_block = tokens_ % block_tokens_ == 0;
  if (first_in_block) data_.resize(data_.size() + static_cast<size_t>(kv_heads_) * 2 * head_dim_);
  for (int h = 0; h < kv_heads_; ++h) {
    float* lo = &data_[Offset(h, block)];
    float* hi = lo + head_dim_;
    const float* k = keys.data() + static_cast<size_t>(h) * head_dim_;
    for (int c = 0; c < head_dim_; ++c) {
      lo[c] = first_in_block ? k[c] : std::min(lo[c], k[c]);
      hi[c] = first_in_block ? k[c] : std::max(hi[c], k[c]);
    }
  }
  ++tokens_;
}

float KeyDigests::UpperBound(int kv_head, int64_t block, const float* query) const {
  const float* lo = min(kv_head, block);
  const float* hi = max(kv_head, block);
  float bound = 0.0f;
  for (int c = 0; c < head_dim_; ++c) bound += std::max(query[c] * lo[c], query[c] * hi[c]);
  return bound;
}

}  // namespace foresight::predictor
