#include "worker/offload/resident_pool.h"

namespace foresight::worker {

ResidentPool::ResidentPool(uint8_t* data, uint64_t slot_bytes, int64_t slots)
    : data_(data), slot_bytes_(slot_bytes), slots_(slots) {
  free_.reserve(slots);
  for (int64_t s = slots - 1; s >= 0; --s) free_.push_back(s);
  map_.reserve(static_cast<size_t>(slots) * 2);
}

ResidentPool::Entry* ResidentPool::Lookup(const PoolKey& key) {
  auto it = map_.find(key);
  return it == map_.end() ? nullptr : &it->second;
}

ResidentPool::Entry* ResidentPool::Insert(const PoolKey& key, int64_t step) {
  int64_t slot;
  if (!free_.empty()) {
    slot = free_.back();
    free_.pop_back();
  } else if (!lru_.empty()) {
    Entry* victim = lru_.front();
    lru_.pop_front();
    slot = victim->slot;
    map_.erase(victim->key);
    evictions_++;
  } else {
    return nullptr;
  }
  Entry& e = map_[key];
  e.key = key;
  e.slot = slot;
  e.ready = false;
  e.refs = 1;
  e.step = step;
  e.batch = -1;
  return &e;
}

void ResidentPool::Pin(Entry* e) {
  if (e->refs++ == 0) lru_.erase(e->lru);
}

void ResidentPool::Unpin(Entry* e) {
  if (--e->refs == 0) e->lru = lru_.insert(lru_.end(), e);
}

void ResidentPool::Erase(Entry* e) {
  if (e->refs == 0) lru_.erase(e->lru);
  free_.push_back(e->slot);
  map_.erase(e->key);
}

}  // namespace foresight::worker
