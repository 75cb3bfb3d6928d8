// The two-phase put (Reserve, write, Commit) where a block already exists or RAM is short: the
// version readers see changes only at commit, an abandoned put changes nothing, and a reserved
// slot is never taken back for room.
#include <gtest/gtest.h>

#include "tests/cache_service/block_store_fixture.h"

namespace foresight {
namespace {

using testing_util::BlockStoreFixture;
using testing_util::Bytes;
using testing_util::PutBlock;
using testing_util::ReadBlock;

constexpr uint64_t kMiB = 1 << 20;

class TwoPhasePutTest : public BlockStoreFixture {};

TEST_F(TwoPhasePutTest, AReplacementIsInvisibleUntilCommitted) {
  auto store = Open(8 * kMiB, kMiB, /*nvme=*/false);
  ASSERT_NE(store, nullptr);
  const BlockKey key = PlainKey("2p", "k");
  const auto v1 = Bytes(100000, 1), v2 = Bytes(120000, 2);
  ASSERT_TRUE(PutBlock(*store, key, v1).ok());
  auto slot = store->Reserve(key, v2.size());
  ASSERT_TRUE(slot.ok()) << slot.status().ToString();
  std::memcpy(slot->data(), v2.data(), v2.size());
  // Written but not committed: readers and Stat see the old version, whole.
  EXPECT_EQ(*ReadBlock(*store, key), v1);
  EXPECT_EQ(store->Stat(key)->size, v1.size());
  EXPECT_EQ(store->Stat(key)->checksum, BlockChecksum(v1.data(), v1.size()));
  ASSERT_TRUE(store->Commit(std::move(*slot), BlockChecksum(v2.data(), v2.size())).ok());
  EXPECT_EQ(*ReadBlock(*store, key), v2);
  EXPECT_EQ(store->Stats().ram.items, 1u);
  EXPECT_EQ(store->Stats().ram.used_bytes, v2.size());
}

TEST_F(TwoPhasePutTest, AnAbandonedOrFailedReplacementLeavesTheOldVersion) {
  auto store = Open(8 * kMiB, kMiB, /*nvme=*/false);
  ASSERT_NE(store, nullptr);
  const BlockKey key = PlainKey("2p", "k");
  const auto v1 = Bytes(100000, 1), v2 = Bytes(100000, 2);
  ASSERT_TRUE(PutBlock(*store, key, v1).ok());
  {
    auto slot = store->Reserve(key, v2.size());
    ASSERT_TRUE(slot.ok());
    std::memcpy(slot->data(), v2.data(), v2.size());
  }  // dropped without a commit
  EXPECT_EQ(*ReadBlock(*store, key), v1);
  auto slot = store->Reserve(key, v2.size());
  ASSERT_TRUE(slot.ok());
  std::memcpy(slot->data(), v2.data(), v2.size());
  EXPECT_EQ(store->Commit(std::move(*slot), BlockChecksum(v1.data(), v1.size())).code(), StatusCode::kDataLoss);
  EXPECT_EQ(*ReadBlock(*store, key), v1);
  EXPECT_EQ(store->Stats().pending_writes, 0u);
}

TEST_F(TwoPhasePutTest, AReservedSlotIsNeverEvictedForRoom) {
  auto store = Open(2 * kMiB, kMiB, /*nvme=*/false);  // two 1 MiB slots
  ASSERT_NE(store, nullptr);
  const auto pending_bytes = Bytes(kMiB, 1), old_bytes = Bytes(kMiB, 2);
  ASSERT_TRUE(PutBlock(*store, PlainKey("2p", "old"), old_bytes).ok());
  auto pending = store->Reserve(PlainKey("2p", "pending"), kMiB);
  ASSERT_TRUE(pending.ok());
  std::memcpy(pending->data(), pending_bytes.data(), kMiB);
  // RAM is full: the committed block makes room, the half-finished put is left alone.
  auto third = store->Reserve(PlainKey("2p", "third"), kMiB);
  ASSERT_TRUE(third.ok()) << third.status().ToString();
  EXPECT_EQ(store->Stat(PlainKey("2p", "old")).status().code(), StatusCode::kNotFound);
  // With only reserved slots left, a further put is refused, not served by taking one.
  EXPECT_EQ(store->Reserve(PlainKey("2p", "fourth"), kMiB).status().code(), StatusCode::kResourceExhausted);
  ASSERT_TRUE(store->Commit(std::move(*pending), BlockChecksum(pending_bytes.data(), kMiB)).ok());
  EXPECT_EQ(*ReadBlock(*store, PlainKey("2p", "pending")), pending_bytes);
}

TEST_F(TwoPhasePutTest, CommitRefusesAnEmptyOrForeignSlot) {
  auto store = Open(4 * kMiB, kMiB, /*nvme=*/false);
  auto other = Open(4 * kMiB, kMiB, /*nvme=*/false);
  ASSERT_NE(store, nullptr);
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(store->Commit(WriteSlot(), 0).code(), StatusCode::kInvalidArgument);
  const auto bytes = Bytes(4096, 1);
  auto slot = other->Reserve(PlainKey("2p", "k"), bytes.size());
  ASSERT_TRUE(slot.ok());
  std::memcpy(slot->data(), bytes.data(), bytes.size());
  EXPECT_EQ(store->Commit(std::move(*slot), BlockChecksum(bytes.data(), bytes.size())).code(),
            StatusCode::kInvalidArgument);
  // Refused by `store`, the slot went back to the store it came from.
  EXPECT_EQ(other->Stats().pending_writes, 0u);
  EXPECT_EQ(other->Lease(PlainKey("2p", "k")).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store->Lease(PlainKey("2p", "k")).status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace foresight
