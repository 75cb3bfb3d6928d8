#include "planner/ram_lru_simulation.h"

#include <algorithm>
#include <cmath>
#include <list>
#include <unordered_map>
#include <unordered_set>

#include "cache_service/arena_allocator.h"
#include "cache_service/block_store.h"
#include "common/units.h"

namespace foresight::planner {
namespace {

class RamLru {
 public:
  explicit RamLru(const RamLruOptions& o)
      : capacity_(std::max<int64_t>(1, o.capacity_blocks)),
        high_(static_cast<int64_t>(std::floor(o.high_watermark * static_cast<double>(capacity_)))),
        low_(static_cast<int64_t>(std::floor(o.low_watermark * static_cast<double>(capacity_)))) {}

  bool Contains(uint64_t block) { return where_.count(block) != 0; }

  void TouchOrInsert(uint64_t block, RamLruResult* r) {
    auto it = where_.find(block);
    if (it != where_.end()) {
      order_.splice(order_.begin(), order_, it->second);
      return;
    }
    if (static_cast<int64_t>(order_.size()) >= capacity_) EvictOne(r);  // no free slot: evict now
    order_.push_front(block);
    where_[block] = order_.begin();
    if (static_cast<int64_t>(order_.size()) > high_) {
      while (static_cast<int64_t>(order_.size()) > low_) EvictOne(r);
    }
  }

 private:
  void EvictOne(RamLruResult* r) {
    where_.erase(order_.back());
    order_.pop_back();
    ++r->evictions;
  }

  const int64_t capacity_, high_, low_;
  std::list<uint64_t> order_;  // front = most recent
  std::unordered_map<uint64_t, std::list<uint64_t>::iterator> where_;
};

}  // namespace

RamLruResult SimulateRamLru(const std::vector<NodeAccess>& accesses, const RamLruOptions& options) {
  RamLruResult r;
  r.capacity_blocks = options.capacity_blocks;
  RamLru lru(options);
  for (size_t i = 0; i < accesses.size(); ++i) {
    const NodeAccess& a = accesses[i];
    const bool counted = i >= options.count_from;
    if (a.put) {
      if (counted) ++r.puts;
    } else if (counted) {
      ++r.gets;
      if (lru.Contains(a.block)) ++r.hits;
    }
    // A hit moves the block to the front; a put or a promotion from NVMe enters it there.
    lru.TouchOrInsert(a.block, &r);
  }
  return r;
}

StatusOr<int64_t> RamTierBlockCapacity(uint64_t ram_bytes, uint64_t block_bytes) {
  const uint64_t page = BlockStoreOptions{}.max_block_bytes;
  const ArenaSizeClasses classes(page);
  const int cls = classes.ClassFor(block_bytes);
  if (cls < 0 || block_bytes == 0) {
    return InvalidArgument("a block of " + FormatByteSize(block_bytes) + " does not fit the node's " +
                           FormatByteSize(page) + " pages");
  }
  return static_cast<int64_t>((ram_bytes / page) * (page / classes.SlotBytes(cls)));
}

NodeAccessTrace NodeAccessesFrom(const PoolMissReplay& replay, int sequences, int64_t from_step) {
  NodeAccessTrace out;
  const int T = static_cast<int>(replay.traces.size());
  if (T == 0 || sequences <= 0) return out;
  const uint64_t layers = static_cast<uint64_t>(replay.layers);
  // A stored block's id: (sequence, block index, layer), packed.
  auto id = [&](int seq, int64_t block, int layer) {
    return (static_cast<uint64_t>(seq) << 40) | (static_cast<uint64_t>(block) * layers + static_cast<uint64_t>(layer));
  };
  std::vector<int64_t> full_blocks(sequences);
  for (int i = 0; i < sequences; ++i) {
    full_blocks[i] = replay.traces[i % T].prompt_tokens / replay.block_tokens;
    for (int64_t b = 0; b < full_blocks[i]; ++b) {
      for (int l = 0; l < replay.layers; ++l) out.accesses.push_back({id(i, b, l), true});
    }
  }
  // Each trace's fetches by step: [begin, end) into replay.fetches (sorted by trace, then step).
  std::vector<std::vector<std::pair<size_t, size_t>>> by_step(T);
  for (int t = 0; t < T; ++t) by_step[t].assign(replay.traces[t].decode_steps, {0, 0});
  for (size_t k = 0; k < replay.fetches.size();) {
    const auto& f = replay.fetches[k];
    size_t end = k;
    while (end < replay.fetches.size() && replay.fetches[end].trace == f.trace && replay.fetches[end].step == f.step) {
      ++end;
    }
    if (f.trace < T && f.step < static_cast<int32_t>(by_step[f.trace].size())) by_step[f.trace][f.step] = {k, end};
    k = end;
  }
  int64_t steps = 0;
  for (int t = 0; t < T; ++t) steps = std::max<int64_t>(steps, replay.traces[t].decode_steps);
  out.measured_from = out.accesses.size();
  for (int64_t s = 0; s < steps; ++s) {
    if (s == from_step) out.measured_from = out.accesses.size();
    for (int i = 0; i < sequences; ++i) {
      const int t = i % T;
      if (s >= replay.traces[t].decode_steps) continue;
      const auto [begin, end] = by_step[t][s];
      for (size_t k = begin; k < end; ++k) {
        const auto& f = replay.fetches[k];
        // A block not published yet (the one the decode is filling) is the worker's own: no get.
        if (f.block >= full_blocks[i]) continue;
        out.accesses.push_back({id(i, f.block, f.layer), false});
      }
      // The token of step s lands at position prompt + s; the block it completes is published.
      const int64_t tokens = replay.traces[t].prompt_tokens + s + 1;
      if (tokens / replay.block_tokens > full_blocks[i]) {
        for (int l = 0; l < replay.layers; ++l) out.accesses.push_back({id(i, full_blocks[i], l), true});
        ++full_blocks[i];
      }
    }
  }
  if (from_step >= steps) out.measured_from = out.accesses.size();
  return out;
}

StatusOr<std::vector<RamHitRateRow>> SweepRamSizes(const NodeAccessTrace& trace, uint64_t block_bytes,
                                                   const std::vector<uint64_t>& ram_sizes) {
  std::vector<RamHitRateRow> rows;
  for (uint64_t ram : ram_sizes) {
    FS_ASSIGN_OR_RETURN(int64_t capacity, RamTierBlockCapacity(ram, block_bytes));
    if (capacity <= 0) {
      return InvalidArgument("--lru-sizes: " + FormatByteSize(ram) + " holds no block (the node's RAM tier is cut " +
                             "into 4 MiB pages)");
    }
    RamLruOptions o;
    o.capacity_blocks = capacity;
    o.count_from = trace.measured_from;
    rows.push_back({ram, SimulateRamLru(trace.accesses, o)});
  }
  return rows;
}

std::vector<RamHitRatePoint> HitRateByRamShare(const NodeAccessTrace& trace, const std::vector<double>& shares) {
  std::unordered_set<uint64_t> stored;
  for (const NodeAccess& a : trace.accesses)
    if (a.put) stored.insert(a.block);
  std::vector<RamHitRatePoint> points;
  for (double share : shares) {
    RamLruOptions o;
    o.capacity_blocks = std::max<int64_t>(1, std::llround(share * static_cast<double>(stored.size())));
    o.count_from = trace.measured_from;
    points.push_back({share, SimulateRamLru(trace.accesses, o).hit_rate()});
  }
  return points;
}

}  // namespace foresight::planner
