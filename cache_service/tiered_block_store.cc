// The BlockStore implementation: RAM arena over an optional NVMe tier (see block_store.h).
//
// Locking: one mutex guards the RAM index, the allocator, the LRU and the counters. It is never
// held across NVMe I/O or a block-sized copy: an entry being written down is pinned (refs) and
// flagged, the lock dropped, and the entry revisited afterwards.
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <list>
#include <map>
#include <optional>
#include <thread>
#include <unordered_map>

#include <spdlog/spdlog.h>

#include "cache_service/arena_allocator.h"
#include "cache_service/arena_memory.h"
#include "cache_service/block_store.h"
#include "cache_service/nvme_tier.h"
#include "common/checksum.h"
#include "common/mutex.h"
#include "common/units.h"
#include "proto/ucx_messages.h"

namespace foresight {

const char* TierName(Tier tier) { return tier == Tier::kRam ? "ram" : "nvme"; }

WriteSlot& WriteSlot::operator=(WriteSlot&& other) noexcept {
  if (this != &other) {
    if (store_ != nullptr) store_->AbortSlot(handle_);
    store_ = std::exchange(other.store_, nullptr);
    handle_ = other.handle_;
    data_ = other.data_;
    size_ = other.size_;
    key_ = other.key_;
  }
  return *this;
}
WriteSlot::~WriteSlot() {
  if (store_ != nullptr) store_->AbortSlot(handle_);
}

ReadLease& ReadLease::operator=(ReadLease&& other) noexcept {
  if (this != &other) {
    if (store_ != nullptr) store_->ReleaseLease(handle_);
    store_ = std::exchange(other.store_, nullptr);
    handle_ = other.handle_;
    data_ = other.data_;
    size_ = other.size_;
    checksum_ = other.checksum_;
    was_in_ram_ = other.was_in_ram_;
  }
  return *this;
}
ReadLease::~ReadLease() {
  if (store_ != nullptr) store_->ReleaseLease(handle_);
}

WriteSlot BlockStore::MakeSlot(BlockStore* s, uint64_t h, uint8_t* d, uint64_t n, const BlockKey& k) {
  WriteSlot slot;
  slot.store_ = s;
  slot.handle_ = h;
  slot.data_ = d;
  slot.size_ = n;
  slot.key_ = k;
  return slot;
}

ReadLease BlockStore::MakeLease(BlockStore* s, uint64_t h, const uint8_t* d, uint64_t n, uint64_t c, bool ram) {
  ReadLease lease;
  lease.store_ = s;
  lease.handle_ = h;
  lease.data_ = d;
  lease.size_ = n;
  lease.checksum_ = c;
  lease.was_in_ram_ = ram;
  return lease;
}

namespace {

class TieredBlockStore final : public BlockStore {
 public:
  TieredBlockStore(const BlockStoreOptions& options, ArenaMemory memory, uint64_t arena_bytes,
                   std::unique_ptr<NvmeTier> nvme, SharedArena shared)
      : options_(options),
        memory_(memory),
        arena_(memory.data),
        arena_bytes_(arena_bytes),
        shared_(shared),
        classes_(options.max_block_bytes),
        alloc_(arena_bytes, options.max_block_bytes),
        nvme_(std::move(nvme)) {
    if (nvme_) next_id_ = nvme_->max_generation() + 1;
    if (options_.background_eviction) evictor_ = std::thread([this] { EvictorLoop(); });
  }

  ~TieredBlockStore() override {
    {
      MutexLock lock(mu_);
      stopping_ = true;
    }
    evictor_cv_.SignalAll();
    if (evictor_.joinable()) evictor_.join();
    nvme_.reset();
    UnmapArenaMemory(&memory_);
  }

  StatusOr<WriteSlot> Reserve(const BlockKey& key, uint64_t size) override {
    if (size == 0) return InvalidArgument("block " + key.ToHex() + ": size 0 (blocks must hold bytes)");
    if (size > options_.max_block_bytes)
      return InvalidArgument("block " + key.ToHex() + " of " + FormatByteSize(size) +
                             " exceeds the node's maximum block size " + FormatByteSize(options_.max_block_bytes));
    FS_ASSIGN_OR_RETURN(uint64_t handle, AllocatePending(key, size));
    MutexLock lock(mu_);
    return MakeSlot(this, handle, arena_ + pending_[handle].offset, size, key);
  }

