// BlockStore: the node's storage engine. Holds KV blocks in a RAM tier (one arena, allocated up
// front and registered once with UCX) over an optional NVMe tier (RocksDB), behind one interface
// used by both the gRPC service and the UCX data plane.
//
// - Put is two-phase: Reserve() hands out a slot in the arena that no reader can see; the writer
//   fills it (memcpy, or a UCX receive straight into the arena); Commit() verifies the checksum and
//   publishes the block atomically. A slot that is dropped uncommitted is freed.
// - Lease() pins a block in RAM (promoting it from NVMe first if needed) so that it is neither
//   evicted nor replaced under a reader. Leases are cheap; hold them only while bytes are moving.
// - Every crossing between tiers verifies the block's XXH3 checksum; a mismatch drops the block and
//   answers DATA_LOSS. A block is never served with the wrong bytes.
// - Blocks in RAM only are not durable. Blocks evicted from RAM are written down to NVMe (when
//   configured); NVMe blocks survive a crash and a restart.
//
// Thread-safety: all methods are safe to call concurrently.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cache_service/arena_memory.h"
#include "common/block_key.h"
#include "common/status.h"

namespace foresight {

enum class Tier { kRam = 0, kNvme = 1 };
const char* TierName(Tier tier);

struct BlockStoreOptions {
  uint64_t ram_bytes = 1ull << 30;      // arena size
  uint64_t max_block_bytes = 4u << 20;  // largest block accepted (and the arena's page size)
  double high_watermark = 0.95;         // background eviction starts above this share of the arena
  double low_watermark = 0.85;          // ... and stops below this one
  bool background_eviction = true;      // false: evict only when a put finds no room (tests)
  std::string nvme_dir;                 // empty: no NVMe tier (evicted blocks are dropped)
  uint64_t nvme_bytes = 0;              // capacity of the NVMe tier (0: unlimited)
  // Place the arena in an anonymous shared-memory file (memfd) that same-host clients may map
  // read-only (UcxServer's one-sided get path). false, or a kernel without memfd: a private mapping.
  bool shared_arena = true;
  // The arena's pages: 2 MiB huge pages when reserved (auto), required (on), or never (off).
  HugePages huge_pages = HugePages::kAuto;
};

// The arena as a shared-memory file: the memfd holds a header page followed by the arena. The
// header page holds the magic and this random nonce (ucxwire::WriteArenaFileHeader, in
// proto/ucx_messages.h), so that a client can tell it mapped this node's arena.
struct SharedArena {
  int fd = -1;                // -1: the arena is not shared
  uint64_t arena_offset = 0;  // where the arena starts in the file (after the header page)
  uint64_t file_bytes = 0;
  uint8_t nonce[16] = {};  // also at header bytes 8..23
};

struct BlockInfo {
  BlockKey key;
  uint64_t size = 0;
  uint64_t checksum = 0;
  bool in_ram = false;
  bool on_nvme = false;
};

struct TierStats {
  uint64_t capacity_bytes = 0;
  uint64_t used_bytes = 0;  // bytes of committed blocks
  uint64_t items = 0;
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t evictions = 0;  // blocks pushed out of this tier for space
};

struct StoreStats {
  TierStats ram;
  TierStats nvme;
  uint64_t checksum_failures = 0;  // blocks found corrupt and dropped (any tier, any reader)
  uint64_t promotions = 0;         // NVMe -> RAM
  uint64_t demotions = 0;          // RAM -> NVMe
  uint64_t active_leases = 0;
  uint64_t pending_writes = 0;
  uint64_t ram_page_bytes = 0;  // the RAM arena's page size: 4096, or 2 MiB in huge pages
};

class BlockStore;

// A reserved, invisible slot in the arena. Move-only; dropping it uncommitted frees the slot.
class WriteSlot {
 public:
  WriteSlot() = default;
  WriteSlot(WriteSlot&& other) noexcept { *this = std::move(other); }
  WriteSlot& operator=(WriteSlot&& other) noexcept;
  ~WriteSlot();
  uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  const BlockKey& key() const { return key_; }
  bool valid() const { return store_ != nullptr; }

