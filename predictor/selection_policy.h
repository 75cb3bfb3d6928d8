// SelectionPolicy: the one interface behind which every block-selection method sits
// (AttentionPredictor, Quest, H2O, SnapKV, StreamingLLM, Oracle, Dense), so that the worker's decode
// loop, the offline evaluation and the benchmarks drive them all the same way.
//
// One policy object serves one layer of one sequence. Per decode step the loop asks which blocks
// each KV head needs (`Select`), computes attention over them (dense when `WantsDenseRow()`), and
// reports what it computed (`Observe`). Selection is per query head; with grouped-query attention
// the fetch unit is the KV head, which gets the union of its query heads' blocks.
//
// Example (one sequence, all layers):
//
//   std::vector<std::unique_ptr<SelectionPolicy>> policies;
//   for (int l = 0; l < layers; ++l) {
//     FS_ASSIGN_OR_RETURN(auto p, MakeSelectionPolicy(spec, geometry, l));
//     policies.push_back(std::move(p));
//   }
//   // After a dense prefill of P tokens (PrefillRecorder, predictor/prefill_recorder.h, turns
//   // the prefill's softmax rows into prefill_obs[l]):
//   for (int l ...) FS_RETURN_IF_ERROR(policies[l]->ObservePrefill(prefill_obs[l]));
//   for (int64_t step = 0; ; ++step) {           // decode token at position P + step
//     for (int l ...) {
//       SelectionPolicy& p = *policies[l];
//       StepInputs in;
//       in.key_tokens = P + step + 1;             // keys this token attends, its own included
//       if (p.needs().query) in.query = q[l];     // [q_heads, head_dim], post-RoPE
//       if (p.needs().key_digests) in.key_digests = &digests[l];
//       BlockSelection sel;
//       FS_RETURN_IF_ERROR(p.Select(in, &sel));   // prefetch sel.per_kv_head[h]
//       bool dense = p.WantsDenseRow();          // calibration step: attend every block
//       ... attention over sel.per_query_head[h] (or all blocks when dense) ...
//       // block_max / block_sum: PoolAttentionRow (predictor/attention_pooling.h) of each query
//       // head's softmax row; attended blocks only on sparse steps.
//       AttentionObservation obs{in.key_tokens, dense, block_max, block_sum};
//       FS_RETURN_IF_ERROR(p.Observe(obs));       // advances the policy's step counter
//     }
//   }
//
// Prefetch ahead of need: a policy whose needs() are all false (AttentionPredictor, H2O, SnapKV,
// StreamingLLM, Dense) may be asked for step t+1 right after Observe(t), before step t+1's query
// exists; Select is a pure function of the policy's state and `key_tokens`, so asking twice for
// the same step returns the same blocks. AttentionPredictor refined by query_block_scores may be
// asked ahead without them: it then returns the CNN's share only, a subset of what the step's own
// Select (with the scores) returns.
//
// Thread-safety: a policy object is not thread-safe; use one per (sequence, layer) and drive each
// from one thread at a time. Different objects may run concurrently. Implementations may use
// OpenMP internally over query heads (PolicySpec::threads).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "predictor/key_digests.h"
#include "predictor/selection_budget.h"

namespace foresight::predictor {

struct CnnWeights;

// Attention geometry of one layer.
struct LayerGeometry {
  int q_heads = 0;
  int kv_heads = 0;  // q_heads % kv_heads == 0; query head h belongs to KV head h / (q_heads / kv_heads)
  int head_dim = 0;
  int group_size() const { return kv_heads == 0 ? 0 : q_heads / kv_heads; }
};

// What a policy needs in StepInputs before it can select; all false means it can be asked ahead
// of the step (prefetch) with only key_tokens.
struct PolicyNeeds {
  bool query = false;               // Quest
  bool key_digests = false;         // Quest
  bool dense_row = false;           // Oracle (an upper bound, not a real method)
  bool block_sum = false;           // H2O: observations must carry block_sum
  bool query_block_scores = false;  // AttentionPredictor refined by the worker's compact key copy
};

// Known before this step's attention.
struct StepInputs {
  int64_t key_tokens = 0;                   // keys this step attends, the current token's included
  std::span<const float> query;             // [q_heads, head_dim], post-RoPE; when needs().query
  const KeyDigests* key_digests = nullptr;  // per-block key min/max; when needs().key_digests
  // [q_heads, ceil(key_tokens / block_tokens)] dense attention mass per block of this very step;
  // only Oracle reads it (offline evaluation).
  std::span<const float> dense_block_sum;
  // [q_heads, ceil(key_tokens / block_tokens)] this step's attention estimated by the caller (e.g.
  // the pooled block max of the query against a compact int8 copy of the keys); when
  // needs().query_block_scores.
  std::span<const float> query_block_scores;
};

// What attention produced at one decode step, pooled over blocks of `block_tokens` keys.
// Rows are softmax probabilities of the attention that was actually computed: over every key when
// `dense`, else over the attended blocks only (0 elsewhere).
struct AttentionObservation {
  int64_t key_tokens = 0;
  bool dense = false;
  std::span<const float> block_max;  // [q_heads, num_blocks] max probability within each block
  std::span<const float> block_sum;  // [q_heads, num_blocks] probability mass per block; may be
                                     // empty unless needs().block_sum
};

// The dense prefill of `prompt_tokens` tokens. Row r of the R = min(64, prompt_tokens) rows is the
// causal attention row of query prompt_tokens - R + r (keys beyond it are 0), pooled over blocks.
struct PrefillObservation {
  int64_t prompt_tokens = 0;
  int64_t rows = 0;                        // R
  std::span<const float> block_max;        // [q_heads, R, num_blocks]
  std::span<const float> block_sum;        // [q_heads, R, num_blocks] (SnapKV's window vote)
  std::span<const float> block_sum_total;  // [q_heads, num_blocks] mass summed over every prompt
                                           // query (H2O's accumulated score); may be empty
};

// Sorted, duplicate-free block indices; sink and local blocks included.
struct BlockSelection {
  std::vector<std::vector<int32_t>> per_query_head;  // [q_heads]
  std::vector<std::vector<int32_t>> per_kv_head;     // [kv_heads]: union over the group
};

class SelectionPolicy {
 public:
  virtual ~SelectionPolicy() = default;