  Status Commit(WriteSlot slot, uint64_t checksum) override {
    if (!slot.valid()) return InvalidArgument("commit of an empty write slot");
    if (!OwnedBy(slot, this)) return InvalidArgument("write slot belongs to another store");
    const uint64_t handle = SlotHandle(slot);
    Disarm(slot);
    if (BlockChecksum(slot.data(), slot.size()) != checksum) {
      AbortSlot(handle);
      MutexLock lock(mu_);
      checksum_failures_++;
      return DataLoss("block " + slot.key().ToHex() +
                      ": checksum mismatch on put (the bytes were damaged in transit, or the writer's "
                      "checksum is wrong); nothing was stored");
    }
    std::optional<uint64_t> stale_nvme;
    {
      MutexLock lock(mu_);
      // The generation is taken at commit, under the lock, so that generations order the versions
      // of a key as the RAM tier sees them (last commit wins). Taken at Reserve, two racing puts
      // could commit in the other order; the write-down of the replaced, younger-numbered version
      // then made the current one look superseded on NVMe, and both copies could be dropped.
      stale_nvme = PublishLocked(handle, checksum, /*generation=*/next_id_++, /*pin=*/false);
    }
    // Conditional: if this block has been written down meanwhile, its copy stays.
    if (stale_nvme) (void)nvme_->Delete(slot.key(), *stale_nvme);
    MaybeWakeEvictor();
    return Status::OK();
  }

  StatusOr<ReadLease> Lease(const BlockKey& key) override {
    for (int attempt = 0;; ++attempt) {
      {
        MutexLock lock(mu_);
        auto found = index_.find(key);
        if (found != index_.end()) {
          ram_hits_++;
          return PinLocked(found->second, /*was_in_ram=*/true);
        }
        ram_misses_++;
      }
      if (!nvme_) return NotFound("block " + key.ToHex() + " is not in this node (RAM tier; no NVMe tier)");
      std::vector<uint8_t> bytes;
      auto meta = nvme_->Get(key, &bytes);
      if (!meta.ok()) {
        MutexLock lock(mu_);
        if (meta.status().code() == StatusCode::kNotFound) {
          // The block may have moved between the two looks: a put or a promotion put it in RAM,
          // and a commit deleted the NVMe copy it replaced, after the RAM miss above. Under the
          // lock, RAM and the NVMe index together are exact.
          if (auto found = index_.find(key); found != index_.end()) {
            ram_hits_++;
            return PinLocked(found->second, /*was_in_ram=*/true);
          }
          if (nvme_->Lookup(key) && attempt < 8) continue;
          nvme_misses_++;
          return NotFound("block " + key.ToHex() + " is not in this node (neither RAM nor NVMe)");
        }
        checksum_failures_++;
        return meta.status();
      }
      // Promote: the bytes were verified by NvmeTier::Get.
      auto handle = AllocatePending(key, bytes.size());
      if (!handle.ok()) return handle.status().WithContext("promoting block " + key.ToHex() + " from NVMe");
      uint8_t* dest;
      {
        MutexLock lock(mu_);
        dest = arena_ + pending_[*handle].offset;
      }
      std::memcpy(dest, bytes.data(), bytes.size());
      MutexLock lock(mu_);
      auto found = index_.find(key);
      if (found != index_.end()) {
        // Promoted by another reader, or a put committed meanwhile: the RAM block is as new or
        // newer than the NVMe copy read here, so it wins.
        FreePendingLocked(*handle);
        nvme_hits_++;
        return PinLocked(found->second, /*was_in_ram=*/false);
      }
      auto current = nvme_->Lookup(key);
      if (!current || current->generation != meta->generation) {
        // A newer version reached NVMe (or the block was removed) while this one was read.
        FreePendingLocked(*handle);
        if (attempt < 8) continue;
        return Aborted("block " + key.ToHex() + " kept changing while being read; retry");
      }
      nvme_hits_++;
      promotions_++;
      (void)PublishLocked(*handle, meta->checksum, meta->generation, /*pin=*/true);
      const Entry& e = entries_[*handle];
      return MakeLease(this, *handle, arena_ + e.offset, e.size, e.checksum, /*ram=*/false);
    }
  }

