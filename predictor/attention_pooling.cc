#include "predictor/attention_pooling.h"

#include <algorithm>

namespace foresight::predictor {

void PoolAttentionRow(std::span<const float> probs, int block_tokens, std::span<float> block_max,
                      std::span<float> block_sum) {
  const int64_t n = static_cast<int64_t>(probs.size());
  const int64_t blocks = (n + block_tokens - 1) / block_tokens;
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = b * block_tokens;
    const int64_t end = std::min(n, begin + block_tokens);
    float mx = 0.0f;  // zero padding: probabilities are never negative
    float sum = 0.0f;
    for (int64_t i = begin; i < end; ++i) {
      mx = std::max(mx, probs[i]);
      sum += probs[i];
    }
    if (!block_max.empty()) block_max[b] = mx;
    if (!block_sum.empty()) block_sum[b] = sum;
  }
}

}  // namespace foresight::predictor
