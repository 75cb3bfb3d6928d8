// KvPublisher and shared prefixes against a real foresight-cached (LocalNode).
#include "worker/offload/kv_publisher.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "testing/local_node.h"
#include "tests/client/gated_cache_client.h"
#include "worker/synthetic_model.h"

namespace foresight::worker {
namespace {

using testing_util::GatedCacheClient;
using testing_util::OpenGateOnExit;

std::vector<TokenId> Prompt(int n, int salt = 0) {
  std::vector<TokenId> t(n);
  for (int i = 0; i < n; ++i) t[i] = static_cast<TokenId>((i * 53 + 7 + salt * (i >= 100 ? 1 : 0)) % 256);
  return t;
}

struct Node {
  std::unique_ptr<LocalNode> node;
  std::unique_ptr<CacheClient> client;
};

Node StartNode() {
  Node n;
  auto node = LocalNode::Start({"--ram-bytes", "256MiB"});
  EXPECT_TRUE(node.ok()) << node.status().ToString();
  if (!node.ok()) return n;
  n.node = std::move(*node);
  CacheClientOptions o;
  o.address = n.node->address();
  auto client = CacheClient::Connect(o);
  EXPECT_TRUE(client.ok()) << client.status().ToString();
  if (client.ok()) n.client = std::move(*client);
  return n;
}

TEST(ModelFingerprintTest, StableAndSensitiveToWeights) {
  auto a = MakeSyntheticModel(SyntheticModelSpec{});
  auto b = MakeSyntheticModel(SyntheticModelSpec{});
  SyntheticModelSpec other;
  other.seed = 2;
  auto c = MakeSyntheticModel(other);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(ModelFingerprint(**a), ModelFingerprint(**b));
  EXPECT_EQ(ModelFingerprint(**a).size(), 32u);
  EXPECT_NE(ModelFingerprint(**a), ModelFingerprint(**c));
}

TEST(KvPublisherTest, ImportedPrefixContinuesExactlyLikeAFullPrefill) {
  Node n = StartNode();
  ASSERT_NE(n.client, nullptr);
  auto model = MakeSyntheticModel(SyntheticModelSpec{});
  ASSERT_TRUE(model.ok());
  const Model& m = **model;
  const std::string fp = ModelFingerprint(m);
  const std::vector<TokenId> a = Prompt(300);

  // Worker 1 prefills A and publishes it (in two calls, as chunks arrive). Chunks of 16 tokens
  // everywhere, so that the import boundary is a chunk boundary of the full prefill too (sgemm's
  // rounding depends on the chunk's shape; with equal chunks the computation is the same).
  std::unique_ptr<Backend> cpu = NewCpuBackend(m);
  std::unique_ptr<BackendSequence> s1 = *cpu->NewSequence(16);
  KvPublisher pub(n.client.get(), "ns", fp, m.config().n_layers, s1->host_kv()->layout());
  std::vector<TokenId> first(a.begin(), a.begin() + 96);
  ASSERT_TRUE(s1->Prefill(first, nullptr).ok());
  ASSERT_TRUE(pub.Publish(first, *s1->host_kv()).ok());
  ASSERT_TRUE(s1->Prefill(std::vector<TokenId>(a.begin() + 96, a.end()), nullptr).ok());
  ASSERT_TRUE(pub.Publish(a, *s1->host_kv()).ok());
  ASSERT_TRUE(pub.Flush().ok());
  EXPECT_EQ(pub.published_blocks(), 300 / 16);
  EXPECT_EQ(pub.stats().puts, (300 / 16) * (m.config().n_layers + 1));

  // A prompt sharing A's first 10 blocks (160 tokens) and diverging after.
  std::vector<TokenId> b = a;
  b.resize(250);
  for (size_t i = 165; i < b.size(); ++i) b[i] = static_cast<TokenId>((b[i] + 1) % 256);
  auto published = LongestPublishedPrefix(n.client.get(), "ns", fp, b);
  ASSERT_TRUE(published.ok()) << published.status().ToString();
  EXPECT_EQ(*published, 10);
  // Another namespace or model sees nothing.
  EXPECT_EQ(*LongestPublishedPrefix(n.client.get(), "other", fp, b), 0);
  EXPECT_EQ(*LongestPublishedPrefix(n.client.get(), "ns", std::string(32, '0'), b), 0);

  // Worker 2 imports those blocks and prefills the rest; logits equal a full prefill's.
  std::unique_ptr<BackendSequence> s2 = *cpu->NewSequence(16);
  ImportStats st;
  ASSERT_TRUE(ImportPrefix(n.client.get(), "ns", fp, b, *published, s2.get(), &st).ok());
  EXPECT_EQ(s2->position(), 160);
  EXPECT_EQ(st.blocks, 10);
  EXPECT_EQ(st.gets, 10 * (m.config().n_layers + 1));
  for (int32_t l = 0; l < m.config().n_layers; ++l) {
    for (int64_t blk = 0; blk < 10; ++blk) {
      ASSERT_EQ(0, std::memcmp(s2->host_kv()->block_data(l, blk), s1->host_kv()->block_data(l, blk),
                               s1->host_kv()->layout().block_bytes()));
    }
  }
  std::vector<float> imported, full;
  ASSERT_TRUE(s2->Prefill(std::vector<TokenId>(b.begin() + 160, b.end()), &imported).ok());
  std::unique_ptr<BackendSequence> s3 = *cpu->NewSequence(16);
  ASSERT_TRUE(s3->Prefill(b, &full).ok());
  ASSERT_EQ(imported.size(), full.size());
  EXPECT_EQ(imported, full);
  // And a decode step after it too.
  ASSERT_TRUE(s2->Decode(5, &imported).ok());
  ASSERT_TRUE(s3->Decode(5, &full).ok());
  EXPECT_EQ(imported, full);
}

// One layer's put of block 2 is held at a gate and then fails: the manifests of blocks 0 and 1 are
// written, block 2's never is (not while its put is outstanding, not after it failed), and neither
// is block 3's, although every layer of block 3 reached the node.
TEST(KvPublisherTest, ManifestWrittenOnlyAfterEveryLayer) {
  Node n = StartNode();
  ASSERT_NE(n.client, nullptr);
  auto model = MakeSyntheticModel(SyntheticModelSpec{});
  ASSERT_TRUE(model.ok());
  const Model& m = **model;
  ASSERT_GE(m.config().n_layers, 2);
  const std::string fp = ModelFingerprint(m);
  const std::vector<TokenId> a = Prompt(64);  // 4 full blocks
  std::unique_ptr<Backend> cpu = NewCpuBackend(m);
  std::unique_ptr<BackendSequence> s1 = *cpu->NewSequence();
  ASSERT_TRUE(s1->Prefill(a, nullptr).ok());
  PrefixChain chain("ns", fp);
  std::vector<BlockKey> chains;
  std::vector<std::vector<BlockKey>> layer_keys;
  for (int b = 0; b < 4; ++b) {
    chains.push_back(chain.Extend(std::span<const int32_t>(a.data() + b * 16, 16)));
    layer_keys.emplace_back();
    for (int32_t l = 0; l < m.config().n_layers; ++l) layer_keys.back().push_back(chain.LayerKey(l));
  }
  const BlockKey held = layer_keys[2][1];
  GatedCacheClient gated(n.client.get(), held);
  {
    KvPublisherOptions options;
    options.queue = {.ring_bytes = 32ull << 20, .max_batch = 1, .max_batches_in_flight = 64};  // one put per batch
    KvPublisher pub(&gated, "ns", fp, m.config().n_layers, s1->host_kv()->layout(), options);
    OpenGateOnExit open_on_exit{gated};
    ASSERT_TRUE(pub.Publish(a, *s1->host_kv()).ok());
    EXPECT_EQ(pub.enqueued_blocks(), 4);
    // Publish again (nothing new) until blocks 0 and 1 are acknowledged, their manifests follow,
    // and the held put has reached the gate.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while ((pub.acknowledged_blocks() < 2 || gated.batches_held() == 0) &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      ASSERT_TRUE(pub.Publish(a, *s1->host_kv()).ok());
    }
    ASSERT_EQ(pub.acknowledged_blocks(), 2) << "blocks 0 and 1 were never acknowledged";
    ASSERT_EQ(gated.batches_held(), 1u) << "block 2's layer 1 never reached the gate";
    // Block 2's layer 1 is not acknowledged, so neither block 2 nor anything after it is published.
    EXPECT_EQ(pub.published_blocks(), 2) << "a manifest was queued before every layer of its block was acknowledged";
    gated.Fail(Unavailable("layer put refused by the test"));
    Status flushed = pub.Flush();
    EXPECT_FALSE(flushed.ok()) << "a failed layer put must be reported";
    EXPECT_NE(flushed.ToString().find(held.ToHex()), std::string::npos) << flushed.ToString();
    EXPECT_EQ(pub.published_blocks(), 2);
  }
  // What the node holds: manifests 0 and 1 only; block 3's layers, but not its manifest.
  auto published = LongestPublishedPrefix(n.client.get(), "ns", fp, a);
  ASSERT_TRUE(published.ok()) << published.status().ToString();
  EXPECT_EQ(*published, 2);
  for (int b = 0; b < 4; ++b) {
    EXPECT_EQ(n.client->Stat(ManifestKey("ns", chains[b])).ok(), b < 2) << "manifest of block " << b;
  }
  EXPECT_EQ(n.client->Stat(held).status().code(), StatusCode::kNotFound);
  for (const BlockKey& key : layer_keys[3]) EXPECT_TRUE(n.client->Stat(key).ok()) << "block 3 layer not stored";
}

// Remove layer 1 of block 2 after publishing: the prefix is still "published" (manifest present),
// so an import must fail naming the block rather than produce KV.
TEST(KvPublisherTest, ImportOfAPublishedBlockMissingALayerFailsNamingIt) {
  Node n = StartNode();
  ASSERT_NE(n.client, nullptr);
  auto model = MakeSyntheticModel(SyntheticModelSpec{});
  ASSERT_TRUE(model.ok());
  const Model& m = **model;
  const std::string fp = ModelFingerprint(m);
  const std::vector<TokenId> a = Prompt(64);
  std::unique_ptr<Backend> cpu = NewCpuBackend(m);
  std::unique_ptr<BackendSequence> s1 = *cpu->NewSequence();
  ASSERT_TRUE(s1->Prefill(a, nullptr).ok());
  {
    KvPublisher pub(n.client.get(), "ns", fp, m.config().n_layers, s1->host_kv()->layout());
    ASSERT_TRUE(pub.Publish(a, *s1->host_kv()).ok());
    ASSERT_TRUE(pub.Flush().ok());
  }
  PrefixChain chain("ns", fp);
  for (int b = 0; b <= 2; ++b) chain.Extend(std::span<const int32_t>(a.data() + b * 16, 16));
  ASSERT_TRUE(n.client->Evict(chain.LayerKey(1)).ok());
  std::unique_ptr<BackendSequence> s2 = *cpu->NewSequence();
  Status s = ImportPrefix(n.client.get(), "ns", fp, a, 4, s2.get());
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.ToString().find("prefix block 2 layer 1"), std::string::npos) << s.ToString();
  EXPECT_EQ(s2->position(), 0);
  // Importing more blocks than the prompt holds is refused.
  EXPECT_FALSE(ImportPrefix(n.client.get(), "ns", fp, a, 5, s2.get()).ok());
}

