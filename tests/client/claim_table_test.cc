// The claim word's state machine (proto/region_claim.h) as the client's ClaimTable drives it, with
// this test playing the node on a plain array of words: the client cancels before the node claims
// (nothing written), the node claims first (the client waits for DONE), and a stale index from a
// cancelled get never matches a later get on the same word.
#include "client/claim_table.h"

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

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

  EXPECT_FALSE(table.Settle(*claim)) << "the node never wrote";
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
  const bool wrote = table.Settle(*claim, /*warn_every=*/std::chrono::milliseconds(50));
  const auto waited = Clock::now() - t0;
  EXPECT_TRUE(copied) << "Settle returned while the node was still writing";
  node.join();
  EXPECT_TRUE(wrote);
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
  EXPECT_TRUE(table.Settle(*claim));
  EXPECT_EQ(ClaimStateOf(words[0]), ClaimState::kDone);
}

TEST(ClaimTableTest, AStaleIndexFromACancelledGetNeverMatchesANewGet) {
  std::vector<uint32_t> words(1, 0);  // one word: the next get must reuse it
  ClaimTable table(words.data(), words.size());
  std::vector<uint8_t> buffer(32, 0xA5);
  auto stale = table.Arm();
  ASSERT_TRUE(stale.has_value());
  EXPECT_FALSE(table.Settle(*stale));  // cancelled: the word is free again at once

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

}  // namespace
}  // namespace foresight
