#include "worker/serving_options.h"

#include <algorithm>

#include "predictor/shipped_weights.h"
#include "worker/policy_label.h"

namespace foresight::worker {

StatusOr<predictor::PolicyKind> ParseServingPolicy(std::string_view name) {
  std::string normalised(name);
  std::replace(normalised.begin(), normalised.end(), '-', '_');
  FS_ASSIGN_OR_RETURN(predictor::PolicyKind kind, predictor::ParsePolicyKind(normalised));  // "unknown policy 'x'"
  if (kind == predictor::PolicyKind::kOracle) {
    return InvalidArgument(
        "policy oracle needs each step's dense attention and is offline-only; "
        "use `foresight predictor eval` on a trace");
  }
  return kind;
}

StatusOr<ServingPlan> ResolveServing(const ServingOptions& defaults, std::string_view policy_override,
                                     int32_t budget_override, int64_t prompt_tokens, int32_t max_tokens,
                                     const ModelConfig& config, bool kv_offloaded) {
  if (budget_override < 0) return InvalidArgument("budget " + std::to_string(budget_override) + " is negative");
  ServingPlan plan;
  FS_ASSIGN_OR_RETURN(plan.requested,
                      ParseServingPolicy(policy_override.empty() ? defaults.default_policy : policy_override));
  // The published method's dense calibration rows attend every block: exact where the whole KV is
  // on hand, from the compact key copy where it lives in the cache service.
  plan.attention.calibration = kv_offloaded ? CalibrationSource::kCompactKeys : CalibrationSource::kExact;
  plan.policy = "dense";
  if (plan.requested == predictor::PolicyKind::kDense) return plan;

  const int32_t budget = budget_override > 0 ? budget_override : defaults.default_budget;
  if (budget <= 0) return InvalidArgument("budget " + std::to_string(budget) + " is not positive");
  predictor::PolicySpec spec;
  spec.kind = plan.requested;
  spec.budget.budget_tokens = budget;
  spec.budget.sink_tokens = defaults.sink_tokens;
  spec.budget.local_tokens = defaults.local_tokens;
  spec.dense_first_layers = defaults.dense_first_layers;
  PolicyAttentionOptions attention = plan.attention;
  ApplyQueryRefinement(defaults.query_refine, &spec, &attention, kv_offloaded);
  if (spec.kind == predictor::PolicyKind::kAttentionPredictor) {
    if (defaults.weights == nullptr) {
      return FailedPrecondition("policy " + PolicyLabel(spec) +
                                " needs AttentionPredictor's CNN weights, and none are loaded (weights)");
    }
    spec.weights = defaults.weights;
    // The whole context (the prompt and every token it may generate) fits the budget: at every step
    // AttentionPredictor would select every block, so it runs dense, without the predictor's cost
    // (or the offload's).
    int64_t context = prompt_tokens + std::max(max_tokens, 0);
    if (config.max_context > 0) context = std::min<int64_t>(context, config.max_context);
    if (context <= budget) {
      plan.fits_budget = true;
      return plan;
    }
    plan.weights = defaults.weights_name;
  }
  plan.policy = PolicyLabel(spec);
  plan.budget = budget;
  plan.attention = attention;
  plan.spec = std::move(spec);
  return plan;
}

StatusOr<std::string> DefaultPolicyLabel(const ServingOptions& defaults) {
  FS_ASSIGN_OR_RETURN(predictor::PolicyKind kind, ParseServingPolicy(defaults.default_policy));
  predictor::PolicySpec spec;
  spec.kind = kind;
  PolicyAttentionOptions attention;
  ApplyQueryRefinement(defaults.query_refine, &spec, &attention);
  return PolicyLabel(spec);
}

Status LoadServingWeights(ServingOptions* defaults) {
  FS_ASSIGN_OR_RETURN(defaults->weights, predictor::LoadCnnWeightsOrShipped(defaults->weights_file));
  defaults->weights_name = predictor::CnnWeightsName(defaults->weights_file);
  return Status::OK();
}

}  // namespace foresight::worker
