// Claim words: how a client and a cache node agree, through shared memory and without a round
// trip, whether the node may still write a GET's bytes into the client's mapped region.
//
// Why: a GET sent with kViaRegion (proto/ucx_messages.h) is served by the node writing straight into
// a buffer the client allocated. When the client gives up on that GET (its deadline passed, the
// connection dropped), the caller owns the buffer again, but a stalled node that resumes would
// still serve the stale GET and write into it. A claim word settles the race: whoever moves the
// word first wins.
//
// Layout: the client allocates a claim table (an array of little-endian 32-bit words, 4-byte
// aligned) in UCX shared memory and REGISTERs it with kRegisterClaimTable; the node maps it like any
// region and answers kReplyClaims. A GET then carries kClaimSlot, the index of one word and the
// generation it armed that word with. A word holds `generation << 3 | state`:
//
//   client, on send:        any -> (g, PENDING)                     store, release
//   node, before writing:   (g, PENDING) -> (g, WRITING)            compare-exchange; on failure
//                                                                   the node writes nothing
//   node, after writing:    (g, WRITING) -> (g, DONE)               store, release
//   client, giving up:      (g, PENDING) -> (g, CANCELLED)          compare-exchange; on failure
//                                                                   (WRITING) it waits for DONE
//
// CANCELLED and DONE are terminal for generation g: the node never moves a word it did not find in
// (g, PENDING). So the client may re-arm a word with generation g + 1 as soon as the node answered,
// or the client cancelled, or saw DONE; a stale GET of generation g then never matches. Generations
// are 29 bits and wrap: a GET would have to stay stale across 2^29 reuses of its word to match.
//
// The words are shared between two processes: std::atomic_ref on lock-free 32-bit atomics, which
// work across processes on the same mapping.
//
// A dead node: the client cannot hand a WRITING buffer back while the node might still resume and
// write (it may only be stopped or descheduled), but a node that died never will, and the wait
// must then end. To tell the two apart, the table may carry one writer word per claim word, right
// after the claim words (kRegisterClaimWriters in proto/ucx_messages.h; ClaimTableBytes). Writer
// word i is a RobustWord (common/robust_word.h) that the node's copying thread holds from before it
// moves word i to WRITING until after DONE: 0 when free, the thread's id while held, and
// kRobustWordOwnerDied, written by the kernel, when the thread died holding it. So a client that
// reads a dead mark and then (generation, WRITING) knows the copy will never finish and nothing
// more will be written: it fails the GET and clears the mark. The node takes only a free writer
// word (a marked one is the client's to clear); a node that does not hold them (older, or a client
// that registered none) leaves them 0, and the client then waits for DONE as before.
//
// Thread-safety: pure functions on words that both sides modify concurrently.
#pragma once

#include <atomic>
#include <cstdint>

namespace foresight::ucxwire {

enum class ClaimState : uint32_t {
  kFree = 0,       // never armed
  kPending = 1,    // armed by the client; the node may claim it
  kWriting = 2,    // claimed by the node; it is copying into the region
  kDone = 3,       // the node finished copying
  kCancelled = 4,  // the client gave up first; the node will never write for this generation
};

inline constexpr uint32_t kClaimWordBytes = 4;
inline constexpr uint32_t kClaimStateBits = 3;
inline constexpr uint32_t kClaimGenerationMask = (1u << (32 - kClaimStateBits)) - 1;
// Claim words a client allocates (one 4 KiB page, then a page of writer words): the most region
// GETs in flight at once; more go as ordinary GETs whose bytes travel in the reply.
inline constexpr uint32_t kClaimTableSlots = 1024;
// A table of `slots` claim words and their writer words.
constexpr uint64_t ClaimTableBytes(uint32_t slots) { return 2 * uint64_t{slots} * kClaimWordBytes; }

static_assert(std::atomic_ref<uint32_t>::is_always_lock_free, "claim words need lock-free 32-bit atomics");

constexpr uint32_t ClaimWord(uint32_t generation, ClaimState state) {
  return ((generation & kClaimGenerationMask) << kClaimStateBits) | static_cast<uint32_t>(state);
}
constexpr ClaimState ClaimStateOf(uint32_t word) {
  return static_cast<ClaimState>(word & ((1u << kClaimStateBits) - 1));
}
constexpr uint32_t ClaimGenerationOf(uint32_t word) { return word >> kClaimStateBits; }

inline const char* ClaimStateName(ClaimState state) {
  switch (state) {
    case ClaimState::kFree:
      return "FREE";
    case ClaimState::kPending:
      return "PENDING";
    case ClaimState::kWriting:
      return "WRITING";
    case ClaimState::kDone:
      return "DONE";
    case ClaimState::kCancelled:
      return "CANCELLED";
  }
  return "UNKNOWN";
}

inline uint32_t LoadClaim(uint32_t* word) { return std::atomic_ref<uint32_t>(*word).load(std::memory_order_acquire); }

// Client, before sending the GET.
inline void ArmClaim(uint32_t* word, uint32_t generation) {
  std::atomic_ref<uint32_t>(*word).store(ClaimWord(generation, ClaimState::kPending), std::memory_order_release);
}

// Node: true when it may write the GET's bytes (the word was (generation, PENDING)).
inline bool BeginClaimedWrite(uint32_t* word, uint32_t generation) {
  uint32_t expected = ClaimWord(generation, ClaimState::kPending);
  return std::atomic_ref<uint32_t>(*word).compare_exchange_strong(expected, ClaimWord(generation, ClaimState::kWriting),
                                                                  std::memory_order_acq_rel, std::memory_order_acquire);
}

// Node, after the last byte is written (only after BeginClaimedWrite returned true).
inline void EndClaimedWrite(uint32_t* word, uint32_t generation) {
  std::atomic_ref<uint32_t>(*word).store(ClaimWord(generation, ClaimState::kDone), std::memory_order_release);
}

// Client, giving up on the GET: true when the node will never write for it. False with *seen
// holding the word as found (the node's WRITING or DONE for this generation).
inline bool CancelClaim(uint32_t* word, uint32_t generation, uint32_t* seen) {
  uint32_t expected = ClaimWord(generation, ClaimState::kPending);
  const bool cancelled = std::atomic_ref<uint32_t>(*word).compare_exchange_strong(
      expected, ClaimWord(generation, ClaimState::kCancelled), std::memory_order_acq_rel, std::memory_order_acquire);
  *seen = cancelled ? ClaimWord(generation, ClaimState::kCancelled) : expected;
  return cancelled;
}

}  // namespace foresight::ucxwire
