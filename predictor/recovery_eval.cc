#include "predictor/recovery_eval.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <list>
#include <mutex>
#include <tuple>
#include <unordered_map>

namespace foresight::predictor {
namespace {

struct LayerTally {
  double recovery = 0.0;
  double union_recovery = 0.0;
  double selected_blocks = 0.0;
  int64_t samples = 0;
  double kv_union_blocks = 0.0;
  int64_t kv_samples = 0;
  double kv_new_blocks = 0.0;
  double kv_pool_misses = 0.0;
  int64_t kv_churn_samples = 0;               // KV head-steps after a trace's first decode step
  int64_t kv_pool_samples = 0;                // KV head-steps from the pool's warm-up on
  std::vector<double> pool_misses_by_step;    // summed over KV heads
  std::vector<int64_t> pool_samples_by_step;  // KV head-steps
  std::vector<PoolMiss> pool_misses;
  double seconds = 0.0;
};

// A worker's pool of one KV head's blocks: least recently used out first.
class LruBlocks {
 public:
  explicit LruBlocks(int64_t capacity) : capacity_(capacity) {}
  // Touches `block`; false when it was not held (a fetch).
  bool Touch(int32_t block) {
    auto it = where_.find(block);
    if (it != where_.end()) {
      order_.splice(order_.begin(), order_, it->second);
      return true;
    }
    order_.push_front(block);
    where_[block] = order_.begin();
    while (static_cast<int64_t>(order_.size()) > capacity_) {
      where_.erase(order_.back());
      order_.pop_back();
    }
    return false;
  }

