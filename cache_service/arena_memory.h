// Memory for the RAM tier's arena: zeroed and populated up front, in 2 MiB huge pages where the
// kernel has them reserved (hugetlbfs), otherwise in 4 KiB pages.
//
// Why huge pages: every get copies a block out of the arena (the kernel's send copy on UCX TCP,
// the client's copy on shared memory), and a block of the arena is rarely in the CPU cache. With
// 4 KiB pages each copy walks 256 page-table entries per MiB, and on a virtual machine each walk is
// two-dimensional. 2 MiB pages make copies from a cold arena measurably cheaper, in user space and
// in the kernel (docs/perf-notes.md, session 5, has the figures).
//
// Huge pages are a resource the operator reserves (`sysctl vm.nr_hugepages=N`, N pages of 2 MiB);
// nothing here changes system settings.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace foresight {

enum class HugePages {
  kAuto,  // 2 MiB huge pages when enough are free, else 4 KiB pages (transparent huge pages advised)
  kOn,    // 2 MiB huge pages or an error that says how many are free and how to reserve more
  kOff,   // 4 KiB pages only (transparent huge pages declined too)
};

// "auto", "on", "off".
StatusOr<HugePages> ParseHugePages(const std::string& text);
const char* HugePagesName(HugePages mode);

struct ArenaMemory {
  uint8_t* base = nullptr;  // start of the mapping (the header, then the data)
  uint64_t mapped_bytes = 0;
  uint8_t* data = nullptr;  // base + header_bytes
  uint64_t data_bytes = 0;
  uint64_t header_bytes = 0;
  int fd = -1;              // the memfd of a shared mapping, else -1
  uint64_t page_bytes = 0;  // 4096, or 2 MiB in huge pages
  std::string description;  // for logs: "2MiB huge pages", "4KiB pages"
};

// Maps header_bytes (rounded up to the page size) followed by data_bytes of zeroed memory, every
// page populated. shared: in a memfd (CLOEXEC) that other processes may map, else private.
StatusOr<ArenaMemory> MapArenaMemory(uint64_t header_bytes, uint64_t data_bytes, bool shared, HugePages huge);
// Unmaps and closes; leaves *m empty. No-op on an empty ArenaMemory.
void UnmapArenaMemory(ArenaMemory* m);

// Free and total 2 MiB huge pages (/proc/meminfo); {0, 0} where it cannot be read.
struct HugePageCount {
  uint64_t free = 0, total = 0;
};
HugePageCount ReadHugePageCount();
// Whether the free 2 MiB pages can hold a mapping of header_bytes + data_bytes (what auto tries).
bool HugePagesFit(uint64_t header_bytes, uint64_t data_bytes);

}  // namespace foresight
