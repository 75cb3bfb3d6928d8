#include "client/write_behind_queue.h"

#include <atomic>
#include <chrono>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "testing/local_node.h"
#include "tests/client/gated_cache_client.h"

namespace foresight {
namespace {

std::vector<uint8_t> Bytes(uint64_t size, uint32_t seed) {
  std::vector<uint8_t> v(size);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

using testing_util::GatedCacheClient;
using testing_util::OpenGateOnExit;

class WriteBehindQueueTest : public ::testing::TestWithParam<DataPath> {};

TEST_P(WriteBehindQueueTest, EverythingEnqueuedArrivesIntactUnderBackPressure) {
  auto node = LocalNode::Start({"--ram-bytes", "64MiB"});
  ASSERT_TRUE(node.ok()) << node.status().ToString();
  CacheClientOptions o;
  o.address = (*node)->address();
  o.data_path = GetParam();
  auto client = CacheClient::Connect(o);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  GatedCacheClient gated(client->get());  // holds every put until Open()
  constexpr int kBlocks = 200;
  constexpr uint64_t kRing = 1 << 20, kSmallest = 65536 - 2 * 4096;
  std::vector<std::vector<uint8_t>> blocks;
  for (int i = 0; i < kBlocks; ++i)
    blocks.push_back(Bytes(65536 - 4096 * (i % 3), i));  // sizes that do not divide the ring
  {
    // A ring of 1 MiB for 12 MiB of blocks: producers must wait for acknowledgements.
    WriteBehindQueue queue(&gated, {.ring_bytes = kRing, .max_batch = 8, .max_batches_in_flight = 2});
    OpenGateOnExit open_on_exit{gated};
    std::atomic<int> returned{0};
    std::atomic<bool> all_ok{true};
    std::thread producer([&] {
      for (int i = 0; i < kBlocks; ++i) {
        std::vector<uint8_t> scratch = blocks[i];
        if (!queue.Enqueue(PlainKey("wb", std::to_string(i)), scratch.data(), scratch.size()).ok()) all_ok = false;
        std::fill(scratch.begin(), scratch.end(), 0);  // the caller may reuse its buffer at once
        returned++;
      }
    });
    // Nothing is acknowledged while the gate is closed: the producer fills the ring and must stop
    // there. Wait until the sender holds its batches and the ring is as full as it can get ...
    const uint64_t fits = kRing / kSmallest;  // no more blocks than this can be in the ring at once
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (queue.stats().enqueued + 1 < kRing / 65536 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    // ... then the producer is blocked in Enqueue: the ring holds every block it took, unacknowledged.
    const WriteBehindStats held = queue.stats();
    EXPECT_GE(held.enqueued + 1, kRing / 65536) << "the producer never filled the ring";
    EXPECT_LE(held.enqueued, fits) << "the producer ran past a full ring with nothing acknowledged";
    EXPECT_LT(returned.load(), kBlocks);
    EXPECT_EQ(held.acknowledged, 0u);
    gated.Open();
    producer.join();
    EXPECT_TRUE(all_ok.load());
    ASSERT_TRUE(queue.Flush().ok());
    WriteBehindStats s = queue.stats();
    EXPECT_EQ(s.enqueued, static_cast<uint64_t>(kBlocks));
    EXPECT_EQ(s.acknowledged, static_cast<uint64_t>(kBlocks));
    EXPECT_EQ(s.failed, 0u);
    EXPECT_GT(s.enqueue_wait_s, 0.0);
  }
  for (int i = 0; i < kBlocks; ++i) {
    std::vector<uint8_t> out(blocks[i].size());
    auto n = (*client)->Get(PlainKey("wb", std::to_string(i)), out.data(), out.size());
    ASSERT_TRUE(n.ok()) << i << ": " << n.status().ToString();
    ASSERT_EQ(out, blocks[i]) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Paths, WriteBehindQueueTest, ::testing::Values(DataPath::kUcx, DataPath::kGrpc),
                         [](const auto& info) { return info.param == DataPath::kUcx ? "ucx" : "grpc"; });

TEST(WriteBehindQueueFailureTest, ALostNodeIsReportedNotIgnored) {
  auto node = LocalNode::Start({"--ram-bytes", "64MiB"});
  ASSERT_TRUE(node.ok());
  CacheClientOptions o;
  o.address = (*node)->address();
  o.timeout = std::chrono::milliseconds(2000);
  auto client = CacheClient::Connect(o);
  ASSERT_TRUE(client.ok());
  WriteBehindQueue queue(client->get(), {.ring_bytes = 1 << 20});
  auto block = Bytes(100000, 1);
  EXPECT_EQ(queue.Enqueue(PlainKey("wb", "big"), block.data(), 2 << 20).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(queue.Enqueue(PlainKey("wb", "a"), block.data(), block.size()).ok());
  ASSERT_TRUE(queue.Flush().ok());
  (*node)->Kill9();
  Status s;
  for (int i = 0; i < 50 && s.ok(); ++i)
    s = queue.Enqueue(PlainKey("wb", std::to_string(i)), block.data(), block.size());
  if (s.ok()) s = queue.Flush();
  EXPECT_FALSE(s.ok());
  EXPECT_GE(queue.stats().failed, 1u);
}

}  // namespace
}  // namespace foresight

namespace foresight {
namespace {

TEST(WriteBehindQueueConcurrencyTest, SeveralProducersThroughASmallRingLoseAndMixNothing) {
  auto node = LocalNode::Start({"--ram-bytes", "64MiB"});
  ASSERT_TRUE(node.ok()) << node.status().ToString();
  CacheClientOptions o;
  o.address = (*node)->address();
  auto client = CacheClient::Connect(o);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  constexpr int kThreads = 4, kPerThread = 60;
  {
    WriteBehindQueue queue(client->get(), {.ring_bytes = 300000, .max_batch = 4, .max_batches_in_flight = 2});
    std::vector<std::thread> producers;
    for (int t = 0; t < kThreads; ++t) {
      producers.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i) {
          auto bytes = Bytes(20000 + 7919 * ((t + i) % 5), t * 1000 + i);
          EXPECT_TRUE(queue.Enqueue(PlainKey("wbc", std::to_string(t * 1000 + i)), bytes.data(), bytes.size()).ok());
        }
      });
    }
    for (auto& p : producers) p.join();
    ASSERT_TRUE(queue.Flush().ok());
    EXPECT_EQ(queue.stats().acknowledged, static_cast<uint64_t>(kThreads * kPerThread));
  }
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kPerThread; ++i) {
      auto expected = Bytes(20000 + 7919 * ((t + i) % 5), t * 1000 + i);
      std::vector<uint8_t> out(expected.size());
      auto n = (*client)->Get(PlainKey("wbc", std::to_string(t * 1000 + i)), out.data(), out.size());
      ASSERT_TRUE(n.ok()) << n.status().ToString();
      ASSERT_EQ(out, expected) << t << "/" << i;
    }
  }
}

}  // namespace
}  // namespace foresight
