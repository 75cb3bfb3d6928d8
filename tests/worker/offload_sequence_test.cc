// OffloadedSequence against a real foresight-cached (LocalNode): where the blocks live never
// changes the output (issue 5, acceptance 1).
#include "worker/offload/offloaded_sequence.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "predictor/cnn_weights.h"
#include "testing/local_node.h"
#include "tests/worker/local_cache.h"
#include "worker/offload/resident_pool.h"
#include "worker/synthetic_model.h"

namespace foresight::worker {
namespace {

std::vector<TokenId> Prompt(int n) {
  std::vector<TokenId> t(n);
  for (int i = 0; i < n; ++i) t[i] = static_cast<TokenId>((i * 53 + 7) % 256);
  return t;
}

TokenId Argmax(const std::vector<float>& v) {
  return static_cast<TokenId>(std::max_element(v.begin(), v.end()) - v.begin());
}

struct Run {
  std::vector<TokenId> tokens;
  OffloadStats stats;
};

StatusOr<Run> Generate(const Model& model, CacheClient* client, const predictor::PolicySpec& spec, OffloadOptions o,
                       const std::vector<TokenId>& prompt, int steps) {
  FS_ASSIGN_OR_RETURN(auto seq, OffloadedSequence::Create(model, client, spec, o));
  std::vector<float> logits;
  FS_RETURN_IF_ERROR(seq->Prefill(prompt, &logits));
  Run r;
  for (int s = 0; s < steps; ++s) {
    r.tokens.push_back(Argmax(logits));
    FS_RETURN_IF_ERROR(seq->Decode(r.tokens.back(), &logits));
  }
  r.stats = seq->stats();
  return r;
}

// AttentionPredictor as served (random CNN weights) at budget 256: 16 of a 900-token prompt's 57
// blocks per KV head.
void ServedAttentionPredictor(predictor::PolicySpec* spec, PolicyAttentionOptions* options) {
  spec->kind = predictor::PolicyKind::kAttentionPredictor;
  spec->weights = predictor::CnnWeights::Random(7);
  spec->budget.budget_tokens = 256;
  ApplyQueryRefinement(predictor::PolicySpec::kServingQueryRefine, spec, options);
}

class OffloadSequenceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto cache = LocalCache::Start({"--ram-bytes", "256MiB"});
    ASSERT_TRUE(cache.ok()) << cache.status().ToString();
    node_ = std::move(cache->node);
    client_ = std::move(cache->client);
    auto model = MakeSyntheticModel(SyntheticModelSpec{});
    ASSERT_TRUE(model.ok());
    model_ = std::move(*model);
  }
  std::unique_ptr<LocalNode> node_;
  std::unique_ptr<CacheClient> client_;
  std::unique_ptr<Model> model_;
};