  // "attention_predictor", "quest", "h2o", "snapkv", "streaming_llm", "oracle", "dense".
  virtual std::string_view name() const = 0;
  virtual PolicyNeeds needs() const = 0;

  // Once, after the dense prefill; resets any decode state.
  virtual Status ObservePrefill(const PrefillObservation& prefill) = 0;

  // Blocks for the step with in.key_tokens keys. Does not advance the policy.
  virtual Status Select(const StepInputs& in, BlockSelection* out) = 0;

  // True when the current step's observation should be dense (calibration for AttentionPredictor
  // every M-th decode step). Policies that never ask return false.
  virtual bool WantsDenseRow() const { return false; }

  // Reports the current step's attention and advances to the next step.
  virtual Status Observe(const AttentionObservation& observation) = 0;

  // Decode steps observed since ObservePrefill.
  virtual int64_t step() const = 0;
};

enum class PolicyKind { kAttentionPredictor, kQuest, kH2O, kSnapKV, kStreamingLLM, kOracle, kDense };

// "attention_predictor" (also "ap"), "quest", "h2o", "snapkv", "streaming_llm" (also "streaming"),
// "oracle", "dense".
StatusOr<PolicyKind> ParsePolicyKind(std::string_view name);
std::string_view PolicyKindName(PolicyKind kind);
std::vector<PolicyKind> AllPolicyKinds();

struct PolicySpec {
  PolicyKind kind = PolicyKind::kAttentionPredictor;
  SelectionBudget budget;
  // AttentionPredictor: the CNN (required) and its calibration period M: every M-th decode step
  // (steps M-1, 2M-1, ...) pushes a dense row. 0 disables calibration.
  std::shared_ptr<const CnnWeights> weights;
  int calibration_period = 5;
  // AttentionPredictor: recompute the CNN over all 64 rows each step instead of incrementally
  // (same output; for checking and benchmarking).
  bool full_cnn = false;
  // AttentionPredictor cost-reduction options beside the exact method (docs/predictor.md reports
  // their speed and recovery):
  //   predict_per_kv_head: one CNN per KV head over the element-wise max of its query heads'
  //     histories; every query head of the group gets that prediction.
  //   reuse_steps k > 1: update the CNN every k-th step only and reuse its scores between; the
  //     incremental CNN then advances k rows at a time (2k + 4 conv2 rows per k steps instead of
  //     6 per step), and each update equals the full CNN over the history of that step.
  //   prune_threshold t > 0: columns whose receptive field (5 columns x 64 rows) holds no value
  //     >= t get the CNN's score for an all-zero field instead of being computed.
  bool predict_per_kv_head = false;
  int reuse_steps = 1;
  // AttentionPredictor, query-refined (our extension, docs/predictor.md): this share of each query
  // head's kept blocks is chosen at the step, from the step's query, among the blocks the CNN did
  // not already keep; the CNN keeps the rest. 0 is the published method. The query's scores come
  // from `refine_scorer`: the Quest bound over the key digests, or StepInputs::query_block_scores
  // (the caller's estimate of this step's attention, e.g. from a compact key copy).
  // The serving default (foresight generate, foresight-worker) is kServingQueryRefine with the
  // compact key copy: docs/worker.md measures it against the published method.
  static constexpr float kServingQueryRefine = 0.25f;
  // The served AttentionPredictor's cost settings (worker::ApplyQueryRefinement applies them with
  // the query refinement; docs/predictor.md measures them against the exact method): one CNN per
  // KV head, updated every kServingUpdatePeriod steps.
  static constexpr int kServingUpdatePeriod = 10;
  enum class RefineScorer { kQuestBound, kQueryBlockScores };
  float query_refine = 0.0f;
  RefineScorer refine_scorer = RefineScorer::kQuestBound;
  float prune_threshold = 0.0f;
  // Layers below this index select every block (the published method may keep layers 0-1 dense).
  int dense_first_layers = 0;
  // SnapKV: how many of the last prefill queries vote.
  int snapkv_window = 32;
  // OpenMP threads a policy may use inside one call; 1 keeps it single-threaded.
  int threads = 1;
};

// One policy for layer `layer` of one sequence. Fails when the spec is inconsistent (for example
// AttentionPredictor without weights, a geometry whose q_heads is not a multiple of kv_heads).
StatusOr<std::unique_ptr<SelectionPolicy>> MakeSelectionPolicy(const PolicySpec& spec, const LayerGeometry& geometry,
                                                               int layer);

}  // namespace foresight::predictor
