// SeedCache (worker/offload/seed_cache.h): a warm request whose policy rows come from the worker's
// seed cache imports more of its published prefix, prefills less, and decodes the very tokens of
// the same request without the cache; rows that do not cover the request's window are not used;
// the byte budget evicts the least recently used blocks.
#include "worker/offload/seed_cache.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "predictor/cnn_weights.h"
#include "testing/local_node.h"
#include "tests/worker/local_cache.h"
#include "worker/offload/offloaded_sequence.h"
#include "worker/synthetic_model.h"

namespace foresight::worker {
namespace {

// A 905-token document (its last block is shared only in part) and questions after it.
std::vector<TokenId> Document() {
  std::vector<TokenId> t(905);
  for (size_t i = 0; i < t.size(); ++i) t[i] = static_cast<TokenId>((i * 53 + 7) % 256);
  return t;
}

std::vector<TokenId> WithQuestion(int question_tokens, int salt) {
  std::vector<TokenId> t = Document();
  for (int i = 0; i < question_tokens; ++i) t.push_back(static_cast<TokenId>((i * 31 + salt * 17 + 3) % 256));
  return t;
}

TokenId Argmax(const std::vector<float>& v) {
  return static_cast<TokenId>(std::max_element(v.begin(), v.end()) - v.begin());
}

// A layer's prefill observation, as its policy was seeded with it.
struct Observed {
  int64_t rows = 0;
  std::vector<float> block_max, block_sum, block_sum_total;
  friend bool operator==(const Observed&, const Observed&) = default;
};

struct Run {
  std::vector<TokenId> tokens;
  std::vector<Observed> observed;  // per layer
  OffloadStats stats;
};

StatusOr<Run> Generate(const Model& model, CacheClient* client, const predictor::PolicySpec& spec,
                       const OffloadOptions& o, const std::vector<TokenId>& prompt, int steps) {
  FS_ASSIGN_OR_RETURN(auto seq, OffloadedSequence::Create(model, client, spec, o));
  Run r;
  FS_RETURN_IF_ERROR(seq->BeginPrefill(prompt));
  seq->TEST_policy()->TEST_SetObservationTap([&](int32_t layer, const predictor::PrefillObservation& obs) {
    r.observed.resize(std::max<size_t>(r.observed.size(), layer + 1));
    r.observed[layer] = Observed{obs.rows,
                                 {obs.block_max.begin(), obs.block_max.end()},
                                 {obs.block_sum.begin(), obs.block_sum.end()},
                                 {obs.block_sum_total.begin(), obs.block_sum_total.end()}};
  });
  std::vector<float> logits(model.config().vocab_size);
  std::vector<StepItem> items(1);
  while (seq->prefill_remaining() > 0) {
    items[0] = seq->NextPrefillChunk(o.prefill_chunk, logits.data());
    seq->backend().Run(&items);
    FS_RETURN_IF_ERROR(seq->EndPrefillChunk(items[0]));
  }
  for (int s = 0; s < steps; ++s) {
    r.tokens.push_back(Argmax(logits));
    FS_RETURN_IF_ERROR(seq->Decode(r.tokens.back(), &logits));
  }
  FS_RETURN_IF_ERROR(seq->Flush());
  r.stats = seq->stats();
  return r;
}

struct Policy {
  std::string name;
  predictor::PolicySpec spec;
  PolicyAttentionOptions attention{CalibrationSource::kCompactKeys};
};

// AttentionPredictor as served (random CNN weights) and Quest, at budget 256 (16 of ~58 blocks).
std::vector<Policy> Policies() {
  std::vector<Policy> out;
  Policy ap;
  ap.name = "ap";
  ap.spec.kind = predictor::PolicyKind::kAttentionPredictor;
  ap.spec.weights = predictor::CnnWeights::Random(7);
  ApplyQueryRefinement(predictor::PolicySpec::kServingQueryRefine, &ap.spec, &ap.attention);
  out.push_back(ap);
  Policy quest;
  quest.name = "quest";
  quest.spec.kind = predictor::PolicyKind::kQuest;
  out.push_back(quest);
  Policy h2o;
  h2o.name = "h2o";  // seeded from block_sum_total: the sum over every prefilled row
  h2o.spec.kind = predictor::PolicyKind::kH2O;
  out.push_back(h2o);
  for (Policy& p : out) p.spec.budget.budget_tokens = 256;
  return out;
}

class SeedCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto cache = LocalCache::Start({"--ram-bytes", "256MiB"});
    ASSERT_TRUE(cache.ok()) << cache.status().ToString();
    node_ = std::move(cache->node);
    client_ = std::move(cache->client);
    // Quantised weights: a token's rows and KV do not depend on how its prompt was cut into chunks
    // (tests/worker/prefill_chunking_test.cc), so rows from another prompt's prefill are exact.
    SyntheticModelSpec spec;
    spec.type = TensorType::kQ4_1;
    auto model = MakeSyntheticModel(spec);
    ASSERT_TRUE(model.ok());
    model_ = std::move(*model);
  }

