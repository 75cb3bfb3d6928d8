// CacheClient::AllocateBuffer / ReleaseBuffer against a real foresight-cached on every data path: a
// released buffer is handed out again (same memory, nothing new allocated) to a request it fits,
// gets into a reused buffer deliver the right bytes, and a client that allocates and releases in
// a loop holds what it held after the first round (a worker serves thousands of requests, each of
// which takes transfer buffers).
#include <cstring>
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

class TransferBuffersTest : public ::testing::TestWithParam<PathCase> {
 protected:
  void SetUp() override {
    auto node = LocalNode::Start({"--ram-bytes", "64MiB"});
    ASSERT_TRUE(node.ok()) << node.status().ToString();
    node_ = std::move(*node);
    auto client = ConnectOver(*node_, GetParam());
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    client_ = std::move(*client);
  }
  std::unique_ptr<LocalNode> node_;
  std::unique_ptr<CacheClient> client_;
};

TEST_P(TransferBuffersTest, AReleasedBufferIsHandedOutAgainToWhatItFits) {
  constexpr uint64_t kMiB = 1 << 20;
  auto a = client_->AllocateBuffer(2 * kMiB);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(client_->buffer_usage().held_bytes, 2 * kMiB);
  EXPECT_EQ(client_->buffer_usage().in_use_bytes, 2 * kMiB);
  client_->ReleaseBuffer(*a);
  EXPECT_EQ(client_->buffer_usage().in_use_bytes, 0u);

  auto same = client_->AllocateBuffer(2 * kMiB);  // the same size: the same buffer
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(*same, *a);
  client_->ReleaseBuffer(*same);
  auto smaller = client_->AllocateBuffer(kMiB);  // half the size still takes it
  ASSERT_TRUE(smaller.ok());
  EXPECT_EQ(*smaller, *a);
  auto other = client_->AllocateBuffer(kMiB);  // it is in use: a new one
  ASSERT_TRUE(other.ok());
  EXPECT_NE(*other, *a);
  client_->ReleaseBuffer(*smaller);
  client_->ReleaseBuffer(*other);
  auto tiny = client_->AllocateBuffer(kMiB / 4);  // under half of every free buffer: a new one
  ASSERT_TRUE(tiny.ok());
  EXPECT_NE(*tiny, *a);
  EXPECT_NE(*tiny, *other);
  auto bigger = client_->AllocateBuffer(3 * kMiB);  // fits none: a new one
  ASSERT_TRUE(bigger.ok());
  const CacheClient::BufferUsage u = client_->buffer_usage();
  EXPECT_EQ(u.buffers, 4u);
  EXPECT_EQ(u.held_bytes, 2 * kMiB + kMiB + kMiB / 4 + 3 * kMiB);
  EXPECT_EQ(u.in_use_bytes, kMiB / 4 + 3 * kMiB);
  EXPECT_EQ(u.reuses, 2u);
  EXPECT_FALSE(client_->AllocateBuffer(0).ok());
  client_->ReleaseBuffer(nullptr);  // ignored
  EXPECT_EQ(client_->buffer_usage().in_use_bytes, u.in_use_bytes);
}

TEST_P(TransferBuffersTest, GetsIntoAReusedBufferDeliverTheRightBytes) {
  constexpr uint64_t kBlock = 64 << 10;
  std::mt19937 rng(11);
  std::vector<std::vector<uint8_t>> blocks(3, std::vector<uint8_t>(kBlock));
  for (size_t i = 0; i < blocks.size(); ++i) {
    for (auto& b : blocks[i]) b = static_cast<uint8_t>(rng());
    ASSERT_TRUE(client_->Put(PlainKey("reuse", std::to_string(i)), blocks[i].data(), kBlock).ok());
  }
  uint8_t* first = nullptr;
  for (size_t round = 0; round < 3; ++round) {
    auto buf = client_->AllocateBuffer(blocks.size() * kBlock);
    ASSERT_TRUE(buf.ok()) << buf.status().ToString();
    if (round == 0) first = *buf;
    EXPECT_EQ(*buf, first) << "round " << round;
    std::vector<BlockGet> gets(blocks.size());
    for (size_t i = 0; i < blocks.size(); ++i) {
      // A different block in each slot every round, so stale bytes from the last round would show.
      const size_t which = (i + round) % blocks.size();
      gets[i].key = PlainKey("reuse", std::to_string(which));
      gets[i].dest = *buf + i * kBlock;
      gets[i].capacity = kBlock;
    }
    ASSERT_TRUE(client_->GetBatch(gets).ok());
    for (size_t i = 0; i < blocks.size(); ++i) {
      EXPECT_EQ(std::memcmp(*buf + i * kBlock, blocks[(i + round) % blocks.size()].data(), kBlock), 0)
          << "round " << round << ", slot " << i;
    }
    client_->ReleaseBuffer(*buf);
  }
  EXPECT_EQ(client_->buffer_usage().buffers, 1u);
  EXPECT_EQ(client_->buffer_usage().in_use_bytes, 0u);
}

INSTANTIATE_TEST_SUITE_P(Paths, TransferBuffersTest, AllDataPaths(), PathCaseName);

}  // namespace
}  // namespace foresight
