// StreamingLLM (Xiao et al.): attention sinks plus a recent window. Under a token budget the
// window is everything the budget leaves after the sink: the most recent candidates are kept.
#include "predictor/policies/block_scoring_policy.h"
#include "predictor/policies/policy_factories.h"

namespace foresight::predictor {
namespace {

class StreamingLLMPolicy final : public BlockScoringPolicy {
 public:
  using BlockScoringPolicy::BlockScoringPolicy;
  std::string_view name() const override { return "streaming_llm"; }
  PolicyNeeds needs() const override { return {}; }

 protected:
  void ScoreCandidates(const StepInputs&, const CandidateWindow& window, int, float* scores) override {
    for (int64_t i = 0; i < window.num_candidates(); ++i) scores[i] = static_cast<float>(i);
  }
};

}  // namespace

StatusOr<std::unique_ptr<SelectionPolicy>> MakeStreamingLLMPolicy(const PolicySpec& spec, const LayerGeometry& g) {
  return std::unique_ptr<SelectionPolicy>(new StreamingLLMPolicy(spec, g));
}

}  // namespace foresight::predictor
