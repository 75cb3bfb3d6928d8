// Quest (Tang et al.): a block's score is the upper bound of q.k over its keys from the per-channel
// key min/max; the query is this step's, so Quest selects only once the query exists.
#include <string>

#include "predictor/policies/block_scoring_policy.h"
#include "predictor/policies/policy_factories.h"

namespace foresight::predictor {
namespace {

class QuestPolicy final : public BlockScoringPolicy {
 public:
  using BlockScoringPolicy::BlockScoringPolicy;
  std::string_view name() const override { return "quest"; }
  PolicyNeeds needs() const override { return {.query = true, .key_digests = true}; }

 protected:
  Status PrepareScores(const StepInputs& in, const CandidateWindow& window) override {
    if (window.KeepsAllCandidates()) return Status::OK();
    if (in.query.size() != static_cast<size_t>(geometry_.q_heads) * geometry_.head_dim) {
      return InvalidArgument("quest: query must hold q_heads x head_dim = " +
                             std::to_string(geometry_.q_heads * geometry_.head_dim) + " values");
    }
    const KeyDigests* d = in.key_digests;
    if (d == nullptr || d->kv_heads() != geometry_.kv_heads || d->head_dim() != geometry_.head_dim) {
      return InvalidArgument("quest: key digests missing or not matching the layer geometry");
    }
    if (d->complete_blocks() < window.candidate_end()) {
      return InvalidArgument("quest: key digests cover " + std::to_string(d->complete_blocks()) +
                             " complete blocks, the step needs " + std::to_string(window.candidate_end()));
    }
    return Status::OK();
  }
  void ScoreCandidates(const StepInputs& in, const CandidateWindow& window, int q_head, float* scores) override {
    const int kv_head = q_head / geometry_.group_size();
    const float* q = in.query.data() + static_cast<size_t>(q_head) * geometry_.head_dim;
    for (int64_t i = 0; i < window.num_candidates(); ++i) {
      scores[i] = in.key_digests->UpperBound(kv_head, window.candidate_begin() + i, q);
    }
  }
};

}  // namespace

StatusOr<std::unique_ptr<SelectionPolicy>> MakeQuestPolicy(const PolicySpec& spec, const LayerGeometry& g) {
  return std::unique_ptr<SelectionPolicy>(new QuestPolicy(spec, g));
}

}  // namespace foresight::predictor