// Greedy decoding with a budget far below the context: every offloaded mode, with and without
// reuse, gives the tokens of the all-resident run, and really fetched from the node.
TEST_F(OffloadSequenceTest, OutputTokensIdenticalInEveryMode) {
  const std::vector<TokenId> prompt = Prompt(900);
  const int steps = 24;
  std::vector<predictor::PolicySpec> specs;
  {
    predictor::PolicySpec ap;
    ap.kind = predictor::PolicyKind::kAttentionPredictor;
    ap.weights = predictor::CnnWeights::Random(7);
    ap.calibration_period = 5;
    specs.push_back(ap);
    // The serving default: a quarter of the blocks chosen by the step's query against the compact
    // key copy (the CNN's share prefetched, the rest fetched at the step).
    PolicyAttentionOptions served;
    ApplyQueryRefinement(predictor::PolicySpec::kServingQueryRefine, &ap, &served);
    specs.push_back(ap);
    predictor::PolicySpec h2o;
    h2o.kind = predictor::PolicyKind::kH2O;
    specs.push_back(h2o);
    predictor::PolicySpec quest;  // needs the query: fetched on demand in every mode
    quest.kind = predictor::PolicyKind::kQuest;
    specs.push_back(quest);
  }
  int ns = 0;
  for (predictor::PolicySpec spec : specs) {
    spec.budget.budget_tokens = 256;  // 16 of the context's 57 blocks per KV head
    OffloadOptions base;
    if (spec.query_refine > 0) ApplyQueryRefinement(spec.query_refine, &spec, &base.attention);
    base.import_prefix = false;
    base.name_space = "t" + std::to_string(ns++);
    base.mode = OffloadMode::kResident;
    base.publish = false;
    auto resident = Generate(*model_, client_.get(), spec, base, prompt, steps);
    ASSERT_TRUE(resident.ok()) << resident.status().ToString();
    ASSERT_EQ(resident->stats.heads_fetched, 0);
    for (OffloadMode mode : {OffloadMode::kOnDemand, OffloadMode::kCrossLayer, OffloadMode::kCrossToken}) {
      for (bool reuse : {true, false}) {
        OffloadOptions o = base;
        o.mode = mode;
        o.publish = true;
        o.reuse = reuse;
        o.local_blocks = 4;
        o.margin_blocks = 4;
        const std::string what = std::string(predictor::PolicyKindName(spec.kind)) +
                                 (spec.query_refine > 0 ? " refined " : " ") + std::string(OffloadModeName(mode)) +
                                 (reuse ? "" : " no-reuse");
        auto off = Generate(*model_, client_.get(), spec, o, prompt, steps);
        ASSERT_TRUE(off.ok()) << what << ": " << off.status().ToString();
        EXPECT_EQ(off->tokens, resident->tokens) << what;
        EXPECT_GT(off->stats.heads_fetched, 0) << what;
        EXPECT_GT(off->stats.bytes_fetched, 0u) << what;
        // The worker really dropped the history: far less than the full KV stays on it.
        EXPECT_LT(off->stats.resident_kv_bytes,
                  20u * model_->config().n_layers * SyntheticModelSpec{}.n_kv_heads * 2 * 16 * 16 * 2 * 2)
            << what;
        if (!reuse && spec.kind != predictor::PolicyKind::kQuest) {
          // Without reuse only prefetched blocks are hits (Quest cannot be asked ahead).
          EXPECT_EQ(off->stats.pool_hits > 0, mode != OffloadMode::kOnDemand) << what;
        }
        if (spec.kind == predictor::PolicyKind::kH2O && mode == OffloadMode::kCrossToken && reuse) {
          // Prefetched ahead: hardly any step had to fetch on demand.
          EXPECT_GT(off->stats.pool_hits, 10 * off->stats.pool_misses) << what;
        }
      }
    }
    // No pool margin (a KV head attends the union of its query heads' choices, more than
    // budget/16 blocks): what does not fit is fetched on demand; same tokens. (This does not reach
    // Prefetch's every-slot-pinned path, which the worker service hit on 8K SmolLM2 prompts.)
    OffloadOptions small = base;
    small.mode = OffloadMode::kCrossToken;
    small.publish = true;
    small.local_blocks = 4;
    small.margin_blocks = 0;
    auto off = Generate(*model_, client_.get(), spec, small, prompt, steps);
    ASSERT_TRUE(off.ok()) << "small pool: " << off.status().ToString();
    EXPECT_EQ(off->tokens, resident->tokens) << "small pool";
  }
}