  StatusOr<BlockInfo> Stat(const BlockKey& key) override {
    {
      MutexLock lock(mu_);
      if (auto info = RamInfoLocked(key)) return *info;
    }
    if (nvme_) {
      if (auto info = NvmeInfo(key)) return *info;
      // Not on NVMe either: look again under the lock, where the two tiers cannot trade the block
      // (a put or a promotion may have moved it into RAM after the first look; see Lease).
      MutexLock lock(mu_);
      if (auto info = RamInfoLocked(key)) return *info;
      if (auto info = NvmeInfo(key)) return *info;
    }
    return NotFound("block " + key.ToHex() + " is not in this node");
  }

  Status Remove(const BlockKey& key) override {
    bool found_ram = false;
    {
      MutexLock lock(mu_);
      auto found = index_.find(key);
      if (found != index_.end()) {
        found_ram = true;
        UnlinkLocked(found->second);
      }
    }
    bool found_nvme = false;
    if (nvme_) {
      Status s = nvme_->Delete(key);
      if (s.ok())
        found_nvme = true;
      else if (s.code() != StatusCode::kNotFound)
        return s;
    }
    if (!found_ram && !found_nvme) return NotFound("block " + key.ToHex() + " is not in this node");
    return Status::OK();
  }

  size_t LongestPrefix(std::span<const BlockKey> chain) override {
    size_t n = 0;
    for (const BlockKey& key : chain) {
      bool present;
      {
        MutexLock lock(mu_);
        present = index_.count(key) != 0;
      }
      if (!present && nvme_) present = nvme_->Contains(key);
      if (!present && nvme_) {  // moved between the looks? (see Lease)
        MutexLock lock(mu_);
        present = index_.count(key) != 0 || nvme_->Contains(key);
      }
      if (!present) break;
      ++n;
    }
    return n;
  }

  std::vector<BlockInfo> List(size_t limit) override {
    std::map<BlockKey, BlockInfo> all;
    if (nvme_)
      nvme_->ForEach([&](const BlockKey& k, const NvmeTier::Meta& m) {
        all[k] = BlockInfo{k, m.size, m.checksum, false, true};
      });
    {
      MutexLock lock(mu_);
      for (const auto& [key, id] : index_) {
        const Entry& e = entries_.at(id);
        BlockInfo& info = all[key];
        info = BlockInfo{key, e.size, e.checksum, true, e.on_nvme};
      }
    }
    std::vector<BlockInfo> out;
    for (auto& [k, info] : all) {
      if (out.size() >= limit) break;
      out.push_back(info);
    }
    return out;
  }

  Status Flush() override {
    if (!nvme_) return Status::OK();
    std::vector<uint64_t> ids;
    {
      MutexLock lock(mu_);
      for (const auto& [key, id] : index_)
        if (!entries_[id].on_nvme) ids.push_back(id);
    }
    for (uint64_t id : ids) FS_RETURN_IF_ERROR(WriteDown(id, /*then_evict=*/false));
    return nvme_->Sync();
  }

  StoreStats Stats() override {
    StoreStats s;
    MutexLock lock(mu_);
    s.ram.capacity_bytes = alloc_.num_pages() * alloc_.page_bytes();
    s.ram_page_bytes = memory_.page_bytes;
    s.ram.used_bytes = ram_used_bytes_;
    s.ram.items = index_.size();
    s.ram.hits = ram_hits_;
    s.ram.misses = ram_misses_;
    s.ram.evictions = ram_evictions_;
    if (nvme_) {
      const NvmeTier::Counters c = nvme_->counters();
      s.nvme.capacity_bytes = nvme_->capacity_bytes();
      s.nvme.used_bytes = c.used_bytes;
      s.nvme.items = c.items;
      s.nvme.evictions = c.evictions;
      s.nvme.hits = nvme_hits_;
      s.nvme.misses = nvme_misses_;
    }
    s.checksum_failures = checksum_failures_;
    s.promotions = promotions_;
    s.demotions = demotions_;
    s.active_leases = active_leases_;
    s.pending_writes = pending_.size();
    return s;
  }

