// EvaluateQuality: teacher-forced quality of sparse decode against dense on one long text. The
// first `context` tokens are prefilled densely (once; every policy is seeded from that prefill),
// then the next `predict` tokens are fed one by one under each policy and budget; each row reports
// the perplexity of those tokens, how often the policy's top-1 equals dense decoding's, and its
// recovery rate (worker/oracle_attention.h RecoveryMeter). "oracle" (the exact top blocks of each
// step) is the upper bound any predictor could reach at a budget.
//
// Thread-safety: one call per thread; the Model may be shared.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "predictor/selection_policy.h"
#include "worker/model.h"
#include "worker/policy_attention.h"

namespace foresight::worker {

struct QualityRow {
  std::string policy;  // "dense", "attention-predictor", "quest", "h2o", "snapkv", "streaming-llm", "oracle"
  int64_t budget = 0;  // 0 for dense
  int64_t context = 0;
  double perplexity = 0;
  double top1_agreement = 0;   // vs dense, over the predicted tokens
  double blocks_fraction = 0;  // attended / dense blocks over decode steps
  // Share of the dense attention mass inside the attended blocks (per query head, KV-head union),
  // averaged over decode steps, layers and query heads; dense steps and layers count as 1.
  double recovery = 1.0;
  // The same over the sparse steps and layers only (AttentionPredictor's published method without
  // its dense calibration steps; equal to `recovery` for a policy that never attends densely).
  double sparse_recovery = 1.0;
  float query_refine = 0.0f;  // AttentionPredictor: share of the kept blocks chosen by the step's query
  int update_period = 1;      // AttentionPredictor: the CNN is updated every this many steps
};

struct QualitySpec {
  std::vector<predictor::PolicyKind> policies;  // dense is always evaluated first
  std::vector<int64_t> budgets;
  std::shared_ptr<const predictor::CnnWeights> weights;  // for AttentionPredictor
  int dense_first_layers = 0;
  int64_t sink_tokens = 64, local_tokens = 64;  // part of every budget
  int calibration_period = 5;                   // AttentionPredictor's M
  // AttentionPredictor: one row per value (PolicySpec::query_refine; 0 is the published method).
  // A share above 0 is the served form (ApplyQueryRefinement: one CNN per KV head, calibration rows
  // from the compact key copy every step), once per CNN update period in `update_periods`.
  std::vector<float> query_refine = {0.0f};
  std::vector<int> update_periods = {predictor::PolicySpec::kServingUpdatePeriod};
  // Where AttentionPredictor's calibration rows come from (worker/policy_attention.h).
  CalibrationSource calibration_source = CalibrationSource::kExact;
  predictor::PolicySpec::RefineScorer refine_scorer = predictor::PolicySpec::RefineScorer::kQueryBlockScores;
  // kQueryBlockScores: score with each layer's query estimated one layer early
  // (PolicyAttentionOptions::lookahead_query).
  bool lookahead_query = false;
};

// `tokens` holds at least context + predict tokens.
StatusOr<std::vector<QualityRow>> EvaluateQuality(const Model& model, const std::vector<TokenId>& tokens,
                                                  int64_t context, int64_t predict, const QualitySpec& spec);

}  // namespace foresight::worker
