#include "cache_service/block_store.h"

#include <atomic>
#include <filesystem>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/checksum.h"
#include "tests/cache_service/block_store_fixture.h"

namespace foresight {
namespace {

using testing_util::Bytes;
using testing_util::PutBlock;

// The bytes of `key` as served; empty when none are.
std::vector<uint8_t> ReadBlock(BlockStore& store, const BlockKey& key) {
  auto lease = store.Lease(key);
  if (!lease.ok()) return {};
  return std::vector<uint8_t>(lease->data(), lease->data() + lease->size());
}

class BlockStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/block_store_" + std::to_string(::getpid()) + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Without background eviction, so that which block goes is deterministic.
  std::unique_ptr<BlockStore> Open(uint64_t ram, bool nvme) {
    BlockStoreOptions o;
    o.background_eviction = false;
    o.ram_bytes = ram;
    o.max_block_bytes = 1 << 20;
    if (nvme) o.nvme_dir = dir_;
    auto s = BlockStore::Open(o);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return std::move(*s);
  }
  std::string dir_;
};

TEST_F(BlockStoreTest, TwoPhasePutIsInvisibleUntilCommit) {
  auto store = Open(8 << 20, false);
  const BlockKey key = PlainKey("t", "a");
  const auto bytes = Bytes(50000, 1);
  auto slot = store->Reserve(key, bytes.size());
  ASSERT_TRUE(slot.ok());
  std::memcpy(slot->data(), bytes.data(), bytes.size() / 2);
  EXPECT_EQ(store->Lease(key).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store->Stats().pending_writes, 1u);
  std::memcpy(slot->data(), bytes.data(), bytes.size());
  ASSERT_TRUE(store->Commit(std::move(*slot), BlockChecksum(bytes.data(), bytes.size())).ok());
  EXPECT_EQ(ReadBlock(*store, key), bytes);
  EXPECT_EQ(store->Stats().pending_writes, 0u);
}

TEST_F(BlockStoreTest, CommitWithWrongChecksumStoresNothing) {
  auto store = Open(8 << 20, false);
  const BlockKey key = PlainKey("t", "a");
  const auto bytes = Bytes(4096, 1);
  auto slot = store->Reserve(key, bytes.size());
  ASSERT_TRUE(slot.ok());
  std::memcpy(slot->data(), bytes.data(), bytes.size());
  Status s = store->Commit(std::move(*slot), BlockChecksum(bytes.data(), bytes.size()) ^ 1);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_EQ(store->Lease(key).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store->Stats().checksum_failures, 1u);
  EXPECT_EQ(store->Stats().pending_writes, 0u);
}

TEST_F(BlockStoreTest, DroppedSlotIsFreed) {
  auto store = Open(2 << 20, false);
  for (int i = 0; i < 10; ++i) {
    auto slot = store->Reserve(PlainKey("t", "x"), 1 << 20);
    ASSERT_TRUE(slot.ok()) << i;  // would run out if dropped slots leaked
  }
  EXPECT_EQ(store->Stats().pending_writes, 0u);
}

TEST_F(BlockStoreTest, BadSizesAreRefusedWithReasons) {
  auto store = Open(4 << 20, false);
  auto zero = store->Reserve(PlainKey("t", "z"), 0);
  EXPECT_EQ(zero.status().code(), StatusCode::kInvalidArgument);
  auto big = store->Reserve(PlainKey("t", "b"), (1 << 20) + 1);
  EXPECT_EQ(big.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(big.status().message().find("maximum block size"), std::string::npos);
}

TEST_F(BlockStoreTest, EvictionIsLeastRecentlyUsedFirst) {
  auto store = Open(4 << 20, false);  // four 1 MiB blocks fit
  std::vector<BlockKey> keys;
  for (int i = 0; i < 4; ++i) {
    keys.push_back(PlainKey("t", std::to_string(i)));
    ASSERT_TRUE(PutBlock(*store, keys[i], Bytes(1 << 20, i)).ok());
  }
  (void)ReadBlock(*store, keys[0]);  // 0 becomes most recent; 1 is now the oldest
  ASSERT_TRUE(PutBlock(*store, PlainKey("t", "new"), Bytes(1 << 20, 9)).ok());
  EXPECT_TRUE(store->Stat(keys[0]).ok());
  EXPECT_FALSE(store->Stat(keys[1]).ok());
  EXPECT_TRUE(store->Stat(keys[2]).ok());
  EXPECT_TRUE(store->Stat(keys[3]).ok());
  EXPECT_GE(store->Stats().ram.evictions, 1u);
}

TEST_F(BlockStoreTest, LeasedBlockIsNeitherEvictedNorChangedUnderTheReader) {
  auto store = Open(2 << 20, false);
  const BlockKey a = PlainKey("t", "a");
  const auto bytes = Bytes(1 << 20, 1);
  ASSERT_TRUE(PutBlock(*store, a, bytes).ok());
  auto lease = store->Lease(a);
  ASSERT_TRUE(lease.ok());
  EXPECT_EQ(store->Stats().active_leases, 1u);
  // Fill and churn: only the non-leased slot may be reused.
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(PutBlock(*store, PlainKey("t", std::to_string(i)), Bytes(1 << 20, 10 + i)).ok());
  EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), lease->data()));
  EXPECT_TRUE(store->Stat(a).ok());
  *lease = ReadLease();
  EXPECT_EQ(store->Stats().active_leases, 0u);
}