  uint8_t* arena_base() override { return arena_; }
  uint64_t arena_bytes() const override { return arena_bytes_; }
  SharedArena shared_arena() const override { return shared_; }
  uint64_t arena_page_bytes() const override { return memory_.page_bytes; }

 protected:
  void AbortSlot(uint64_t handle) override {
    MutexLock lock(mu_);
    FreePendingLocked(handle);
  }

  void ReleaseLease(uint64_t id) override {
    MutexLock lock(mu_);
    UnpinLocked(id);
    active_leases_--;
  }

 private:
  struct Entry {
    BlockKey key;
    uint64_t offset = 0;
    uint64_t size = 0;
    uint64_t checksum = 0;
    uint64_t generation = 0;  // orders versions of a key (see NvmeTier::Meta)
    uint32_t refs = 0;        // leases and write-downs in progress
    bool linked = true;       // in index_ and lru_; false: replaced or removed, freed at refs == 0
    bool on_nvme = false;     // an identical copy is on NVMe
    bool writing_down = false;
    std::list<uint64_t>::iterator lru;
  };
  struct Pending {
    BlockKey key;
    uint64_t offset;
    uint64_t size;
  };

  // Finds room for `size` bytes, evicting as needed; returns a pending-write handle.
  StatusOr<uint64_t> AllocatePending(const BlockKey& key, uint64_t size) {
    const int cls = classes_.ClassFor(size);
    for (int attempt = 0;; ++attempt) {
      {
        MutexLock lock(mu_);
        if (auto offset = alloc_.Allocate(cls)) {
          const uint64_t handle = next_id_++;
          pending_[handle] = Pending{key, *offset, size};
          return handle;
        }
      }
      if (attempt > 100000 || !EvictOneFor(cls))
        return ResourceExhausted("no room for block " + key.ToHex() + " of " + FormatByteSize(size) +
                                 ": the RAM tier (" + FormatByteSize(arena_bytes_) +
                                 ") is full of blocks being read or written; retry later");
    }
  }

  // Evicts one block, preferring the least recently used one of class `cls`; false when nothing
  // can be evicted.
  bool EvictOneFor(int cls) {
    uint64_t victim = 0;
    {
      MutexLock lock(mu_);
      int scanned = 0;
      uint64_t fallback = 0;
      for (auto it = lru_.rbegin(); it != lru_.rend() && scanned < 512; ++it, ++scanned) {
        const Entry& e = entries_[*it];
        if (e.refs != 0) continue;
        if (fallback == 0) fallback = *it;
        if (alloc_.PageClass(alloc_.PageOf(e.offset)) == cls) {
          victim = *it;
          break;
        }
      }
      if (victim == 0) victim = fallback;
      if (victim == 0) {
        for (auto it = lru_.rbegin(); it != lru_.rend(); ++it)
          if (entries_[*it].refs == 0) {
            victim = *it;
            break;
          }
      }
      if (victim == 0) return false;
    }
    Status s = WriteDown(victim, /*then_evict=*/true);
    if (!s.ok()) spdlog::warn("evicting a block: {}", s.ToString());
    return true;
  }

