// SnapKV (Li et al.): the last `snapkv_window` prompt queries vote (their attention mass per block,
// summed) and the selection of prompt blocks is fixed at prefill. Blocks written during decode are
// outside what SnapKV compresses: once they leave the local window they are kept first, displacing
// the lowest-voted prompt blocks, so the budget holds.
#include <algorithm>
#include <limits>
#include <string>

#include "predictor/policies/block_scoring_policy.h"
#include "predictor/policies/policy_factories.h"

namespace foresight::predictor {
namespace {

class SnapKVPolicy final : public BlockScoringPolicy {
 public:
  SnapKVPolicy(const PolicySpec& spec, const LayerGeometry& g)
      : BlockScoringPolicy(spec, g), window_(spec.snapkv_window) {}
  std::string_view name() const override { return "snapkv"; }
  PolicyNeeds needs() const override { return {}; }

  Status ObservePrefill(const PrefillObservation& prefill) override {
    const int64_t nb = (prefill.prompt_tokens + budget_.block_tokens - 1) / budget_.block_tokens;
    const size_t q = geometry_.q_heads, rows = prefill.rows;
    if (prefill.block_sum.size() != q * rows * nb) {
      return InvalidArgument("snapkv: prefill block_sum must hold q_heads x rows x prompt blocks");
    }
    prompt_blocks_ = nb;
    votes_.assign(q, std::vector<float>(nb, 0.0f));
    const size_t first = rows - std::min<size_t>(rows, std::max(1, window_));
    for (size_t h = 0; h < q; ++h) {
      for (size_t r = first; r < rows; ++r) {
        const float* row = &prefill.block_sum[(h * rows + r) * nb];
        for (int64_t b = 0; b < nb; ++b) votes_[h][b] += row[b];
      }
    }
    step_ = 0;
    return Status::OK();
  }

 protected:
  Status PrepareScores(const StepInputs&, const CandidateWindow&) override {
    if (votes_.empty()) return FailedPrecondition("snapkv: Select before ObservePrefill");
    return Status::OK();
  }
  void ScoreCandidates(const StepInputs&, const CandidateWindow& window, int q_head, float* scores) override {
    for (int64_t i = 0; i < window.num_candidates(); ++i) {
      const int64_t b = window.candidate_begin() + i;
      scores[i] = b < prompt_blocks_ ? votes_[q_head][b] : std::numeric_limits<float>::max();
    }
  }

 private:
  int window_;
  int64_t prompt_blocks_ = 0;
  std::vector<std::vector<float>> votes_;  // [q_heads][prompt blocks]
};

}  // namespace

StatusOr<std::unique_ptr<SelectionPolicy>> MakeSnapKVPolicy(const PolicySpec& spec, const LayerGeometry& g) {
  return std::unique_ptr<SelectionPolicy>(new SnapKVPolicy(spec, g));
}

}  // namespace foresight::predictor
