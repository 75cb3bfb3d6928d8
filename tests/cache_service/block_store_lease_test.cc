// Leases and the order of eviction: a lease pins a block in RAM (also one promoted from NVMe) and
// keeps its bytes for the reader even when the block is removed; once released the block is
// evictable again; eviction takes the least recently used block of the size class that needs room.
#include <gtest/gtest.h>

#include "cache_service/arena_allocator.h"
#include "tests/cache_service/block_store_fixture.h"

namespace foresight {
namespace {

using testing_util::BlockStoreFixture;
using testing_util::Bytes;
using testing_util::PutBlock;
using testing_util::ReadBlock;

constexpr uint64_t kMiB = 1 << 20;

class LeaseTest : public BlockStoreFixture {};

TEST_F(LeaseTest, ABlockPromotedFromNvmeStaysPinnedUntilReleased) {
  auto store = Open(2 * kMiB, kMiB, /*nvme=*/true);
  ASSERT_NE(store, nullptr);
  const BlockKey a = PlainKey("lease", "a");
  const auto a_bytes = Bytes(kMiB, 1);
  ASSERT_TRUE(PutBlock(*store, a, a_bytes).ok());
  for (int i = 0; i < 2; ++i)
    ASSERT_TRUE(PutBlock(*store, PlainKey("lease", std::to_string(i)), Bytes(kMiB, 10 + i)).ok());
  ASSERT_FALSE(store->Stat(a)->in_ram);  // written down to NVMe

  auto lease = store->Lease(a);
  ASSERT_TRUE(lease.ok()) << lease.status().ToString();
  EXPECT_FALSE(lease->was_in_ram());
  // Churn the other slot: the leased one is neither evicted nor reused.
  for (int i = 2; i < 6; ++i)
    ASSERT_TRUE(PutBlock(*store, PlainKey("lease", std::to_string(i)), Bytes(kMiB, 10 + i)).ok());
  EXPECT_TRUE(store->Stat(a)->in_ram);
  EXPECT_TRUE(std::equal(a_bytes.begin(), a_bytes.end(), lease->data()));
  EXPECT_EQ(store->Stats().active_leases, 1u);

  *lease = ReadLease();
  EXPECT_EQ(store->Stats().active_leases, 0u);
  for (int i = 6; i < 8; ++i)
    ASSERT_TRUE(PutBlock(*store, PlainKey("lease", std::to_string(i)), Bytes(kMiB, 10 + i)).ok());
  auto info = store->Stat(a);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_FALSE(info->in_ram) << "a released block must be evictable again";
  EXPECT_TRUE(info->on_nvme);
  EXPECT_EQ(*ReadBlock(*store, a), a_bytes);
}

TEST_F(LeaseTest, RemovingALeasedBlockKeepsTheReadersBytesUntilRelease) {
  auto store = Open(2 * kMiB, kMiB, /*nvme=*/false);
  ASSERT_NE(store, nullptr);
  const BlockKey a = PlainKey("lease", "a");
  const auto a_bytes = Bytes(kMiB, 1);
  ASSERT_TRUE(PutBlock(*store, a, a_bytes).ok());
  auto lease = store->Lease(a);
  ASSERT_TRUE(lease.ok());
  ASSERT_TRUE(store->Remove(a).ok());
  EXPECT_EQ(store->Stat(a).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store->Lease(a).status().code(), StatusCode::kNotFound);
  // The removed block's slot is still the reader's: only one other slot can be filled.
  auto one = store->Reserve(PlainKey("lease", "one"), kMiB);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(store->Reserve(PlainKey("lease", "two"), kMiB).status().code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(std::equal(a_bytes.begin(), a_bytes.end(), lease->data()));
  *lease = ReadLease();
  // Released, the slot is free again.
  EXPECT_TRUE(store->Reserve(PlainKey("lease", "two"), kMiB).ok());
}

TEST_F(LeaseTest, LeasesOfOneBlockAreCountedSeparately) {
  auto store = Open(2 * kMiB, kMiB, /*nvme=*/false);
  ASSERT_NE(store, nullptr);
  const BlockKey a = PlainKey("lease", "a");
  ASSERT_TRUE(PutBlock(*store, a, Bytes(kMiB, 1)).ok());
  auto first = store->Lease(a);
  auto second = store->Lease(a);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(store->Stats().active_leases, 2u);
  *first = ReadLease();
  EXPECT_EQ(store->Stats().active_leases, 1u);
  // Still pinned by the second lease: two more blocks need the other slot in turn, never this one.
  ASSERT_TRUE(PutBlock(*store, PlainKey("lease", "b"), Bytes(kMiB, 2)).ok());
  ASSERT_TRUE(PutBlock(*store, PlainKey("lease", "c"), Bytes(kMiB, 3)).ok());
  EXPECT_TRUE(store->Stat(a).ok());
  EXPECT_EQ(store->Stat(PlainKey("lease", "b")).status().code(), StatusCode::kNotFound);
  *second = ReadLease();
  EXPECT_EQ(store->Stats().active_leases, 0u);
}

class EvictionOrderTest : public BlockStoreFixture {};

// Room for a small block is made by evicting the least recently used small block, not an older
// large one: evicting a large block would free a whole page for a slot of a few KiB.
TEST_F(EvictionOrderTest, TheLeastRecentlyUsedBlockOfTheNeededClassGoesFirst) {
  constexpr uint64_t kSmall = 64 << 10;
  const ArenaAllocator classes(4 * kMiB, kMiB);
  const uint64_t small_per_page = kMiB / classes.ClassSlotBytes(classes.ClassFor(kSmall));
  ASSERT_GE(small_per_page, 2u);
  auto store = Open(4 * kMiB, kMiB, /*nvme=*/false);  // four pages
  ASSERT_NE(store, nullptr);
  // Oldest first: three large blocks (three pages), then one page full of small blocks.
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(PutBlock(*store, PlainKey("large", std::to_string(i)), Bytes(kMiB, i)).ok());
  for (uint64_t i = 0; i < small_per_page; ++i)
    ASSERT_TRUE(PutBlock(*store, PlainKey("small", std::to_string(i)), Bytes(kSmall, 100 + i)).ok());
  ASSERT_EQ(store->Stats().ram.evictions, 0u);
  (void)ReadBlock(*store, PlainKey("small", "0"));  // small 1 is now the least recent small block

  ASSERT_TRUE(PutBlock(*store, PlainKey("small", "new"), Bytes(kSmall, 99)).ok());
  EXPECT_EQ(store->Stats().ram.evictions, 1u);
  EXPECT_EQ(store->Stat(PlainKey("small", "1")).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(store->Stat(PlainKey("small", "0")).ok());
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(store->Stat(PlainKey("large", std::to_string(i))).ok()) << i;

  // A large block needs a whole page: the least recently used large block gives it.
  (void)ReadBlock(*store, PlainKey("large", "0"));
  ASSERT_TRUE(PutBlock(*store, PlainKey("large", "new"), Bytes(kMiB, 9)).ok());
  EXPECT_EQ(store->Stat(PlainKey("large", "1")).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(store->Stat(PlainKey("large", "0")).ok());
  EXPECT_TRUE(store->Stat(PlainKey("large", "2")).ok());
  EXPECT_TRUE(store->Stat(PlainKey("small", "0")).ok());
}

}  // namespace
}  // namespace foresight
