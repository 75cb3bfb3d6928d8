// ChurnTable: the planner's fetch model, measured. For each selection policy and budget, how many
// blocks one KV head's selection holds per decode step (the union of its query heads' choices:
// what a worker fetches when it keeps nothing between steps) and how many of them its resident
// pool misses (what it fetches when it keeps blocks between steps: cross-token offload with reuse).
//
// Rows come from one of two sources:
//   - "served": measured on the worker itself, `foresight-bench decode --modes cross-token
//     --no-reuse --greedy --json` over a real prefill (the (layer, block, KV head) units it fetched
//     per token, with and without reuse, divided by layers x KV heads). What the planner should
//     read for a policy the worker serves: the served selection (its query share, per-KV-head
//     prediction, lookahead, sink and local windows) and the served greedy text under sparse
//     attention are what set the churn, and an offline replay of dense traces misses them (by
//     -30% for `ap` and +190% for `quest` at budget 1024, 2026-12-07: docs/capacity.md).
//   - "replay": replayed from recorded traces (`foresight trace`, docs/trace-format.md) through
//     the policies (predictor/recovery_eval.h), which also gives the blocks new against the previous
//     step, the pool's warm-up and the union's attention recovery.
//
// The planner ships one table (planner/data/churn-smollm2.json, compiled in), re-derived with one
// command (tools/planner/derive-churn.sh, which runs `foresight plan-churn`). Format, versioned JSON:
//
//   {"format": "foresight-churn-table", "version": 2, "block_tokens": 16, "command": "...",
//    "pool_warmup_steps": 32,
//    "traces": [{"file": "...", "prompt_tokens": 3966, "decode_steps": 160}],
//    "served_decodes": [{"file": "...", "policy": "ap", "budget": 1024, "context": 7500,
//                        "from_step": 32, "steps": 128}],
//    "rows": [{"policy": "ap", "budget": 1024, "context": 7596, "source": "served",
//              "kv_union_blocks": 67.9, "pool_blocks": 208, "kv_pool_misses": 0.51},
//             {"policy": "h2o", "budget": 1024, "context": 7709, "source": "replay",
//              "kv_union_blocks": 108.5, "kv_new_blocks": 0.06, "pool_blocks": 208,
//              "kv_pool_misses": 0.06, "kv_pool_misses_warmup": 0.06, "recovery": 0.79}],
//    "ram_hit_rates": {"policy": "ap", "budget": 1024, "sequences": 4,
//                      "points": [{"ram_share": 0.5, "hit_rate": 0.62}, ...]}}
//
// With reuse the worker fetches what its resident pool (budget / 16 + margin blocks per layer and
// KV head, least recently used out: worker/offload/offloaded_sequence.h) does not hold, so the
// plan reads kv_pool_misses; kv_new_blocks (against the previous step alone) is kept for readers.
// The pool starts empty and takes tens of steps to hold the blocks a selection comes back to, so
// kv_pool_misses counts from decode step pool_warmup_steps on (the steady state of a long decode)
// and kv_pool_misses_warmup the steps 1 to pool_warmup_steps - 1 (replayed rows only). A table
// without pool_warmup_steps (the first ones) counted from step 1; version 1 tables have replayed
// rows only.
//
// Thread-safety: value types; DeriveChurnTable uses up to `threads` OpenMP threads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace foresight::planner {

inline constexpr char kChurnTableFormat[] = "foresight-churn-table";
inline constexpr int kChurnTableVersion = 2;

struct ChurnRow {
  std::string policy;
  int64_t budget = 0;                // tokens per head, sink and local included
  int64_t context = 0;               // mean key tokens of the traces' decode steps
  double kv_union_blocks = 0;        // per KV head and step
  double kv_new_blocks = 0;          // per KV head and step, not in the previous step's union
  int64_t pool_blocks = 0;           // the worker's resident pool per KV head at this budget
  double kv_pool_misses = 0;         // per KV head and step, not in that pool (LRU): fetched with reuse
  double recovery = 0;               // attention mass on the KV head's union (for the reader)
  double kv_pool_misses_warmup = 0;  // as kv_pool_misses, over the pool's warm-up (for the reader)
  // "served" (measured on the worker: no kv_new_blocks, recovery or warm-up) or "replay".
  std::string source = "replay";
};

// One served decode: `foresight-bench decode --modes cross-token --no-reuse --greedy --json` (one
// policy and budget, a real prefill of `context` tokens), its rows with and without reuse.
struct ServedDecode {
  std::string file;
  std::string policy;
  int64_t budget = 0, context = 0;
  int64_t from_step = 0, steps = 0;  // decode steps measured: from_step to from_step + steps - 1
  double units_per_token_reuse = 0, units_per_token_no_reuse = 0;  // (layer, block, KV head) fetched
};
// INVALID_ARGUMENT naming the file and field: not the bench's JSON, no row with and without reuse,
// not cross-token or not greedy.
StatusOr<ServedDecode> LoadServedDecode(const std::string& file);

