// The same misuse gets the same status code on every data path (gRPC, UCX over shared memory with
// one-sided gets, UCX over TCP), against a real foresight-cached: the codes CacheClient documents
// (client/cache_client.h, "Errors").
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "client/cache_client.h"
#include "testing/local_node.h"
#include "tests/client/data_paths.h"

namespace foresight {
namespace {

class DataPathErrorTest : public ::testing::TestWithParam<PathCase> {
 protected:
  void SetUp() override {
    auto node = LocalNode::Start({"--ram-bytes", "64MiB", "--max-block-bytes", "1MiB"});
    ASSERT_TRUE(node.ok()) << node.status().ToString();
    node_ = std::move(*node);
    auto client = ConnectOver(*node_, GetParam());
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    client_ = std::move(*client);
    ASSERT_EQ(client_->stats().data_path, GetParam().path == DataPath::kGrpc ? "grpc" : "ucx");
    block_.resize(kBlockBytes);
    std::mt19937 rng(7);
    for (auto& b : block_) b = static_cast<uint8_t>(rng());
    ASSERT_TRUE(client_->Put(key_, block_.data(), block_.size()).ok());
  }

  // The get's status, into a buffer of `capacity` bytes.
  Status GetInto(const BlockKey& key, uint64_t capacity, std::vector<ByteRange> ranges = {}) {
    std::vector<uint8_t> out(capacity + 1);
    return client_->Get(key, out.data(), capacity, std::move(ranges)).status();
  }

  static constexpr uint64_t kBlockBytes = 64 << 10;
  std::unique_ptr<LocalNode> node_;
  std::unique_ptr<CacheClient> client_;
  const BlockKey key_ = PlainKey("errors", "present");
  std::vector<uint8_t> block_;
};

TEST_P(DataPathErrorTest, BufferTooShortForTheBlockIsOutOfRange) {
  Status s = GetInto(key_, kBlockBytes - 1);
  EXPECT_STREQ(StatusCodeName(s.code()), StatusCodeName(StatusCode::kOutOfRange)) << s.ToString();
  EXPECT_NE(s.message().find(key_.ToHex()), std::string::npos) << "the error must name the key: " << s.ToString();
  // Ranges that together exceed the buffer: the same.
  s = GetInto(key_, 1000, {{0, 800}, {4096, 800}});
  EXPECT_STREQ(StatusCodeName(s.code()), StatusCodeName(StatusCode::kOutOfRange)) << s.ToString();
  // A buffer of exactly the block's size is enough.
  EXPECT_TRUE(GetInto(key_, kBlockBytes).ok());
}

TEST_P(DataPathErrorTest, RangeOutsideTheBlockIsOutOfRange) {
  Status s = GetInto(key_, kBlockBytes, {{kBlockBytes - 10, 20}});
  EXPECT_STREQ(StatusCodeName(s.code()), StatusCodeName(StatusCode::kOutOfRange)) << s.ToString();
  s = GetInto(key_, kBlockBytes, {{0, 0}});
  EXPECT_STREQ(StatusCodeName(s.code()), StatusCodeName(StatusCode::kOutOfRange)) << s.ToString();
}

TEST_P(DataPathErrorTest, MissingKeyIsNotFound) {
  const BlockKey missing = PlainKey("errors", "absent");
  Status s = GetInto(missing, kBlockBytes);
  EXPECT_STREQ(StatusCodeName(s.code()), StatusCodeName(StatusCode::kNotFound)) << s.ToString();
  EXPECT_NE(s.message().find(missing.ToHex()), std::string::npos) << "the error must name the key: " << s.ToString();
  // Batched: each item its own status, the call's the first failure.
  std::vector<uint8_t> a(kBlockBytes), b(kBlockBytes);
  std::vector<BlockGet> items(2);
  items[0].key = key_;
  items[0].dest = a.data();
  items[0].capacity = a.size();
  items[1].key = missing;
  items[1].dest = b.data();
  items[1].capacity = b.size();
  s = client_->GetBatch(items);
  EXPECT_STREQ(StatusCodeName(s.code()), StatusCodeName(StatusCode::kNotFound)) << s.ToString();
  EXPECT_TRUE(items[0].status.ok()) << items[0].status.ToString();
  EXPECT_EQ(items[0].bytes, kBlockBytes);
  EXPECT_EQ(a, block_);
  EXPECT_STREQ(StatusCodeName(items[1].status.code()), StatusCodeName(StatusCode::kNotFound));
  EXPECT_EQ(items[1].bytes, 0u);
}

TEST_P(DataPathErrorTest, MissingBufferOrEmptyBlockIsInvalidArgument) {
  Status s = client_->Get(key_, nullptr, 0).status();
  EXPECT_STREQ(StatusCodeName(s.code()), StatusCodeName(StatusCode::kInvalidArgument)) << s.ToString();
  std::vector<uint8_t> out(16);
  s = client_->Get(key_, out.data(), 0).status();
  EXPECT_STREQ(StatusCodeName(s.code()), StatusCodeName(StatusCode::kInvalidArgument)) << s.ToString();
  s = client_->Put(PlainKey("errors", "empty"), block_.data(), 0);
  EXPECT_STREQ(StatusCodeName(s.code()), StatusCodeName(StatusCode::kInvalidArgument)) << s.ToString();
}

TEST_P(DataPathErrorTest, BlockLargerThanTheNodeTakesIsRefusedAlike) {
  std::vector<uint8_t> big((1 << 20) + 1, 3);
  const BlockKey key = PlainKey("errors", "big");
  Status s = client_->Put(key, big.data(), big.size());
  EXPECT_STREQ(StatusCodeName(s.code()), StatusCodeName(StatusCode::kInvalidArgument)) << s.ToString();
  EXPECT_NE(s.message().find(key.ToHex()), std::string::npos) << "the error must name the key: " << s.ToString();
  EXPECT_EQ(client_->Stat(key).status().code(), StatusCode::kNotFound);
}

INSTANTIATE_TEST_SUITE_P(Paths, DataPathErrorTest, AllDataPaths(), PathCaseName);

}  // namespace
}  // namespace foresight
