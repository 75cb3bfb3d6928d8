// The claim word's state machine (proto/region_claim.h) as the client's ClaimTable drives it, with
// this test playing the node on a plain array of words: the client cancels before the node claims
// (nothing written), the node claims first (the client waits for DONE), and a stale index from a
// cancelled get never matches a later get on the same word. Then with a forked child as the node,
// in shared memory: a node killed mid-copy ends the wait (kNodeDied), a stopped one does not.
#include "client/claim_table.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/robust_word.h"
#include "proto/region_claim.h"

namespace foresight {
namespace {

using namespace ucxwire;  // NOLINT: the claim word's states
using Clock = std::chrono::steady_clock;

// The node's side of a claimed region GET: writes `bytes` into `dest` only if it wins the claim.
bool NodeServe(uint32_t* word, uint32_t generation, uint8_t* dest, const std::vector<uint8_t>& bytes) {
  if (!BeginClaimedWrite(word, generation)) return false;
  std::memcpy(dest, bytes.data(), bytes.size());
  EndClaimedWrite(word, generation);
  return true;
}

TEST(ClaimTableTest, ArmSetsPendingWithAFreshGeneration) {
  std::vector<uint32_t> words(4, 0);
  ClaimTable table(words.data(), words.size());
  auto a = table.Arm();
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(ClaimStateOf(words[a->slot]), ClaimState::kPending);
  EXPECT_EQ(ClaimGenerationOf(words[a->slot]), a->generation);
  EXPECT_EQ(table.in_use(), 1u);
  table.Release(*a);
  EXPECT_EQ(table.in_use(), 0u);
}

TEST(ClaimTableTest, ClientCancelsBeforeTheNodeClaimsAndNothingIsWritten) {
  std::vector<uint32_t> words(2, 0);
  ClaimTable table(words.data(), words.size());
  std::vector<uint8_t> buffer(64, 0xA5);
  const std::vector<uint8_t> block(64, 0x11);
  auto claim = table.Arm();
  ASSERT_TRUE(claim.has_value());

  EXPECT_EQ(table.Settle(*claim), ClaimOutcome::kCancelled) << "the node never wrote";
  EXPECT_EQ(ClaimStateOf(words[claim->slot]), ClaimState::kCancelled);
  // The stalled node wakes up and serves the stale GET.
  EXPECT_FALSE(NodeServe(&words[claim->slot], claim->generation, buffer.data(), block));
  EXPECT_EQ(buffer, std::vector<uint8_t>(64, 0xA5)) << "a cancelled get's bytes landed in the buffer";
  EXPECT_EQ(ClaimStateOf(words[claim->slot]), ClaimState::kCancelled);
  EXPECT_EQ(table.in_use(), 0u);
}

TEST(ClaimTableTest, NodeClaimsFirstAndTheClientWaitsForDone) {
  std::vector<uint32_t> words(1, 0);
  ClaimTable table(words.data(), words.size());
  std::vector<uint8_t> buffer(1 << 16, 0xA5);
  const std::vector<uint8_t> block(1 << 16, 0x22);
  auto claim = table.Arm();
  ASSERT_TRUE(claim.has_value());

  // The node claims, then is slow to copy (as if descheduled mid-memcpy).
  ASSERT_TRUE(BeginClaimedWrite(&words[claim->slot], claim->generation));
  constexpr auto kCopyTime = std::chrono::milliseconds(150);
  std::atomic<bool> copied{false};
  std::thread node([&] {
    std::this_thread::sleep_for(kCopyTime);
    std::memcpy(buffer.data(), block.data(), block.size());
    copied = true;
    EndClaimedWrite(&words[claim->slot], claim->generation);
  });
  const auto t0 = Clock::now();
  const ClaimOutcome outcome = table.Settle(*claim, /*warn_every=*/std::chrono::milliseconds(50));
  const auto waited = Clock::now() - t0;
  EXPECT_TRUE(copied) << "Settle returned while the node was still writing";
  node.join();
  EXPECT_EQ(outcome, ClaimOutcome::kWritten);
  EXPECT_GE(waited, kCopyTime * 8 / 10);
  EXPECT_EQ(buffer, block);
  EXPECT_EQ(ClaimStateOf(words[claim->slot]), ClaimState::kDone);
  EXPECT_EQ(table.in_use(), 0u);
}

TEST(ClaimTableTest, TheNodeDoneBeforeTheClientGivesUpIsReportedWritten) {
  std::vector<uint32_t> words(1, 0);
  ClaimTable table(words.data(), words.size());
  std::vector<uint8_t> buffer(16, 0);
  auto claim = table.Arm();
  ASSERT_TRUE(NodeServe(&words[0], claim->generation, buffer.data(), std::vector<uint8_t>(16, 7)));
  EXPECT_EQ(table.Settle(*claim), ClaimOutcome::kWritten);
  EXPECT_EQ(ClaimStateOf(words[0]), ClaimState::kDone);
}

TEST(ClaimTableTest, AStaleIndexFromACancelledGetNeverMatchesANewGet) {
  std::vector<uint32_t> words(1, 0);  // one word: the next get must reuse it
  ClaimTable table(words.data(), words.size());
  std::vector<uint8_t> buffer(32, 0xA5);
  auto stale = table.Arm();
  ASSERT_TRUE(stale.has_value());
  EXPECT_EQ(table.Settle(*stale), ClaimOutcome::kCancelled);  // the word is free again at once

  auto fresh = table.Arm();
  ASSERT_TRUE(fresh.has_value());
  EXPECT_EQ(fresh->slot, stale->slot);
  EXPECT_NE(fresh->generation, stale->generation);
  EXPECT_EQ(ClaimStateOf(words[0]), ClaimState::kPending);

  // The stale GET reaches the node now, while the word is PENDING for the new one: no match.
  EXPECT_FALSE(NodeServe(&words[0], stale->generation, buffer.data(), std::vector<uint8_t>(32, 0x33)));
  EXPECT_EQ(buffer, std::vector<uint8_t>(32, 0xA5));
  EXPECT_EQ(words[0], ClaimWord(fresh->generation, ClaimState::kPending)) << "the stale get moved the new claim";
  // The new GET is served normally.
  EXPECT_TRUE(NodeServe(&words[0], fresh->generation, buffer.data(), std::vector<uint8_t>(32, 0x44)));
  EXPECT_EQ(buffer, std::vector<uint8_t>(32, 0x44));
  table.Release(*fresh);
}

TEST(ClaimTableTest, AFullTableArmsNothingUntilAClaimIsReleased) {
  std::vector<uint32_t> words(2, 0);
  ClaimTable table(words.data(), words.size());
  auto a = table.Arm();
  auto b = table.Arm();
  ASSERT_TRUE(a.has_value() && b.has_value());
  EXPECT_NE(a->slot, b->slot);
  EXPECT_FALSE(table.Arm().has_value());
  table.Release(*a);
  auto c = table.Arm();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->slot, a->slot);
  EXPECT_NE(c->generation, a->generation);
}

TEST(ClaimTableTest, GenerationsContinueFromTheWordsLeftByAnEarlierTable) {
  std::vector<uint32_t> words(1, ClaimWord(41, ClaimState::kCancelled));
  ClaimTable table(words.data(), words.size());
  auto claim = table.Arm();
  ASSERT_TRUE(claim.has_value());
  EXPECT_EQ(claim->generation, 42u);
  EXPECT_FALSE(BeginClaimedWrite(&words[0], 41));
}

TEST(ClaimTableTest, GenerationsWrapWithinTheirBits) {
  std::vector<uint32_t> words(1, ClaimWord(kClaimGenerationMask, ClaimState::kDone));
  ClaimTable table(words.data(), words.size());
  auto claim = table.Arm();
  ASSERT_TRUE(claim.has_value());
  EXPECT_EQ(claim->generation, 0u);
  EXPECT_EQ(ClaimStateOf(words[0]), ClaimState::kPending);
  EXPECT_FALSE(BeginClaimedWrite(&words[0], kClaimGenerationMask));
  EXPECT_TRUE(BeginClaimedWrite(&words[0], 0));
}

// A claim table in memory shared with a forked child, as the registered claim region is shared
// with the node: claim words, then their writer words, then a destination buffer.
class SharedClaimRegion {
 public:
  SharedClaimRegion(uint32_t slots, size_t buffer_bytes) : slots_(slots), bytes_(2 * slots * 4 + buffer_bytes) {
    void* p = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    base_ = p == MAP_FAILED ? nullptr : static_cast<uint8_t*>(p);
  }
  ~SharedClaimRegion() {
    if (base_ != nullptr) munmap(base_, bytes_);
  }
  bool ok() const { return base_ != nullptr; }
  uint32_t* words() const { return reinterpret_cast<uint32_t*>(base_); }
  uint32_t* writers() const { return words() + slots_; }
  uint8_t* buffer() const { return base_ + 2 * slots_ * 4; }

