#include "cache_service/nvme_tier.h"

#include <algorithm>
#include <cstring>

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>

#include "common/checksum.h"

namespace foresight {

namespace {

constexpr uint32_t kMetaMagic = 0x32425346;  // "FSB2": magic, size, checksum, generation
constexpr size_t kMetaBytes = 28;

std::string EncodeMeta(const NvmeTier::Meta& m) {
  std::string out(kMetaBytes, '\0');
  std::memcpy(out.data(), &kMetaMagic, 4);
  std::memcpy(out.data() + 4, &m.size, 8);
  std::memcpy(out.data() + 12, &m.checksum, 8);
  std::memcpy(out.data() + 20, &m.generation, 8);
  return out;
}

bool DecodeMeta(const rocksdb::Slice& s, NvmeTier::Meta* m) {
  uint32_t magic = 0;
  if (s.size() != kMetaBytes) return false;
  std::memcpy(&magic, s.data(), 4);
  if (magic != kMetaMagic) return false;
  std::memcpy(&m->size, s.data() + 4, 8);
  std::memcpy(&m->checksum, s.data() + 12, 8);
  std::memcpy(&m->generation, s.data() + 20, 8);
  return true;
}

rocksdb::Slice KeySlice(const BlockKey& key) {
  return rocksdb::Slice(reinterpret_cast<const char*>(key.data()), BlockKey::kSize);
}

}  // namespace

StatusOr<std::unique_ptr<NvmeTier>> NvmeTier::Open(const std::string& dir, uint64_t capacity_bytes) {
  std::unique_ptr<NvmeTier> tier(new NvmeTier(dir, capacity_bytes));
  rocksdb::DBOptions db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  db_options.max_background_jobs = 2;
  rocksdb::ColumnFamilyOptions meta_options;
  rocksdb::ColumnFamilyOptions block_options;
  block_options.enable_blob_files = true;
  block_options.min_blob_size = 1024;
  block_options.enable_blob_garbage_collection = true;
  block_options.blob_file_size = 64ull << 20;
  std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, meta_options}, {"meta", meta_options}, {"blocks", block_options}};
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(db_options, dir, families, &handles, &db);
  if (!s.ok()) {
    // RocksDB's LOCK file is held by another process: the likely cause is a second node on the
    // same directory. Other failures (a missing parent, permissions, a full disk) speak for themselves.
    const bool locked = s.ToString().find("/LOCK") != std::string::npos;
    return Unavailable("cannot open the NVMe tier in " + dir + ": " + s.ToString() +
                       (locked ? " (is another foresight-cached using this directory?)" : ""));
  }
  tier->db_ = db;
  tier->default_cf_ = handles[0];
  tier->meta_cf_ = handles[1];
  tier->blocks_cf_ = handles[2];

  // Rebuild the index. Recovery order is unknown, so all recovered blocks start equally old.
  // (No other thread can see the tier yet; the lock is for the analysis, and costs nothing.)
  MutexLock lock(tier->mu_);
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), tier->meta_cf_));
  uint64_t bad = 0;
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    Meta meta;
    if (it->key().size() != BlockKey::kSize || !DecodeMeta(it->value(), &meta)) {
      ++bad;
      continue;
    }
    const BlockKey key = BlockKey::FromBytes(it->key().data());
    tier->lru_.push_back(key);
    tier->index_[key] = Entry{meta, std::prev(tier->lru_.end())};
    tier->counters_.items++;
    tier->counters_.used_bytes += meta.size;
    tier->max_generation_ = std::max(tier->max_generation_, meta.generation);
  }
  if (!it->status().ok()) return DataLoss("scanning the NVMe tier in " + dir + " failed: " + it->status().ToString());
  if (bad > 0) spdlog::warn("NVMe tier {}: skipped {} malformed index entries", dir, bad);
  spdlog::info("NVMe tier {}: {} blocks, {} bytes recovered", dir, tier->counters_.items, tier->counters_.used_bytes);
  return tier;
}

Status NvmeTier::Sync() {
  for (auto* cf : {meta_cf_, blocks_cf_}) {
    rocksdb::Status s = db_->Flush(rocksdb::FlushOptions(), cf);
    if (!s.ok()) return Unavailable("flushing the NVMe tier in " + dir_ + ": " + s.ToString());
  }
  return Status::OK();
}

NvmeTier::~NvmeTier() {
  if (db_) {
    Status s = Sync();
    if (!s.ok()) spdlog::warn("{}", s.message());
    for (auto* h : {meta_cf_, blocks_cf_, default_cf_})
      if (h != nullptr) db_->DestroyColumnFamilyHandle(h);
    db_->Close();
    delete db_;
  }
}

