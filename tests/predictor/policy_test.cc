// Every selection policy against a brute-force restatement of its rule on small inputs, the GQA
// union included.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <numeric>
#include <random>
#include <set>

#include "predictor/block_ranking.h"
#include "predictor/cnn_cpu.h"
#include "predictor/selection_policy.h"
#include "tests/predictor/synthetic_trace.h"

namespace foresight::predictor {
namespace {

using Blocks = std::vector<int32_t>;

// Brute force: enumerate tokens into sink / local / candidate blocks, sort candidates by
// (score desc, index asc), keep (budget - sink - local) / block of them (all with fewer than 3).
Blocks ReferenceSelect(const std::vector<float>& block_scores, int64_t key_tokens, const SelectionBudget& b) {
  std::set<int32_t> always, candidates;
  for (int64_t t = 0; t < key_tokens; ++t) {
    const int32_t blk = static_cast<int32_t>(t / b.block_tokens);
    if (t < b.sink_tokens || t >= key_tokens - b.local_tokens) always.insert(blk);
  }
  // The block holding the current token (the last key) is always attended, even with no local window.
  always.insert(static_cast<int32_t>((key_tokens - 1) / b.block_tokens));
  for (int64_t t = 0; t < key_tokens; ++t) {
    const int32_t blk = static_cast<int32_t>(t / b.block_tokens);
    if (!always.count(blk)) candidates.insert(blk);
  }
  std::vector<int32_t> order(candidates.begin(), candidates.end());
  std::stable_sort(order.begin(), order.end(), [&](int32_t x, int32_t y) { return block_scores[x] > block_scores[y]; });
  const int64_t keep = std::max<int64_t>(0, (b.budget_tokens - b.sink_tokens - b.local_tokens) / b.block_tokens);
  if (order.size() >= 3 && static_cast<int64_t>(order.size()) > keep) order.resize(keep);
  std::set<int32_t> out = always;
  out.insert(order.begin(), order.end());
  return Blocks(out.begin(), out.end());
}

Blocks ReferenceUnion(const BlockSelection& sel, int kv, int group) {
  std::set<int32_t> u;
  for (int j = 0; j < group; ++j)
    u.insert(sel.per_query_head[kv * group + j].begin(), sel.per_query_head[kv * group + j].end());
  return Blocks(u.begin(), u.end());
}

void ExpectUnionsMatch(const BlockSelection& sel, const LayerGeometry& g) {
  ASSERT_EQ(sel.per_kv_head.size(), static_cast<size_t>(g.kv_heads));
  for (int kv = 0; kv < g.kv_heads; ++kv) EXPECT_EQ(sel.per_kv_head[kv], ReferenceUnion(sel, kv, g.group_size()));
}

TEST(CandidateWindowTest, AgreesWithTokenEnumeration) {
  for (int64_t sink : {0, 16, 64, 70}) {
    for (int64_t local : {0, 16, 64, 100}) {
      for (int64_t n = 1; n < 400; n += 7) {
        SelectionBudget b{.budget_tokens = 256, .sink_tokens = sink, .local_tokens = local, .block_tokens = 16};
        std::vector<float> scores((n + 15) / 16);
        std::iota(scores.begin(), scores.end(), 0.0f);
        const CandidateWindow w = CandidateWindow::For(n, b);
        Blocks got;
        for (int64_t i = 0; i < w.sink_blocks; ++i) got.push_back(i);
        const int64_t keep = w.KeepsAllCandidates() ? w.num_candidates() : w.keep_blocks;
        for (int64_t i = w.first_local_block - keep; i < w.num_blocks; ++i) got.push_back(i);
        EXPECT_EQ(got, ReferenceSelect(scores, n, b)) << "n=" << n << " sink=" << sink << " local=" << local;
      }
    }
  }
}

struct Fixture {
  Trace trace;
  LayerGeometry g;
};

Fixture SmallTrace(int64_t prompt = 400, int64_t steps = 24) {
  testing::SyntheticTraceOptions o;
  o.layers = 1;
  o.q_heads = 4;
  o.kv_heads = 2;
  o.prompt_tokens = prompt;
  o.decode_steps = steps;
  Fixture f{testing::MakeSyntheticTrace(o), {}};
  f.g = f.trace.geometry().layer();
  return f;
}

// Drives `policy` over the trace with dense observations; `reference(step, head, dense_sum)`
// returns the block scores the policy's rule implies.
template <typename Reference>
void CheckAgainstReference(PolicyKind kind, const Fixture& f, int64_t budget, Reference reference) {
  PolicySpec spec;
  spec.kind = kind;
  spec.budget.budget_tokens = budget;
  auto policy = MakeSelectionPolicy(spec, f.g, 0);
  ASSERT_TRUE(policy.ok()) << policy.status().ToString();
  ASSERT_TRUE((*policy)->ObservePrefill(f.trace.prefill(0)).ok());
  std::vector<float> bmax, bsum;
  for (int64_t s = 0; s < f.trace.decode_steps(); ++s) {
    f.trace.DecodeRows(0, s, &bmax, &bsum);
    const TraceGeometry& g = f.trace.geometry();
    const int64_t nb = g.blocks_at(s);
    StepInputs in{.key_tokens = g.key_tokens(s),
                  .query = f.trace.query(0, s),
                  .key_digests = &f.trace.key_digests(0),
                  .dense_block_sum = bsum,
                  .query_block_scores = {}};
    BlockSelection sel;
    ASSERT_TRUE((*policy)->Select(in, &sel).ok());
    for (int h = 0; h < f.g.q_heads; ++h) {
      std::vector<float> scores = reference(s, h, std::span<const float>(&bsum[h * nb], nb));
      EXPECT_EQ(sel.per_query_head[h], ReferenceSelect(scores, in.key_tokens, spec.budget))
          << PolicyKindName(kind) << " step " << s << " head " << h;
    }
    ExpectUnionsMatch(sel, f.g);
    AttentionObservation obs{.key_tokens = in.key_tokens, .dense = true, .block_max = bmax, .block_sum = bsum};
    ASSERT_TRUE((*policy)->Observe(obs).ok());
  }
}

TEST(PolicyTest, DenseSelectsEverything) {
  Fixture f = SmallTrace();
  CheckAgainstReference(PolicyKind::kDense, f, 1 << 20, [&](int64_t s, int h, std::span<const float> row) {
    return std::vector<float>(row.size(), 1.0f);
  });
}

TEST(PolicyTest, StreamingLLMKeepsTheMostRecentBlocks) {
  Fixture f = SmallTrace();
  for (int64_t budget : {128, 192, 256, 320}) {
    CheckAgainstReference(PolicyKind::kStreamingLLM, f, budget, [](int64_t, int, std::span<const float> row) {
      std::vector<float> s(row.size());
      std::iota(s.begin(), s.end(), 0.0f);
      return s;
    });
  }
}

TEST(PolicyTest, OracleKeepsTheTrueTopBlocks) {
  Fixture f = SmallTrace();
  for (int64_t budget : {160, 256}) {
    CheckAgainstReference(PolicyKind::kOracle, f, budget, [](int64_t, int, std::span<const float> row) {
      return std::vector<float>(row.begin(), row.end());
    });
  }
}

// TopIndices against a plain sort of (score, index) pairs: ties to the lower index, NaN lowest.
TEST(BlockRankingTest, TopIndicesEqualsASortWithTiesAndNaN) {
  std::mt19937 rng(9);
  for (int trial = 0; trial < 200; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 300);
    std::vector<float> scores(n);
    for (float& v : scores) {
      const uint32_t r = rng() % 10;
      v = r == 0 ? std::nanf("") : r < 4 ? static_cast<float>(rng() % 5) : static_cast<float>(rng() % 1000) / 7.0f;
    }
    const int64_t k = static_cast<int64_t>(rng() % (n + 3));
    std::vector<int32_t> want(n);
    std::iota(want.begin(), want.end(), 0);
    auto key = [&](int32_t i) { return std::isnan(scores[i]) ? -INFINITY : scores[i]; };
    std::stable_sort(want.begin(), want.end(), [&](int32_t a, int32_t b) { return key(a) > key(b); });
    want.resize(std::min<int64_t>(k, n));
    std::sort(want.begin(), want.end());
    std::vector<int32_t> got;
    TopIndices(scores, k, &got);
    ASSERT_EQ(got, want) << "trial " << trial << " n " << n << " k " << k;
  }
}

TEST(PolicyTest, QuestRanksByKeyBoundComputedFromRawKeys) {
  // Raw keys, independent of KeyDigests, to recompute the bound by brute force.
  const int kv_heads = 2, group = 2, d = 8, q_heads = kv_heads * group;
  const int64_t tokens = 300;
  std::mt19937 rng(5);
  std::normal_distribution<float> n;
  std::vector<float> keys(tokens * kv_heads * d), query(q_heads * d);
  for (auto& v : keys) v = n(rng);
  for (auto& v : query) v = n(rng);
  KeyDigests digests(kv_heads, d, 16);
  for (int64_t t = 0; t < tokens; ++t)
    digests.AppendToken(std::span<const float>(&keys[t * kv_heads * d], kv_heads * d));
  PolicySpec spec;
  spec.kind = PolicyKind::kQuest;
  spec.budget.budget_tokens = 192;
  LayerGeometry g{q_heads, kv_heads, d};
  auto policy = MakeSelectionPolicy(spec, g, 0);
  ASSERT_TRUE(policy.ok());
  StepInputs in;
  in.key_tokens = tokens;
  in.query = query;
  in.key_digests = &digests;
  BlockSelection sel;
  ASSERT_TRUE((*policy)->Select(in, &sel).ok());
  for (int h = 0; h < q_heads; ++h) {
    std::vector<float> scores((tokens + 15) / 16, 0.0f);
    for (size_t b = 0; b < scores.size(); ++b) {
      float bound = 0;
      for (int c = 0; c < d; ++c) {
        float lo = INFINITY, hi = -INFINITY;
        for (int64_t t = b * 16; t < std::min<int64_t>(tokens, b * 16 + 16); ++t) {
          lo = std::min(lo, keys[(t * kv_heads + h / group) * d + c]);
          hi = std::max(hi, keys[(t * kv_heads + h / group) * d + c]);
        }
        bound += std::max(query[h * d + c] * lo, query[h * d + c] * hi);
      }
      scores[b] = bound;
    }
    EXPECT_EQ(sel.per_query_head[h], ReferenceSelect(scores, tokens, spec.budget)) << "head " << h;
  }
  ExpectUnionsMatch(sel, g);
  StepInputs missing;
  missing.key_tokens = tokens;
  EXPECT_FALSE((*policy)->Select(missing, &sel).ok());
}

TEST(PolicyTest, H2OAccumulatesPrefillAndObservedMass) {
  Fixture f = SmallTrace();
  const TraceGeometry& g = f.trace.geometry();
  std::vector<std::vector<double>> acc(f.g.q_heads);
  const auto prefill = f.trace.prefill(0);
  const int64_t bp = g.prompt_blocks();
  for (int h = 0; h < f.g.q_heads; ++h) {
    acc[h].assign(bp, 0.0);
    for (int64_t b = 0; b < bp; ++b) acc[h][b] = prefill.block_sum_total[h * bp + b];
  }
  int64_t last_step = -1;
  CheckAgainstReference(PolicyKind::kH2O, f, 192, [&](int64_t s, int h, std::span<const float> row) {
    if (s != last_step && s > 0) {
      // Add the previous step's dense observation for every head.
      std::vector<float> bmax, bsum;
      f.trace.DecodeRows(0, s - 1, &bmax, &bsum);
      const int64_t nb = g.blocks_at(s - 1);
      for (int hh = 0; hh < f.g.q_heads; ++hh) {
        acc[hh].resize(std::max<size_t>(acc[hh].size(), nb), 0.0);
        for (int64_t b = 0; b < nb; ++b) acc[hh][b] += bsum[hh * nb + b];
      }
    }
    last_step = s;
    std::vector<float> scores(row.size(), 0.0f);
    for (size_t b = 0; b < row.size() && b < acc[h].size(); ++b) scores[b] = static_cast<float>(acc[h][b]);
    return scores;
  });
}

TEST(PolicyTest, SnapKVVotesWithTheLastWindowAndKeepsGeneratedBlocks) {
  Fixture f = SmallTrace(400, 200);  // long enough for generated blocks to leave the local window
  const TraceGeometry& g = f.trace.geometry();
  const auto prefill = f.trace.prefill(0);
  const int64_t bp = g.prompt_blocks(), R = g.prefill_rows();
  CheckAgainstReference(PolicyKind::kSnapKV, f, 256, [&](int64_t, int h, std::span<const float> row) {
    std::vector<float> scores(row.size());
    for (size_t b = 0; b < row.size(); ++b) {
      if (static_cast<int64_t>(b) >= bp) {
        scores[b] = 1e30f;  // generated during decode: kept first
        continue;
      }
      float vote = 0;
      for (int64_t r = R - 32; r < R; ++r) vote += prefill.block_sum[(h * R + r) * bp + b];
      scores[b] = vote;
    }
    return scores;
  });
}

// AttentionPredictor: a plain history (deque of rows) and the full CNN on the cropped window,
// with sparse observations and a dense row every 5th step.
void CheckAttentionPredictor(bool per_kv_head, bool full_cnn) {
  auto weights =
      CnnWeights::Load(FORESIGHT_SOURCE_DIR "/../shared/reference/attention_predictor/cnn_llama3.1.safetensors");
  std::shared_ptr<const CnnWeights> w = weights.ok() ? *weights : CnnWeights::Random(3);
  Fixture f = SmallTrace(500, 60);
  const TraceGeometry& g = f.trace.geometry();
  PolicySpec spec;
  spec.kind = PolicyKind::kAttentionPredictor;
  spec.budget.budget_tokens = 256;
  spec.weights = w;
  spec.predict_per_kv_head = per_kv_head;
  spec.full_cnn = full_cnn;
  auto policy = MakeSelectionPolicy(spec, f.g, 0);
  ASSERT_TRUE(policy.ok()) << policy.status().ToString();
  ASSERT_TRUE((*policy)->ObservePrefill(f.trace.prefill(0)).ok());
  const int heads = per_kv_head ? f.g.kv_heads : f.g.q_heads, group = f.g.group_size();
  // Reference history: 64 rows per predicted head, each padded with zeros to the current width.
  std::vector<std::deque<std::vector<float>>> history(heads);
  const auto prefill = f.trace.prefill(0);
  const int64_t bp = g.prompt_blocks(), R = g.prefill_rows();
  auto merge = [&](std::span<const float> all, int64_t stride, int64_t offset, int i) {
    std::vector<float> row(stride);
    const int members = per_kv_head ? group : 1;
    for (int j = 0; j < members; ++j) {
      const int q = per_kv_head ? i * group + j : i;
      for (int64_t c = 0; c < stride; ++c) row[c] = std::max(row[c], all[q * offset + c]);
    }
    return row;
  };
  for (int i = 0; i < heads; ++i) {
    for (int r = 0; r < 64 - R; ++r) history[i].push_back(std::vector<float>(bp, 0.0f));
    for (int64_t r = 0; r < R; ++r) {
      history[i].push_back(merge(prefill.block_max.subspan(r * bp), bp, R * bp, i));
    }
  }
  std::vector<float> bmax, bsum;
  for (int64_t s = 0; s < f.trace.decode_steps(); ++s) {
    f.trace.DecodeRows(0, s, &bmax, &bsum);
    const int64_t nb = g.blocks_at(s), n = g.key_tokens(s);
    StepInputs in;
    in.key_tokens = n;
    BlockSelection sel;
    ASSERT_TRUE((*policy)->Select(in, &sel).ok());
    const CandidateWindow window = CandidateWindow::For(n, spec.budget);
    for (int h = 0; h < f.g.q_heads; ++h) {
      const int i = per_kv_head ? h / group : h;
      std::vector<float> scores(nb, -1e30f);
      const int64_t width = window.candidate_end() - window.candidate_begin();
      if (width > 0) {
        std::vector<float> image(64 * width);
        for (int r = 0; r < 64; ++r) {
          for (int64_t c = 0; c < width; ++c) {
            const int64_t col = window.candidate_begin() + c;
            image[r * width + c] = col < static_cast<int64_t>(history[i][r].size()) ? history[i][r][col] : 0.0f;
          }
        }
        std::vector<float> out(width);
        RunCnn(*w, HistoryImage::Contiguous(image.data(), width, width), out.data());
        for (int64_t c = 0; c < width; ++c) scores[window.candidate_begin() + c] = out[c];
      }
      ASSERT_EQ(sel.per_query_head[h], ReferenceSelect(scores, n, spec.budget)) << "step " << s << " head " << h;
    }
    ExpectUnionsMatch(sel, f.g);
    const bool dense = (s + 1) % 5 == 0;
    ASSERT_EQ((*policy)->WantsDenseRow(), dense) << "step " << s;
    // The observation: dense on calibration steps, else the row restricted to the own selection.
    std::vector<float> obs_max(bmax.size(), 0.0f);
    for (int h = 0; h < f.g.q_heads; ++h) {
      double mass = 0;
      for (int32_t b : sel.per_query_head[h]) mass += bsum[h * nb + b];
      for (int32_t b : sel.per_query_head[h]) obs_max[h * nb + b] = bmax[h * nb + b] / mass;
    }
    const std::vector<float>& pushed = dense ? bmax : obs_max;
    for (int i = 0; i < heads; ++i) {
      history[i].pop_front();
      history[i].push_back(merge(pushed, nb, nb, i));
    }
    AttentionObservation obs{.key_tokens = n, .dense = dense, .block_max = pushed, .block_sum = bsum};
    ASSERT_TRUE((*policy)->Observe(obs).ok());
  }
}

TEST(PolicyTest, AttentionPredictorIncrementalMatchesBruteForce) { CheckAttentionPredictor(false, false); }
TEST(PolicyTest, AttentionPredictorFullCnnMatchesBruteForce) { CheckAttentionPredictor(false, true); }
TEST(PolicyTest, AttentionPredictorPerKvHeadMatchesBruteForce) { CheckAttentionPredictor(true, false); }

// Query refinement: asked ahead (no query scores) the policy returns the CNN's share, a subset of
// both the published selection and the step's own refined one; the refined one adds exactly the
// best-scored candidates by the step's query scores, up to the same number of kept blocks.
// Per query head, and per KV head as served (one CNN per KV head, so the CNN's share is the same for
// every query head of a KV head; the query's share is each head's own).
class QueryRefinementTest : public ::testing::TestWithParam<bool> {};

TEST_P(QueryRefinementTest, AttentionPredictorQueryRefinementAddsTheQuerysBestBlocks) {
  const bool per_kv_head = GetParam();
  Fixture f = SmallTrace(500, 40);
  const TraceGeometry& g = f.trace.geometry();
  ASSERT_GT(f.g.group_size(), 1);
  PolicySpec spec;
  spec.kind = PolicyKind::kAttentionPredictor;
  spec.budget.budget_tokens = 256;
  spec.weights = CnnWeights::Random(5);
  spec.predict_per_kv_head = per_kv_head;
  auto published = MakeSelectionPolicy(spec, f.g, 0);
  spec.query_refine = 0.5f;
  spec.refine_scorer = PolicySpec::RefineScorer::kQueryBlockScores;
  auto refined = MakeSelectionPolicy(spec, f.g, 0);
  ASSERT_TRUE(published.ok() && refined.ok());
  EXPECT_TRUE((*refined)->needs().query_block_scores);
  ASSERT_TRUE((*published)->ObservePrefill(f.trace.prefill(0)).ok());
  ASSERT_TRUE((*refined)->ObservePrefill(f.trace.prefill(0)).ok());
  std::vector<float> bmax, bsum;
  int64_t checked = 0;
  for (int64_t s = 0; s < f.trace.decode_steps(); ++s) {
    f.trace.DecodeRows(0, s, &bmax, &bsum);
    const int64_t nb = g.blocks_at(s), n = g.key_tokens(s);
    const CandidateWindow window = CandidateWindow::For(n, spec.budget);
    StepInputs ahead_in, step_in, short_in;
    ahead_in.key_tokens = step_in.key_tokens = short_in.key_tokens = n;
    step_in.query_block_scores = bmax;
    short_in.query_block_scores = std::span<const float>(bmax).first(bmax.size() - 1);
    BlockSelection plain, ahead, full;
    ASSERT_TRUE((*published)->Select(ahead_in, &plain).ok());
    ASSERT_TRUE((*refined)->Select(ahead_in, &ahead).ok());
    ASSERT_TRUE((*refined)->Select(step_in, &full).ok());
    EXPECT_FALSE((*refined)->Select(short_in, &full).ok()) << "scores of the wrong size must be refused";
    ASSERT_TRUE((*refined)->Select(step_in, &full).ok());
    for (int h = 0; h < f.g.q_heads; ++h) {
      const Blocks& a = ahead.per_query_head[h];
      const Blocks& p = plain.per_query_head[h];
      const Blocks& r = full.per_query_head[h];
      EXPECT_TRUE(std::includes(p.begin(), p.end(), a.begin(), a.end())) << "step " << s;
      ASSERT_TRUE(std::includes(r.begin(), r.end(), a.begin(), a.end())) << "step " << s;
      if (window.KeepsAllCandidates()) continue;
      EXPECT_EQ(r.size(), p.size()) << "step " << s;
      // Brute force: the candidates outside `a`, best by the query's scores (ties: lower index).
      std::vector<int32_t> rest;
      for (int64_t b = window.candidate_begin(); b < window.candidate_end(); ++b) {
        if (!std::binary_search(a.begin(), a.end(), static_cast<int32_t>(b))) rest.push_back(static_cast<int32_t>(b));
      }
      const float* est = bmax.data() + h * nb;
      std::stable_sort(rest.begin(), rest.end(), [&](int32_t x, int32_t y) { return est[x] > est[y]; });
      Blocks expect = a;
      const int64_t missing = static_cast<int64_t>(r.size() - a.size());
      expect.insert(expect.end(), rest.begin(), rest.begin() + missing);
      std::sort(expect.begin(), expect.end());
      EXPECT_EQ(r, expect) << "step " << s << " head " << h;
      EXPECT_EQ(missing, std::llround(0.5 * window.keep_blocks)) << "step " << s;
      const int first = h - h % f.g.group_size();
      if (per_kv_head) EXPECT_EQ(a, ahead.per_query_head[first]) << "one CNN share per KV head, step " << s;
      ++checked;
    }
    AttentionObservation obs{.key_tokens = n, .dense = true, .block_max = bmax, .block_sum = bsum};
    ASSERT_TRUE((*published)->Observe(obs).ok());
    ASSERT_TRUE((*refined)->Observe(obs).ok());
  }
  EXPECT_GT(checked, 0);
}

INSTANTIATE_TEST_SUITE_P(PerQueryAndPerKvHead, QueryRefinementTest, ::testing::Bool());

TEST(PolicyTest, FactoryRejectsBadSpecs) {
  PolicySpec spec;
  EXPECT_FALSE(MakeSelectionPolicy(spec, {4, 2, 8}, 0).ok());  // AttentionPredictor without weights
  spec.kind = PolicyKind::kDense;
  EXPECT_FALSE(MakeSelectionPolicy(spec, {4, 3, 8}, 0).ok());  // q_heads not a multiple of kv_heads
  EXPECT_FALSE(ParsePolicyKind("lru").ok());
  for (PolicyKind k : AllPolicyKinds()) EXPECT_EQ(*ParsePolicyKind(PolicyKindName(k)), k);
  // Dense first layers override the kind.
  spec.kind = PolicyKind::kStreamingLLM;
  spec.dense_first_layers = 2;
  EXPECT_EQ((*MakeSelectionPolicy(spec, {4, 2, 8}, 1))->name(), "dense");
  EXPECT_EQ((*MakeSelectionPolicy(spec, {4, 2, 8}, 2))->name(), "streaming_llm");
}

}  // namespace
}  // namespace foresight::predictor
