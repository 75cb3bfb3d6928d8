// Deterministic replays of the put-commit-order race (docs/perf-notes.md, "a block lost under load
// again: generations taken at Reserve, not at commit"): two puts of one key reserve in one order and
// commit in the other while the replaced version's write-down to NVMe is in flight.
//
// The interleaving needs the write-down thread stopped after it has taken its snapshot of the old
// version and before NvmeTier::Put takes the tier's lock. BlockStore has no test hook there, so this
// binary replaces the global operator new (a replacement the standard allows, and one that RocksDB's
// shared library uses too): on a thread that asked for it, the first allocation of at least a block's
// size parks the thread. On the write-down path that allocation is RocksDB's WriteBatch copying the
// block in NvmeTier::Put, before the tier's lock. If the code changes so that this copy goes away,
// the tests fail saying the pause point was never reached; they never pass without the race.
//
// The replacement is why these tests live in a binary of their own.
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <new>
#include <random>
#include <thread>
#include <vector>

#include <unistd.h>

#include <gtest/gtest.h>

#include "cache_service/block_store.h"
#include "common/checksum.h"
#include "tests/cache_service/block_store_fixture.h"

namespace {

// Where a thread parks. Nothing here allocates: it runs inside operator new.
struct PausePoint {
  std::mutex mu;
  std::condition_variable cv;
  bool reached = false;
  bool released = false;
};

PausePoint g_pause;
thread_local uint64_t t_pause_at_bytes = 0;  // 0: this thread never pauses

void MaybePause(std::size_t n) {
  if (t_pause_at_bytes == 0 || n < t_pause_at_bytes) return;
  t_pause_at_bytes = 0;  // once per arming
  std::unique_lock<std::mutex> lock(g_pause.mu);
  g_pause.reached = true;
  g_pause.cv.notify_all();
  g_pause.cv.wait(lock, [] { return g_pause.released; });
}

}  // namespace

// GCC sees malloc under this operator new and warns that the matching deletes use free; they are
// this replacement's own pair, so the warning does not apply.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t n) {
  MaybePause(n);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop

