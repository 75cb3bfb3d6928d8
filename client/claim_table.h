// ClaimTable: the client's side of claimed region GETs (proto/region_claim.h). It hands out claim
// words of a table that lives in shared memory the node maps, arms each with a fresh generation,
// and settles it when the GET ends, so that the caller gets its buffer back only once the node can
// no longer write into it.
//
//   ClaimTable table(words, kClaimTableSlots, writers);  // the registered claim region
//   std::optional<RegionClaim> claim = table.Arm();      // before sending; none free: no region GET
//   ... GET{kViaRegion | kClaimSlot, claim->slot, claim->generation} ...
//   table.Release(*claim);  // the node answered: it is done with the word
//   table.Settle(*claim);   // no answer (deadline, dropped connection): cancel, or wait for DONE
//
// Thread-safety: all methods are safe to call from any thread; the words themselves are shared
// with the node through atomics. The table does not own the words.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <vector>

#include "common/mutex.h"

namespace foresight {

struct RegionClaim {
  uint32_t slot = 0;
  uint32_t generation = 0;
};

// How a GET that ended without the node's answer left its buffer.
enum class ClaimOutcome {
  kCancelled,  // the node never wrote into it, and never will
  kWritten,    // the node copied the bytes (DONE)
  // The node's copying thread died mid-copy (the node crashed or was killed): the buffer holds part
  // of the bytes, and nothing more can be written into it.
  kNodeDied,
};

const char* ClaimOutcomeName(ClaimOutcome outcome);

class ClaimTable {
 public:
  // `words`: `count` 4-byte-aligned claim words the node may map; all of them FREE, or left by an
  // earlier table whose claims were all settled or released. `writers`: the `count` writer words
  // that follow them (proto/region_claim.h), or null: a node that dies mid-copy is then waited for
  // like one that stopped.
  ClaimTable(uint32_t* words, uint32_t count, uint32_t* writers = nullptr);
  ClaimTable(const ClaimTable&) = delete;
  ClaimTable& operator=(const ClaimTable&) = delete;

  // Takes a free word and arms it (PENDING) with the next generation: one atomic store. Nullopt
  // when every word is in use.
  std::optional<RegionClaim> Arm();
  // The node answered the GET: it will not touch the word again for this generation.
  void Release(const RegionClaim& claim);
  // The GET ends without the node's answer. Cancels the claim (PENDING -> CANCELLED), after which
  // the node never writes for it; or, when the node already claimed it (WRITING), waits until it
  // reads DONE: one memcpy, unless the node is stopped mid-copy. A node that is stopped (or slow)
  // may still resume and write, so then a warning is logged every `warn_every` and the wait goes
  // on: returning the buffer early would let the late write land. A node that died cannot write
  // any more: its writer word says so (marked by the kernel), and Settle returns kNodeDied at once.
  // The word is free again afterwards.
  ClaimOutcome Settle(const RegionClaim& claim, std::chrono::milliseconds warn_every = std::chrono::seconds(1));

  uint32_t in_use() const;

 private:
  uint32_t* const words_;
  const uint32_t count_;
  uint32_t* const writers_;  // null: none
  mutable Mutex mu_;
  std::vector<uint32_t> free_ FS_GUARDED_BY(mu_);         // slot indices
  std::vector<uint32_t> generations_ FS_GUARDED_BY(mu_);  // last generation armed, per slot
};

}  // namespace foresight
