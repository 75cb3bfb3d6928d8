// ArenaAllocator: hands out slots of one pre-allocated arena, in size classes.
//
// The arena is cut into pages of `page_bytes` (the largest block the node accepts). A page is
// assigned to one size class when that class needs room and is split into equal slots; when its
// last slot is freed the page returns to the shared pool, so memory flows to whichever block
// sizes are in use (memcached's slab classes, without a separate rebalancer). Classes grow by
// 1.25x from 4 KiB, so a block wastes at most a fifth of its slot.
//
// Thread-safety: none; the owner (the block store) serialises calls.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <vector>

namespace foresight {

// The size classes of an arena of `page_bytes` pages: 4 KiB growing by 1.25x (256-byte aligned) up
// to the page. Immutable once built, so readers need no lock (the block store keeps a copy beside
// its mutex-guarded allocator).
//
// Thread-safety: const methods may be called concurrently.
class ArenaSizeClasses {
 public:
  explicit ArenaSizeClasses(uint64_t page_bytes);

  // The smallest class whose slots hold `bytes`; -1 when bytes > page_bytes.
  int ClassFor(uint64_t bytes) const;
  uint64_t SlotBytes(int cls) const { return class_bytes_[cls]; }
  int size() const { return static_cast<int>(class_bytes_.size()); }
  uint64_t page_bytes() const { return class_bytes_.back(); }

 private:
  std::vector<uint64_t> class_bytes_;  // ascending; the last is the page
};

class ArenaAllocator {
 public:
  ArenaAllocator(uint64_t arena_bytes, uint64_t page_bytes);

  const ArenaSizeClasses& classes() const { return classes_; }
  int ClassFor(uint64_t bytes) const { return classes_.ClassFor(bytes); }
  uint64_t ClassSlotBytes(int cls) const { return classes_.SlotBytes(cls); }
  int num_classes() const { return classes_.size(); }

  // Offset of a free slot of class `cls`, or nullopt when the class has no free slot and no free
  // page is left (the caller then frees slots and retries).
  std::optional<uint64_t> Allocate(int cls);
  void Free(uint64_t offset);

  uint64_t page_bytes() const { return page_bytes_; }
  uint64_t num_pages() const { return pages_.size(); }
  uint64_t free_pages() const { return free_pages_.size(); }
  // Bytes of slots handed out (each slot counts its full class size).
  uint64_t allocated_bytes() const { return allocated_bytes_; }
  // Page index of an offset (for eviction that wants to free a whole page).
  uint64_t PageOf(uint64_t offset) const { return offset / page_bytes_; }
  // Class of the page holding `offset`, -1 when the page is free.
  int PageClass(uint64_t page) const { return pages_[page].cls; }

 private:
  struct Page {
    int cls = -1;  // -1: free
    uint32_t slots = 0;
    uint32_t live = 0;
    std::vector<uint64_t> free_bits;  // bit set = slot free
  };
  uint64_t page_bytes_;
  const ArenaSizeClasses classes_;
  std::vector<Page> pages_;
  std::vector<uint64_t> free_pages_;
  std::vector<std::set<uint64_t>> partial_pages_;  // per class: pages with a free slot
  uint64_t allocated_bytes_ = 0;
};

}  // namespace foresight