  // Writes entry `id` to NVMe (when configured and not there yet), then, with then_evict, frees
  // it from RAM unless a reader pinned it meanwhile. Without an NVMe tier eviction drops the block.
  Status WriteDown(uint64_t id, bool then_evict) {
    BlockKey key;
    const uint8_t* data;
    uint64_t size, checksum, generation;
    bool need_write;
    {
      MutexLock lock(mu_);
      auto it = entries_.find(id);
      if (it == entries_.end() || !it->second.linked || it->second.writing_down) return Status::OK();
      Entry& e = it->second;
      e.refs++;
      e.writing_down = true;
      key = e.key;
      data = arena_ + e.offset;
      size = e.size;
      checksum = e.checksum;
      generation = e.generation;
      need_write = nvme_ && !e.on_nvme;
    }
    Status result;
    bool corrupt = false;
    if (need_write) {
      if (BlockChecksum(data, size) != checksum) {
        corrupt = true;
        result = DataLoss("block " + key.ToHex() + " failed its checksum in RAM; dropped");
      } else {
        bool superseded = false;
        result = nvme_->Put(
            key, data, NvmeTier::Meta{size, checksum, generation},
            [this](const BlockKey& dropped) { OnNvmeDrop(dropped); }, &superseded);
        // A newer version is on NVMe already: this one was replaced meanwhile and needs no copy.
        if (superseded) need_write = false;
      }
    }
    bool wrote_superseded = false;
    {
      MutexLock lock(mu_);
      Entry& e = entries_[id];
      e.writing_down = false;
      if (need_write && result.ok()) {
        e.on_nvme = true;
        demotions_++;
        if (!e.linked) {
          // Replaced or removed while it was being written: the copy just written must not
          // resurface, unless the current block is the same bytes.
          auto current = index_.find(key);
          wrote_superseded = current == index_.end() || entries_[current->second].checksum != checksum;
        }
      }
      if (corrupt) checksum_failures_++;
      if ((then_evict || corrupt) && e.linked && e.refs == 1) {
        ram_evictions_++;
        UnlinkLocked(id);  // frees once unpinned below
      }
      UnpinLocked(id);
    }
    if (wrote_superseded) (void)nvme_->Delete(key, checksum);
    return result;
  }

  void OnNvmeDrop(const BlockKey& key) {
    MutexLock lock(mu_);
    auto found = index_.find(key);
    if (found != index_.end()) entries_[found->second].on_nvme = false;
  }

  // Turns pending write `handle` into a visible entry (its id is the handle), replacing an older
  // entry under the same key. Returns the checksum of an NVMe copy that this block supersedes, for
  // the caller to delete (conditionally, outside the lock).
  std::optional<uint64_t> PublishLocked(uint64_t handle, uint64_t checksum, uint64_t generation, bool pin)
      FS_REQUIRES(mu_) {
    Pending p = pending_[handle];
    pending_.erase(handle);
    auto found = index_.find(p.key);
    if (found != index_.end()) UnlinkLocked(found->second);
    bool on_nvme = false;
    std::optional<uint64_t> stale;
    if (nvme_) {
      if (auto meta = nvme_->Lookup(p.key)) {
        if (meta->checksum == checksum)
          on_nvme = true;
        else
          stale = meta->checksum;
      }
    }
    const uint64_t id = handle;  // handles and entry ids share one counter
    Entry& e = entries_[id];
    e.key = p.key;
    e.offset = p.offset;
    e.size = p.size;
    e.checksum = checksum;
    e.generation = generation;
    e.on_nvme = on_nvme;
    e.refs = pin ? 1 : 0;
    if (pin) active_leases_++;
    lru_.push_front(id);
    e.lru = lru_.begin();
    index_[p.key] = id;
    ram_used_bytes_ += p.size;
    return stale;
  }

  std::optional<BlockInfo> RamInfoLocked(const BlockKey& key) FS_REQUIRES(mu_) {
    auto found = index_.find(key);
    if (found == index_.end()) return std::nullopt;
    const Entry& e = entries_[found->second];
    return BlockInfo{key, e.size, e.checksum, true, e.on_nvme};
  }

  std::optional<BlockInfo> NvmeInfo(const BlockKey& key) {
    auto meta = nvme_->Lookup(key);
    if (!meta) return std::nullopt;
    return BlockInfo{key, meta->size, meta->checksum, false, true};
  }

