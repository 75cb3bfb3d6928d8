#include "predictor/prefill_recorder.h"

#include <algorithm>

#include "predictor/attention_pooling.h"
#include "predictor/trace.h"

namespace foresight::predictor {

PrefillRecorder::PrefillRecorder(int q_heads, int64_t prompt_tokens, int block_tokens)
    : q_heads_(q_heads),
      prompt_tokens_(prompt_tokens),
      block_tokens_(block_tokens),
      rows_(std::min<int64_t>(prompt_tokens, kHistoryRows)),
      blocks_((prompt_tokens + block_tokens - 1) / block_tokens),
      block_max_(static_cast<size_t>(q_heads) * rows_ * blocks_),
      block_sum_(block_max_.size()),
      block_sum_total_(q_heads * blocks_, 0.0f) {}

void PrefillRecorder::AddRow(int q_head, int64_t query, std::span<const float> probs) {
  const int64_t n = std::min<int64_t>(static_cast<int64_t>(probs.size()), prompt_tokens_);
  const int64_t nb = (n + block_tokens_ - 1) / block_tokens_;
  const int64_t row = query - (prompt_tokens_ - rows_);
  if (row >= 0) {
    float* mx = &block_max_[(q_head * rows_ + row) * blocks_];
    float* sum = &block_sum_[(q_head * rows_ + row) * blocks_];
    PoolAttentionRow(probs.first(n), block_tokens_, std::span<float>(mx, nb), std::span<float>(sum, nb));
    AddToTotal(q_head, std::span<const float>(sum, nb));
    return;
  }
  std::vector<float> sum(nb);
  PoolAttentionRow(probs.first(n), block_tokens_, {}, sum);
  AddToTotal(q_head, sum);
}

void PrefillRecorder::AddPooledRow(int q_head, int64_t query, std::span<const float> block_max,
                                   std::span<const float> block_sum) {
  const int64_t n = std::min<int64_t>(query + 1, prompt_tokens_);
  const int64_t nb = std::min<int64_t>((n + block_tokens_ - 1) / block_tokens_, static_cast<int64_t>(block_sum.size()));
  const int64_t row = query - (prompt_tokens_ - rows_);
  if (row >= 0) {
    std::copy_n(block_max.data(), nb, &block_max_[(q_head * rows_ + row) * blocks_]);
    std::copy_n(block_sum.data(), nb, &block_sum_[(q_head * rows_ + row) * blocks_]);
  }
  AddToTotal(q_head, block_sum.first(nb));
}

void PrefillRecorder::AddToTotal(int q_head, std::span<const float> sum) {
  float* total = &block_sum_total_[q_head * blocks_];
  for (size_t b = 0; b < sum.size(); ++b) total[b] += sum[b];
}

PrefillObservation PrefillRecorder::Observation() const {
  PrefillObservation p;
  p.prompt_tokens = prompt_tokens_;
  p.rows = rows_;
  p.block_max = block_max_.span();
  p.block_sum = block_sum_.span();
  p.block_sum_total = block_sum_total_;
  return p;
}

}  // namespace foresight::predictor
