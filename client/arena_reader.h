// The client's side of one-sided shared-memory gets: the node's arena, mapped read-only into this
// process, and the verified copy out of it.
//
// A same-host client gets an ArenaGrant from the node (ARENA, proto/ucx_messages.h), opens the
// node's memfd as /proc/<pid>/fd/<fd>, maps it read-only and checks the file's header page against
// the grant's nonce, so that a file of another process (another pid namespace) is never taken for
// the node's. Blocks are then copied out under a lease, hashing each chunk as it lands; the caller
// compares the hash with the node's checksum before the block counts as delivered.
//
// Thread-safety: an ArenaMap is immutable once made and may be read from any thread; the functions
// are pure.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "common/status.h"
#include "proto/ucx_messages.h"

namespace foresight {

// The node's arena, mapped read-only into this process; unmapped when the last reference goes.
struct ArenaMap {
  uint8_t* base = nullptr;
  uint64_t file_bytes = 0;
  const uint8_t* arena = nullptr;
  uint64_t arena_bytes = 0;
  ArenaMap() = default;
  ArenaMap(const ArenaMap&) = delete;
  ArenaMap& operator=(const ArenaMap&) = delete;
  ~ArenaMap();
};

// Opens /proc/<pid>/fd/<fd> of the node (same host, same user), maps it read-only and checks the
// header's magic and nonce.
StatusOr<std::shared_ptr<ArenaMap>> MapArena(const ucxwire::ArenaGrant& grant);

// Copies the segments into dest back to back and returns XXH3-64 of the copied bytes, hashing each
// chunk from the destination right after copying it (still in L1/L2).
uint64_t CopyAndChecksum(uint8_t* dest, const std::vector<std::pair<const uint8_t*, uint64_t>>& segments);

}  // namespace foresight