 private:
  uint32_t slots_;
  size_t bytes_;
  uint8_t* base_;
};

// The node dies (SIGKILL) after moving the claim to WRITING and copying half the block. While it
// lives, Settle waits (the node might resume); once it is dead, Settle returns kNodeDied within a
// bounded time instead of waiting for ever, clears the dead mark, and the slot serves again.
TEST(ClaimTableTest, ANodeKilledMidCopyEndsTheWaitWithNodeDied) {
  constexpr uint32_t kSlots = 4;
  constexpr size_t kBlockBytes = 64 << 10;
  SharedClaimRegion region(kSlots, kBlockBytes);
  ASSERT_TRUE(region.ok());
  uint32_t* words = region.words();
  uint32_t* writers = region.writers();
  std::memset(region.buffer(), 0xA5, kBlockBytes);
  ClaimTable table(words, kSlots, writers);
  auto claim = table.Arm();
  ASSERT_TRUE(claim.has_value());
  const uint32_t slot = claim->slot;

  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t node = fork();
  ASSERT_GE(node, 0);
  if (node == 0) {
    // The node's copying thread, stopped for good half-way through the copy.
    RobustWordHold writer(&writers[slot]);
    if (!writer.held() || !BeginClaimedWrite(&words[slot], claim->generation)) _exit(1);
    std::memset(region.buffer(), 0x22, kBlockBytes / 2);
    const char c = 1;
    if (write(ready[1], &c, 1) != 1) _exit(2);
    for (;;) pause();
  }
  close(ready[1]);
  char c = 0;
  ASSERT_EQ(read(ready[0], &c, 1), 1) << "the node child never reached WRITING";
  close(ready[0]);
  struct KillOnExit {
    pid_t pid;
    ~KillOnExit() {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  } reap{node};
  EXPECT_EQ(ClaimStateOf(LoadClaim(&words[slot])), ClaimState::kWriting);
  EXPECT_EQ(LoadRobustWord(&writers[slot]), static_cast<uint32_t>(node)) << "the copying thread holds the writer word";

  std::atomic<bool> settled{false};
  ClaimOutcome outcome = ClaimOutcome::kWritten;
  std::thread client([&] {
    outcome = table.Settle(*claim, /*warn_every=*/std::chrono::milliseconds(50));
    settled = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(settled) << "Settle returned while the node was alive in the middle of its copy";

  ASSERT_EQ(kill(node, SIGKILL), 0);
  const auto killed = Clock::now();
  while (!settled && Clock::now() - killed < std::chrono::seconds(10)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (!settled) {
    ADD_FAILURE() << "Settle still waiting 10 s after the node was killed mid-copy: it would wait for ever";
    std::_Exit(1);  // the waiting thread cannot be joined
  }
  client.join();
  EXPECT_LT(Clock::now() - killed, std::chrono::seconds(2));
  EXPECT_EQ(outcome, ClaimOutcome::kNodeDied) << ClaimOutcomeName(outcome);
  EXPECT_EQ(LoadRobustWord(&writers[slot]), 0u) << "the dead writer's mark must be cleared";
  EXPECT_EQ(table.in_use(), 0u);

  // The slot serves the next get, from a live node, as usual.
  auto next = table.Arm();
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(next->slot, slot);
  {
    RobustWordHold writer(&writers[slot]);
    ASSERT_TRUE(writer.held());
    ASSERT_TRUE(BeginClaimedWrite(&words[slot], next->generation));
    std::memset(region.buffer(), 0x33, kBlockBytes);
    EndClaimedWrite(&words[slot], next->generation);
  }
  EXPECT_EQ(table.Settle(*next), ClaimOutcome::kWritten);
}

// A node stopped (SIGSTOP) mid-copy is alive: Settle keeps waiting, and returns kWritten once it
// resumes and finishes. Stopped is not dead.
TEST(ClaimTableTest, ANodeStoppedMidCopyIsWaitedForNotTakenForDead) {
  constexpr uint32_t kSlots = 1;
  constexpr size_t kBlockBytes = 4096;
  SharedClaimRegion region(kSlots, kBlockBytes);
  ASSERT_TRUE(region.ok());
  uint32_t* words = region.words();
  uint32_t* writers = region.writers();
  ClaimTable table(words, kSlots, writers);
  auto claim = table.Arm();
  ASSERT_TRUE(claim.has_value());

  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t node = fork();
  ASSERT_GE(node, 0);
  if (node == 0) {
    RobustWordHold writer(&writers[0]);
    if (!writer.held() || !BeginClaimedWrite(&words[0], claim->generation)) _exit(1);
    const char c = 1;
    if (write(ready[1], &c, 1) != 1) _exit(2);
    raise(SIGSTOP);  // stopped mid-copy; the test resumes it
    std::memset(region.buffer(), 0x44, kBlockBytes);
    EndClaimedWrite(&words[0], claim->generation);
    writer.Release();
    _exit(0);
  }
  close(ready[1]);
  char c = 0;
  ASSERT_EQ(read(ready[0], &c, 1), 1);
  close(ready[0]);
  std::atomic<bool> settled{false};
  ClaimOutcome outcome = ClaimOutcome::kCancelled;
  std::thread client([&] {
    outcome = table.Settle(*claim, /*warn_every=*/std::chrono::milliseconds(50));
    settled = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_FALSE(settled) << "Settle gave up on a stopped node, which may still write";
  ASSERT_EQ(kill(node, SIGCONT), 0);
  client.join();
  int status = 0;
  ASSERT_EQ(waitpid(node, &status, 0), node);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(outcome, ClaimOutcome::kWritten) << ClaimOutcomeName(outcome);
  EXPECT_EQ(region.buffer()[0], 0x44);
  EXPECT_EQ(LoadRobustWord(&writers[0]), 0u);
}

}  // namespace
}  // namespace foresight