  OffloadOptions Options(const std::string& name_space, SeedCache* seeds) const {
    OffloadOptions o;
    o.name_space = name_space;
    o.mode = OffloadMode::kCrossToken;
    o.local_blocks = 4;
    o.seed_cache = seeds;
    return o;
  }

  std::unique_ptr<LocalNode> node_;
  std::unique_ptr<CacheClient> client_;
  std::unique_ptr<Model> model_;
};

// A cold request publishes the document and leaves its last rows in the seed cache; a warm request
// with another question then takes the document's rows from there: it imports every shared block
// (56, not (930 - 64) / 16 = 54), prefills 34 tokens instead of 66, and decodes the same tokens as
// without the seed cache.
TEST_F(SeedCacheTest, SeededWarmRequestDecodesTheSameTokensAndPrefillsLess) {
  const std::vector<TokenId> cold = WithQuestion(30, 1), warm = WithQuestion(25, 2);
  int n = 0;
  for (const Policy& policy : Policies()) {
    SeedCache seeds(512ull << 20);
    const std::string ns = "exact" + std::to_string(n++);
    OffloadOptions o = Options(ns, &seeds);
    o.attention = policy.attention;
    o.import_prefix = false;
    auto first = Generate(*model_, client_.get(), policy.spec, o, cold, 4);
    ASSERT_TRUE(first.ok()) << policy.name << ": " << first.status().ToString();
    // Its last 128 positions' full blocks: [ceil((935 - 128) / 16), 935 / 16) = [51, 58).
    EXPECT_EQ(first->stats.seed_blocks_captured, 7) << policy.name;
    EXPECT_EQ(seeds.stats().blocks, 7) << policy.name;

    o.import_prefix = true;
    o.seed_cache = nullptr;
    auto plain = Generate(*model_, client_.get(), policy.spec, o, warm, 24);
    ASSERT_TRUE(plain.ok()) << policy.name << ": " << plain.status().ToString();
    EXPECT_EQ(plain->stats.prefix_blocks_imported, (930 - 64) / 16) << policy.name;

    o.seed_cache = &seeds;
    auto seeded = Generate(*model_, client_.get(), policy.spec, o, warm, 24);
    ASSERT_TRUE(seeded.ok()) << policy.name << ": " << seeded.status().ToString();
    EXPECT_EQ(seeded->stats.prefix_blocks_imported, 905 / 16) << policy.name;
    EXPECT_EQ(seeded->stats.seed_blocks, 2) << policy.name;
    // Bit for bit the observation the unseeded request seeded its policy with (its 64 rows and the
    // total over the 66 rows it prefilled), hence the same tokens.
    ASSERT_EQ(seeded->observed.size(), static_cast<size_t>(model_->config().n_layers)) << policy.name;
    EXPECT_TRUE(seeded->observed == plain->observed) << policy.name;
    EXPECT_EQ(seeded->tokens, plain->tokens) << policy.name;
    EXPECT_GT(seeded->stats.heads_fetched, 0) << policy.name;
    // Its own question's full blocks (56 and 57) joined the cache.
    EXPECT_EQ(seeded->stats.seed_blocks_captured, 2) << policy.name;

    // In resident mode too (the policy's selection over the KV on the worker). The seeded run above
    // published the warm prompt's blocks 56 and 57 and left their rows: now only the last two
    // tokens are prefilled.
    o.mode = OffloadMode::kResident;
    o.publish = false;
    o.seed_cache = nullptr;
    auto resident_plain = Generate(*model_, client_.get(), policy.spec, o, warm, 24);
    o.seed_cache = &seeds;
    auto resident_seeded = Generate(*model_, client_.get(), policy.spec, o, warm, 24);
    ASSERT_TRUE(resident_plain.ok() && resident_seeded.ok()) << policy.name;
    EXPECT_EQ(resident_plain->stats.prefix_blocks_imported, (930 - 64) / 16) << policy.name;
    EXPECT_EQ(resident_seeded->stats.prefix_blocks_imported, 930 / 16) << policy.name;
    EXPECT_EQ(resident_seeded->stats.seed_blocks, 4) << policy.name;
    EXPECT_TRUE(resident_seeded->observed == resident_plain->observed) << policy.name;
    EXPECT_EQ(resident_seeded->tokens, resident_plain->tokens) << policy.name;
  }
}

