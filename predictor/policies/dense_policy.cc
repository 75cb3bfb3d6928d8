// Dense: every block, every step. The quality ceiling and the cost floor of no selection.
#include "predictor/policies/block_scoring_policy.h"
#include "predictor/policies/policy_factories.h"

namespace foresight::predictor {
namespace {

class DensePolicy final : public BlockScoringPolicy {
 public:
  using BlockScoringPolicy::BlockScoringPolicy;
  std::string_view name() const override { return "dense"; }
  PolicyNeeds needs() const override { return {}; }
  Status Select(const StepInputs& in, BlockSelection* out) override {
    if (in.key_tokens <= 0) return InvalidArgument("dense: key_tokens must be positive");
    const CandidateWindow window = CandidateWindow::For(in.key_tokens, budget_);
    out->per_query_head.resize(geometry_.q_heads);
    for (auto& blocks : out->per_query_head) SelectAllBlocks(window, &blocks);
    UnionPerKvHead(geometry_, out);
    return Status::OK();
  }

 protected:
  void ScoreCandidates(const StepInputs&, const CandidateWindow&, int, float*) override {}
};

}  // namespace

StatusOr<std::unique_ptr<SelectionPolicy>> MakeDensePolicy(const PolicySpec& spec, const LayerGeometry& g) {
  return std::unique_ptr<SelectionPolicy>(new DensePolicy(spec, g));
}

}  // namespace foresight::predictor
