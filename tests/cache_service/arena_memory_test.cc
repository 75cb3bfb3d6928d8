// The RAM tier's arena memory: 4 KiB or 2 MiB pages, shared or private, and the error an operator
// sees when huge pages are required but not reserved. The huge-page cases run where the machine
// has 2 MiB pages reserved (`sysctl vm.nr_hugepages=N`; .ci/run reserves a few) and skip otherwise.
// Page sizes are checked in the kernel's own account (/proc/self/smaps), not only in ours.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "cache_service/arena_memory.h"
#include "proto/ucx_messages.h"
#include "tests/cache_service/block_store_fixture.h"

namespace foresight {
namespace {

using testing_util::BlockStoreFixture;
using testing_util::Bytes;
using testing_util::PutBlock;
using testing_util::ReadBlock;

constexpr uint64_t kMiB = 1 << 20;

bool AllZero(const uint8_t* p, uint64_t n) {
  for (uint64_t i = 0; i < n; i += 4096) {
    if (p[i] != 0) return false;
  }
  return p[n - 1] == 0;
}

// What a same-host client does with the node's arena: open the memfd by /proc path, map it read-only.
std::string ReadThroughProc(int fd, uint64_t file_bytes, uint64_t offset, uint64_t n) {
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  const int other = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (other < 0) return "open failed";
  void* p = ::mmap(nullptr, file_bytes, PROT_READ, MAP_SHARED, other, 0);
  ::close(other);
  if (p == MAP_FAILED) return "mmap failed";
  std::string out(static_cast<const char*>(p) + offset, n);
  ::munmap(p, file_bytes);
  return out;
}

// The kernel's page size for the mapping that holds `p` (/proc/self/smaps), 0 if not found.
uint64_t KernelPageBytes(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  const auto addr = reinterpret_cast<uintptr_t>(p);
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    uintptr_t lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2) {  // a mapping's first line
      inside = addr >= lo && addr < hi;
    } else if (inside && line.rfind("KernelPageSize:", 0) == 0) {
      return std::stoull(line.substr(15)) * 1024;
    }
  }
  return 0;
}

uint64_t OvercommitHugePages() {
  std::ifstream in("/proc/sys/vm/nr_overcommit_hugepages");
  uint64_t n = 0;
  in >> n;
  return n;
}

TEST(HugePagesFlagTest, ParsesTheThreeModesAndNamesABadOne) {
  EXPECT_EQ(*ParseHugePages("auto"), HugePages::kAuto);
  EXPECT_EQ(*ParseHugePages("on"), HugePages::kOn);
  EXPECT_EQ(*ParseHugePages("off"), HugePages::kOff);
  auto bad = ParseHugePages("yes");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("'yes'"), std::string::npos) << bad.status().message();
  for (HugePages m : {HugePages::kAuto, HugePages::kOn, HugePages::kOff})
    EXPECT_EQ(*ParseHugePages(HugePagesName(m)), m);
}

TEST(ArenaMemoryTest, SmallPagesSharedAndPrivate) {
  auto shared = MapArenaMemory(100, 3 * kMiB + 5, /*shared=*/true, HugePages::kOff);
  ASSERT_TRUE(shared.ok()) << shared.status().ToString();
  EXPECT_EQ(shared->page_bytes, 4096u);
  EXPECT_EQ(shared->header_bytes, 4096u);  // rounded up to a page
  EXPECT_EQ(shared->data, shared->base + 4096);
  EXPECT_EQ(shared->mapped_bytes % 4096, 0u);
  EXPECT_GE(shared->mapped_bytes, 4096 + 3 * kMiB + 5);
  EXPECT_GE(shared->fd, 0);
  EXPECT_TRUE(AllZero(shared->data, shared->data_bytes));
  EXPECT_EQ(KernelPageBytes(shared->data), 4096u);
  std::memcpy(shared->data + kMiB, "arena", 5);
  EXPECT_EQ(ReadThroughProc(shared->fd, shared->mapped_bytes, shared->header_bytes + kMiB, 5), "arena");
  UnmapArenaMemory(&*shared);
  EXPECT_EQ(shared->base, nullptr);
  EXPECT_EQ(shared->fd, -1);

  auto priv = MapArenaMemory(0, 2 * kMiB, /*shared=*/false, HugePages::kOff);
  ASSERT_TRUE(priv.ok()) << priv.status().ToString();
  EXPECT_EQ(priv->fd, -1);
  EXPECT_EQ(priv->data, priv->base);
  EXPECT_TRUE(AllZero(priv->data, priv->data_bytes));
  priv->data[2 * kMiB - 1] = 7;
  UnmapArenaMemory(&*priv);
}

TEST(ArenaMemoryTest, RequiredHugePagesThatAreNotThereGiveAnErrorSayingHowToReserveThem) {
  // One page more than the whole pool: the mmap's reservation fails before any memory is used,
  // whatever other processes take or give back meanwhile.
  const HugePageCount count = ReadHugePageCount();
  if (OvercommitHugePages() > 0) GTEST_SKIP() << "vm.nr_overcommit_hugepages lets the kernel add pages";
  const uint64_t bytes = (count.total + 1) * 2 * kMiB;
  for (bool shared : {true, false}) {
    auto m = MapArenaMemory(0, bytes, shared, HugePages::kOn);
    ASSERT_FALSE(m.ok()) << "mapped " << bytes << " bytes with " << count.total << " huge pages reserved";
    EXPECT_EQ(m.status().code(), StatusCode::kResourceExhausted);
    EXPECT_NE(m.status().message().find("2MiB huge pages"), std::string::npos) << m.status().message();
    EXPECT_NE(m.status().message().find("vm.nr_hugepages"), std::string::npos) << m.status().message();
  }
  // auto falls back to small pages for the same request (small enough to really map here).
  if (count.total < 256) {
    auto fallback = MapArenaMemory(0, bytes, /*shared=*/true, HugePages::kAuto);
    ASSERT_TRUE(fallback.ok()) << fallback.status().ToString();
    EXPECT_EQ(fallback->page_bytes, 4096u);
    UnmapArenaMemory(&*fallback);
  }
}

