#include "client/arena_reader.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

// XXH3 streaming, inline (AVX2): each copied chunk is hashed while it is in cache. The values equal
// BlockChecksum's (XXH3-64, no seed) over the same bytes.
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

namespace foresight {

ArenaMap::~ArenaMap() {
  if (base != nullptr) munmap(base, file_bytes);
}

StatusOr<std::shared_ptr<ArenaMap>> MapArena(const ucxwire::ArenaGrant& g) {
  if (g.fd < 0 || g.arena_offset < 4096 || g.arena_bytes == 0 || g.arena_offset > g.file_bytes ||
      g.arena_bytes > g.file_bytes - g.arena_offset) {
    return InvalidArgument("the node's arena grant is inconsistent");
  }
  const std::string path = "/proc/" + std::to_string(g.pid) + "/fd/" + std::to_string(g.fd);
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Unavailable("cannot open " + path + ": " + strerror(errno) + " (another host or user?)");
  struct stat st {};
  if (fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) != g.file_bytes) {
    close(fd);
    return Unavailable(path + " is not the node's arena (size differs)");
  }
  // Populated up front up to 4 GiB (no page faults in the copies); a larger arena is faulted in
  // as it is read, so that connecting stays fast and the page tables grow only with use.
  const int populate = g.file_bytes <= (4ull << 30) ? MAP_POPULATE : 0;
  void* base = mmap(nullptr, g.file_bytes, PROT_READ, MAP_SHARED | populate, fd, 0);
  const int err = errno;
  close(fd);
  if (base == MAP_FAILED) return Unavailable("cannot map " + path + ": " + strerror(err));
  auto map = std::make_shared<ArenaMap>();
  map->base = static_cast<uint8_t*>(base);
  map->file_bytes = g.file_bytes;
  map->arena = map->base + g.arena_offset;
  map->arena_bytes = g.arena_bytes;
  if (!ucxwire::ArenaFileHeaderMatches(map->base, g.nonce)) {
    return Unavailable(path + " is not the node's arena (nonce differs)");
  }
  return map;
}

uint64_t CopyAndChecksum(uint8_t* dest, const std::vector<std::pair<const uint8_t*, uint64_t>>& segments) {
  constexpr uint64_t kChunk = 64 << 10;
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  for (const auto& [src, bytes] : segments) {
    for (uint64_t at = 0; at < bytes; at += kChunk) {
      const uint64_t n = std::min(kChunk, bytes - at);
      std::memcpy(dest, src + at, n);
      XXH3_64bits_update(&state, dest, n);
      dest += n;
    }
  }
  return XXH3_64bits_digest(&state);
}

}  // namespace foresight
