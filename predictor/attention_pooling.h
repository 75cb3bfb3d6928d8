// Pooling of attention rows over key blocks: what the model hands to a SelectionPolicy and to a
// TraceWriter. A block's max is what the AttentionPredictor history holds (the published method
// max-pools over 16-token blocks); a block's sum (its attention mass) is what H2O and SnapKV
// accumulate and what the recovery rate counts.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <span>

namespace foresight::predictor {

// `probs` holds one softmax row over `probs.size()` keys. Writes ceil(size / block_tokens) values
// to block_max and block_sum (either may be empty to skip it); keys past the row's end count as 0
// (the published zero padding to a multiple of block_tokens).
void PoolAttentionRow(std::span<const float> probs, int block_tokens, std::span<float> block_max,
                      std::span<float> block_sum);

}  // namespace foresight::predictor