// A prefix of 4 blocks published through the real node, and what an importer needs to damage it.
struct Published {
  Node n;
  std::unique_ptr<Model> model;
  std::string fp;
  std::vector<TokenId> tokens;
  std::vector<BlockKey> chains;               // per block
  std::vector<std::vector<BlockKey>> layers;  // [block][layer]
  BlockLayout layout{16, 1, 1, 1};            // the sequence's, once published
};

Published PublishFourBlocks() {
  Published p;
  p.n = StartNode();
  if (p.n.client == nullptr) return p;
  auto model = MakeSyntheticModel(SyntheticModelSpec{});
  EXPECT_TRUE(model.ok());
  if (!model.ok()) return p;
  p.model = std::move(*model);
  p.fp = ModelFingerprint(*p.model);
  p.tokens = Prompt(64);
  std::unique_ptr<Backend> cpu = NewCpuBackend(*p.model);
  std::unique_ptr<BackendSequence> s1 = *cpu->NewSequence();
  EXPECT_TRUE(s1->Prefill(p.tokens, nullptr).ok());
  p.layout = s1->host_kv()->layout();
  KvPublisher pub(p.n.client.get(), "ns", p.fp, p.model->config().n_layers, p.layout);
  EXPECT_TRUE(pub.Publish(p.tokens, *s1->host_kv()).ok());
  EXPECT_TRUE(pub.Flush().ok());
  EXPECT_EQ(pub.published_blocks(), 4);
  PrefixChain chain("ns", p.fp);
  for (int b = 0; b < 4; ++b) {
    p.chains.push_back(chain.Extend(std::span<const int32_t>(p.tokens.data() + b * 16, 16)));
    p.layers.emplace_back();
    for (int32_t l = 0; l < p.model->config().n_layers; ++l) p.layers.back().push_back(chain.LayerKey(l));
  }
  return p;
}

