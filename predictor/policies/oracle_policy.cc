// Oracle: the true top blocks of this very step by dense attention mass. Needs the step's dense
// row, so it cannot run ahead of the step; it is the upper bound every real policy is measured
// against, not a method.
#include <string>

#include "predictor/policies/block_scoring_policy.h"
#include "predictor/policies/policy_factories.h"

namespace foresight::predictor {
namespace {

class OraclePolicy final : public BlockScoringPolicy {
 public:
  using BlockScoringPolicy::BlockScoringPolicy;
  std::string_view name() const override { return "oracle"; }
  PolicyNeeds needs() const override { return {.dense_row = true}; }

 protected:
  Status PrepareScores(const StepInputs& in, const CandidateWindow& window) override {
    const size_t expected = static_cast<size_t>(geometry_.q_heads) * window.num_blocks;
    if (in.dense_block_sum.size() != expected) {
      return InvalidArgument("oracle: dense_block_sum has " + std::to_string(in.dense_block_sum.size()) +
                             " values, expected q_heads x blocks = " + std::to_string(expected));
    }
    return Status::OK();
  }
  void ScoreCandidates(const StepInputs& in, const CandidateWindow& window, int q_head, float* scores) override {
    const float* row = in.dense_block_sum.data() + static_cast<size_t>(q_head) * window.num_blocks;
    for (int64_t i = 0; i < window.num_candidates(); ++i) scores[i] = row[window.candidate_begin() + i];
  }
};

}  // namespace

StatusOr<std::unique_ptr<SelectionPolicy>> MakeOraclePolicy(const PolicySpec& spec, const LayerGeometry& g) {
  return std::unique_ptr<SelectionPolicy>(new OraclePolicy(spec, g));
}

}  // namespace foresight::predictor
