#include "worker/serving_flags.h"

#include <limits>

namespace foresight::worker {

ServingFlags AddServingFlags(CLI::App* app, ServingOptions* options) {
  // Integer checks whose errors read "Value 0 not in range 1 to 2147483647" (CLI11's PositiveNumber
  // prints its range as doubles up to 1.8e308).
  const CLI::Range positive(1, std::numeric_limits<int32_t>::max());
  const CLI::Range non_negative(0, std::numeric_limits<int32_t>::max());
  ServingFlags f;
  f.policy = app->add_option("--policy", options->default_policy,
                             "Decode attention: ap (AttentionPredictor as served: query-refined, see --query-refine), "
                             "attention_predictor (the same), dense, quest, h2o, snapkv, streaming_llm; an "
                             "AttentionPredictor request whose prompt and --max-tokens fit its budget runs dense")
                 ->capture_default_str();
  f.budget = app->add_option("--budget", options->default_budget,
                             "Tokens attended per KV head by sparse policies, sink and local included")
                 ->check(positive)
                 ->capture_default_str();
  f.sink = app->add_option("--sink", options->sink_tokens, "Sink tokens always attended")
               ->check(non_negative)
               ->capture_default_str();
  f.local = app->add_option("--local", options->local_tokens, "Most recent tokens always attended")
                ->check(non_negative)
                ->capture_default_str();
  f.dense_layers = app->add_option("--dense-layers", options->dense_first_layers, "First layers kept dense")
                       ->check(non_negative)
                       ->capture_default_str();
  f.query_refine = app->add_option("--query-refine", options->query_refine,
                                   "AttentionPredictor: share of the kept blocks chosen by the step's query against "
                                   "the worker's int8 key copy instead of the CNN (0: the published method)")
                       ->check(CLI::Range(0.0, 1.0))
                       ->capture_default_str();
  f.weights = app->add_option(
      "--weights", options->weights_file,
      "AttentionPredictor CNN weights, a safetensors file (default: the shipped foresight-smollm2 weights, compiled "
      "in)");
  return f;
}

Status FinishServingFlags(ServingOptions* options) {
  Status policy = ParseServingPolicy(options->default_policy).status();
  if (!policy.ok()) return policy.WithContext("--policy");
  Status weights = LoadServingWeights(options);
  if (!weights.ok()) return weights.WithContext("--weights");
  return Status::OK();
}

}  // namespace foresight::worker