// A second request with the same prompt imports the published prefix instead of prefilling it,
// then decodes offloaded over those imported blocks (their keys and checksums come from Adopt):
// the same tokens as a resident run that imports the same prefix.
TEST_F(OffloadSequenceTest, ImportedPrefixDecodesOffloaded) {
  predictor::PolicySpec spec;
  spec.kind = predictor::PolicyKind::kH2O;
  spec.budget.budget_tokens = 256;
  const std::vector<TokenId> prompt = Prompt(900);
  OffloadOptions o;
  o.name_space = "shared";
  o.mode = OffloadMode::kOnDemand;
  o.import_prefix = false;
  {
    auto first = OffloadedSequence::Create(*model_, client_.get(), spec, o);
    ASSERT_TRUE(first.ok());
    std::vector<float> logits;
    ASSERT_TRUE((*first)->Prefill(prompt, &logits).ok());
    ASSERT_TRUE((*first)->Flush().ok());
  }
  o.import_prefix = true;
  o.mode = OffloadMode::kResident;
  o.publish = false;
  auto resident = Generate(*model_, client_.get(), spec, o, prompt, 12);
  ASSERT_TRUE(resident.ok()) << resident.status().ToString();
  EXPECT_EQ(resident->stats.prefix_blocks_imported, (900 - 64) / 16);
  o.mode = OffloadMode::kCrossToken;
  o.publish = true;
  o.local_blocks = 4;
  auto offloaded = Generate(*model_, client_.get(), spec, o, prompt, 12);
  ASSERT_TRUE(offloaded.ok()) << offloaded.status().ToString();
  EXPECT_EQ(offloaded->stats.prefix_blocks_imported, (900 - 64) / 16);
  EXPECT_GT(offloaded->stats.heads_fetched, 0);
  EXPECT_EQ(offloaded->tokens, resident->tokens);
}

// A worker makes an offloaded sequence per request on one long-lived client: each gives its
// transfer buffers (the resident pool, the fetch staging, the publisher's write-behind ring) back
// when it ends, and the next reuses them, so the client's buffers do not grow with the requests
// served (they once grew by ~56 MB a request in foresight-worker).
TEST_F(OffloadSequenceTest, SequencesOneAfterAnotherReuseTheirTransferBuffers) {
  predictor::PolicySpec spec;
  spec.kind = predictor::PolicyKind::kQuest;
  spec.budget.budget_tokens = 256;
  OffloadOptions o;
  o.mode = OffloadMode::kCrossToken;
  o.local_blocks = 4;
  std::vector<TokenId> first_tokens;
  uint64_t held_after_first = 0;
  for (int round = 0; round < 3; ++round) {
    o.name_space = "round" + std::to_string(round);
    auto run = Generate(*model_, client_.get(), spec, o, Prompt(600), 8);
    ASSERT_TRUE(run.ok()) << run.status().ToString();
    EXPECT_GT(run->stats.heads_fetched, 0);
    const CacheClient::BufferUsage u = client_->buffer_usage();
    EXPECT_EQ(u.in_use_bytes, 0u) << "round " << round;
    if (round == 0) {
      first_tokens = run->tokens;
      held_after_first = u.held_bytes;
      EXPECT_GT(held_after_first, 0u);
    } else {
      EXPECT_EQ(run->tokens, first_tokens) << "round " << round;
      EXPECT_EQ(u.held_bytes, held_after_first) << "round " << round;
      EXPECT_GE(u.reuses, static_cast<uint64_t>(u.buffers * round)) << "round " << round;
    }
  }
}

// A block that vanished from the node ends the request with an error naming it; no output is
// made from missing KV.
TEST_F(OffloadSequenceTest, AMissingBlockFailsTheStep) {
  predictor::PolicySpec spec;
  spec.kind = predictor::PolicyKind::kH2O;
  spec.budget.budget_tokens = 256;
  OffloadOptions o;
  o.import_prefix = false;
  o.mode = OffloadMode::kOnDemand;
  o.local_blocks = 4;
  auto seq = OffloadedSequence::Create(*model_, client_.get(), spec, o);
  ASSERT_TRUE(seq.ok()) << seq.status().ToString();
  std::vector<float> logits;
  const std::vector<TokenId> prompt = Prompt(900);
  ASSERT_TRUE((*seq)->Prefill(prompt, &logits).ok());
  // Evict every layer-1 block of the context.
  PrefixChain chain(o.name_space, ModelFingerprint(*model_));
  for (int b = 0; b < 900 / 16; ++b) {
    chain.Extend(std::span<const int32_t>(prompt.data() + b * 16, 16));
    (void)client_->Evict(chain.LayerKey(1));
  }
  Status s;
  for (int i = 0; i < 4 && s.ok(); ++i) s = (*seq)->Decode(Argmax(logits), &logits);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.ToString().find("layer 1 block"), std::string::npos) << s.ToString();
}

