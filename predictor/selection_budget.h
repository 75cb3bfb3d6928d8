// SelectionBudget and CandidateWindow: how a token budget splits into sink, local and predicted
// blocks, shared by every selection policy so that all of them are compared on the same terms.
//
// A budget counts every attended token, sink and local included (as in the AttentionPredictor
// paper). Selection is at block granularity (`block_tokens`, default 16, the predictor's pooling
// block). For a key length of n tokens:
//   - sink blocks:  [0, sink_blocks) with sink_blocks = ceil(sink_tokens / block_tokens);
//   - local blocks: [first_local_block, num_blocks), the blocks holding any of the last
//     `local_tokens` tokens (so the local region is local_tokens .. local_tokens + block_tokens - 1
//     tokens long; the last block, holding the current token, is always local);
//   - candidate blocks: [sink_blocks, first_local_block), the ones a policy ranks;
//   - a policy keeps predicted_blocks = (budget - sink - local) / block_tokens candidates. With fewer
//     than 3 candidates, or when the budget covers them all, every candidate is kept.
//
// Thread-safety: plain values.
#pragma once

#include <algorithm>
#include <cstdint>

namespace foresight::predictor {

struct SelectionBudget {
  int64_t budget_tokens = 1024;  // every attended token, sink and local included
  int64_t sink_tokens = 64;
  int64_t local_tokens = 64;
  int64_t block_tokens = 16;

  // Number of candidate blocks a policy may add beyond sink and local (never negative).
  int64_t PredictedBlocks() const {
    return std::max<int64_t>(0, (budget_tokens - sink_tokens - local_tokens) / block_tokens);
  }
};

// The block ranges of one decode step with `key_tokens` keys (the current token's key included).
struct CandidateWindow {
  int64_t num_blocks = 0;         // ceil(key_tokens / block_tokens)
  int64_t sink_blocks = 0;        // blocks [0, sink_blocks) are always attended
  int64_t first_local_block = 0;  // blocks [first_local_block, num_blocks) are always attended
  int64_t keep_blocks = 0;        // how many candidates the policy keeps

  int64_t candidate_begin() const { return sink_blocks; }
  int64_t candidate_end() const { return first_local_block; }
  int64_t num_candidates() const { return first_local_block - sink_blocks; }
  // True when the policy has nothing to choose: every candidate is kept.
  bool KeepsAllCandidates() const { return keep_blocks >= num_candidates(); }

  static CandidateWindow For(int64_t key_tokens, const SelectionBudget& budget) {
    CandidateWindow w;
    const int64_t b = budget.block_tokens;
    w.num_blocks = (key_tokens + b - 1) / b;
    w.sink_blocks = std::min(w.num_blocks, (budget.sink_tokens + b - 1) / b);
    const int64_t local_start_token = std::max<int64_t>(0, key_tokens - budget.local_tokens);
    // The block holding the current token is always attended, even with no local window.
    w.first_local_block = std::max(w.sink_blocks, std::min(local_start_token / b, w.num_blocks - 1));
    const int64_t candidates = w.first_local_block - w.sink_blocks;
    // Fewer than 3 candidates: ranking them is noise; the published method keeps them all.
    w.keep_blocks = candidates < 3 ? candidates : std::min(candidates, budget.PredictedBlocks());
    return w;
  }
};

}  // namespace foresight::predictor
