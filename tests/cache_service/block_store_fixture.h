// Helpers shared by the BlockStore tests: deterministic block bytes, a whole put, a read, and a
// fixture that opens a store in a per-test temporary directory.
#pragma once

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "cache_service/block_store.h"
#include "common/checksum.h"

namespace foresight {
namespace testing_util {

inline std::vector<uint8_t> Bytes(uint64_t size, uint32_t seed) {
  std::vector<uint8_t> v(size);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

inline Status PutBlock(BlockStore& store, const BlockKey& key, const std::vector<uint8_t>& bytes) {
  auto slot = store.Reserve(key, bytes.size());
  if (!slot.ok()) return slot.status();
  std::memcpy(slot->data(), bytes.data(), bytes.size());
  return store.Commit(std::move(*slot), BlockChecksum(bytes.data(), bytes.size()));
}

// The bytes of `key` as served, or the reason none are.
inline StatusOr<std::vector<uint8_t>> ReadBlock(BlockStore& store, const BlockKey& key) {
  auto lease = store.Lease(key);
  if (!lease.ok()) return lease.status();
  return std::vector<uint8_t>(lease->data(), lease->data() + lease->size());
}

class BlockStoreFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/block_store_" + std::to_string(::getpid()) + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->test_suite_name() + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Without background eviction, so that which block goes, and when, is decided by the test.
  std::unique_ptr<BlockStore> Open(uint64_t ram_bytes, uint64_t max_block_bytes, bool nvme) {
    BlockStoreOptions o;
    o.background_eviction = false;
    o.ram_bytes = ram_bytes;
    o.max_block_bytes = max_block_bytes;
    if (nvme) o.nvme_dir = dir_;
    auto s = BlockStore::Open(o);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? std::move(*s) : nullptr;
  }

  std::string dir_;
};

}  // namespace testing_util
}  // namespace foresight