std::vector<uint8_t> Fetch(CacheClient& client, const BlockKey& key, uint64_t capacity) {
  std::vector<uint8_t> out(capacity);
  auto n = client.Get(key, out.data(), out.size());
  EXPECT_TRUE(n.ok()) << n.status().ToString();
  out.resize(n.ok() ? *n : 0);
  return out;
}

// Imports all 4 blocks into a fresh sequence; expects DATA_LOSS whose message holds `names`, and
// the sequence left empty (no partial import) and still usable: the 2 undamaged leading blocks
// import cleanly afterwards when `undamaged_prefix`.
void ExpectImportRefused(Published& p, const std::string& names, bool undamaged_prefix = true) {
  std::unique_ptr<Backend> cpu = NewCpuBackend(*p.model);
  std::unique_ptr<BackendSequence> s2 = *cpu->NewSequence();
  Status s = ImportPrefix(p.n.client.get(), "ns", p.fp, p.tokens, 4, s2.get());
  EXPECT_STREQ(StatusCodeName(s.code()), StatusCodeName(StatusCode::kDataLoss)) << s.ToString();
  EXPECT_NE(s.message().find(names), std::string::npos) << "expected \"" << names << "\" in: " << s.ToString();
  EXPECT_EQ(s2->position(), 0);
  EXPECT_EQ(s2->host_kv()->tokens(), 0) << "a refused import left KV in the sequence";
  if (undamaged_prefix) {
    Status ok = ImportPrefix(p.n.client.get(), "ns", p.fp, p.tokens, 2, s2.get());
    EXPECT_TRUE(ok.ok()) << ok.ToString();
    EXPECT_EQ(s2->position(), 32);
  }
}

