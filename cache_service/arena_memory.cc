#include "cache_service/arena_memory.h"

#include <linux/memfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "common/units.h"

namespace foresight {

namespace {

constexpr uint64_t kSmallPage = 4096;
constexpr uint64_t kHugePage = 2ull << 20;
constexpr char kHugePageDir[] = "/sys/kernel/mm/hugepages/hugepages-2048kB/";

uint64_t RoundUp(uint64_t n, uint64_t to) { return (n + to - 1) / to * to; }

uint64_t ReadCounter(const char* name) {
  std::ifstream in(std::string(kHugePageDir) + name);
  uint64_t v = 0;
  in >> v;
  return in ? v : 0;
}

// Writes one byte per page, for kernels without MADV_POPULATE_WRITE (before 5.14).
void TouchPages(uint8_t* p, uint64_t bytes, uint64_t page) {
  for (uint64_t at = 0; at < bytes; at += page) reinterpret_cast<volatile uint8_t*>(p)[at] = 0;
}

// A memfd of `bytes` (CLOEXEC plus `flags`), or the reason there is none.
StatusOr<int> SizedMemfd(unsigned flags, uint64_t bytes) {
  const int fd = ::memfd_create("foresight-arena", MFD_CLOEXEC | flags);
  if (fd < 0) return Unavailable(std::string("memfd_create failed: ") + std::strerror(errno));
  if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    const int err = errno;
    ::close(fd);
    return ResourceExhausted("cannot size a " + FormatByteSize(bytes) + " memfd: " + std::strerror(err));
  }
  return fd;
}

// The mapping in 2 MiB hugetlb pages; an error says why (usually: not enough reserved pages).
StatusOr<ArenaMemory> MapHuge(uint64_t header_bytes, uint64_t data_bytes, bool shared) {
  ArenaMemory m;
  m.page_bytes = kHugePage;
  m.header_bytes = RoundUp(header_bytes, kHugePage);
  m.data_bytes = data_bytes;
  m.mapped_bytes = RoundUp(m.header_bytes + data_bytes, kHugePage);
  int flags = 0;
  if (shared) {
    FS_ASSIGN_OR_RETURN(m.fd, SizedMemfd(MFD_HUGETLB | MFD_HUGE_2MB, m.mapped_bytes));
    flags = MAP_SHARED;
  } else {
    flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | (21 << MAP_HUGE_SHIFT);
  }
  // hugetlb reserves every page at mmap time, so a short pool fails here and not with a SIGBUS later.
  void* p = ::mmap(nullptr, m.mapped_bytes, PROT_READ | PROT_WRITE, flags | MAP_POPULATE, m.fd, 0);
  if (p == MAP_FAILED) {
    const int err = errno;
    if (m.fd >= 0) ::close(m.fd);
    const HugePageCount count = ReadHugePageCount();
    return ResourceExhausted("cannot map " + FormatByteSize(m.mapped_bytes) + " in 2MiB huge pages (" +
                             std::strerror(err) + "): " + std::to_string(m.mapped_bytes / kHugePage) +
                             " pages needed, " + std::to_string(count.free) + " free of " +
                             std::to_string(count.total) + " reserved; reserve more with `sysctl vm.nr_hugepages=N`");
  }
  m.base = static_cast<uint8_t*>(p);
  m.data = m.base + m.header_bytes;
  m.description = "2MiB huge pages";
  return m;
}

StatusOr<ArenaMemory> MapSmall(uint64_t header_bytes, uint64_t data_bytes, bool shared, bool advise_thp) {
  ArenaMemory m;
  m.page_bytes = kSmallPage;
  m.header_bytes = RoundUp(header_bytes, kSmallPage);
  m.data_bytes = data_bytes;
  m.mapped_bytes = RoundUp(m.header_bytes + data_bytes, kSmallPage);
  int flags = MAP_PRIVATE | MAP_ANONYMOUS;
  if (shared) {
    FS_ASSIGN_OR_RETURN(m.fd, SizedMemfd(0, m.mapped_bytes));
    flags = MAP_SHARED;
  }
  void* p = ::mmap(nullptr, m.mapped_bytes, PROT_READ | PROT_WRITE, flags, m.fd, 0);
  if (p == MAP_FAILED) {
    const int err = errno;
    if (m.fd >= 0) ::close(m.fd);
    return ResourceExhausted("cannot map " + FormatByteSize(m.mapped_bytes) + ": " + std::strerror(err));
  }
  m.base = static_cast<uint8_t*>(p);
  m.data = m.base + m.header_bytes;
  // The advice must come before the pages exist to have any effect. For a memfd it only takes
  // where the kernel allows shmem THP (shmem_enabled "advise" or more).
  ::madvise(p, m.mapped_bytes, advise_thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
  if (::madvise(p, m.mapped_bytes, MADV_POPULATE_WRITE) != 0) TouchPages(m.base, m.mapped_bytes, kSmallPage);
  m.description = advise_thp ? "4KiB pages (transparent huge pages advised)" : "4KiB pages";
  return m;
}

}  // namespace

StatusOr<HugePages> ParseHugePages(const std::string& text) {
  if (text == "auto") return HugePages::kAuto;
  if (text == "on") return HugePages::kOn;
  if (text == "off") return HugePages::kOff;
  return InvalidArgument("huge pages '" + text + "': expected auto, on or off");
}

const char* HugePagesName(HugePages mode) {
  switch (mode) {
    case HugePages::kAuto:
      return "auto";
    case HugePages::kOn:
      return "on";
    case HugePages::kOff:
      return "off";
  }
  return "?";
}

HugePageCount ReadHugePageCount() {
  HugePageCount c;
  c.total = ReadCounter("nr_hugepages");
  const uint64_t free = ReadCounter("free_hugepages"), reserved = ReadCounter("resv_hugepages");
  c.free = free > reserved ? free - reserved : 0;  // reserved: promised to mappings, not yet touched
  return c;
}

bool HugePagesFit(uint64_t header_bytes, uint64_t data_bytes) {
  return ReadHugePageCount().free * kHugePage >= RoundUp(header_bytes, kHugePage) + data_bytes;
}

StatusOr<ArenaMemory> MapArenaMemory(uint64_t header_bytes, uint64_t data_bytes, bool shared, HugePages huge) {
  if (data_bytes == 0) return InvalidArgument("an arena of 0 bytes");
  if (huge == HugePages::kOn) return MapHuge(header_bytes, data_bytes, shared);
  if (huge == HugePages::kAuto) {
    // Try only when the free pool can hold it (a failed hugetlb mmap is cheap, but this skips it).
    if (HugePagesFit(header_bytes, data_bytes)) {
      auto m = MapHuge(header_bytes, data_bytes, shared);
      if (m.ok()) return m;
    }
  }
  return MapSmall(header_bytes, data_bytes, shared, huge == HugePages::kAuto);
}

void UnmapArenaMemory(ArenaMemory* m) {
  if (m->base != nullptr) ::munmap(m->base, m->mapped_bytes);
  if (m->fd >= 0) ::close(m->fd);
  *m = ArenaMemory{};
}

}  // namespace foresight
