#include "cache_service/arena_allocator.h"

#include <random>
#include <set>
#include <vector>

#include <gtest/gtest.h>

namespace foresight {
namespace {

TEST(ArenaAllocatorTest, ClassesCoverEverySizeUpToThePage) {
  ArenaAllocator a(64 << 20, 4 << 20);
  EXPECT_EQ(a.ClassSlotBytes(a.ClassFor(1)), 4096u);
  EXPECT_EQ(a.ClassSlotBytes(a.ClassFor(4096)), 4096u);
  EXPECT_GT(a.ClassSlotBytes(a.ClassFor(4097)), 4096u);
  EXPECT_EQ(a.ClassSlotBytes(a.ClassFor(4 << 20)), 4u << 20);
  EXPECT_EQ(a.ClassFor((4 << 20) + 1), -1);
  for (uint64_t size : {5000ull, 12288ull, 65536ull, 1000000ull}) {
    const uint64_t slot = a.ClassSlotBytes(a.ClassFor(size));
    EXPECT_GE(slot, size);
    EXPECT_LE(slot, size * 5 / 4 + 256) << size;  // at most ~25% waste
  }
}

TEST(ArenaAllocatorTest, SlotsNeverOverlapAndPagesReturnWhenEmpty) {
  const uint64_t page = 1 << 20;
  ArenaAllocator a(8 * page, page);
  std::mt19937 rng(7);
  std::vector<std::pair<uint64_t, uint64_t>> live;  // offset, size
  for (int round = 0; round < 20000; ++round) {
    if (live.empty() || rng() % 3 != 0) {
      const uint64_t size = 4096 + rng() % (page - 4096);
      const int cls = a.ClassFor(size);
      auto off = a.Allocate(cls);
      if (!off) continue;
      for (const auto& [o, s] : live) ASSERT_TRUE(*off + a.ClassSlotBytes(cls) <= o || o + s <= *off);
      ASSERT_LE(*off + a.ClassSlotBytes(cls), 8 * page);
      live.push_back({*off, a.ClassSlotBytes(cls)});
    } else {
      const size_t i = rng() % live.size();
      a.Free(live[i].first);
      live.erase(live.begin() + i);
    }
  }
  for (const auto& [o, s] : live) a.Free(o);
  EXPECT_EQ(a.free_pages(), 8u);
  EXPECT_EQ(a.allocated_bytes(), 0u);
}

TEST(ArenaAllocatorTest, FullArenaRefusesThenAcceptsAfterFree) {
  ArenaAllocator a(2 << 20, 1 << 20);
  const int cls = a.ClassFor(1 << 20);
  auto x = a.Allocate(cls), y = a.Allocate(cls);
  ASSERT_TRUE(x && y);
  EXPECT_FALSE(a.Allocate(cls));
  EXPECT_FALSE(a.Allocate(a.ClassFor(4096)));  // no free page for another class either
  a.Free(*x);
  EXPECT_TRUE(a.Allocate(a.ClassFor(4096)));
}

}  // namespace
}  // namespace foresight
