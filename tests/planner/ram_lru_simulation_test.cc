// The node's RAM tier simulated: LRU order, the background evictor's watermarks, the arena's slots
// per page, and the accesses built from a replay, each against counts worked out by hand.
#include "planner/ram_lru_simulation.h"

#include <gtest/gtest.h>

namespace foresight::planner {
namespace {

NodeAccess Put(uint64_t b) { return {b, true}; }
NodeAccess Get(uint64_t b) { return {b, false}; }

// Three slots, no watermarks (evict only when full). Blocks A..D = 1..4.
//   put A, B, C          order C B A
//   get A  hit           A C B
//   put D  evicts B      D A C
//   get B  miss, evicts C (promoted)   B D A
//   get C  miss, evicts A              C B D
//   get D  hit                         D C B
//   get A  miss, evicts B              A D C
// 2 hits of 5 gets, 4 evictions.
TEST(RamLruSimulationTest, LeastRecentlyUsedBlockLeavesFirstAndMissesArePromoted) {
  const std::vector<NodeAccess> a = {Put(1), Put(2), Put(3), Get(1), Put(4), Get(2), Get(3), Get(4), Get(1)};
  RamLruOptions o;
  o.capacity_blocks = 3;
  o.high_watermark = o.low_watermark = 1.0;
  const RamLruResult r = SimulateRamLru(a, o);
  EXPECT_EQ(r.gets, 5);
  EXPECT_EQ(r.hits, 2);
  EXPECT_EQ(r.puts, 4);
  EXPECT_EQ(r.evictions, 4);
  EXPECT_DOUBLE_EQ(r.hit_rate(), 0.4);
}

// Ten slots, watermarks 95% / 85%: above 9 blocks the evictor runs down to 8.
//   put 1..9             9 held (not above 9)
//   put 10               10 > 9: evicts 1, 2          order 10 9 8 7 6 5 4 3
//   get 1  miss          9 held                       1 10 9 8 7 6 5 4 3
//   get 3  hit                                        3 1 10 9 8 7 6 5 4
//   get 2  miss          10 > 9: evicts 4, 5          2 3 1 10 9 8 7 6
//   get 4  miss          9 held
//   get 6  hit
// 2 hits of 5 gets, 4 evictions; counting from access 10 (the gets) counts no put.
TEST(RamLruSimulationTest, TheEvictorRunsFromTheHighWatermarkDownToTheLowOne) {
  std::vector<NodeAccess> a;
  for (uint64_t b = 1; b <= 10; ++b) a.push_back(Put(b));
  for (uint64_t b : {1, 3, 2, 4, 6}) a.push_back(Get(b));
  RamLruOptions o;
  o.capacity_blocks = 10;
  o.count_from = 10;
  const RamLruResult r = SimulateRamLru(a, o);
  EXPECT_EQ(r.gets, 5);
  EXPECT_EQ(r.hits, 2);
  EXPECT_EQ(r.puts, 0);
  EXPECT_EQ(r.evictions, 4);
}

TEST(RamLruSimulationTest, CapacityIsTheArenasPagesTimesSlotsPerPage) {
  // 4 KiB is a size class: 8 MiB = two 4 MiB pages of 1,024 slots.
  auto small = RamTierBlockCapacity(8 << 20, 4096);
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(*small, 2048);
  // A whole page per block; a partial page holds nothing.
  auto page = RamTierBlockCapacity((8 << 20) + 4096, 4 << 20);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(*page, 2);
  EXPECT_FALSE(RamTierBlockCapacity(8 << 20, 5 << 20).ok());
}

// One trace of 2 layers, a prompt of 31 tokens (one full block), 3 decode steps; two sequences.
//   puts: each sequence's block 0, layers 0 and 1                       4 accesses
//   step 0: each sequence gets (block 0, layer 0) twice (two KV heads); its token is the 32nd,
//           which completes block 1: both layers published            2 x (2 + 2) = 8
//   step 2: each sequence gets (block 1, layer 1)                       2
// 14 accesses; measured from step 1: from access 12.
TEST(RamLruSimulationTest, NodeAccessesFollowTheSequencesInLockStep) {
  PoolMissReplay replay;
  replay.layers = 2;
  replay.kv_heads = 2;
  replay.block_tokens = 16;
  replay.block_bytes = 4096;
  replay.traces = {{"t", 31, 3}};
  // The last: block 2 at step 2 is still being filled (the worker's own): no get.
  replay.fetches = {{0, 0, 0, 0, 0}, {0, 0, 0, 1, 0}, {0, 2, 1, 0, 1}, {0, 2, 1, 0, 2}};
  const NodeAccessTrace t = NodeAccessesFrom(replay, 2, 1);
  ASSERT_EQ(t.accesses.size(), 14u);
  EXPECT_EQ(t.measured_from, 12u);
  int puts = 0;
  for (const NodeAccess& a : t.accesses) puts += a.put ? 1 : 0;
  EXPECT_EQ(puts, 8);
  EXPECT_TRUE(t.accesses[4].block == t.accesses[5].block && !t.accesses[4].put);  // the two KV heads' gets
  EXPECT_EQ(t.accesses[12].block, t.accesses[7].block);   // sequence 0's block 1, layer 1: published at step 0
  EXPECT_NE(t.accesses[12].block, t.accesses[13].block);  // the sequences' blocks are their own
  // Every get finds its block in a tier that holds all; the RAM sweep reports it.
  auto rows = SweepRamSizes(t, 4096, {8 << 20});
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ((*rows)[0].result.gets, 2);
  EXPECT_EQ((*rows)[0].result.hits, 2);
  EXPECT_FALSE(SweepRamSizes(t, 4096, {1 << 20}).ok());  // less than a page
}

// Four blocks stored, then each got once. Slots for 5x the stored blocks hold everything (every
// get hits); one slot holds nothing past the evictor (85% of one slot is none): every get misses.
TEST(RamLruSimulationTest, HitRateByRamShareSizesTheTierByTheStoredBlocks) {
  NodeAccessTrace trace;
  trace.accesses = {Put(1), Put(2), Put(3), Put(4), Get(1), Get(2), Get(3), Get(4)};
  trace.measured_from = 4;
  const std::vector<RamHitRatePoint> points = HitRateByRamShare(trace, {0.25, 5.0});
  ASSERT_EQ(points.size(), 2u);
  EXPECT_DOUBLE_EQ(points[0].ram_share, 0.25);
  EXPECT_DOUBLE_EQ(points[0].hit_rate, 0.0);
  EXPECT_DOUBLE_EQ(points[1].hit_rate, 1.0);
}

}  // namespace
}  // namespace foresight::planner