TEST(KvPublisherTest, ImportRefusesAGarbageManifestWithDataLoss) {
  Published p = PublishFourBlocks();
  ASSERT_NE(p.model, nullptr);
  CacheClient& client = *p.n.client;
  const BlockKey manifest = ManifestKey("ns", p.chains[2]);
  const std::vector<uint8_t> good = Fetch(client, manifest, 1 << 20);
  ASSERT_FALSE(good.empty());
  // Same size, wrong bytes; shorter; longer than any manifest of this geometry.
  for (uint64_t size : {good.size(), good.size() / 2, good.size() + 4096}) {
    SCOPED_TRACE("garbage manifest of " + std::to_string(size) + " bytes");
    std::vector<uint8_t> garbage(size);
    std::mt19937 rng(static_cast<uint32_t>(size));
    for (auto& b : garbage) b = static_cast<uint8_t>(rng());
    ASSERT_TRUE(client.Put(manifest, garbage.data(), garbage.size()).ok());
    // Still "published": the lookup goes by the manifests' presence.
    EXPECT_EQ(*LongestPublishedPrefix(&client, "ns", p.fp, p.tokens), 4);
    ExpectImportRefused(p, "manifest of prefix block 2");
  }
}

TEST(KvPublisherTest, ImportRefusesAShortOrLongLayerBlockWithDataLossNamingBlockAndLayer) {
  Published p = PublishFourBlocks();
  ASSERT_NE(p.model, nullptr);
  CacheClient& client = *p.n.client;
  const BlockKey layer = p.layers[2][1];
  const std::vector<uint8_t> good = Fetch(client, layer, p.layout.block_bytes());
  ASSERT_EQ(good.size(), p.layout.block_bytes());
  for (uint64_t size : {good.size() - 1, good.size() / 2, good.size() + 64}) {
    SCOPED_TRACE("layer block of " + std::to_string(size) + " bytes");
    std::vector<uint8_t> changed(good);
    changed.resize(size, 0x5a);
    ASSERT_TRUE(client.Put(layer, changed.data(), changed.size()).ok());
    ExpectImportRefused(p, "prefix block 2 layer 1");
  }
}

