// RamLruSimulation: the node's RAM tier replayed over a sequence of block accesses, for its hit
// rate against RAM size (docs/capacity.md, "The node's RAM tier, simulated").
//
// It follows cache_service/tiered_block_store.cc: one LRU over the stored blocks (a layer's
// block of one sequence, every KV head: a get of one KV head's part touches the whole block);
// a put or a promotion (a get that missed RAM and was read from NVMe) enters at the front; above
// the high watermark (95% of the slots) blocks leave from the back until the low one (85%), as
// the node's background evictor does, and a put that finds every slot taken evicts the least
// recently used block. Evicted blocks stay on NVMe, so a later get promotes them back. The
// evictor's delay (it wakes on a put, or every 100 ms) and pinned blocks are not modelled.
//
//   RamLruOptions o{.capacity_blocks = RamTierBlockCapacity(512 << 20, 12288)};
//   RamLruResult r = SimulateRamLru(accesses, o);   // r.hit_rate: gets served from RAM
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "planner/churn_table.h"

namespace foresight::planner {

// One block operation the node sees, in order.
struct NodeAccess {
  uint64_t block = 0;  // any id that names one stored block
  bool put = false;    // a put (a published block); false: a get
};

struct RamLruOptions {
  int64_t capacity_blocks = 0;  // slots of the RAM tier for blocks of this size
  double high_watermark = 0.95, low_watermark = 0.85;
  size_t count_from = 0;  // gets before this access warm the tier up and are not counted
};

struct RamLruResult {
  int64_t capacity_blocks = 0;
  int64_t gets = 0, hits = 0, puts = 0, evictions = 0;
  double hit_rate() const { return gets > 0 ? static_cast<double>(hits) / static_cast<double>(gets) : 0.0; }
};

RamLruResult SimulateRamLru(const std::vector<NodeAccess>& accesses, const RamLruOptions& options);

// How many blocks of `block_bytes` a RAM tier of `ram_bytes` holds: its 4 MiB pages, each cut into
// slots of the block's size class (cache_service/arena_allocator.h). INVALID_ARGUMENT for a block
// larger than a page.
StatusOr<int64_t> RamTierBlockCapacity(uint64_t ram_bytes, uint64_t block_bytes);

// The accesses `sequences` sequences make on one node, from a replay of what their workers'
// pools missed: each sequence publishes its prompt's full blocks (every layer), in turn; then they
// decode in lock step, sequence i replaying trace i mod T (its own blocks), each fetching what its
// pool missed at that step (one get per KV head; a block not yet published is the worker's own and
// is not fetched) and publishing a layer's block whenever its context fills one. Steps before `from_step` only warm the
// node up: `measured_from` is the index of the first access after them.
struct NodeAccessTrace {
  std::vector<NodeAccess> accesses;
  size_t measured_from = 0;
};
NodeAccessTrace NodeAccessesFrom(const PoolMissReplay& replay, int sequences, int64_t from_step);

// Hit rate at each RAM size; hits and gets count from `trace.measured_from` on.
struct RamHitRateRow {
  uint64_t ram_bytes = 0;
  RamLruResult result;
};
StatusOr<std::vector<RamHitRateRow>> SweepRamSizes(const NodeAccessTrace& trace, uint64_t block_bytes,
                                                   const std::vector<uint64_t>& ram_sizes);

// The hit rate at each share of the blocks `trace` stores (distinct blocks put) that the RAM tier
// has slots for, for the churn table (hits and gets from `trace.measured_from` on).
std::vector<RamHitRatePoint> HitRateByRamShare(const NodeAccessTrace& trace, const std::vector<double>& shares);

}  // namespace foresight::planner