TEST_F(BlockStoreTest, ReplacingALeasedBlockKeepsOldBytesForTheReader) {
  auto store = Open(4 << 20, false);
  const BlockKey a = PlainKey("t", "a");
  const auto v1 = Bytes(100000, 1), v2 = Bytes(100000, 2);
  ASSERT_TRUE(PutBlock(*store, a, v1).ok());
  auto lease = store->Lease(a);
  ASSERT_TRUE(lease.ok());
  ASSERT_TRUE(PutBlock(*store, a, v2).ok());
  EXPECT_TRUE(std::equal(v1.begin(), v1.end(), lease->data()));
  EXPECT_EQ(ReadBlock(*store, a), v2);
}

TEST_F(BlockStoreTest, AllLeasedMeansResourceExhaustedNotAHang) {
  auto store = Open(2 << 20, false);
  ASSERT_TRUE(PutBlock(*store, PlainKey("t", "a"), Bytes(1 << 20, 1)).ok());
  ASSERT_TRUE(PutBlock(*store, PlainKey("t", "b"), Bytes(1 << 20, 2)).ok());
  auto la = store->Lease(PlainKey("t", "a"));
  auto lb = store->Lease(PlainKey("t", "b"));
  ASSERT_TRUE(la.ok() && lb.ok());
  auto slot = store->Reserve(PlainKey("t", "c"), 1 << 20);
  EXPECT_EQ(slot.status().code(), StatusCode::kResourceExhausted);
}

TEST_F(BlockStoreTest, EvictedBlocksGoToNvmeAndArePromotedBack) {
  auto store = Open(4 << 20, true);
  std::vector<std::vector<uint8_t>> data;
  for (int i = 0; i < 12; ++i) {
    data.push_back(Bytes(1 << 20, 100 + i));
    ASSERT_TRUE(PutBlock(*store, PlainKey("t", std::to_string(i)), data[i]).ok());
  }
  StoreStats s = store->Stats();
  EXPECT_GE(s.demotions, 8u);
  EXPECT_GE(s.nvme.items, 8u);
  // The oldest block is only on NVMe now; a read promotes it.
  auto info = store->Stat(PlainKey("t", "0"));
  ASSERT_TRUE(info.ok());
  EXPECT_FALSE(info->in_ram);
  EXPECT_TRUE(info->on_nvme);
  auto lease = store->Lease(PlainKey("t", "0"));
  ASSERT_TRUE(lease.ok()) << lease.status().ToString();
  EXPECT_FALSE(lease->was_in_ram());
  EXPECT_TRUE(std::equal(data[0].begin(), data[0].end(), lease->data()));
  *lease = ReadLease();
  EXPECT_TRUE(store->Stat(PlainKey("t", "0"))->in_ram);
  EXPECT_EQ(store->Stats().promotions, 1u);
  for (int i = 0; i < 12; ++i) EXPECT_EQ(ReadBlock(*store, PlainKey("t", std::to_string(i))), data[i]) << i;
}