 private:
  friend class BlockStore;
  BlockStore* store_ = nullptr;
  uint64_t handle_ = 0;
  uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  BlockKey key_;
};

// A pinned, committed block in RAM. Move-only; the pin is released on destruction.
class ReadLease {
 public:
  ReadLease() = default;
  ReadLease(ReadLease&& other) noexcept { *this = std::move(other); }
  ReadLease& operator=(ReadLease&& other) noexcept;
  ~ReadLease();
  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  uint64_t checksum() const { return checksum_; }
  // Where the block was found before this lease: false when it had to be promoted from NVMe.
  bool was_in_ram() const { return was_in_ram_; }
  bool valid() const { return store_ != nullptr; }

 private:
  friend class BlockStore;
  BlockStore* store_ = nullptr;
  uint64_t handle_ = 0;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  uint64_t checksum_ = 0;
  bool was_in_ram_ = true;
};

class BlockStore {
 public:
  // Allocates the arena and opens (or creates) the NVMe tier. Errors name the directory.
  static StatusOr<std::unique_ptr<BlockStore>> Open(const BlockStoreOptions& options);
  virtual ~BlockStore() = default;
  BlockStore(const BlockStore&) = delete;
  BlockStore& operator=(const BlockStore&) = delete;

  // Phase one of a put. RESOURCE_EXHAUSTED when no slot can be freed (everything leased),
  // INVALID_ARGUMENT when `size` is 0 or above max_block_bytes.
  virtual StatusOr<WriteSlot> Reserve(const BlockKey& key, uint64_t size) = 0;
  // Phase two: verifies XXH3(slot bytes) == checksum (else DATA_LOSS, slot freed) and publishes
  // the block, replacing any older block under the same key.
  virtual Status Commit(WriteSlot slot, uint64_t checksum) = 0;

  // NOT_FOUND when the key is in no tier; DATA_LOSS when the NVMe copy was corrupt (now dropped).
  virtual StatusOr<ReadLease> Lease(const BlockKey& key) = 0;

  virtual StatusOr<BlockInfo> Stat(const BlockKey& key) = 0;
  // Removes the block from every tier. NOT_FOUND when absent.
  virtual Status Remove(const BlockKey& key) = 0;
  // Length of the longest prefix of `chain` whose blocks are all present (any tier).
  virtual size_t LongestPrefix(std::span<const BlockKey> chain) = 0;
  // Up to `limit` blocks, in key order.
  virtual std::vector<BlockInfo> List(size_t limit) = 0;
  // Writes every RAM-only block down to NVMe and makes the NVMe tier's files current (no-op
  // without an NVMe tier). After Flush every block survives a crash.
  virtual Status Flush() = 0;
  virtual StoreStats Stats() = 0;

  // The arena, for registration with UCX.
  virtual uint8_t* arena_base() = 0;
  virtual uint64_t arena_bytes() const = 0;
  // The arena's shared-memory file (fd -1 when the arena is private).
  virtual SharedArena shared_arena() const { return SharedArena{}; }
  // The arena's page size: 4096, or 2 MiB in huge pages (arena_memory.h).
  virtual uint64_t arena_page_bytes() const { return 4096; }

 protected:
  friend class WriteSlot;
  friend class ReadLease;
  BlockStore() = default;
  // For WriteSlot / ReadLease destructors.
  virtual void AbortSlot(uint64_t handle) = 0;
  virtual void ReleaseLease(uint64_t handle) = 0;
  static WriteSlot MakeSlot(BlockStore* s, uint64_t h, uint8_t* d, uint64_t n, const BlockKey& k);
  static ReadLease MakeLease(BlockStore* s, uint64_t h, const uint8_t* d, uint64_t n, uint64_t c, bool ram);
  static uint64_t SlotHandle(const WriteSlot& slot) { return slot.handle_; }
  static void Disarm(WriteSlot& slot) { slot.store_ = nullptr; }
  static bool OwnedBy(const WriteSlot& slot, const BlockStore* store) { return slot.store_ == store; }
};

}  // namespace foresight