TEST(KvPublisherTest, ImportRefusesAPerHeadChecksumMismatchWithDataLossNamingBlockLayerAndHead) {
  Published p = PublishFourBlocks();
  ASSERT_NE(p.model, nullptr);
  CacheClient& client = *p.n.client;
  const uint32_t heads = p.layout.kv_heads();
  ASSERT_GE(heads, 1u);
  const uint32_t head = heads - 1;
  const int32_t last_layer = p.model->config().n_layers - 1;
  const BlockKey layer = p.layers[3][last_layer];
  std::vector<uint8_t> changed = Fetch(client, layer, p.layout.block_bytes());
  ASSERT_EQ(changed.size(), p.layout.block_bytes());
  // Different bytes of the right size, put through the client: the node's and the transport's
  // checksums are the new bytes' own, so only the manifest's per-head checksum can catch it.
  changed[p.layout.head_range(head).offset + 5] ^= 0x01;
  ASSERT_TRUE(client.Put(layer, changed.data(), changed.size()).ok());
  ExpectImportRefused(p, "prefix block 3 layer " + std::to_string(last_layer) + " head " + std::to_string(head));
}

TEST(KvPublisherTest, ALostNodeIsReported) {
  Node n = StartNode();
  ASSERT_NE(n.client, nullptr);
  auto model = MakeSyntheticModel(SyntheticModelSpec{});
  ASSERT_TRUE(model.ok());
  const Model& m = **model;
  std::unique_ptr<Backend> cpu = NewCpuBackend(m);
  std::unique_ptr<BackendSequence> s1 = *cpu->NewSequence();
  const std::vector<TokenId> a = Prompt(128);
  ASSERT_TRUE(s1->Prefill(a, nullptr).ok());
  KvPublisher pub(n.client.get(), "ns", ModelFingerprint(m), m.config().n_layers, s1->host_kv()->layout());
  n.node->Kill9();
  Status s = pub.Publish(a, *s1->host_kv());
  if (s.ok()) s = pub.Flush();
  EXPECT_FALSE(s.ok());
}

}  // namespace
}  // namespace foresight::worker