TEST_F(BlockStoreTest, NvmeBlocksSurviveReopen) {
  std::vector<std::vector<uint8_t>> data;
  {
    auto store = Open(4 << 20, true);
    for (int i = 0; i < 6; ++i) {
      data.push_back(Bytes(300000, i));
      ASSERT_TRUE(PutBlock(*store, PlainKey("t", std::to_string(i)), data[i]).ok());
    }
    ASSERT_TRUE(store->Flush().ok());
  }
  auto store = Open(4 << 20, true);
  EXPECT_EQ(store->Stats().nvme.items, 6u);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(ReadBlock(*store, PlainKey("t", std::to_string(i))), data[i]);
}

TEST_F(BlockStoreTest, ReplacedBlockNeverResurfacesFromNvme) {
  auto store = Open(2 << 20, true);
  const BlockKey a = PlainKey("t", "a");
  ASSERT_TRUE(PutBlock(*store, a, Bytes(1 << 20, 1)).ok());
  ASSERT_TRUE(store->Flush().ok());
  const auto v2 = Bytes(1 << 20, 2);
  ASSERT_TRUE(PutBlock(*store, a, v2).ok());
  for (int i = 0; i < 4; ++i)
    ASSERT_TRUE(PutBlock(*store, PlainKey("t", std::to_string(i)), Bytes(1 << 20, 5 + i)).ok());
  EXPECT_EQ(ReadBlock(*store, a), v2);
}

TEST_F(BlockStoreTest, LongestPrefixSpansTiers) {
  auto store = Open(2 << 20, true);
  PrefixChain chain("t", "m");
  std::vector<BlockKey> keys;
  for (int i = 0; i < 6; ++i) {
    std::vector<int32_t> toks(16, i);
    chain.Extend(toks);
    keys.push_back(chain.LayerKey(0));
  }
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(PutBlock(*store, keys[i], Bytes(1 << 20, i)).ok());  // some evicted to NVMe
  EXPECT_EQ(store->LongestPrefix(keys), 4u);
  ASSERT_TRUE(store->Remove(keys[1]).ok());
  EXPECT_EQ(store->LongestPrefix(keys), 1u);
  EXPECT_EQ(store->Remove(keys[1]).code(), StatusCode::kNotFound);
}

