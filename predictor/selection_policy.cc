#include "predictor/selection_policy.h"

#include <string>

#include "predictor/policies/policy_factories.h"

namespace foresight::predictor {

StatusOr<PolicyKind> ParsePolicyKind(std::string_view name) {
  if (name == "attention_predictor" || name == "ap") return PolicyKind::kAttentionPredictor;
  if (name == "quest") return PolicyKind::kQuest;
  if (name == "h2o") return PolicyKind::kH2O;
  if (name == "snapkv") return PolicyKind::kSnapKV;
  if (name == "streaming_llm" || name == "streaming") return PolicyKind::kStreamingLLM;
  if (name == "oracle") return PolicyKind::kOracle;
  if (name == "dense") return PolicyKind::kDense;
  return InvalidArgument("unknown policy '" + std::string(name) +
                         "' (expected attention_predictor, quest, h2o, snapkv, streaming_llm, "
                         "oracle or dense)");
}

std::string_view PolicyKindName(PolicyKind kind) {
  switch (kind) {
    case PolicyKind::kAttentionPredictor:
      return "attention_predictor";
    case PolicyKind::kQuest:
      return "quest";
    case PolicyKind::kH2O:
      return "h2o";
    case PolicyKind::kSnapKV:
      return "snapkv";
    case PolicyKind::kStreamingLLM:
      return "streaming_llm";
    case PolicyKind::kOracle:
      return "oracle";
    case PolicyKind::kDense:
      return "dense";
  }
  return "unknown";
}

std::vector<PolicyKind> AllPolicyKinds() {
  return {PolicyKind::kAttentionPredictor, PolicyKind::kQuest,  PolicyKind::kH2O,  PolicyKind::kSnapKV,
          PolicyKind::kStreamingLLM,       PolicyKind::kOracle, PolicyKind::kDense};
}

StatusOr<std::unique_ptr<SelectionPolicy>> MakeSelectionPolicy(const PolicySpec& spec, const LayerGeometry& geometry,
                                                               int layer) {
  if (geometry.q_heads <= 0 || geometry.kv_heads <= 0 || geometry.q_heads % geometry.kv_heads != 0) {
    return InvalidArgument("policy geometry: q_heads (" + std::to_string(geometry.q_heads) +
                           ") must be a positive multiple of kv_heads (" + std::to_string(geometry.kv_heads) + ")");
  }
  const SelectionBudget& b = spec.budget;
  if (b.block_tokens <= 0 || b.sink_tokens < 0 || b.local_tokens < 0 || b.budget_tokens <= 0) {
    return InvalidArgument(
        "policy budget: block_tokens and budget_tokens must be positive, sink "
        "and local non-negative");
  }
  if (layer < spec.dense_first_layers) return MakeDensePolicy(spec, geometry);
  switch (spec.kind) {
    case PolicyKind::kAttentionPredictor:
      return MakeAttentionPredictorPolicy(spec, geometry);
    case PolicyKind::kQuest:
      return MakeQuestPolicy(spec, geometry);
    case PolicyKind::kH2O:
      return MakeH2OPolicy(spec, geometry);
    case PolicyKind::kSnapKV:
      return MakeSnapKVPolicy(spec, geometry);
    case PolicyKind::kStreamingLLM:
      return MakeStreamingLLMPolicy(spec, geometry);
    case PolicyKind::kOracle:
      return MakeOraclePolicy(spec, geometry);
    case PolicyKind::kDense:
      return MakeDensePolicy(spec, geometry);
  }
  return InvalidArgument("unknown policy kind");
}

}  // namespace foresight::predictor
