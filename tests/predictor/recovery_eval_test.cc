// Recovery evaluation on a synthetic trace: the bounds any correct evaluation must respect.
#include <gtest/gtest.h>

#include <map>

#include "predictor/cnn_weights.h"
#include "predictor/key_digests.h"
#include "predictor/recovery_eval.h"
#include "tests/predictor/synthetic_trace.h"

namespace foresight::predictor {
namespace {

TEST(RecoveryEvalTest, DenseIsOneOracleBoundsEveryPolicyAndUnionBoundsOwn) {
  testing::SyntheticTraceOptions o;
  o.prompt_tokens = 700;
  o.decode_steps = 30;
  Trace trace = testing::MakeSyntheticTrace(o);
  RecoveryOptions options;
  auto weights =
      CnnWeights::Load(FORESIGHT_SOURCE_DIR "/../shared/reference/attention_predictor/cnn_llama3.1.safetensors");
  for (PolicyKind k : AllPolicyKinds()) {
    if (k == PolicyKind::kAttentionPredictor && !weights.ok()) continue;
    PolicySpec spec;
    spec.kind = k;
    if (weights.ok()) spec.weights = *weights;
    options.variants.push_back({std::string(PolicyKindName(k)), spec});
  }
  options.budgets = {192, 256, 384};
  options.threads = 2;
  const Trace* traces[] = {&trace};
  auto results = EvaluateRecovery(traces, options);
  ASSERT_TRUE(results.ok()) << results.status().ToString();
  std::map<std::pair<std::string, int64_t>, RecoveryResult> by;
  for (const auto& r : *results) {
    by[{r.label, r.budget}] = r;
    std::printf("%-20s %5lld recovery %.4f union %.4f blocks %.1f\n", r.label.c_str(), static_cast<long long>(r.budget),
                r.recovery, r.kv_union_recovery, r.mean_selected_blocks);
    EXPECT_GE(r.recovery, 0.0);
    EXPECT_LE(r.recovery, 1.0 + 1e-5);
    EXPECT_GE(r.kv_union_recovery, r.recovery - 1e-9);
    EXPECT_EQ(r.per_layer.size(), static_cast<size_t>(o.layers));
    EXPECT_EQ(r.samples, o.layers * o.q_heads * o.decode_steps);
  }
  auto recovery = [&](const std::string& label, int64_t budget) { return by[std::make_pair(label, budget)].recovery; };
  for (int64_t b : options.budgets) {
    EXPECT_NEAR(recovery("dense", b), 1.0, 1e-5);
    for (const auto& [key, r] : by) {
      // Dense ignores the budget; every other policy keeps at most the budget's blocks.
      if (key.second == b && key.first != "dense") {
        EXPECT_LE(r.recovery, recovery("oracle", b) + 1e-6) << key.first;
      }
    }
  }
  EXPECT_LT(recovery("oracle", 192), recovery("oracle", 384));
}

// A trace small enough to work out by hand. 96 prompt tokens and two decode steps: 97 and 98 keys,
// 7 blocks of 16 at both steps. With sink 16, local 16 and a budget of 64 tokens the window is
// sink block 0, local blocks 5 and 6, candidates 1..4 of which a policy keeps (64-16-16)/16 = 2.
// Two query heads share one KV head. Each dense row below sums to 1; recovery is the dense mass
// on the kept blocks, averaged over heads and steps within a layer, then over layers.
// The oracle keeps the two heaviest candidates of the step; StreamingLLM the two most recent (3, 4).
//   row A = .10 .05 .30 .02 .13 .15 .25  oracle keeps 2, 4: .10+.30+.13+.15+.25 = .93; streaming .10+.02+.13+.15+.25 =
//   .65 row B = .05 .25 .01 .40 .04 .05 .20  oracle keeps 3, 1: .05+.25+.40+.05+.20 = .95; streaming
//   .05+.40+.04+.05+.20 = .74 row C = .50 .12 .11 .08 .09 .05 .05  oracle keeps 1, 2: .50+.12+.11+.05+.05 = .83;
//   streaming .50+.08+.09+.05+.05 = .77
// Layer 0: head 0 sees A, head 1 sees B (both steps). Layer 1: both heads see C.
//   oracle:    layer 0 (.93+.95)/2 = .94, layer 1 .83; recovery (.94+.83)/2 = .885
//              KV union: layer 0 blocks {0,2,4,5,6} u {0,1,3,5,6} = all 7 -> 1.0, layer 1 .83 -> .915
//   streaming: layer 0 (.65+.74)/2 = .695, layer 1 .77 -> .7325 (union the same: both heads keep 0, 3..6)
//   dense:     1.0 everywhere
// Blocks kept per head and step: oracle and streaming 5, dense 7.
Trace HandMadeTrace() {
  TraceGeometry g;
  g.layers = 2;
  g.q_heads = 2;
  g.kv_heads = 1;
  g.head_dim = 16;
  g.block_tokens = 16;
  g.prompt_tokens = 96;
  const int64_t steps = 2, bp = g.prompt_blocks(), rows = g.prefill_rows();  // 7 blocks per step row
  const std::vector<float> a = {.10f, .05f, .30f, .02f, .13f, .15f, .25f};
  const std::vector<float> b = {.05f, .25f, .01f, .40f, .04f, .05f, .20f};
  const std::vector<float> c = {.50f, .12f, .11f, .08f, .09f, .05f, .05f};
  const std::vector<const std::vector<float>*> row_of[2] = {{&a, &b}, {&c, &c}};  // [layer][head]
  std::vector<Trace::Layer> layers(g.layers);
  for (int l = 0; l < g.layers; ++l) {
    Trace::Layer& L = layers[l];
    L.prefill_block_max.assign(g.q_heads * rows * bp, 1.0f / bp);
    L.prefill_block_sum.assign(g.q_heads * rows * bp, 1.0f / bp);
    L.prefill_block_sum_total.assign(g.q_heads * bp, float(rows) / bp);
    for (int64_t s = 0; s < steps; ++s) {
      for (int h = 0; h < g.q_heads; ++h) {
        const std::vector<float>& row = *row_of[l][h];
        L.decode_block_max.insert(L.decode_block_max.end(), row.begin(), row.end());
        L.decode_block_sum.insert(L.decode_block_sum.end(), row.begin(), row.end());
        L.decode_query.insert(L.decode_query.end(), g.head_dim, 0.5f);
      }
    }
    L.digests = KeyDigests(g.kv_heads, g.head_dim, g.block_tokens);
    const std::vector<float> key(g.kv_heads * g.head_dim, 1.0f);
    for (int64_t t = 0; t < g.prompt_tokens + steps; ++t) L.digests.AppendToken(key);
  }
  auto trace = Trace::FromLayers(g, steps, std::move(layers), {{"source", "hand-made"}});
  EXPECT_TRUE(trace.ok()) << trace.status().ToString();
  return std::move(*trace);
}

TEST(RecoveryEvalTest, HandMadeTraceGivesHandComputedRecovery) {
  const Trace trace = HandMadeTrace();
  ASSERT_EQ(trace.geometry().blocks_at(0), 7);
  ASSERT_EQ(trace.geometry().blocks_at(1), 7);
  RecoveryOptions options;
  for (PolicyKind k : {PolicyKind::kOracle, PolicyKind::kStreamingLLM, PolicyKind::kDense}) {
    PolicySpec spec;
    spec.kind = k;
    spec.budget.sink_tokens = 16;
    spec.budget.local_tokens = 16;
    spec.budget.block_tokens = 16;
    options.variants.push_back({std::string(PolicyKindName(k)), spec});
  }
  options.budgets = {64};
  const Trace* traces[] = {&trace};
  auto results = EvaluateRecovery(traces, options);
  ASSERT_TRUE(results.ok()) << results.status().ToString();
  ASSERT_EQ(results->size(), 3u);
  struct Expected {
    double recovery, layer0, layer1, kv_union, blocks;
  };
  const std::map<std::string, Expected> expected = {
      {"oracle", {0.885, 0.94, 0.83, 0.915, 5}},
      {"streaming_llm", {0.7325, 0.695, 0.77, 0.7325, 5}},
      {"dense", {1.0, 1.0, 1.0, 1.0, 7}},
  };
  for (const RecoveryResult& r : *results) {
    SCOPED_TRACE(r.label);
    ASSERT_EQ(expected.count(r.label), 1u);
    const Expected& e = expected.at(r.label);
    EXPECT_EQ(r.budget, 64);
    EXPECT_EQ(r.samples, 2 * 2 * 2);  // layers x heads x steps
    EXPECT_NEAR(r.recovery, e.recovery, 1e-6);
    ASSERT_EQ(r.per_layer.size(), 2u);
    EXPECT_NEAR(r.per_layer[0], e.layer0, 1e-6);
    EXPECT_NEAR(r.per_layer[1], e.layer1, 1e-6);
    EXPECT_NEAR(r.kv_union_recovery, e.kv_union, 1e-6);
    EXPECT_NEAR(r.mean_selected_blocks, e.blocks, 1e-9);
  }
}

}  // namespace
}  // namespace foresight::predictor