TEST_F(BlockStoreTest, BackgroundEvictionKeepsTheArenaBetweenWatermarks) {
  BlockStoreOptions o;
  o.ram_bytes = 20 << 20;
  o.max_block_bytes = 1 << 20;
  o.nvme_dir = dir_;
  auto store = std::move(*BlockStore::Open(o));
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(PutBlock(*store, PlainKey("t", std::to_string(i)), Bytes(1 << 20, i)).ok());
  for (int i = 0; i < 500 && store->Stats().ram.items > 17; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  StoreStats s = store->Stats();
  EXPECT_LE(s.ram.items, 17u);  // 85% of 20 blocks
  EXPECT_GE(s.ram.items, 16u);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(ReadBlock(*store, PlainKey("t", std::to_string(i))), Bytes(1 << 20, i));
}

// Writers replace blocks while readers promote them and the evictor writes them down: the
// newest acknowledged version must always be found, never lost and never wrong. Each thread owns
// the keys k with k % 4 == t and remembers the bytes of its last committed version of each, so an
// older version that comes back (from NVMe, say) is caught by its content, not just its checksum.
TEST_F(BlockStoreTest, ReplacementsRacingEvictionAndPromotionLoseNothing) {
  BlockStoreOptions o;
  o.ram_bytes = 4 << 20;
  o.max_block_bytes = 256 << 10;
  o.nvme_dir = dir_;
  auto store = std::move(*BlockStore::Open(o));
  constexpr int kKeys = 48;  // 3x the RAM tier
  std::atomic<int> lost{0}, wrong{0}, checked{0}, put_failures{0};
  std::mutex first_mu;
  std::string first_error;
  auto note = [&](std::string what) {
    std::lock_guard<std::mutex> lock(first_mu);
    if (first_error.empty()) first_error = std::move(what);
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(100 + t);
      std::vector<std::vector<uint8_t>> committed(kKeys);  // empty: never written
      std::vector<int> version(kKeys, 0);
      for (int i = 0; i < 600; ++i) {
        const int k = (rng() % (kKeys / 4)) * 4 + t;
        const BlockKey key = PlainKey("race", std::to_string(k));
        if (rng() % 2) {
          std::vector<uint8_t> bytes = Bytes(200000, rng());
          if (PutBlock(*store, key, bytes).ok()) {
            committed[k] = std::move(bytes);
            ++version[k];
          } else {
            put_failures++;  // a refused replacement leaves the previous version in place
          }
        } else {
          auto lease = store->Lease(key);
          if (!lease.ok()) {
            if (!committed[k].empty()) {
              lost++;
              note("key " + std::to_string(k) + ": " + lease.status().ToString());
            }
          } else if (committed[k].empty() || lease->size() != committed[k].size() ||
                     std::memcmp(lease->data(), committed[k].data(), committed[k].size()) != 0) {
            wrong++;
            note("key " + std::to_string(k) + " served bytes that are not its last committed version (" +
                 std::to_string(version[k]) + " commits so far)");
          } else {
            checked++;
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(lost.load(), 0) << first_error;
  EXPECT_EQ(wrong.load(), 0) << first_error;
  EXPECT_EQ(put_failures.load(), 0);
  EXPECT_GT(checked.load(), 300);  // most reads found a version to compare
  const StoreStats stats = store->Stats();
  EXPECT_GT(stats.promotions, 0u) << "the race never went through NVMe";
  EXPECT_EQ(stats.checksum_failures, 0u);
}

// Content is a function of the key (its seed and its size), so a reader checks every byte it is
// served against what that key must hold: a torn block, another key's block or a stale size all fail.
TEST_F(BlockStoreTest, ConcurrentWritersAndReadersSeeOnlyWholeBlocks) {
  auto store = Open(8 << 20, true);
  auto content = [](int k) { return Bytes(65536 + 4096 * (k % 8), k); };
  std::vector<std::vector<uint8_t>> expected;
  for (int k = 0; k < 40; ++k) expected.push_back(content(k));
  std::atomic<int> bad{0}, wrong{0}, checked{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int i = 0; i < 300; ++i) {
        const int k = rng() % 40;
        const BlockKey key = PlainKey("t", std::to_string(k));
        if (rng() % 2) {
          if (!PutBlock(*store, key, expected[k]).ok()) bad++;
        } else {
          auto lease = store->Lease(key);
          if (!lease.ok()) continue;  // not written yet
          if (lease->size() != expected[k].size() ||
              std::memcmp(lease->data(), expected[k].data(), expected[k].size()) != 0) {
            wrong++;
          } else {
            checked++;
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(wrong.load(), 0) << "readers were served bytes that are not the key's block";
  EXPECT_GT(checked.load(), 100);
  EXPECT_EQ(store->Stats().active_leases, 0u);
  EXPECT_EQ(store->Stats().checksum_failures, 0u);
}

}  // namespace
}  // namespace foresight
