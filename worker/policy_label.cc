#include "worker/policy_label.h"

#include <cstdio>

namespace foresight::worker {

std::string PolicyLabel(const predictor::PolicySpec& spec) {
  if (spec.kind != predictor::PolicyKind::kAttentionPredictor) return std::string(predictor::PolicyKindName(spec.kind));
  if (spec.query_refine == 0.0f) return "attention_predictor";
  if (spec.query_refine == predictor::PolicySpec::kServingQueryRefine) return "ap";
  char label[48];
  std::snprintf(label, sizeof(label), "ap(query_refine=%.2f)", spec.query_refine);
  return label;
}

}  // namespace foresight::worker