// Heads of one block fetched together are one get (a ranged get of the contiguous heads, or the
// whole block when every head is wanted) instead of one per head: same tokens, same heads, fewer
// requests. Four KV heads, so that both partial ranges and whole blocks occur.
TEST_F(OffloadSequenceTest, CoalescedGetsGiveTheSameTokensWithFewerRequests) {
  SyntheticModelSpec ms;
  ms.n_heads = 8;
  ms.n_kv_heads = 4;
  ms.d_model = 128;
  auto model = MakeSyntheticModel(ms);
  ASSERT_TRUE(model.ok());
  predictor::PolicySpec spec;
  spec.kind = predictor::PolicyKind::kH2O;
  spec.budget.budget_tokens = 256;
  const std::vector<TokenId> prompt = Prompt(900);
  OffloadOptions o;
  o.import_prefix = false;
  o.mode = OffloadMode::kResident;
  o.publish = false;
  auto resident = Generate(**model, client_.get(), spec, o, prompt, 12);
  ASSERT_TRUE(resident.ok()) << resident.status().ToString();
  o.name_space = "coalesce";
  o.publish = true;
  o.local_blocks = 4;
  o.reuse = false;
  for (OffloadMode mode : {OffloadMode::kOnDemand, OffloadMode::kCrossToken}) {
    o.mode = mode;
    o.staging_bytes = 0;
    auto per_head = Generate(**model, client_.get(), spec, o, prompt, 12);
    o.staging_bytes = -1;
    auto coalesced = Generate(**model, client_.get(), spec, o, prompt, 12);
    const std::string what(OffloadModeName(mode));
    ASSERT_TRUE(per_head.ok()) << what << ": " << per_head.status().ToString();
    ASSERT_TRUE(coalesced.ok()) << what << ": " << coalesced.status().ToString();
    EXPECT_EQ(per_head->tokens, resident->tokens) << what;
    EXPECT_EQ(coalesced->tokens, resident->tokens) << what;
    EXPECT_EQ(per_head->stats.fetch_requests, per_head->stats.heads_fetched) << what;
    EXPECT_EQ(coalesced->stats.heads_fetched, per_head->stats.heads_fetched) << what;
    EXPECT_GT(coalesced->stats.staging_bytes, 0u) << what;
    EXPECT_LT(coalesced->stats.fetch_requests * 2, coalesced->stats.heads_fetched) << what;
    // A bridged gap moves an unwanted head; a run of k wanted heads spans at most 2k - 1.
    EXPECT_GE(coalesced->stats.bytes_fetched, per_head->stats.bytes_fetched) << what;
    EXPECT_LT(coalesced->stats.bytes_fetched, per_head->stats.bytes_fetched * 2) << what;
  }
}

// AttentionPredictor as served chooses a quarter of its blocks by the step's query, which no one
// knows a step ahead. Cross-token prefetch guesses that quarter from the layer's previous query
// (speculative_blocks 0), optionally with more blocks by the same scores (> 0); -1 prefetches the
// CNN's share alone. Without reuse every step's blocks must be fetched for that step, so the
// on-demand fetches (pool misses) show what the guess caught. The guess steers prefetch only:
// the tokens stay those of the all-resident run.
TEST_F(OffloadSequenceTest, GuessingTheQuerysShareCutsOnDemandFetches) {
  predictor::PolicySpec spec;
  PolicyAttentionOptions served;
  ServedAttentionPredictor(&spec, &served);
  const std::vector<TokenId> prompt = Prompt(900);
  const int steps = 16;
  OffloadOptions o;
  o.import_prefix = false;
  o.attention = served;
  o.attention.lookahead_query = false;  // every layer scores its own query: none is known ahead
  o.mode = OffloadMode::kResident;
  o.publish = false;
  auto resident = Generate(*model_, client_.get(), spec, o, prompt, steps);
  ASSERT_TRUE(resident.ok()) << resident.status().ToString();
  o.name_space = "guess";
  o.publish = true;
  o.mode = OffloadMode::kCrossToken;
  o.reuse = false;
  o.local_blocks = 4;
  o.margin_blocks = 16;
  std::map<int64_t, OffloadStats> by_guess;
  for (int64_t speculative : {-1, 0, 8}) {
    o.attention.speculative_blocks = speculative;
    auto run = Generate(*model_, client_.get(), spec, o, prompt, steps);
    const std::string what = "speculative_blocks " + std::to_string(speculative);
    ASSERT_TRUE(run.ok()) << what << ": " << run.status().ToString();
    EXPECT_EQ(run->tokens, resident->tokens) << what;
    by_guess[speculative] = run->stats;
  }
  // Each guess prefetches a superset of the one before, so each is fetched on demand less.
  EXPECT_GT(by_guess[-1].pool_misses, 0);
  EXPECT_LT(by_guess[0].pool_misses, by_guess[-1].pool_misses);
  EXPECT_LE(by_guess[8].pool_misses, by_guess[0].pool_misses);
  EXPECT_GT(by_guess[8].heads_fetched, by_guess[0].heads_fetched);  // and it costs bytes
}