  ReadLease PinLocked(uint64_t id, bool was_in_ram) FS_REQUIRES(mu_) {
    Entry& e = entries_[id];
    e.refs++;
    active_leases_++;
    lru_.splice(lru_.begin(), lru_, e.lru);
    return MakeLease(this, id, arena_ + e.offset, e.size, e.checksum, was_in_ram);
  }

  void UnpinLocked(uint64_t id) FS_REQUIRES(mu_) {
    auto it = entries_.find(id);
    if (it == entries_.end()) return;
    Entry& e = it->second;
    if (--e.refs == 0 && !e.linked) {
      alloc_.Free(e.offset);
      entries_.erase(it);
    }
  }

  // Removes the entry from the index and LRU; its slot is freed now or when its last pin goes.
  void UnlinkLocked(uint64_t id) FS_REQUIRES(mu_) {
    Entry& e = entries_[id];
    if (!e.linked) return;
    e.linked = false;
    index_.erase(e.key);
    lru_.erase(e.lru);
    ram_used_bytes_ -= e.size;
    if (e.refs == 0) {
      alloc_.Free(e.offset);
      entries_.erase(id);
    }
  }

  void FreePendingLocked(uint64_t handle) FS_REQUIRES(mu_) {
    auto it = pending_.find(handle);
    if (it == pending_.end()) return;
    alloc_.Free(it->second.offset);
    pending_.erase(it);
  }

  double FillLocked() const FS_REQUIRES(mu_) {
    return static_cast<double>(alloc_.allocated_bytes()) /
           static_cast<double>(alloc_.num_pages() * alloc_.page_bytes());
  }

  void MaybeWakeEvictor() {
    bool wake;
    {
      MutexLock lock(mu_);
      wake = FillLocked() > options_.high_watermark;
    }
    if (wake) evictor_cv_.Signal();
  }

  // Keeps the arena between the watermarks so that puts rarely evict synchronously.
  void EvictorLoop() {
    mu_.Lock();
    while (!stopping_) {
      evictor_cv_.WaitUntil(mu_, std::chrono::steady_clock::now() + std::chrono::milliseconds(100));
      if (stopping_ || FillLocked() <= options_.high_watermark) continue;
      while (!stopping_ && FillLocked() > options_.low_watermark) {
        uint64_t victim = 0;
        for (auto it = lru_.rbegin(); it != lru_.rend(); ++it)
          if (entries_[*it].refs == 0) {
            victim = *it;
            break;
          }
        if (victim == 0) break;
        mu_.Unlock();
        Status s = WriteDown(victim, /*then_evict=*/true);
        if (!s.ok()) spdlog::warn("background eviction: {}", s.ToString());
        mu_.Lock();
      }
    }
    mu_.Unlock();
  }

  const BlockStoreOptions options_;
  ArenaMemory memory_;  // the mapping arena_ lies in
  uint8_t* const arena_;
  const uint64_t arena_bytes_;
  const SharedArena shared_;

  const ArenaSizeClasses classes_;  // alloc_'s, immutable: read without mu_
  Mutex mu_;
  ArenaAllocator alloc_ FS_GUARDED_BY(mu_);
  std::unordered_map<BlockKey, uint64_t, BlockKeyHash> index_ FS_GUARDED_BY(mu_);
  std::unordered_map<uint64_t, Entry> entries_ FS_GUARDED_BY(mu_);
  std::list<uint64_t> lru_ FS_GUARDED_BY(mu_);  // front = most recent
  std::unordered_map<uint64_t, Pending> pending_ FS_GUARDED_BY(mu_);
  uint64_t next_id_ FS_GUARDED_BY(mu_) = 1;
  uint64_t ram_used_bytes_ FS_GUARDED_BY(mu_) = 0;
  uint64_t ram_hits_ FS_GUARDED_BY(mu_) = 0;
  uint64_t ram_misses_ FS_GUARDED_BY(mu_) = 0;
  uint64_t ram_evictions_ FS_GUARDED_BY(mu_) = 0;
  uint64_t nvme_hits_ FS_GUARDED_BY(mu_) = 0;
  uint64_t nvme_misses_ FS_GUARDED_BY(mu_) = 0;
  uint64_t checksum_failures_ FS_GUARDED_BY(mu_) = 0;
  uint64_t promotions_ FS_GUARDED_BY(mu_) = 0;
  uint64_t demotions_ FS_GUARDED_BY(mu_) = 0;
  uint64_t active_leases_ FS_GUARDED_BY(mu_) = 0;
  bool stopping_ FS_GUARDED_BY(mu_) = false;