 private:
  int64_t capacity_;
  std::list<int32_t> order_;
  std::unordered_map<int32_t, std::list<int32_t>::iterator> where_;
};

// Blocks of `now` that `before` lacks (both sorted).
int64_t BlocksNotIn(const std::vector<int32_t>& now, const std::vector<int32_t>& before) {
  int64_t fresh = 0;
  auto it = before.begin();
  for (int32_t b : now) {
    while (it != before.end() && *it < b) ++it;
    if (it == before.end() || *it != b) ++fresh;
  }
  return fresh;
}

double MassOf(const float* block_sum, const std::vector<int32_t>& blocks) {
  double mass = 0.0;
  for (int32_t b : blocks) mass += block_sum[b];
  return mass;
}

struct PoolReplay {
  int64_t blocks = 0;  // per KV head; 0: no pool
  int64_t warmup_steps = 1;
  bool record = false;
  int32_t trace = 0;
};

// Replays one layer of one trace under one policy and budget.
Status ReplayLayer(const Trace& trace, int layer, const PolicySpec& spec, bool attend_kv_union, const PoolReplay& pool,
                   LayerTally* tally) {
  const TraceGeometry& g = trace.geometry();
  const LayerGeometry lg = g.layer();
  FS_ASSIGN_OR_RETURN(auto policy, MakeSelectionPolicy(spec, lg, layer));
  using Clock = std::chrono::steady_clock;
  double seconds = 0.0;
  auto t0 = Clock::now();
  FS_RETURN_IF_ERROR(policy->ObservePrefill(trace.prefill(layer)));
  seconds += std::chrono::duration<double>(Clock::now() - t0).count();
  std::vector<float> dense_max, dense_sum, sparse_max, sparse_sum;
  BlockSelection selection;
  std::vector<std::vector<int32_t>> previous_union;
  std::vector<LruBlocks> pools(lg.kv_heads, LruBlocks(pool.blocks));
  if (pool.blocks > 0) {
    tally->pool_misses_by_step.assign(trace.decode_steps(), 0.0);
    tally->pool_samples_by_step.assign(trace.decode_steps(), 0);
  }
  const int group = lg.group_size();
  for (int64_t s = 0; s < trace.decode_steps(); ++s) {
    trace.DecodeRows(layer, s, &dense_max, &dense_sum);
    const int64_t nb = g.blocks_at(s);
    StepInputs in;
    in.key_tokens = g.key_tokens(s);
    in.query = trace.query(layer, s);
    in.key_digests = &trace.key_digests(layer);
    in.dense_block_sum = dense_sum;
    t0 = Clock::now();
    FS_RETURN_IF_ERROR(policy->Select(in, &selection));
    const bool dense = policy->WantsDenseRow();
    seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    for (int kv = 0; kv < lg.kv_heads; ++kv) {
      const auto& now = selection.per_kv_head[kv];
      tally->kv_union_blocks += static_cast<double>(now.size());
      ++tally->kv_samples;
      if (pool.blocks > 0) {
        int64_t misses = 0;
        for (int32_t b : now) {
          if (pools[kv].Touch(b)) continue;
          ++misses;
          if (pool.record) {
            tally->pool_misses.push_back({pool.trace, layer, kv, static_cast<int32_t>(s), b});
          }
        }
        tally->pool_misses_by_step[s] += static_cast<double>(misses);
        ++tally->pool_samples_by_step[s];
        if (s >= std::max<int64_t>(1, pool.warmup_steps)) {
          tally->kv_pool_misses += static_cast<double>(misses);
          ++tally->kv_pool_samples;
        }
      }
      if (s > 0) {
        tally->kv_new_blocks += static_cast<double>(BlocksNotIn(now, previous_union[kv]));
        ++tally->kv_churn_samples;
      }
    }
    previous_union = selection.per_kv_head;
    AttentionObservation obs;
    obs.key_tokens = in.key_tokens;
    obs.dense = dense;
    if (!dense) {
      sparse_max.assign(dense_max.size(), 0.0f);
      sparse_sum.assign(dense_sum.size(), 0.0f);
    }
    for (int h = 0; h < lg.q_heads; ++h) {
      const float* row_sum = &dense_sum[h * nb];
      const auto& own = selection.per_query_head[h];
      const auto& fetched = selection.per_kv_head[h / group];
      const double own_mass = MassOf(row_sum, own);
      const double union_mass = MassOf(row_sum, fetched);
      tally->recovery += own_mass;
      tally->union_recovery += union_mass;
      tally->selected_blocks += static_cast<double>(own.size());
      ++tally->samples;
      if (dense) continue;
      // Softmax over the attended blocks = the dense row restricted to them, renormalised.
      const auto& attended = attend_kv_union ? fetched : own;
      const double mass = attend_kv_union ? union_mass : own_mass;
      const float scale = mass > 0.0 ? static_cast<float>(1.0 / mass) : 0.0f;
      for (int32_t b : attended) {
        sparse_max[h * nb + b] = dense_max[h * nb + b] * scale;
        sparse_sum[h * nb + b] = row_sum[b] * scale;
      }
    }
    obs.block_max = dense ? dense_max : sparse_max;
    obs.block_sum = dense ? dense_sum : sparse_sum;
    t0 = Clock::now();
    FS_RETURN_IF_ERROR(policy->Observe(obs));
    seconds += std::chrono::duration<double>(Clock::now() - t0).count();
  }
  tally->seconds += seconds;
  return Status::OK();
}

}  // namespace

StatusOr<std::vector<RecoveryResult>> EvaluateRecovery(std::span<const Trace* const> traces,
                                                       const RecoveryOptions& options) {
  if (traces.empty()) return InvalidArgument("recovery: no traces");
  if (options.variants.empty() || options.budgets.empty()) {
    return InvalidArgument("recovery: no policies or no budgets to evaluate");
  }
  const TraceGeometry& g0 = traces[0]->geometry();
  for (const Trace* t : traces) {
    const TraceGeometry& g = t->geometry();
    if (g.layers != g0.layers || g.q_heads != g0.q_heads || g.kv_heads != g0.kv_heads || g.head_dim != g0.head_dim ||
        g.block_tokens != g0.block_tokens) {
      return InvalidArgument("recovery: traces have different model geometries");
    }
  }
  const int layers = g0.layers;
  const size_t V = options.variants.size(), B = options.budgets.size(), T = traces.size();
  // One task per (variant, budget, trace, layer); tallies per (variant, budget, layer).
  std::vector<LayerTally> tallies(V * B * layers);
  const int64_t tasks = static_cast<int64_t>(V * B * T * layers);
  std::mutex mu;
  Status first_error;
#pragma omp parallel for schedule(dynamic, 1) num_threads(options.threads) if (options.threads > 1)
  for (int64_t task = 0; task < tasks; ++task) {
    const int layer = static_cast<int>(task % layers);
    const size_t t = (task / layers) % T;
    const size_t b = (task / layers / T) % B;
    const size_t v = task / layers / T / B;
    PolicySpec spec = options.variants[v].spec;
    spec.budget.budget_tokens = options.budgets[b];
    spec.budget.block_tokens = g0.block_tokens;
    spec.threads = 1;
    LayerTally local;
    PoolReplay pool;
    pool.blocks = b < options.pool_blocks.size() ? options.pool_blocks[b] : 0;
    pool.warmup_steps = options.pool_warmup_steps;
    pool.record = options.record_pool_misses;
    pool.trace = static_cast<int32_t>(t);
    Status s = ReplayLayer(*traces[t], layer, spec, options.attend_kv_union, pool, &local);
    std::lock_guard<std::mutex> lock(mu);
    if (!s.ok()) {
      if (first_error.ok()) {
        first_error = s.WithContext("policy " + options.variants[v].label + ", budget " +
                                    std::to_string(options.budgets[b]) + ", layer " + std::to_string(layer));
      }
      continue;
    }
    LayerTally& dst = tallies[(v * B + b) * layers + layer];
    dst.recovery += local.recovery;
    dst.union_recovery += local.union_recovery;
    dst.selected_blocks += local.selected_blocks;
    dst.samples += local.samples;
    dst.kv_union_blocks += local.kv_union_blocks;
    dst.kv_samples += local.kv_samples;
    dst.kv_new_blocks += local.kv_new_blocks;
    dst.kv_pool_misses += local.kv_pool_misses;
    dst.kv_churn_samples += local.kv_churn_samples;
    dst.kv_pool_samples += local.kv_pool_samples;
    if (dst.pool_misses_by_step.size() < local.pool_misses_by_step.size()) {
      dst.pool_misses_by_step.resize(local.pool_misses_by_step.size(), 0.0);
      dst.pool_samples_by_step.resize(local.pool_samples_by_step.size(), 0);
    }
    for (size_t i = 0; i < local.pool_misses_by_step.size(); ++i) {
      dst.pool_misses_by_step[i] += local.pool_misses_by_step[i];
      dst.pool_samples_by_step[i] += local.pool_samples_by_step[i];
    }
    dst.pool_misses.insert(dst.pool_misses.end(), local.pool_misses.begin(), local.pool_misses.end());
    dst.seconds += local.seconds;
  }
  if (!first_error.ok()) return first_error;
  std::vector<RecoveryResult> results;
  for (size_t v = 0; v < V; ++v) {
    for (size_t b = 0; b < B; ++b) {
      RecoveryResult r;
      r.label = options.variants[v].label;
      r.budget = options.budgets[b];
      double blocks = 0.0, union_blocks = 0.0, new_blocks = 0.0, pool_misses = 0.0;
      int64_t kv_samples = 0, churn_samples = 0, pool_samples = 0;
      std::vector<double> misses_by_step;
      std::vector<int64_t> samples_by_step;
      for (int l = 0; l < layers; ++l) {
        const LayerTally& t = tallies[(v * B + b) * layers + l];
        const double n = t.samples > 0 ? static_cast<double>(t.samples) : 1.0;
        r.per_layer.push_back(t.recovery / n);
        r.recovery += t.recovery / n / layers;
        r.kv_union_recovery += t.union_recovery / n / layers;
        blocks += t.selected_blocks;
        union_blocks += t.kv_union_blocks;
        new_blocks += t.kv_new_blocks;
        pool_misses += t.kv_pool_misses;
        kv_samples += t.kv_samples;
        churn_samples += t.kv_churn_samples;
        pool_samples += t.kv_pool_samples;
        if (misses_by_step.size() < t.pool_misses_by_step.size()) {
          misses_by_step.resize(t.pool_misses_by_step.size(), 0.0);
          samples_by_step.resize(t.pool_samples_by_step.size(), 0);
        }
        for (size_t i = 0; i < t.pool_misses_by_step.size(); ++i) {
          misses_by_step[i] += t.pool_misses_by_step[i];
          samples_by_step[i] += t.pool_samples_by_step[i];
        }
        r.pool_misses.insert(r.pool_misses.end(), t.pool_misses.begin(), t.pool_misses.end());
        r.samples += t.samples;
        r.select_seconds += t.seconds;
      }
      r.mean_selected_blocks = r.samples > 0 ? blocks / r.samples : 0.0;
      r.mean_kv_union_blocks = kv_samples > 0 ? union_blocks / kv_samples : 0.0;
      r.mean_kv_new_blocks = churn_samples > 0 ? new_blocks / churn_samples : 0.0;
      r.mean_kv_pool_misses = pool_samples > 0 ? pool_misses / static_cast<double>(pool_samples) : 0.0;
      for (size_t i = 0; i < misses_by_step.size(); ++i) {
        r.kv_pool_misses_by_step.push_back(
            samples_by_step[i] > 0 ? misses_by_step[i] / static_cast<double>(samples_by_step[i]) : 0.0);
      }
      std::sort(r.pool_misses.begin(), r.pool_misses.end(), [](const PoolMiss& a, const PoolMiss& b) {
        return std::tie(a.trace, a.step, a.layer, a.kv_head, a.block) <
               std::tie(b.trace, b.step, b.layer, b.kv_head, b.block);
      });
      results.push_back(std::move(r));
    }
  }
  return results;
}

}  // namespace foresight::predictor