// With lookahead queries (layer l + 1's query estimated from layer l's input), layer l + 1's whole
// selection is known while layer l computes, and layer 0 is not refined (the CNN's choice, known a
// step ahead): cross-token fetches every block ahead of its layer, nothing on demand, even without
// reuse. Four layers; tokens as all-resident with the same scorer (the lookahead scores choose
// other blocks than the exact query's).
TEST_F(OffloadSequenceTest, LookaheadQueriesLetCrossTokenFetchEveryBlockAhead) {
  SyntheticModelSpec ms;
  ms.n_layers = 4;
  auto model = MakeSyntheticModel(ms);
  ASSERT_TRUE(model.ok());
  predictor::PolicySpec spec;
  PolicyAttentionOptions served;
  ServedAttentionPredictor(&spec, &served);
  const std::vector<TokenId> prompt = Prompt(900);
  const int steps = 16;
  std::map<bool, OffloadStats> by_lookahead;
  for (bool lookahead : {false, true}) {
    OffloadOptions o;
    o.import_prefix = false;
    o.attention = served;
    o.attention.lookahead_query = lookahead;
    o.attention.speculative_blocks = -1;  // no guess: the query's share comes from the lookahead or on demand
    o.mode = OffloadMode::kResident;
    o.publish = false;
    auto resident = Generate(**model, client_.get(), spec, o, prompt, steps);
    ASSERT_TRUE(resident.ok()) << resident.status().ToString();
    o.name_space = lookahead ? "lookahead" : "exact";
    o.publish = true;
    o.mode = OffloadMode::kCrossToken;
    o.reuse = false;
    o.local_blocks = 4;
    o.margin_blocks = 16;
    auto run = Generate(**model, client_.get(), spec, o, prompt, steps);
    const std::string what = lookahead ? "lookahead" : "exact query";
    ASSERT_TRUE(run.ok()) << what << ": " << run.status().ToString();
    EXPECT_EQ(run->tokens, resident->tokens) << what;
    by_lookahead[lookahead] = run->stats;
  }
  const OffloadStats& exact = by_lookahead[false];
  const OffloadStats& look = by_lookahead[true];
  EXPECT_GT(exact.pool_misses, 0);
  // Every layer misses its query's share without the lookahead; with it, none. (Waiting is not
  // counted here: this model's layers compute in microseconds, less than a fetch takes.)
  EXPECT_EQ(look.pool_misses, 0);
  EXPECT_GT(look.heads_fetched, 0);
}

