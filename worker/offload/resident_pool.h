// ResidentPool: the worker's cache of offloaded KV, one entry per (layer, block, KV head), each a
// fixed slot of BlockLayout::head_bytes() bytes (that head's K then V) in one buffer. Shaped like
// LevelDB's cache.h: entries carry a reference count; an entry in use (being fetched, or read by
// attention) is pinned and never evicted; unpinned entries sit on an LRU list and the least
// recently used one gives its slot to a new entry when the pool is full.
//
// An entry is created `fetching` (pinned by the fetch) and becomes `ready` only when the fetch has
// completed and its bytes were verified (MarkReady); a failed fetch erases it. Lookups never hand
// out the bytes of an entry that is not ready.
//
// Thread-safety: none; driven by one sequence's thread (fetch completions are collected there).
#pragma once

#include <cstdint>
#include <list>
#include <unordered_map>
#include <vector>

#include "common/status.h"

namespace foresight::worker {

struct PoolKey {
  int32_t layer = 0;
  int32_t head = 0;
  int64_t block = 0;
  friend bool operator==(const PoolKey&, const PoolKey&) = default;
};

struct PoolKeyHash {
  size_t operator()(const PoolKey& k) const {
    return std::hash<int64_t>()((k.block << 20) ^ (int64_t{k.layer} << 8) ^ k.head);
  }
};

class ResidentPool {
 public:
  struct Entry {
    PoolKey key;
    int64_t slot = 0;
    bool ready = false;
    int32_t refs = 0;    // pins; 0: on the LRU list
    int64_t step = -1;   // the decode step it was fetched for (no-reuse mode uses only its own)
    int64_t batch = -1;  // the fetch batch filling it, while not ready
    std::list<Entry*>::iterator lru;
  };

  // `data`: slots * slot_bytes bytes the caller owns (e.g. from CacheClient::AllocateBuffer).
  ResidentPool(uint8_t* data, uint64_t slot_bytes, int64_t slots);

  // The entry for `key`, or null. Does not pin.
  Entry* Lookup(const PoolKey& key);
  // A new entry for `key` (absent), pinned once, not ready; evicts the least recently used
  // unpinned entry when full. Null when every slot is pinned.
  Entry* Insert(const PoolKey& key, int64_t step);
  void Pin(Entry* e);
  void Unpin(Entry* e);
  // Marks an entry as just used (the most recently used end of the LRU list) without pinning it:
  // a prefetch that finds its block already pooled keeps it from being evicted before the step.
  void Touch(Entry* e) {
    if (e->refs == 0) lru_.splice(lru_.end(), lru_, e->lru);
  }
  void MarkReady(Entry* e) {
    e->ready = true;
    e->batch = -1;
  }
  // Removes a pinned entry whose fetch failed (its pins are dropped).
  void Erase(Entry* e);

  uint8_t* data(const Entry* e) const { return data_ + e->slot * slot_bytes_; }
  uint64_t slot_bytes() const { return slot_bytes_; }
  int64_t slots() const { return slots_; }
  int64_t size() const { return static_cast<int64_t>(map_.size()); }
  int64_t evictions() const { return evictions_; }

 private:
  uint8_t* const data_;
  const uint64_t slot_bytes_;
  const int64_t slots_;
  std::unordered_map<PoolKey, Entry, PoolKeyHash> map_;
  std::list<Entry*> lru_;      // unpinned entries, least recently used first
  std::vector<int64_t> free_;  // free slots
  int64_t evictions_ = 0;
};

}  // namespace foresight::worker
