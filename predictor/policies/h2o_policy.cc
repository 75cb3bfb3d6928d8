// H2O (Zhang et al.): heavy hitters by accumulated attention. A block's score is the attention mass
// it received from every prompt query plus every decode step's observed attention. As in H2O, a
// block that was not attended accumulates nothing at that step; unlike H2O's eviction, a block
// that drops out may come back when its score rises again (the cache service still holds it).
#include <string>

#include "predictor/policies/block_scoring_policy.h"
#include "predictor/policies/policy_factories.h"

namespace foresight::predictor {
namespace {

class H2OPolicy final : public BlockScoringPolicy {
 public:
  using BlockScoringPolicy::BlockScoringPolicy;
  std::string_view name() const override { return "h2o"; }
  PolicyNeeds needs() const override { return {.block_sum = true}; }

  Status ObservePrefill(const PrefillObservation& prefill) override {
    const int64_t nb = (prefill.prompt_tokens + budget_.block_tokens - 1) / budget_.block_tokens;
    const size_t q = geometry_.q_heads;
    blocks_ = nb;
    accumulated_.assign(q, std::vector<double>(nb, 0.0));
    if (!prefill.block_sum_total.empty()) {
      if (prefill.block_sum_total.size() != q * nb) {
        return InvalidArgument("h2o: prefill block_sum_total must hold q_heads x prompt blocks");
      }
      for (size_t h = 0; h < q; ++h) {
        for (int64_t b = 0; b < nb; ++b) accumulated_[h][b] = prefill.block_sum_total[h * nb + b];
      }
    }
    step_ = 0;
    return Status::OK();
  }

  Status Observe(const AttentionObservation& obs) override {
    const int64_t nb = (obs.key_tokens + budget_.block_tokens - 1) / budget_.block_tokens;
    const size_t q = geometry_.q_heads;
    if (obs.block_sum.size() != q * nb) {
      return InvalidArgument("h2o: observation must carry block_sum of q_heads x " + std::to_string(nb) + " blocks");
    }
    Grow(nb);
    for (size_t h = 0; h < q; ++h) {
      for (int64_t b = 0; b < nb; ++b) accumulated_[h][b] += obs.block_sum[h * nb + b];
    }
    ++step_;
    return Status::OK();
  }

 protected:
  Status PrepareScores(const StepInputs& in, const CandidateWindow& window) override {
    Grow(window.num_blocks);
    return Status::OK();
  }
  void ScoreCandidates(const StepInputs&, const CandidateWindow& window, int q_head, float* scores) override {
    const std::vector<double>& acc = accumulated_[q_head];
    for (int64_t i = 0; i < window.num_candidates(); ++i) {
      scores[i] = static_cast<float>(acc[window.candidate_begin() + i]);
    }
  }

 private:
  void Grow(int64_t nb) {
    if (accumulated_.empty()) accumulated_.assign(geometry_.q_heads, {});
    if (nb <= blocks_) return;
    for (auto& row : accumulated_) row.resize(nb, 0.0);
    blocks_ = nb;
  }
  int64_t blocks_ = 0;
  std::vector<std::vector<double>> accumulated_;  // [q_heads][blocks]
};

}  // namespace

StatusOr<std::unique_ptr<SelectionPolicy>> MakeH2OPolicy(const PolicySpec& spec, const LayerGeometry& g) {
  return std::unique_ptr<SelectionPolicy>(new H2OPolicy(spec, g));
}

}  // namespace foresight::predictor