// Rows that do not reach back to where the warm request's window starts are not used: a cold
// prompt with a 100-token question kept the rows of blocks [55, 62) only, and the warm request's
// window starts in block 54. It runs exactly as without the cache. Nor are rows of another
// namespace used.
TEST_F(SeedCacheTest, RowsThatDoNotCoverTheWindowAreNotUsed) {
  const predictor::PolicySpec spec = Policies()[0].spec;
  SeedCache seeds(512ull << 20);
  OffloadOptions o = Options("cover", &seeds);
  o.attention = Policies()[0].attention;
  o.import_prefix = false;
  auto first = Generate(*model_, client_.get(), spec, o, WithQuestion(100, 1), 2);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->stats.seed_blocks_captured, 62 - 55);

  o.import_prefix = true;
  const std::vector<TokenId> warm = WithQuestion(25, 2);
  auto seeded = Generate(*model_, client_.get(), spec, o, warm, 16);
  ASSERT_TRUE(seeded.ok()) << seeded.status().ToString();
  EXPECT_EQ(seeded->stats.seed_blocks, 0);
  EXPECT_EQ(seeded->stats.prefix_blocks_imported, (930 - 64) / 16);
  o.seed_cache = nullptr;
  auto plain = Generate(*model_, client_.get(), spec, o, warm, 16);
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_TRUE(seeded->observed == plain->observed);
  EXPECT_EQ(seeded->tokens, plain->tokens);

  // A cold request in another namespace leaves rows the "cover" namespace never finds.
  SeedCache other(512ull << 20);
  OffloadOptions elsewhere = Options("elsewhere", &other);
  elsewhere.attention = o.attention;
  elsewhere.import_prefix = false;
  ASSERT_TRUE(Generate(*model_, client_.get(), spec, elsewhere, WithQuestion(30, 1), 1).ok());
  o.seed_cache = &other;
  auto foreign = Generate(*model_, client_.get(), spec, o, warm, 1);
  ASSERT_TRUE(foreign.ok()) << foreign.status().ToString();
  EXPECT_EQ(foreign->stats.seed_blocks, 0);
}

// The budget holds: a cache with room for a few blocks evicts the least recently used ones, and a
// lookup counts as a use.
TEST(SeedCacheBudgetTest, EvictsLeastRecentlyUsedBeyondTheBudget) {
  const int32_t layers = 2, heads = 4;
  auto rows = [&](int64_t block) { return std::make_shared<SeedRows>(layers, heads, block); };
  const uint64_t one = rows(9)->bytes();  // every block below has depth 9
  ASSERT_EQ(one, 2u * layers * heads * 16 * 10 * sizeof(float));
  SeedCache cache(3 * one);
  std::vector<BlockKey> keys;
  PrefixChain chain("ns", "model");
  for (int i = 0; i < 5; ++i) keys.push_back(chain.Extend(std::vector<int32_t>(16, i)));
  cache.Insert(keys[0], rows(9));
  cache.Insert(keys[1], rows(9));
  cache.Insert(keys[2], rows(9));
  EXPECT_EQ(cache.stats().bytes, 3 * one);
  ASSERT_NE(cache.Lookup(keys[0]), nullptr);  // 0 is now the most recent; 1 the least
  cache.Insert(keys[3], rows(9));
  EXPECT_FALSE(cache.Contains(keys[1]));
  EXPECT_TRUE(cache.Contains(keys[0]) && cache.Contains(keys[2]) && cache.Contains(keys[3]));
  cache.Insert(keys[2], rows(9));  // already held: touched, not charged twice
  cache.Insert(keys[4], rows(9));
  EXPECT_FALSE(cache.Contains(keys[0]));
  EXPECT_TRUE(cache.Contains(keys[2]) && cache.Contains(keys[3]) && cache.Contains(keys[4]));
  const SeedCache::Stats s = cache.stats();
  EXPECT_EQ(s.blocks, 3);
  EXPECT_EQ(s.bytes, 3 * one);
  EXPECT_EQ(s.evicted, 2);
  EXPECT_EQ(s.inserted, 5);
  // A block larger than the whole budget is never kept (nor does it evict anything).
  SeedCache tiny(one / 2);
  tiny.Insert(keys[0], rows(9));
  EXPECT_EQ(tiny.stats().blocks, 0);
}

// With a budget below a prefill's rows, a request's blocks evict each other (the cache never holds
// more than its budget) and a warm request finds no run to use: it runs exactly as without it.
TEST_F(SeedCacheTest, ASmallBudgetEvictsAndStaysExact) {
  const Policy policy = Policies()[1];
  const uint64_t block_bytes = SeedRows(model_->config().n_layers, model_->config().n_heads, 56).bytes();
  SeedCache seeds(block_bytes + block_bytes / 2);  // one block at that depth
  OffloadOptions o = Options("small", &seeds);
  o.import_prefix = false;
  ASSERT_TRUE(Generate(*model_, client_.get(), policy.spec, o, WithQuestion(30, 1), 1).ok());
  EXPECT_EQ(seeds.stats().blocks, 1);
  EXPECT_GE(seeds.stats().evicted, 5);
  EXPECT_LE(seeds.stats().bytes, seeds.budget_bytes());
  o.import_prefix = true;
  const std::vector<TokenId> warm = WithQuestion(25, 2);
  auto seeded = Generate(*model_, client_.get(), policy.spec, o, warm, 12);
  ASSERT_TRUE(seeded.ok()) << seeded.status().ToString();
  EXPECT_EQ(seeded->stats.seed_blocks, 0);
  o.seed_cache = nullptr;
  auto plain = Generate(*model_, client_.get(), policy.spec, o, warm, 12);
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE(seeded->observed == plain->observed);
  EXPECT_EQ(seeded->tokens, plain->tokens);
}

}  // namespace
}  // namespace foresight::worker
