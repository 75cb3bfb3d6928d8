// Offline evaluation of selection policies on recorded traces: the attention recovery rate, the
// share of the dense attention mass (softmax row) that falls on the selected blocks, averaged over
// layers, query heads and decode steps, with the per-layer breakdown.
//
// Replay is faithful to what a policy would have seen live: a policy that attends sparsely
// observes its own sparse attention (the dense row restricted to its selection, renormalised) and
// the dense row only when it asks for one (AttentionPredictor's calibration steps). Recovery is
// counted at every step, calibration steps included, for the query head's own selection
// (`recovery`) and for the union its KV head fetches (`kv_union_recovery`).
//
// Thread-safety: EvaluateRecovery is reentrant; it uses up to `threads` OpenMP threads.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "predictor/selection_policy.h"
#include "predictor/trace.h"

namespace foresight::predictor {

// A policy with its settings, under a label for the table ("attention_predictor",
// "ap_per_kv_head", ...). The budget in spec is replaced by each evaluated budget.
struct PolicyVariant {
  std::string label;
  PolicySpec spec;
};

struct RecoveryOptions {
  std::vector<PolicyVariant> variants;
  std::vector<int64_t> budgets;  // tokens, sink and local included
  // Sparse steps attend (and observe) the KV head's union instead of the query head's own blocks.
  bool attend_kv_union = false;
  // Per budget (same order as `budgets`; empty: none), the blocks a worker's pool keeps per KV
  // head between steps, least recently used dropped first: RecoveryResult::mean_kv_pool_misses.
  std::vector<int64_t> pool_blocks;
  // Pool misses count from this decode step on (at least 1); the steps before fill the pool. A
  // worker decoding hundreds of tokens spends most of them with a warm pool, so the capacity
  // planner reads misses after a warm-up (planner/churn_table.h).
  int64_t pool_warmup_steps = 1;
  // Also keep every pool miss (RecoveryResult::pool_misses): the fetches a node sees, for the
  // planner's simulation of its RAM tier (planner/ram_lru_simulation.h).
  bool record_pool_misses = false;
  int threads = 1;
};

// One block a worker's pool did not hold at a decode step: what it fetches from the node.
struct PoolMiss {
  int32_t trace = 0;  // index into the evaluated traces
  int32_t layer = 0;
  int32_t kv_head = 0;
  int32_t step = 0;  // decode step of the trace
  int32_t block = 0;
};

struct RecoveryResult {
  std::string label;
  int64_t budget = 0;
  double recovery = 0.0;  // mean over layers of the per-layer mean
  double kv_union_recovery = 0.0;
  std::vector<double> per_layer;      // [layers]
  int64_t samples = 0;                // (trace, layer, head, step) samples
  double mean_selected_blocks = 0.0;  // per query head and step, sink and local included
  // Selection churn, what a fetch costs (the capacity planner's fetch model, planner/churn_table.h):
  // per KV head and step, the blocks of the union its query heads selected, and those of them
  // that the previous step's union did not hold (what a worker that keeps the previous step's
  // blocks must fetch). The first decode step of each trace counts in neither mean of new blocks.
  double mean_kv_union_blocks = 0.0;
  double mean_kv_new_blocks = 0.0;
  // With options.pool_blocks: per KV head and step (from options.pool_warmup_steps on), the
  // union's blocks that such a pool did not hold (what a worker with that pool fetches).
  double mean_kv_pool_misses = 0.0;
  // The same per decode step, every step from 0 (step 0: the cold pool's whole first union), over
  // the traces long enough to have it: the pool's warm-up curve.
  std::vector<double> kv_pool_misses_by_step;
  // With options.record_pool_misses: every miss at every step from 0, ordered by trace, step,
  // layer, KV head and block.
  std::vector<PoolMiss> pool_misses;
  double select_seconds = 0.0;  // policy time (Select + Observe), summed over threads
};

// Every variant at every budget over every trace (all traces must share the geometry).
// Results are ordered by variant, then budget.
StatusOr<std::vector<RecoveryResult>> EvaluateRecovery(std::span<const Trace* const> traces,
                                                       const RecoveryOptions& options);

}  // namespace foresight::predictor