// The node serves whatever is stored under a key, with a checksum of those bytes: a block
// rewritten there after publishing passes the transport's check, but not the producer's per-head
// checksums, which every coalesced range is checked against before use.
TEST_F(OffloadSequenceTest, ARewrittenBlockFailsTheProducersChecksum) {
  predictor::PolicySpec spec;
  spec.kind = predictor::PolicyKind::kH2O;
  spec.budget.budget_tokens = 256;
  OffloadOptions o;
  o.name_space = "rewritten";
  o.import_prefix = false;
  o.mode = OffloadMode::kOnDemand;
  o.reuse = false;
  o.local_blocks = 4;
  auto seq = OffloadedSequence::Create(*model_, client_.get(), spec, o);
  ASSERT_TRUE(seq.ok()) << seq.status().ToString();
  std::vector<float> logits;
  const std::vector<TokenId> prompt = Prompt(900);
  ASSERT_TRUE((*seq)->Prefill(prompt, &logits).ok());
  ASSERT_TRUE((*seq)->Decode(Argmax(logits), &logits).ok());
  const int64_t requests = (*seq)->stats().fetch_requests;
  EXPECT_LT(requests, (*seq)->stats().heads_fetched);  // two KV heads: mostly whole-block gets
  // Same size, other bytes, for every layer-1 block of the context.
  const BlockLayout& layout = (*seq)->kv().layout();
  std::vector<uint8_t> other(layout.block_bytes(), 0x5a);
  PrefixChain chain(o.name_space, ModelFingerprint(*model_));
  for (int b = 0; b < 900 / 16; ++b) {
    chain.Extend(std::span<const int32_t>(prompt.data() + b * 16, 16));
    ASSERT_TRUE(client_->Put(chain.LayerKey(1), other.data(), other.size()).ok());
  }
  Status s = (*seq)->Decode(Argmax(logits), &logits);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.ToString().find("producer's checksum"), std::string::npos) << s.ToString();
  EXPECT_NE(s.ToString().find("layer 1 block"), std::string::npos) << s.ToString();
}

TEST_F(OffloadSequenceTest, RefusesInconsistentOptions) {
  OffloadOptions o;
  o.mode = OffloadMode::kOnDemand;
  EXPECT_FALSE(OffloadedSequence::Create(*model_, client_.get(), std::nullopt, o).ok());
  EXPECT_FALSE(OffloadedSequence::Create(*model_, nullptr, predictor::PolicySpec{}, o).ok());
  predictor::PolicySpec ap;
  ap.weights = predictor::CnnWeights::Random(1);
  o.attention.calibration = CalibrationSource::kExact;
  EXPECT_FALSE(OffloadedSequence::Create(*model_, client_.get(), ap, o).ok());
  EXPECT_FALSE(ParseOffloadMode("cross-tokens").ok());
  EXPECT_EQ(*ParseOffloadMode("cross-layer"), OffloadMode::kCrossLayer);
}

TEST(ResidentPoolTest, EvictsLeastRecentlyUsedAndNeverPinned) {
  std::vector<uint8_t> buf(3 * 8);
  ResidentPool pool(buf.data(), 8, 3);
  auto* a = pool.Insert({0, 0, 1}, 0);
  auto* b = pool.Insert({0, 0, 2}, 0);
  auto* c = pool.Insert({0, 0, 3}, 0);
  ASSERT_TRUE(a && b && c);
  EXPECT_EQ(pool.Insert({0, 0, 4}, 0), nullptr);  // all pinned by their fetches
  for (auto* e : {a, b, c}) {
    pool.MarkReady(e);
    pool.Unpin(e);
  }
  pool.Pin(pool.Lookup({0, 0, 1}));  // a in use, b is now the least recently used
  auto* d = pool.Insert({0, 0, 4}, 0);
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(pool.Lookup({0, 0, 2}), nullptr);
  EXPECT_NE(pool.Lookup({0, 0, 1}), nullptr);
  EXPECT_FALSE(pool.Lookup({0, 0, 4})->ready);
  EXPECT_EQ(pool.evictions(), 1);
  // Touch moves an entry to the recently used end without pinning it.
  pool.MarkReady(d);
  pool.Unpin(d);
  pool.Unpin(pool.Lookup({0, 0, 1}));             // LRU order now: c, d, a
  pool.Touch(pool.Lookup({0, 0, 3}));             // d, a, c
  ASSERT_NE(pool.Insert({0, 0, 5}, 0), nullptr);  // evicts d, not c
  EXPECT_EQ(pool.Lookup({0, 0, 4}), nullptr);
  EXPECT_NE(pool.Lookup({0, 0, 3}), nullptr);
  EXPECT_NE(pool.Lookup({0, 0, 1}), nullptr);
}

}  // namespace
}  // namespace foresight::worker
