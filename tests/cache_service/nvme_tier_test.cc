// NvmeTier on its own: the order in which capacity drops blocks, generations (an older version
// never overwrites a newer one), conditional deletes, and what a reopen recovers.
#include "cache_service/nvme_tier.h"

#include <unistd.h>

#include <filesystem>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "common/checksum.h"
#include "tests/cache_service/block_store_fixture.h"

namespace foresight {
namespace {

constexpr uint64_t kBlock = 64 << 10;

using testing_util::Bytes;

NvmeTier::Meta MetaOf(const std::vector<uint8_t>& bytes, uint64_t generation) {
  return NvmeTier::Meta{bytes.size(), BlockChecksum(bytes.data(), bytes.size()), generation};
}

class NvmeTierTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/nvme_tier_" + std::to_string(::getpid()) + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<NvmeTier> Open(uint64_t capacity) {
    auto tier = NvmeTier::Open(dir_, capacity);
    EXPECT_TRUE(tier.ok()) << tier.status().ToString();
    return tier.ok() ? std::move(*tier) : nullptr;
  }

  std::vector<uint8_t> Read(NvmeTier& tier, const BlockKey& key) {
    std::vector<uint8_t> out;
    auto meta = tier.Get(key, &out);
    EXPECT_TRUE(meta.ok()) << meta.status().ToString();
    return out;
  }

  std::string dir_;
};

TEST_F(NvmeTierTest, CapacityDropsTheLeastRecentlyUsedBlockFirst) {
  auto tier = Open(3 * kBlock);
  ASSERT_NE(tier, nullptr);
  std::vector<BlockKey> keys;
  std::vector<BlockKey> dropped;
  auto on_drop = [&](const BlockKey& k) { dropped.push_back(k); };
  for (int i = 0; i < 3; ++i) {
    keys.push_back(PlainKey("nvme", std::to_string(i)));
    const auto bytes = Bytes(kBlock, i);
    ASSERT_TRUE(tier->Put(keys[i], bytes.data(), MetaOf(bytes, i + 1), on_drop).ok());
  }
  EXPECT_TRUE(dropped.empty());
  (void)Read(*tier, keys[0]);  // a read makes 0 the most recent: 1 is now the oldest
  const auto bytes = Bytes(kBlock, 3);
  ASSERT_TRUE(tier->Put(PlainKey("nvme", "3"), bytes.data(), MetaOf(bytes, 4), on_drop).ok());
  ASSERT_EQ(dropped.size(), 1u);
  EXPECT_EQ(dropped[0], keys[1]);
  EXPECT_TRUE(tier->Contains(keys[0]));
  EXPECT_FALSE(tier->Contains(keys[1]));
  EXPECT_TRUE(tier->Contains(keys[2]));
  const NvmeTier::Counters c = tier->counters();
  EXPECT_EQ(c.items, 3u);
  EXPECT_EQ(c.used_bytes, 3 * kBlock);
  EXPECT_EQ(c.evictions, 1u);
}

TEST_F(NvmeTierTest, OpenErrorsNameTheDirectoryAndOnlyBlameAnotherNodeForTheLock) {
  auto first = Open(0);
  ASSERT_NE(first, nullptr);
  auto second = NvmeTier::Open(dir_, 0);  // RocksDB's LOCK is held (here by this process)
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("cannot open the NVMe tier in " + dir_), std::string::npos)
      << second.status().ToString();
  EXPECT_NE(second.status().message().find("is another foresight-cached using this directory?"), std::string::npos)
      << second.status().ToString();

  auto missing = NvmeTier::Open("/proc/no-such-dir/nvme", 0);  // cannot be created
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/proc/no-such-dir/nvme"), std::string::npos)
      << missing.status().ToString();
  EXPECT_EQ(missing.status().message().find("another foresight-cached"), std::string::npos)
      << missing.status().ToString();
}

TEST_F(NvmeTierTest, AnOlderGenerationNeverOverwritesANewerOne) {
  auto tier = Open(0);
  ASSERT_NE(tier, nullptr);
  const BlockKey key = PlainKey("nvme", "k");
  const auto v5 = Bytes(kBlock, 5), v3 = Bytes(kBlock, 3), v7 = Bytes(kBlock, 7);
  bool superseded = true;
  ASSERT_TRUE(tier->Put(key, v5.data(), MetaOf(v5, 5), {}, &superseded).ok());
  EXPECT_FALSE(superseded);
  ASSERT_TRUE(tier->Put(key, v3.data(), MetaOf(v3, 3), {}, &superseded).ok());
  EXPECT_TRUE(superseded);
  EXPECT_EQ(Read(*tier, key), v5);
  EXPECT_EQ(tier->Lookup(key)->generation, 5u);
  ASSERT_TRUE(tier->Put(key, v7.data(), MetaOf(v7, 7), {}, &superseded).ok());
  EXPECT_FALSE(superseded);
  EXPECT_EQ(Read(*tier, key), v7);
  EXPECT_EQ(tier->counters().items, 1u);
  EXPECT_EQ(tier->counters().used_bytes, kBlock);
}

TEST_F(NvmeTierTest, ConditionalDeleteSparesAVersionWrittenSince) {
  auto tier = Open(0);
  ASSERT_NE(tier, nullptr);
  const BlockKey key = PlainKey("nvme", "k");
  const auto old_bytes = Bytes(kBlock, 1), new_bytes = Bytes(kBlock, 2);
  ASSERT_TRUE(tier->Put(key, new_bytes.data(), MetaOf(new_bytes, 2)).ok());
  // The remover meant the old version: the new one stays.
  EXPECT_TRUE(tier->Delete(key, BlockChecksum(old_bytes.data(), kBlock)).ok());
  EXPECT_EQ(Read(*tier, key), new_bytes);
  EXPECT_TRUE(tier->Delete(key, BlockChecksum(new_bytes.data(), kBlock)).ok());
  EXPECT_FALSE(tier->Contains(key));
  EXPECT_EQ(tier->Delete(key).code(), StatusCode::kNotFound);
  std::vector<uint8_t> out;
  EXPECT_EQ(tier->Get(key, &out).status().code(), StatusCode::kNotFound);
}

TEST_F(NvmeTierTest, ReopenRecoversEveryBlockAndTheHighestGeneration) {
  std::vector<std::vector<uint8_t>> data;
  {
    auto tier = Open(0);
    ASSERT_NE(tier, nullptr);
    for (int i = 0; i < 4; ++i) {
      data.push_back(Bytes(kBlock + i, 10 + i));  // sizes differ, so a mix-up shows
      ASSERT_TRUE(tier->Put(PlainKey("nvme", std::to_string(i)), data[i].data(), MetaOf(data[i], 40 - i * 10)).ok());
    }
    ASSERT_TRUE(tier->Delete(PlainKey("nvme", "3")).ok());
  }
  auto tier = Open(0);
  ASSERT_NE(tier, nullptr);
  EXPECT_EQ(tier->max_generation(), 40u);
  EXPECT_EQ(tier->counters().items, 3u);
  EXPECT_FALSE(tier->Contains(PlainKey("nvme", "3")));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Read(*tier, PlainKey("nvme", std::to_string(i))), data[i]) << i;
    EXPECT_EQ(tier->Lookup(PlainKey("nvme", std::to_string(i)))->generation, 40u - i * 10) << i;
  }
}

}  // namespace
}  // namespace foresight