Status NvmeTier::Put(const BlockKey& key, const uint8_t* data, const Meta& meta,
                     const std::function<void(const BlockKey&)>& on_drop, bool* superseded) {
  const uint64_t size = meta.size;
  rocksdb::WriteBatch batch;
  batch.Put(meta_cf_, KeySlice(key), EncodeMeta(meta));
  batch.Put(blocks_cf_, KeySlice(key), rocksdb::Slice(reinterpret_cast<const char*>(data), size));
  std::vector<BlockKey> dropped;
  if (superseded != nullptr) *superseded = false;
  {
    MutexLock lock(mu_);
    if (auto current = index_.find(key); current != index_.end() && current->second.meta.generation > meta.generation) {
      if (superseded != nullptr) *superseded = true;
      return Status::OK();
    }
    rocksdb::Status s = db_->Write(rocksdb::WriteOptions(), &batch);
    if (!s.ok()) return Unavailable("writing block " + key.ToHex() + " to " + dir_ + ": " + s.ToString());
    auto found = index_.find(key);
    if (found != index_.end()) {
      counters_.used_bytes -= found->second.meta.size;
      lru_.erase(found->second.lru);
      index_.erase(found);
      counters_.items--;
    }
    lru_.push_front(key);
    index_[key] = Entry{meta, lru_.begin()};
    counters_.items++;
    counters_.used_bytes += size;
    while (capacity_bytes_ > 0 && counters_.used_bytes > capacity_bytes_ && lru_.size() > 1) {
      const BlockKey victim = lru_.back();
      Status ds = DeleteLocked(victim);
      if (!ds.ok()) {
        spdlog::error("NVMe tier {}: cannot drop {}: {}", dir_, victim.ToHex(), ds.ToString());
        break;
      }
      counters_.evictions++;
      dropped.push_back(victim);
    }
  }
  if (on_drop)
    for (const auto& k : dropped) on_drop(k);
  return Status::OK();
}

StatusOr<NvmeTier::Meta> NvmeTier::Get(const BlockKey& key, std::vector<uint8_t>* out) {
  {
    MutexLock lock(mu_);
    auto found = index_.find(key);
    if (found == index_.end()) return NotFound("block " + key.ToHex() + " is not on NVMe");
    lru_.splice(lru_.begin(), lru_, found->second.lru);
  }
  // Meta and bytes from one snapshot: a concurrent Put or Delete is seen whole or not at all.
  const rocksdb::Snapshot* snapshot = db_->GetSnapshot();
  rocksdb::ReadOptions read_options;
  read_options.verify_checksums = true;
  read_options.snapshot = snapshot;
  std::string meta_value;
  rocksdb::PinnableSlice value;
  rocksdb::Status ms = db_->Get(read_options, meta_cf_, KeySlice(key), &meta_value);
  rocksdb::Status s = ms.ok() ? db_->Get(read_options, blocks_cf_, KeySlice(key), &value) : ms;
  db_->ReleaseSnapshot(snapshot);
  if (ms.IsNotFound()) return NotFound("block " + key.ToHex() + " is not on NVMe");
  Meta meta;
  Status failure;
  if (!ms.ok() || !DecodeMeta(meta_value, &meta)) {
    failure = DataLoss("the index entry of block " + key.ToHex() + " in " + dir_ + " is unreadable: " + ms.ToString());
  } else if (s.IsNotFound()) {
    failure = DataLoss("block " + key.ToHex() + " is indexed but its bytes are missing from " + dir_);
  } else if (!s.ok()) {
    failure = DataLoss("block " + key.ToHex() + " in " + dir_ + " is unreadable: " + s.ToString());
  } else if (value.size() != meta.size) {
    failure = DataLoss("block " + key.ToHex() + " in " + dir_ + " has " + std::to_string(value.size()) +
                       " bytes, expected " + std::to_string(meta.size));
  } else if (BlockChecksum(value.data(), value.size()) != meta.checksum) {
    failure = DataLoss("block " + key.ToHex() + " in " + dir_ + " failed its checksum");
  }
  if (!failure.ok()) {
    spdlog::error("NVMe tier: {}; dropping the block", failure.message());
    MutexLock lock(mu_);
    counters_.corrupt++;
    auto found = index_.find(key);
    // Drop only the version found corrupt, not one written since.
    if (found != index_.end() && (!ms.ok() || found->second.meta.checksum == meta.checksum)) (void)DeleteLocked(key);
    return failure;
  }
  out->assign(value.data(), value.data() + value.size());
  return meta;
}

bool NvmeTier::Contains(const BlockKey& key) {
  MutexLock lock(mu_);
  return index_.count(key) != 0;
}

std::optional<NvmeTier::Meta> NvmeTier::Lookup(const BlockKey& key) {
  MutexLock lock(mu_);
  auto found = index_.find(key);
  if (found == index_.end()) return std::nullopt;
  return found->second.meta;
}

Status NvmeTier::Delete(const BlockKey& key, std::optional<uint64_t> only_if_checksum) {
  MutexLock lock(mu_);
  auto found = index_.find(key);
  if (found == index_.end()) return NotFound("block " + key.ToHex() + " is not on NVMe");
  if (only_if_checksum && found->second.meta.checksum != *only_if_checksum) return Status::OK();
  return DeleteLocked(key);
}

Status NvmeTier::DeleteLocked(const BlockKey& key) {
  rocksdb::WriteBatch batch;
  batch.Delete(meta_cf_, KeySlice(key));
  batch.Delete(blocks_cf_, KeySlice(key));
  rocksdb::Status s = db_->Write(rocksdb::WriteOptions(), &batch);
  if (!s.ok()) return Unavailable("deleting block " + key.ToHex() + " from " + dir_ + ": " + s.ToString());
  auto found = index_.find(key);
  if (found != index_.end()) {
    counters_.used_bytes -= found->second.meta.size;
    counters_.items--;
    lru_.erase(found->second.lru);
    index_.erase(found);
  }
  return Status::OK();
}

void NvmeTier::ForEach(const std::function<void(const BlockKey&, const Meta&)>& fn) {
  MutexLock lock(mu_);
  for (const auto& [key, entry] : index_) fn(key, entry.meta);
}

NvmeTier::Counters NvmeTier::counters() {
  MutexLock lock(mu_);
  return counters_;
}

}  // namespace foresight