// Other tests' daemons (ctest -j) take huge pages too: a mapping that fails while the pool is
// short was a race for pages, not a defect.
#define SKIP_IF_THE_POOL_RAN_DRY(result, pages)                                       \
  if (!(result).ok() && (result).status().code() == StatusCode::kResourceExhausted && \
      ReadHugePageCount().free < (pages))                                             \
  GTEST_SKIP() << "another process took the free huge pages: " << (result).status().message()

TEST(ArenaMemoryTest, HugePagesWhenReserved) {
  if (ReadHugePageCount().free < 3) GTEST_SKIP() << "fewer than 3 free 2MiB huge pages (vm.nr_hugepages)";
  auto m = MapArenaMemory(4096, 2 * kMiB, /*shared=*/true, HugePages::kOn);
  SKIP_IF_THE_POOL_RAN_DRY(m, 2);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->page_bytes, 2 * kMiB);
  EXPECT_EQ(m->header_bytes, 2 * kMiB);  // a header rounds up to a whole huge page
  EXPECT_EQ(m->mapped_bytes, 4 * kMiB);
  EXPECT_EQ(KernelPageBytes(m->data), 2 * kMiB);
  EXPECT_TRUE(AllZero(m->data, m->data_bytes));
  std::memcpy(m->data + 12345, "huge", 4);
  EXPECT_EQ(ReadThroughProc(m->fd, m->mapped_bytes, m->header_bytes + 12345, 4), "huge");
  UnmapArenaMemory(&*m);

  auto automatic = MapArenaMemory(0, 2 * kMiB, /*shared=*/false, HugePages::kAuto);
  ASSERT_TRUE(automatic.ok()) << automatic.status().ToString();
  if (automatic->page_bytes != 2 * kMiB && ReadHugePageCount().free < 1) {
    UnmapArenaMemory(&*automatic);
    GTEST_SKIP() << "another process took the free huge pages";
  }
  EXPECT_EQ(automatic->page_bytes, 2 * kMiB);
  EXPECT_EQ(KernelPageBytes(automatic->data), 2 * kMiB);
  UnmapArenaMemory(&*automatic);
}

class HugePageStoreTest : public BlockStoreFixture {
 protected:
  static BlockStoreOptions Options(uint64_t ram_bytes, HugePages huge) {
    BlockStoreOptions o;
    o.ram_bytes = ram_bytes;
    o.max_block_bytes = kMiB;
    o.background_eviction = false;
    o.huge_pages = huge;
    return o;
  }
};

TEST_F(HugePageStoreTest, AStoreInHugePagesServesBlocksAndSharesItsArena) {
  if (ReadHugePageCount().free < 6) GTEST_SKIP() << "fewer than 6 free 2MiB huge pages (vm.nr_hugepages)";
  auto store = BlockStore::Open(Options(8 * kMiB, HugePages::kOn));
  SKIP_IF_THE_POOL_RAN_DRY(store, 5);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ((*store)->arena_page_bytes(), 2 * kMiB);
  EXPECT_EQ(KernelPageBytes((*store)->arena_base()), 2 * kMiB);
  const SharedArena shared = (*store)->shared_arena();
  ASSERT_GE(shared.fd, 0);
  EXPECT_EQ(shared.arena_offset, 2 * kMiB);
  EXPECT_EQ(shared.file_bytes % (2 * kMiB), 0u);
  // The header a client checks: magic, then the nonce.
  const std::string header = ReadThroughProc(shared.fd, shared.file_bytes, 0, 24);
  uint64_t magic = 0;
  std::memcpy(&magic, header.data(), 8);
  EXPECT_EQ(magic, ucxwire::kArenaFileMagic);
  EXPECT_EQ(std::memcmp(header.data() + 8, shared.nonce, sizeof shared.nonce), 0);
  EXPECT_TRUE(ucxwire::ArenaFileHeaderMatches(reinterpret_cast<const uint8_t*>(header.data()), shared.nonce));

  const BlockKey key = PlainKey("huge", "k");
  const auto bytes = Bytes(700000, 3);
  ASSERT_TRUE(PutBlock(**store, key, bytes).ok());
  EXPECT_EQ(*ReadBlock(**store, key), bytes);
}

TEST_F(HugePageStoreTest, OffKeepsSmallPagesAndOnWithoutPagesRefusesToOpen) {
  auto small = BlockStore::Open(Options(4 * kMiB, HugePages::kOff));
  ASSERT_TRUE(small.ok()) << small.status().ToString();
  EXPECT_EQ((*small)->arena_page_bytes(), 4096u);
  EXPECT_EQ((*small)->shared_arena().arena_offset, 4096u);

  if (OvercommitHugePages() > 0) GTEST_SKIP() << "vm.nr_overcommit_hugepages lets the kernel add pages";
  auto refused = BlockStore::Open(Options((ReadHugePageCount().total + 1) * 2 * kMiB, HugePages::kOn));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(refused.status().message().find("--huge-pages on"), std::string::npos) << refused.status().message();
}

}  // namespace
}  // namespace foresight