namespace foresight::predictor {
namespace {

// Churn by hand: dense selects every block. 300 prompt tokens and 12 decode steps attend 301..312
// keys: 19 blocks at steps 0-3 (301-304 keys), 20 at steps 4-11. Per KV head the union holds
// (4 x 19 + 8 x 20) / 12 blocks; one block is new, at step 4, over the 11 steps after the first.
TEST(RecoveryEvalTest, ChurnCountsTheBlocksAKvHeadsUnionGainsPerStep) {
  testing::SyntheticTraceOptions o;
  o.prompt_tokens = 300;
  o.decode_steps = 12;
  Trace trace = testing::MakeSyntheticTrace(o);
  RecoveryOptions options;
  PolicySpec spec;
  spec.kind = PolicyKind::kDense;
  options.variants.push_back({"dense", spec});
  options.budgets = {64};
  const Trace* traces[] = {&trace};
  auto results = EvaluateRecovery(traces, options);
  ASSERT_TRUE(results.ok()) << results.status().ToString();
  ASSERT_EQ(results->size(), 1u);
  EXPECT_DOUBLE_EQ((*results)[0].mean_kv_union_blocks, (4.0 * 19 + 8.0 * 20) / 12);
  EXPECT_DOUBLE_EQ((*results)[0].mean_kv_new_blocks, 1.0 / 11);
}

// A pool that holds the union misses only the new block; one smaller than the union (LRU, touched
// in order) misses every block at every step: (3 x 19 + 8 x 20) / 11 over steps 1-11.
TEST(RecoveryEvalTest, PoolMissesFollowAnLruOfTheWorkersPoolSize) {
  testing::SyntheticTraceOptions o;
  o.prompt_tokens = 300;
  o.decode_steps = 12;
  Trace trace = testing::MakeSyntheticTrace(o);
  RecoveryOptions options;
  PolicySpec spec;
  spec.kind = PolicyKind::kDense;
  options.variants.push_back({"dense", spec});
  options.budgets = {64, 128};
  options.pool_blocks = {40, 5};
  const Trace* traces[] = {&trace};
  auto results = EvaluateRecovery(traces, options);
  ASSERT_TRUE(results.ok()) << results.status().ToString();
  ASSERT_EQ(results->size(), 2u);
  EXPECT_DOUBLE_EQ((*results)[0].mean_kv_pool_misses, 1.0 / 11);
  EXPECT_DOUBLE_EQ((*results)[1].mean_kv_pool_misses, (3.0 * 19 + 8.0 * 20) / 11);
}

// The same pool (it holds the union): step 0 misses the whole first union (19 blocks of a
// 301-token context), one later step the block the context opens (token 305, step 4). Counting
// from step 5 leaves no miss; every miss is recorded, and the curve holds them by step.
TEST(RecoveryEvalTest, PoolMissesCountFromTheWarmupAndAreRecordedByStep) {
  testing::SyntheticTraceOptions o;
  o.prompt_tokens = 300;
  o.decode_steps = 12;
  Trace trace = testing::MakeSyntheticTrace(o);
  RecoveryOptions options;
  PolicySpec spec;
  spec.kind = PolicyKind::kDense;
  options.variants.push_back({"dense", spec});
  options.budgets = {64};
  options.pool_blocks = {40};
  options.pool_warmup_steps = 5;
  options.record_pool_misses = true;
  const Trace* traces[] = {&trace};
  auto results = EvaluateRecovery(traces, options);
  ASSERT_TRUE(results.ok()) << results.status().ToString();
  const RecoveryResult& r = (*results)[0];
  EXPECT_DOUBLE_EQ(r.mean_kv_pool_misses, 0.0);
  ASSERT_EQ(r.kv_pool_misses_by_step.size(), 12u);
  EXPECT_DOUBLE_EQ(r.kv_pool_misses_by_step[0], 19.0);
  EXPECT_DOUBLE_EQ(r.kv_pool_misses_by_step[4], 1.0);
  double later = 0;
  for (size_t s = 1; s < 12; ++s) later += r.kv_pool_misses_by_step[s];
  EXPECT_DOUBLE_EQ(later, 1.0);
  const int64_t heads = trace.geometry().layers * trace.geometry().kv_heads;
  ASSERT_EQ(static_cast<int64_t>(r.pool_misses.size()), 20 * heads);
  EXPECT_EQ(r.pool_misses.back().step, 4);
  EXPECT_EQ(r.pool_misses.back().block, 19);
}

}  // namespace
}  // namespace foresight::predictor
