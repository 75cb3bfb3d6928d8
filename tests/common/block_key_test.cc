#include "common/block_key.h"

#include <unordered_set>
#include <vector>

#include <gtest/gtest.h>

namespace foresight {
namespace {

std::vector<int32_t> Tokens(int start, int n = 16) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = start + i;
  return t;
}

TEST(BlockKeyTest, EqualPrefixesGiveEqualKeysAcrossWorkers) {
  PrefixChain a("tenant", "model-x"), b("tenant", "model-x");
  for (int blk = 0; blk < 4; ++blk) {
    auto toks = Tokens(blk * 16);
    EXPECT_EQ(a.Extend(toks), b.Extend(toks));
    EXPECT_EQ(a.LayerKey(3), b.LayerKey(3));
  }
}

TEST(BlockKeyTest, KeyDependsOnEveryInput) {
  PrefixChain base("tenant", "model-x");
  const BlockKey k = base.Extend(Tokens(0));
  PrefixChain other_tenant("tenant2", "model-x");
  EXPECT_NE(other_tenant.Extend(Tokens(0)), k);
  PrefixChain other_model("tenant", "model-y");
  EXPECT_NE(other_model.Extend(Tokens(0)), k);
  PrefixChain other_tokens("tenant", "model-x");
  auto t = Tokens(0);
  t[15] += 1;
  EXPECT_NE(other_tokens.Extend(t), k);
  EXPECT_NE(base.LayerKey(0), base.LayerKey(1));
  EXPECT_NE(base.LayerKey(0), base.current());
}

TEST(BlockKeyTest, ChainDependsOnThePrefixNotJustTheBlock) {
  PrefixChain a("t", "m"), b("t", "m");
  a.Extend(Tokens(0));
  b.Extend(Tokens(100));
  EXPECT_NE(a.Extend(Tokens(16)), b.Extend(Tokens(16)));
}

TEST(BlockKeyTest, FieldBoundariesMatter) {
  EXPECT_NE(PlainKey("ab", "c"), PlainKey("a", "bc"));
  EXPECT_EQ(PlainKey("ns", "x"), PlainKey("ns", "x"));
}

TEST(BlockKeyTest, HexRoundTripAndErrors) {
  const BlockKey k = PlainKey("ns", "hello");
  auto parsed = BlockKey::FromHex(k.ToHex());
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(*parsed, k);
  EXPECT_EQ(k.ToHex().size(), 32u);
  EXPECT_FALSE(BlockKey::FromHex("abc").ok());
  EXPECT_FALSE(BlockKey::FromHex(std::string(32, 'g')).ok());
}

TEST(BlockKeyTest, NoCollisionsOverManyKeys) {
  std::unordered_set<BlockKey> seen;
  PrefixChain chain("t", "m");
  for (int i = 0; i < 20000; ++i) {
    chain.Extend(Tokens(i % 7));
    EXPECT_TRUE(seen.insert(chain.LayerKey(i % 30)).second);
  }
}

}  // namespace
}  // namespace foresight
