// NvmeTier: the durable tier, a RocksDB database in one directory.
//
// Two column families: "meta" maps a key to {size, checksum} (small, in SST files) and "blocks"
// maps it to the block bytes (stored in blob files, so large values are not rewritten by
// compaction). Both are written in one atomic batch, so a crash never leaves one without the other.
// On open the meta family is scanned to rebuild the in-memory index, so every block that reached
// this tier before a crash or restart is served again. Writes go through RocksDB's WAL without
// fsync: they survive a process crash (kill -9), not a power loss.
//
// Reads verify the block's XXH3 checksum; a mismatch (or a RocksDB corruption error) deletes the
// block and answers DATA_LOSS. Capacity is enforced by dropping least recently used blocks.
//
// Thread-safety: all methods are safe to call concurrently.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/block_key.h"
#include "common/mutex.h"
#include "common/status.h"

namespace rocksdb {
class DB;
class ColumnFamilyHandle;
}  // namespace rocksdb

namespace foresight {

class NvmeTier {
 public:
  // `generation` orders versions of one key: the block store numbers every committed version
  // from one increasing counter, and the tier never lets an older version overwrite a newer one.
  struct Meta {
    uint64_t size = 0;
    uint64_t checksum = 0;
    uint64_t generation = 0;
  };
  struct Counters {
    uint64_t items = 0;
    uint64_t used_bytes = 0;
    uint64_t evictions = 0;
    uint64_t corrupt = 0;
  };

  // capacity_bytes == 0: unlimited. Errors name the directory.
  static StatusOr<std::unique_ptr<NvmeTier>> Open(const std::string& dir, uint64_t capacity_bytes);
  ~NvmeTier();
  NvmeTier(const NvmeTier&) = delete;
  NvmeTier& operator=(const NvmeTier&) = delete;

  // Stores a block whose checksum the caller has verified, unless a newer generation of the key is
  // already here (then nothing is written and *superseded, when given, is set). Drops LRU blocks to
  // stay in capacity; `on_drop` is told which keys left the tier that way.
  Status Put(const BlockKey& key, const uint8_t* data, const Meta& meta,
             const std::function<void(const BlockKey&)>& on_drop = {}, bool* superseded = nullptr);
  // Reads the block into `out` (resized), verifying its checksum against the stored one.
  StatusOr<Meta> Get(const BlockKey& key, std::vector<uint8_t>* out);
  bool Contains(const BlockKey& key);
  std::optional<Meta> Lookup(const BlockKey& key);
  // Deletes the block; with `only_if_checksum`, only when the stored version has that checksum
  // (so that removing a stale version never removes a newer one written meanwhile).
  Status Delete(const BlockKey& key, std::optional<uint64_t> only_if_checksum = std::nullopt);
  // Moves everything written so far from RocksDB's memtables into its SST and blob files, so a
  // restart need not replay the log (also done on destruction).
  Status Sync();
  // Calls fn for every key (index order unspecified).
  void ForEach(const std::function<void(const BlockKey&, const Meta&)>& fn);
  Counters counters();
  uint64_t capacity_bytes() const { return capacity_bytes_; }
  // The highest generation recovered at open (the store's counter continues above it).
  uint64_t max_generation() const { return max_generation_; }
  const std::string& dir() const { return dir_; }

 private:
  struct Entry {
    Meta meta;
    std::list<BlockKey>::iterator lru;
  };
  NvmeTier(std::string dir, uint64_t capacity) : dir_(std::move(dir)), capacity_bytes_(capacity) {}
  Status DeleteLocked(const BlockKey& key) FS_REQUIRES(mu_);

  const std::string dir_;
  const uint64_t capacity_bytes_;
  uint64_t max_generation_ = 0;
  rocksdb::DB* db_ = nullptr;  // owned; closed and deleted in the destructor
  rocksdb::ColumnFamilyHandle* meta_cf_ = nullptr;
  rocksdb::ColumnFamilyHandle* blocks_cf_ = nullptr;
  rocksdb::ColumnFamilyHandle* default_cf_ = nullptr;

  // Guards the index, the LRU and the counters, and serialises writes and deletes with their index
  // updates. Reads take a RocksDB snapshot instead, so they never hold it across I/O.
  Mutex mu_;
  std::unordered_map<BlockKey, Entry, BlockKeyHash> index_ FS_GUARDED_BY(mu_);
  std::list<BlockKey> lru_ FS_GUARDED_BY(mu_);  // front = most recent
  Counters counters_ FS_GUARDED_BY(mu_);
};

}  // namespace foresight
