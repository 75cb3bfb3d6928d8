#include "cache_service/arena_allocator.h"

#include <algorithm>
#include <cassert>

namespace foresight {

ArenaSizeClasses::ArenaSizeClasses(uint64_t page_bytes) {
  constexpr uint64_t kMinClass = 4096, kAlign = 256;
  for (uint64_t size = kMinClass; size < page_bytes;) {
    class_bytes_.push_back(size);
    size = (size + size / 4 + kAlign - 1) / kAlign * kAlign;
  }
  class_bytes_.push_back(page_bytes);
}

int ArenaSizeClasses::ClassFor(uint64_t bytes) const {
  auto it = std::lower_bound(class_bytes_.begin(), class_bytes_.end(), bytes);
  if (it == class_bytes_.end()) return -1;
  return static_cast<int>(it - class_bytes_.begin());
}

ArenaAllocator::ArenaAllocator(uint64_t arena_bytes, uint64_t page_bytes)
    : page_bytes_(page_bytes), classes_(page_bytes) {
  partial_pages_.resize(classes_.size());
  pages_.resize(arena_bytes / page_bytes);
  // Hand out low pages first: keeps a lightly loaded arena's touched memory small.
  for (uint64_t p = pages_.size(); p-- > 0;) free_pages_.push_back(p);
}

std::optional<uint64_t> ArenaAllocator::Allocate(int cls) {
  auto& partial = partial_pages_[cls];
  if (partial.empty()) {
    if (free_pages_.empty()) return std::nullopt;
    const uint64_t p = free_pages_.back();
    free_pages_.pop_back();
    Page& page = pages_[p];
    page.cls = cls;
    page.slots = static_cast<uint32_t>(page_bytes_ / classes_.SlotBytes(cls));
    page.live = 0;
    page.free_bits.assign((page.slots + 63) / 64, 0);
    for (uint32_t s = 0; s < page.slots; ++s) page.free_bits[s / 64] |= 1ull << (s % 64);
    partial.insert(p);
  }
  const uint64_t p = *partial.begin();
  Page& page = pages_[p];
  for (size_t w = 0; w < page.free_bits.size(); ++w) {
    if (page.free_bits[w] == 0) continue;
    const int bit = __builtin_ctzll(page.free_bits[w]);
    page.free_bits[w] &= ~(1ull << bit);
    const uint64_t slot = w * 64 + bit;
    if (++page.live == page.slots) partial.erase(p);
    allocated_bytes_ += classes_.SlotBytes(cls);
    return p * page_bytes_ + slot * classes_.SlotBytes(cls);
  }
  assert(false && "partial page without a free slot");
  return std::nullopt;
}

void ArenaAllocator::Free(uint64_t offset) {
  const uint64_t p = offset / page_bytes_;
  Page& page = pages_[p];
  assert(page.cls >= 0);
  const uint64_t slot = (offset - p * page_bytes_) / classes_.SlotBytes(page.cls);
  assert((page.free_bits[slot / 64] & (1ull << (slot % 64))) == 0);
  page.free_bits[slot / 64] |= 1ull << (slot % 64);
  allocated_bytes_ -= classes_.SlotBytes(page.cls);
  --page.live;
  if (page.live == 0) {
    partial_pages_[page.cls].erase(p);
    page.cls = -1;
    page.free_bits.clear();
    free_pages_.push_back(p);
  } else {
    partial_pages_[page.cls].insert(p);
  }
}

}  // namespace foresight
