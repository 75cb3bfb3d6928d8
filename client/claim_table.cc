#include "client/claim_table.h"

#include <spdlog/spdlog.h>

#include <thread>

#include "common/robust_word.h"
#include "proto/region_claim.h"

namespace foresight {

using namespace ucxwire;  // NOLINT: the claim word's states

const char* ClaimOutcomeName(ClaimOutcome outcome) {
  switch (outcome) {
    case ClaimOutcome::kCancelled:
      return "cancelled";
    case ClaimOutcome::kWritten:
      return "written";
    case ClaimOutcome::kNodeDied:
      return "node died";
  }
  return "unknown";
}

ClaimTable::ClaimTable(uint32_t* words, uint32_t count, uint32_t* writers)
    : words_(words), count_(count), writers_(writers) {
  MutexLock lock(mu_);
  generations_.resize(count);
  free_.reserve(count);
  // Popped from the back: slot 0 first.
  for (uint32_t i = count; i > 0; --i) free_.push_back(i - 1);
  for (uint32_t i = 0; i < count; ++i) generations_[i] = ClaimGenerationOf(LoadClaim(&words_[i]));
}

std::optional<RegionClaim> ClaimTable::Arm() {
  RegionClaim claim;
  {
    MutexLock lock(mu_);
    if (free_.empty()) return std::nullopt;
    claim.slot = free_.back();
    free_.pop_back();
    claim.generation = generations_[claim.slot] = (generations_[claim.slot] + 1) & kClaimGenerationMask;
  }
  ArmClaim(&words_[claim.slot], claim.generation);
  return claim;
}

void ClaimTable::Release(const RegionClaim& claim) {
  MutexLock lock(mu_);
  free_.push_back(claim.slot);
}

ClaimOutcome ClaimTable::Settle(const RegionClaim& claim, std::chrono::milliseconds warn_every) {
  uint32_t* word = &words_[claim.slot];
  uint32_t* writer = writers_ != nullptr ? &writers_[claim.slot] : nullptr;
  const uint32_t writing = ClaimWord(claim.generation, ClaimState::kWriting);
  uint32_t seen = 0;
  ClaimOutcome outcome = ClaimOutcome::kCancelled;
  if (!CancelClaim(word, claim.generation, &seen)) {
    const auto start = std::chrono::steady_clock::now();
    auto next_warning = start + warn_every;
    bool died = false;
    while (seen == writing) {
      // The writer word first: the node holds it from before WRITING until after DONE, so a dead
      // mark read before a WRITING word is the death of the thread that is (was) copying.
      if (writer != nullptr && RobustWordOwnerDied(LoadRobustWord(writer)) && LoadClaim(word) == writing) {
        died = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
      seen = LoadClaim(word);
      const auto now = std::chrono::steady_clock::now();
      if (now >= next_warning) {
        next_warning = now + warn_every;
        spdlog::warn(
            "UCX client: claim slot {} (generation {}) still WRITING after {} ms: the node is stopped in the middle "
            "of copying a GET into this client's buffer (it may resume); the buffer is not handed back until it "
            "finishes, or is seen to have died",
            claim.slot, claim.generation, std::chrono::duration_cast<std::chrono::milliseconds>(now - start).count());
      }
    }
    outcome = died                                                     ? ClaimOutcome::kNodeDied
              : seen == ClaimWord(claim.generation, ClaimState::kDone) ? ClaimOutcome::kWritten
                                                                       : ClaimOutcome::kCancelled;
  }
  // A dead writer's mark (mid-copy, or between DONE and letting go) would stop the next node from
  // ever writing through this slot.
  if (writer != nullptr) ClearDeadRobustWord(writer);
  Release(claim);
  return outcome;
}

uint32_t ClaimTable::in_use() const {
  MutexLock lock(mu_);
  return count_ - static_cast<uint32_t>(free_.size());
}

}  // namespace foresight