namespace foresight {
namespace {

constexpr uint64_t kBlock = 1 << 20;

using testing_util::Bytes;
using testing_util::PutBlock;
using testing_util::ReadBlock;

class PutCommitOrderRaceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/block_store_race_" + std::to_string(::getpid()) + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::lock_guard<std::mutex> lock(g_pause.mu);
    g_pause.reached = false;
    g_pause.released = false;
  }
  void TearDown() override {
    Release();  // never leave a thread parked, even when an assertion failed
    if (flusher_.joinable()) flusher_.join();
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Four 1 MiB blocks of RAM over an NVMe tier; eviction only when a put needs room, so which
  // block goes, and when, is decided by the test.
  void Open() {
    store_.reset();
    BlockStoreOptions o;
    o.background_eviction = false;
    o.ram_bytes = 4 * kBlock;
    o.max_block_bytes = kBlock;
    o.nvme_dir = dir_;
    auto s = BlockStore::Open(o);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
  }

  // Flush() on another thread, parked inside NvmeTier::Put of the only RAM-only block.
  void StartParkedFlush() {
    flusher_ = std::thread([this] {
      t_pause_at_bytes = kBlock;
      flush_status_ = store_->Flush();
      t_pause_at_bytes = 0;
    });
    std::unique_lock<std::mutex> lock(g_pause.mu);
    ASSERT_TRUE(g_pause.cv.wait_for(lock, std::chrono::seconds(20), [] { return g_pause.reached; }))
        << "the write-down never reached its pause point (the block copy into RocksDB's batch in "
           "NvmeTier::Put); this test's pause point needs to follow the code";
  }

  // Reserve A, reserve B, commit B; B's write-down starts (StartParkedFlush) and parks; commit A.
  void CommitInTheOtherOrder(const BlockKey& key, const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
    auto slot_a = store_->Reserve(key, kBlock);
    auto slot_b = store_->Reserve(key, kBlock);
    ASSERT_TRUE(slot_a.ok() && slot_b.ok());
    std::memcpy(slot_a->data(), a.data(), kBlock);
    std::memcpy(slot_b->data(), b.data(), kBlock);
    ASSERT_TRUE(store_->Commit(std::move(*slot_b), BlockChecksum(b.data(), kBlock)).ok());
    ASSERT_NO_FATAL_FAILURE(StartParkedFlush());
    ASSERT_TRUE(store_->Commit(std::move(*slot_a), BlockChecksum(a.data(), kBlock)).ok());
  }

  // Puts filler blocks until `key` has left RAM (at most `fillers` of them).
  void PushOutOfRam(const BlockKey& key, int fillers, uint32_t seed) {
    for (int i = 0; i < fillers; ++i) {
      auto info = store_->Stat(key);
      ASSERT_TRUE(info.ok()) << info.status().ToString();
      if (!info->in_ram) return;
      ASSERT_TRUE(PutBlock(*store_, PlainKey("race", "filler" + std::to_string(i)), Bytes(kBlock, seed + i)).ok());
    }
  }

  void Release() {
    std::lock_guard<std::mutex> lock(g_pause.mu);
    g_pause.released = true;
    g_pause.cv.notify_all();
  }

  void FinishFlush() {
    Release();
    flusher_.join();
    EXPECT_TRUE(flush_status_.ok()) << flush_status_.ToString();
  }

  std::string dir_;
  std::unique_ptr<BlockStore> store_;
  std::thread flusher_;
  Status flush_status_;
};

// Reserve A, reserve B, commit B, B's write-down starts; commit A and evict it to NVMe; then B's
// write-down reaches NVMe. A is the version committed last and must be what is served.
TEST_F(PutCommitOrderRaceTest, LaterCommitWinsWhenItReachedNvmeFirst) {
  ASSERT_NO_FATAL_FAILURE(Open());
  const BlockKey key = PlainKey("race", "k");
  const auto a = Bytes(kBlock, 1), b = Bytes(kBlock, 2);
  ASSERT_NO_FATAL_FAILURE(CommitInTheOtherOrder(key, a, b));  // B's write-down parked before NVMe
  // RAM holds A and (pinned by the write-down) B; fillers push A, the least recent, to NVMe.
  ASSERT_NO_FATAL_FAILURE(PushOutOfRam(key, 3, 10));
  auto before = store_->Stat(key);
  ASSERT_TRUE(before.ok()) << before.status().ToString();
  ASSERT_FALSE(before->in_ram) << "A was not evicted; the replay did not happen";
  ASSERT_TRUE(before->on_nvme);

  ASSERT_NO_FATAL_FAILURE(FinishFlush());  // B's write-down reaches NVMe now

  auto info = store_->Stat(key);
  ASSERT_TRUE(info.ok()) << "the key was lost: " << info.status().ToString();
  EXPECT_EQ(info->checksum, BlockChecksum(a.data(), kBlock)) << "an older version replaced the last commit";
  auto served = ReadBlock(*store_, key);
  ASSERT_TRUE(served.ok()) << "the key was lost: " << served.status().ToString();
  EXPECT_TRUE(*served == a) << "served bytes are not those of the version committed last";

  ASSERT_TRUE(store_->Flush().ok());
  ASSERT_NO_FATAL_FAILURE(Open());  // the NVMe copy survives a reopen
  auto reopened = ReadBlock(*store_, key);
  ASSERT_TRUE(reopened.ok()) << "lost across a reopen: " << reopened.status().ToString();
  EXPECT_TRUE(*reopened == a) << "after a reopen the served bytes are not the last commit's";
}

// The same race with A still in RAM when B's write-down lands: A must not be left believing it has
// an NVMe copy that is gone, or a later eviction drops it without writing it.
TEST_F(PutCommitOrderRaceTest, LaterCommitSurvivesEvictionAfterTheOlderWriteDownLands) {
  ASSERT_NO_FATAL_FAILURE(Open());
  const BlockKey key = PlainKey("race", "k");
  const auto a = Bytes(kBlock, 3), b = Bytes(kBlock, 4);
  ASSERT_NO_FATAL_FAILURE(CommitInTheOtherOrder(key, a, b));
  ASSERT_TRUE(store_->Flush().ok());  // A written down, and kept in RAM
  ASSERT_NO_FATAL_FAILURE(FinishFlush());

  auto in_ram = ReadBlock(*store_, key);
  ASSERT_TRUE(in_ram.ok()) << in_ram.status().ToString();
  EXPECT_TRUE(*in_ram == a);
  // Four fillers: every RAM page is needed, so A (least recently used) is evicted.
  for (int i = 0; i < 4; ++i)
    ASSERT_TRUE(PutBlock(*store_, PlainKey("race", "filler" + std::to_string(i)), Bytes(kBlock, 20 + i)).ok());
  auto info = store_->Stat(key);
  ASSERT_TRUE(info.ok()) << "the key was lost on eviction: " << info.status().ToString();
  ASSERT_FALSE(info->in_ram) << "A was not evicted; the replay did not happen";
  auto served = ReadBlock(*store_, key);
  ASSERT_TRUE(served.ok()) << "the key was lost on eviction: " << served.status().ToString();
  EXPECT_TRUE(*served == a) << "served bytes are not those of the version committed last";

  ASSERT_TRUE(store_->Flush().ok());
  ASSERT_NO_FATAL_FAILURE(Open());
  auto reopened = ReadBlock(*store_, key);
  ASSERT_TRUE(reopened.ok()) << "lost across a reopen: " << reopened.status().ToString();
  EXPECT_TRUE(*reopened == a);
}

// A read that misses RAM and goes to NVMe while a put replaces the block: the put's commit puts the
// new version in RAM and deletes the NVMe copy it replaced, between the reader's two looks. The
// reader used to answer NOT_FOUND (`foresight-bench load` counted an acknowledged block lost about
// once a minute); the block was there all along, in RAM. The reader parks at its first allocation,
// RocksDB's snapshot in NvmeTier::Get, after its RAM miss and its look at the NVMe index.
TEST_F(PutCommitOrderRaceTest, AReadRacingAPutThatMovesTheBlockToRamFindsIt) {
  ASSERT_NO_FATAL_FAILURE(Open());
  const BlockKey key = PlainKey("race", "moving");
  const auto v1 = Bytes(kBlock, 5), v2 = Bytes(kBlock, 6);
  ASSERT_TRUE(PutBlock(*store_, key, v1).ok());
  ASSERT_TRUE(store_->Flush().ok());
  ASSERT_NO_FATAL_FAILURE(PushOutOfRam(key, 4, 20));  // v1 leaves RAM; it stays on NVMe
  ASSERT_FALSE(store_->Stat(key)->in_ram) << "v1 was not evicted; the replay did not happen";
  ASSERT_TRUE(store_->Remove(PlainKey("race", "filler0")).ok());  // room for v2 without evicting

  StatusOr<std::vector<uint8_t>> read = Status();
  flusher_ = std::thread([&] {
    t_pause_at_bytes = 1;
    read = ReadBlock(*store_, key);
    t_pause_at_bytes = 0;
  });
  {
    std::unique_lock<std::mutex> lock(g_pause.mu);
    ASSERT_TRUE(g_pause.cv.wait_for(lock, std::chrono::seconds(20), [] { return g_pause.reached; }))
        << "the read never reached an allocation; this test's pause point needs to follow the code";
  }
  // While the reader is parked: v2 is committed, and v1's NVMe copy deleted as replaced.
  ASSERT_TRUE(PutBlock(*store_, key, v2).ok());
  ASSERT_TRUE(store_->Stat(key)->in_ram);
  Release();
  flusher_.join();
  ASSERT_TRUE(read.ok()) << "a block that was in RAM was reported missing: " << read.status().ToString();
  EXPECT_TRUE(*read == v2 || *read == v1) << "served bytes of neither version";
}

}  // namespace
}  // namespace foresight
