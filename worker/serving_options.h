// ServingOptions and ResolveServing: how a request's decode attention is chosen, defined once for
// every front end that serves a model (foresight-worker's scheduler, `foresight generate`,
// `foresight-bench decode`). The options are the worker's defaults (worker/serving_flags.h
// registers them as command-line flags); ResolveServing turns them, with what a request asks for,
// into the PolicySpec and attention options it runs and the labels its statistics report.
//
//   FS_ASSIGN_OR_RETURN(ServingPlan plan, ResolveServing(options, request.policy, request.budget,
//                                                        prompt.size(), request.max_tokens, config,
//                                                        /*kv_offloaded=*/true));
//   if (plan.spec) ... PolicyDecodeAttention::Create(config, *plan.spec, prompt.size(), plan.attention)
//   stats.set_policy(plan.policy); stats.set_budget(plan.budget); stats.set_weights(plan.weights);
//
// Thread-safety: value types and pure functions.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"
#include "predictor/cnn_weights.h"
#include "predictor/selection_policy.h"
#include "worker/model_config.h"
#include "worker/policy_attention.h"

namespace foresight::worker {

// How a model is served when a request does not say. The policy fields are every front end's; the
// last group is foresight-worker's alone (its scheduler and the cache service).
struct ServingOptions {
  std::string default_policy = "ap";  // a policy name (ParsePolicyKind; '-' reads as '_')
  int32_t default_budget = 1024;      // tokens attended per KV head, sink and local included
  int32_t sink_tokens = 64;
  int32_t local_tokens = 64;
  int32_t dense_first_layers = 0;
  // AttentionPredictor: share of the kept blocks chosen by the step's query (PolicySpec::query_refine;
  // 0: the published method).
  float query_refine = predictor::PolicySpec::kServingQueryRefine;
  std::string weights_file;                              // AttentionPredictor's CNN; empty: the shipped weights
  std::shared_ptr<const predictor::CnnWeights> weights;  // loaded from weights_file (LoadServingWeights); null: refused
  std::string weights_name;                              // what they are (predictor::CnnWeightsName), for statistics
  int32_t prefill_chunk = 512;

  // foresight-worker only.
  std::string key_namespace = "default";
  bool prefix_reuse = true;  // look up and import published prefixes
  bool publish = true;       // publish every full block
};

// What one request runs.
struct ServingPlan {
  std::optional<predictor::PolicySpec> spec;  // the decode attention's policy; nullopt: dense
  PolicyAttentionOptions attention;           // for PolicyDecodeAttention (or OffloadOptions::attention)
  int32_t budget = 0;                         // tokens attended per KV head; 0 when dense
  std::string policy;                         // PolicyLabel of what runs ("dense", "ap", "quest", ...)
  std::string weights;                        // AttentionPredictor's weights_name when it runs; else empty
  // What was asked for (the request's policy or the default), before the rule below.
  predictor::PolicyKind requested = predictor::PolicyKind::kDense;
  // The request asked for AttentionPredictor and its whole context fits its budget: it runs dense.
  bool fits_budget = false;
};

// The policy named `name` ('-' reads as '_'), as a request may run it: INVALID_ARGUMENT naming the
// policy when it is unknown, or the oracle (it needs each step's dense attention: offline only).
StatusOr<predictor::PolicyKind> ParseServingPolicy(std::string_view name);

// Resolves a request against the defaults:
//   - policy: `policy_override`, or defaults.default_policy when empty; dense runs no policy.
//   - budget: `budget_override` when > 0, else defaults.default_budget (negative: INVALID_ARGUMENT).
//   - AttentionPredictor needs defaults.weights (FAILED_PRECONDITION without them), and runs as
//     served (ApplyQueryRefinement) with defaults.query_refine > 0.
//   - An AttentionPredictor request whose whole context (prompt_tokens + max_tokens, at most the
//     model's context) is within its budget runs dense: the predictor would select every block at
//     every step. Its plan says policy "dense", budget 0, no weights.
//   - kv_offloaded: the KV lives in the cache service during decode (OffloadedSequence), so the
//     served AttentionPredictor scores lookahead queries and the published method's calibration
//     rows come from the compact key copy; with the KV resident they are exact (dense attention).
// Errors name the request's field (policy, budget, weights).
StatusOr<ServingPlan> ResolveServing(const ServingOptions& defaults, std::string_view policy_override,
                                     int32_t budget_override, int64_t prompt_tokens, int32_t max_tokens,
                                     const ModelConfig& config, bool kv_offloaded);

// The label a request without a policy of its own runs under (ignoring the dense-fit rule), for
// startup logs and Info; the default policy's error when it does not parse.
StatusOr<std::string> DefaultPolicyLabel(const ServingOptions& defaults);

// Loads defaults->weights from defaults->weights_file (empty: the shipped weights) and names them
// in weights_name. Errors name the file.
Status LoadServingWeights(ServingOptions* defaults);

}  // namespace foresight::worker