  std::unique_ptr<NvmeTier> nvme_;
  CondVar evictor_cv_;
  std::thread evictor_;
};

// A nonce in the header of a shared arena (magic, nonce), so that a client that opened the file by
// /proc/<pid>/fd/<fd> can tell it mapped this node's arena. Returns the file's description.
StatusOr<SharedArena> DescribeSharedArena(const ArenaMemory& m) {
  SharedArena s;
  s.fd = m.fd;
  s.arena_offset = m.header_bytes;
  s.file_bytes = m.mapped_bytes;
  if (::getrandom(s.nonce, sizeof s.nonce, 0) != static_cast<ssize_t>(sizeof s.nonce))
    return Unavailable("getrandom failed for the shared arena's nonce");
  ucxwire::WriteArenaFileHeader(m.base, s.nonce);
  return s;
}

}  // namespace

StatusOr<std::unique_ptr<BlockStore>> BlockStore::Open(const BlockStoreOptions& options) {
  if (options.max_block_bytes < 4096)
    return InvalidArgument("max block size " + FormatByteSize(options.max_block_bytes) + " is below 4KiB");
  if (options.ram_bytes < options.max_block_bytes)
    return InvalidArgument("--ram-bytes " + FormatByteSize(options.ram_bytes) +
                           " is smaller than the maximum block size " + FormatByteSize(options.max_block_bytes));
  if (!(options.low_watermark > 0 && options.low_watermark < options.high_watermark && options.high_watermark <= 1))
    return InvalidArgument("watermarks must satisfy 0 < low < high <= 1");
  const uint64_t arena_bytes = options.ram_bytes / options.max_block_bytes * options.max_block_bytes;
  ArenaMemory memory;
  SharedArena shared;
  if (options.shared_arena) {
    Status failed;
    auto made = MapArenaMemory(4096, arena_bytes, /*shared=*/true, options.huge_pages);
    if (made.ok()) {
      auto described = DescribeSharedArena(*made);
      if (described.ok()) {
        memory = *made;
        shared = *described;
      } else {
        UnmapArenaMemory(&*made);
        failed = described.status();
      }
    } else {
      failed = made.status();
    }
    if (!failed.ok()) {
      if (options.huge_pages == HugePages::kOn) return failed.WithContext("--huge-pages on");
      spdlog::warn("RAM tier: no shared-memory arena ({}); same-host clients use the copying path", failed.message());
    }
  }
  if (memory.base == nullptr) {
    auto made = MapArenaMemory(0, arena_bytes, /*shared=*/false, options.huge_pages);
    if (!made.ok()) {
      const Status context = made.status().WithContext("cannot allocate a RAM tier of " + FormatByteSize(arena_bytes));
      return options.huge_pages == HugePages::kOn ? context.WithContext("--huge-pages on") : context;
    }
    memory = *made;
  }
  spdlog::info("RAM tier: {} arena in {}{}", FormatByteSize(arena_bytes), memory.description,
               shared.fd >= 0 ? ", shared with same-host clients" : "");
  auto unmap = [&] { UnmapArenaMemory(&memory); };
  std::unique_ptr<NvmeTier> nvme;
  if (!options.nvme_dir.empty()) {
    auto opened = NvmeTier::Open(options.nvme_dir, options.nvme_bytes);
    if (!opened.ok()) {
      unmap();
      return opened.status();
    }
    nvme = std::move(*opened);
  }
  return std::unique_ptr<BlockStore>(new TieredBlockStore(options, memory, arena_bytes, std::move(nvme), shared));
}

}  // namespace foresight
