// A UCX node that accepts a request and never answers: a real foresight-cached stopped with
// SIGSTOP after the connection is made. The get fails DEADLINE_EXCEEDED within its deadline, the
// connection is dropped, nothing lands in the caller's buffer after the call returned (not even
// once the node wakes up and serves the stale request), and the next call reconnects.
#include <signal.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <ostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "client/cache_client.h"
#include "testing/local_node.h"

namespace foresight {
namespace {

using Clock = std::chrono::steady_clock;

struct SilentCase {
  const char* name;
  const char* transports;
  bool one_sided;         // one-sided gets out of the node's mapped arena (shared memory only)
  bool client_allocated;  // the destination comes from AllocateBuffer: on shared memory the node
                          // writes into it directly
};
void PrintTo(const SilentCase& c, std::ostream* os) { *os << c.name; }

// The process state letter from /proc/PID/stat ('T': stopped).
char ProcessState(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(in, line);
  const size_t paren = line.rfind(')');
  return paren == std::string::npos || paren + 2 >= line.size() ? '?' : line[paren + 2];
}

bool WaitForState(pid_t pid, bool stopped, std::chrono::milliseconds limit) {
  const auto deadline = Clock::now() + limit;
  while (Clock::now() < deadline) {
    if ((ProcessState(pid) == 'T') == stopped) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

class UnresponsiveNodeTest : public ::testing::TestWithParam<SilentCase> {};

TEST_P(UnresponsiveNodeTest, DeadlineExceededConnectionDroppedNoLateWriteAndTheNextCallReconnects) {
  auto started = LocalNode::Start({"--ram-bytes", "64MiB"});
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  std::unique_ptr<LocalNode> node = std::move(*started);
  constexpr auto kTimeout = std::chrono::milliseconds(800);
  CacheClientOptions o;
  o.address = node->address();
  o.data_path = DataPath::kUcx;
  o.ucx_transports = GetParam().transports;
  o.ucx_tuning.one_sided_gets = GetParam().one_sided;
  o.timeout = kTimeout;
  auto connected = CacheClient::Connect(o);
  ASSERT_TRUE(connected.ok()) << connected.status().ToString();
  std::unique_ptr<CacheClient> client = std::move(*connected);

  constexpr uint64_t kBlockBytes = 256 << 10;
  std::vector<uint8_t> block(kBlockBytes);
  std::mt19937 rng(11);
  for (auto& b : block) b = static_cast<uint8_t>(rng());
  const BlockKey key = PlainKey("silent", "block");
  ASSERT_TRUE(client->Put(key, block.data(), block.size()).ok());
  ASSERT_TRUE(client->stats().connected);
  auto before = client->NodeStats();
  ASSERT_TRUE(before.ok()) << before.status().ToString();

  std::vector<uint8_t> own(kBlockBytes);
  uint8_t* dest = own.data();
  if (GetParam().client_allocated) {
    auto allocated = client->AllocateBuffer(kBlockBytes);
    ASSERT_TRUE(allocated.ok()) << allocated.status().ToString();
    dest = *allocated;
  }
  constexpr uint8_t kCanary = 0xA5;
  std::memset(dest, kCanary, kBlockBytes);
  auto canary_intact = [&] {
    for (uint64_t i = 0; i < kBlockBytes; ++i) {
      if (dest[i] != kCanary) return false;
    }
    return true;
  };

  // The node accepted the connection; now it answers nothing.
  ASSERT_EQ(kill(node->pid(), SIGSTOP), 0);
  struct ContinueOnExit {
    pid_t pid;
    ~ContinueOnExit() { kill(pid, SIGCONT); }
  } resume{node->pid()};
  ASSERT_TRUE(WaitForState(node->pid(), /*stopped=*/true, std::chrono::seconds(5)));

  const auto t0 = Clock::now();
  auto got = client->Get(key, dest, kBlockBytes);
  const auto took = Clock::now() - t0;
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(StatusCodeName(got.status().code()), std::string("DEADLINE_EXCEEDED")) << got.status().ToString();
  EXPECT_NE(got.status().message().find(node->address().substr(0, node->address().rfind(':'))), std::string::npos)
      << "the error must name the node: " << got.status().ToString();
  EXPECT_GE(took, kTimeout * 9 / 10) << "failed before its deadline";
  EXPECT_LT(took, kTimeout + std::chrono::milliseconds(1500)) << "not failed within its deadline";
  EXPECT_FALSE(client->stats().connected) << "the connection to the silent node must be dropped";
  EXPECT_EQ(client->stats().reconnects, 0u);
  EXPECT_TRUE(canary_intact()) << "bytes landed in the buffer of a get that failed";

  // The node wakes up and finds the stale request: it may serve it (the reply goes to a closed
  // connection), or drop it with the connection. Either way, not one byte reaches the buffer.
  ASSERT_EQ(kill(node->pid(), SIGCONT), 0);
  ASSERT_TRUE(WaitForState(node->pid(), /*stopped=*/false, std::chrono::seconds(5)));
  // Handshake: the node has served the stale get (its hit count moved): that is when a late reply
  // would come. (A one-sided get's stale lease stays pinned until the node's transfer timeout; the
  // client never reads it.) Watch the buffer until then, and a while after.
  const auto settle_deadline = Clock::now() + std::chrono::seconds(10);
  uint64_t hits = before->ram.hits;
  while (hits == before->ram.hits && Clock::now() < settle_deadline) {
    ASSERT_TRUE(canary_intact()) << "a late reply was written into the buffer of a get that had failed";
    auto stats = client->NodeStats();
    ASSERT_TRUE(stats.ok()) << stats.status().ToString();
    hits = stats->ram.hits;
    if (hits == before->ram.hits) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(hits, before->ram.hits + 1) << "the node never served the stale get";
  const auto watch_until = Clock::now() + std::chrono::milliseconds(500);
  while (Clock::now() < watch_until) {
    ASSERT_TRUE(canary_intact()) << "a late reply was written into the buffer of a get that had failed";
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }

  // The next call reconnects to the same node, now answering, and gets the right bytes.
  auto again = client->Get(key, dest, kBlockBytes);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(*again, kBlockBytes);
  EXPECT_EQ(0, std::memcmp(dest, block.data(), kBlockBytes));
  EXPECT_TRUE(client->stats().connected);
  EXPECT_EQ(client->stats().reconnects, 1u);
  EXPECT_EQ(client->stats().data_path, "ucx");
}

// shm_node_writes_client_buffer: shared memory without one-sided gets into a buffer from
// AllocateBuffer, which the node writes directly (kViaRegion). The node serves the stale GET after
// SIGCONT, but its claim word (proto/region_claim.h) reads CANCELLED, so it writes nothing.
INSTANTIATE_TEST_SUITE_P(Transports, UnresponsiveNodeTest,
                         ::testing::Values(SilentCase{"tcp", "tcp", false, false},
                                           SilentCase{"tcp_client_buffer", "tcp", false, true},
                                           SilentCase{"shm_one_sided", "shm", true, false},
                                           SilentCase{"shm_node_writes_client_buffer", "shm", false, true}),
                         [](const ::testing::TestParamInfo<SilentCase>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace foresight
