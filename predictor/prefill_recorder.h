// PrefillRecorder: turns a dense prefill's causal softmax rows, one query at a time, into the
// PrefillObservation every policy starts from (and a trace records): the last min(64, P) rows
// pooled per block (max and mass) and the mass per block summed over all prompt queries.
//
//   PrefillRecorder recorder(q_heads, prompt_tokens);
//   for each query head h, prompt position i: recorder.AddRow(h, i, softmax_row_of_i);  // i+1 keys
//   FS_RETURN_IF_ERROR(policy->ObservePrefill(recorder.Observation()));
//
// Thread-safety: AddRow for different query heads may run concurrently (disjoint memory); rows of
// one head must not. Observation() after all rows are added.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/zeroed_floats.h"
#include "predictor/selection_policy.h"

namespace foresight::predictor {

class PrefillRecorder {
 public:
  PrefillRecorder(int q_heads, int64_t prompt_tokens, int block_tokens = 16);

  // `probs`: the softmax row of prompt query `query` over keys 0..query (query + 1 values).
  void AddRow(int q_head, int64_t query, std::span<const float> probs);
  // The same row already pooled (PoolAttentionRow of its probs: max and sum over the
  // ceil((query + 1) / block_tokens) blocks it sees), e.g. kept from an earlier prompt sharing
  // positions 0..query. Interchangeable with AddRow: the recorder ends up bit-identical.
  void AddPooledRow(int q_head, int64_t query, std::span<const float> block_max, std::span<const float> block_sum);

  // Views into this recorder; valid while it lives.
  PrefillObservation Observation() const;

  int64_t rows() const { return rows_; }
  int64_t blocks() const { return blocks_; }

 private:
  // Adds one row's block sums (over the blocks it sees) to block_sum_total_.
  void AddToTotal(int q_head, std::span<const float> sum);

  int q_heads_;
  int64_t prompt_tokens_;
  int block_tokens_;
  int64_t rows_;
  int64_t blocks_;
  ZeroedFloats block_max_;              // [q_heads, rows, blocks] (calloc: 2 MB a layer at 7K tokens)
  ZeroedFloats block_sum_;              // [q_heads, rows, blocks]
  std::vector<float> block_sum_total_;  // [q_heads, blocks]
};

}  // namespace foresight::predictor