struct ChurnTraceSource {
  std::string file;
  int64_t prompt_tokens = 0, decode_steps = 0;
};

// The node RAM tier's hit rate against its size, simulated (planner/ram_lru_simulation.h) over the
// fetches `sequences` sequences' workers make (`policy` at `budget`, replayed) after the pool's
// warm-up. ram_share: the tier's block slots over the blocks the sequences store; points ascend.
struct RamHitRatePoint {
  double ram_share = 0, hit_rate = 0;
};
struct RamHitRateCurve {
  std::string policy;
  int64_t budget = 0;
  int sequences = 0;
  std::vector<RamHitRatePoint> points;
};
// The curve's hit rate at `ram_share`: linear between points, the last point's beyond it (below 1
// even at a share of 1: the evictor keeps 5-15% of the slots free; a caller knows when everything
// fits under the high watermark); below the first, scaled down with the share. Without points:
// `ram_share` itself (fetches spread evenly over the stored KV), capped at 1.
double RamHitRateAt(const RamHitRateCurve& curve, double ram_share);

struct ChurnTable {
  int block_tokens = 16;
  int64_t pool_warmup_steps = 1;  // kv_pool_misses counts from this decode step on
  std::string command;
  std::vector<ChurnTraceSource> traces;
  std::vector<ServedDecode> served_decodes;  // the sources of the "served" rows
  std::vector<ChurnRow> rows;
  RamHitRateCurve ram_hit_rates;  // no points: none derived
};

// What one KV head fetches per decode step at a given budget, from the table.
struct ChurnEstimate {
  double union_blocks = 0;      // without reuse
  double new_blocks = 0;        // with reuse: misses of the worker's pool
  int64_t measured_budget = 0;  // the table's row it was scaled from
  std::string source;           // that row's: "served" or "replay"
};

std::string ChurnTableToJson(const ChurnTable& table);
// INVALID_ARGUMENT naming `source` and the field.
StatusOr<ChurnTable> ParseChurnTable(const std::string& text, const std::string& source);
StatusOr<ChurnTable> LoadChurnTable(const std::string& file);
// The table compiled into the binaries.
StatusOr<ChurnTable> ShippedChurnTable();

// The row of `policy` at the budget nearest `budget_tokens` (by ratio), its block counts scaled
// by budget_tokens / row budget, and capped at the context's blocks (a budget that selects every
// block fetches nothing new with reuse but the newest block). INVALID_ARGUMENT naming --policy and
// the table's policies when the table has none for it.
StatusOr<ChurnEstimate> EstimateChurn(const ChurnTable& table, const std::string& policy, int64_t budget_tokens,
                                      int64_t context_tokens);

// The policies DeriveChurnTable knows: "ap" (AttentionPredictor as served: one CNN per KV head,
// updated every 10 steps, a quarter of the blocks chosen by the step's query; traces hold no keys,
// so the query's scores are Quest's bound over the key digests, not the worker's int8 key copy),
// "attention_predictor" (the published method), "quest", "h2o", "snapkv", "streaming_llm".
std::vector<std::string> ChurnPolicies();

// A "served" row per policy and budget of `decodes`: the mean over its decodes of the units fetched
// per token / (layers x KV heads), with reuse (kv_pool_misses) and without (kv_union_blocks), at
// the key tokens of the middle of the measured steps; in the order first seen.
std::vector<ChurnRow> ServedChurnRows(const std::vector<ServedDecode>& decodes, int layers, int kv_heads, int q_heads);

// The table: a "served" row per policy and budget of `served_files` (LoadServedDecode; the mean of
// its decodes, per KV head and step: units per token / (layers x KV heads), the traces' geometry),
// and a "replay" row per budget of every other policy of `policies`, replayed from `trace_files`.
// Pool misses count from decode step `pool_warmup_steps` on. INVALID_ARGUMENT naming --pool-warmup
// when a trace has no step after it, or --served when a decode's measured steps do not start there.
// `command` is recorded in the table.
StatusOr<ChurnTable> DeriveChurnTable(const std::vector<std::string>& trace_files,
                                      const std::vector<std::string>& policies, const std::vector<int64_t>& budgets,
                                      int64_t pool_warmup_steps, int threads, const std::string& command,
                                      const std::vector<std::string>& served_files = {});

// What a worker with reuse fetches from the node, replayed: every block its pool missed, at every
// decode step from 0 (the first step fetches the whole selection).
struct PoolMissReplay {
  std::string policy;
  int64_t budget = 0;
  int layers = 0, kv_heads = 0, block_tokens = 16;
  uint64_t block_bytes = 0;  // one layer's block as the node stores it (every KV head, K and V, f16)
  std::vector<ChurnTraceSource> traces;
  struct Fetch {
    int32_t trace, step, layer, kv_head, block;
  };
  std::vector<Fetch> fetches;  // by trace, step, layer, KV head, block
};
StatusOr<PoolMissReplay> ReplayPoolMisses(const std::vector<std::string>& trace_files, const std::string& policy,
                                          int64_t budget, int threads);

}  // namespace foresight::planner
