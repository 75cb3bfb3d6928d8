// A real foresight-cached killed (SIGKILL) in the middle of copying a claimed region GET into the
// client's buffer (proto/region_claim.h). A test hook makes the node pause right after it moved
// the claim word to WRITING; the GET passes its deadline and the client waits for DONE, as it must
// while the node might resume. Once the node is killed there, the GET fails within a bounded time
// with an error saying the node died, instead of waiting for ever, and the buffer is untouched.
#include <cstdlib>
#include <cstring>
#include <future>
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

bool WaitForLog(LocalNode& node, const std::string& text, std::chrono::seconds limit) {
  const auto deadline = Clock::now() + limit;
  while (Clock::now() < deadline) {
    if (node.Log().find(text) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

TEST(ClaimedGetNodeKilledTest, AGetWhoseNodeIsKilledMidCopyFailsInsteadOfWaitingForever) {
  // The node inherits the hook from this environment: paused long enough to be killed there.
  setenv("FORESIGHT_TEST_PAUSE_IN_CLAIMED_WRITE_S", "600", 1);
  auto started = LocalNode::Start({"--ram-bytes", "64MiB"});
  unsetenv("FORESIGHT_TEST_PAUSE_IN_CLAIMED_WRITE_S");
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  std::unique_ptr<LocalNode> node = std::move(*started);

  constexpr auto kTimeout = std::chrono::milliseconds(500);
  CacheClientOptions o;
  o.address = node->address();
  o.data_path = DataPath::kUcx;
  o.ucx_transports = "shm";
  o.ucx_tuning.one_sided_gets = false;  // the node copies into the client's buffer (kViaRegion)
  o.timeout = kTimeout;
  auto connected = CacheClient::Connect(o);
  ASSERT_TRUE(connected.ok()) << connected.status().ToString();
  std::unique_ptr<CacheClient> client = std::move(*connected);

  constexpr uint64_t kBlockBytes = 256 << 10;
  std::vector<uint8_t> block(kBlockBytes);
  std::mt19937 rng(17);
  for (auto& b : block) b = static_cast<uint8_t>(rng());
  const BlockKey key = PlainKey("claimed", "killed-mid-copy");
  ASSERT_TRUE(client->Put(key, block.data(), block.size()).ok());
  auto allocated = client->AllocateBuffer(kBlockBytes);
  ASSERT_TRUE(allocated.ok()) << allocated.status().ToString();
  uint8_t* dest = *allocated;
  constexpr uint8_t kCanary = 0xA5;
  std::memset(dest, kCanary, kBlockBytes);

  std::promise<StatusOr<uint64_t>> result;
  std::future<StatusOr<uint64_t>> got = result.get_future();
  std::thread getter([&] { result.set_value(client->Get(key, dest, kBlockBytes)); });
  ASSERT_TRUE(WaitForLog(*node, "WRITING; pausing", std::chrono::seconds(10)))
      << "the node never reached WRITING (no claimed region GET?); its log:\n"
      << node->Log();
  // Past the GET's deadline: the client gave up and now waits for DONE from a live node.
  std::this_thread::sleep_for(kTimeout * 3);
  EXPECT_EQ(got.wait_for(std::chrono::seconds(0)), std::future_status::timeout)
      << "the GET returned while the node, alive, was in the middle of copying into its buffer";

  const auto killed = Clock::now();
  node->Kill9();
  if (got.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    ADD_FAILURE() << "the GET still waits 10 s after its node was killed mid-copy: it would wait for ever";
    std::_Exit(1);  // the getter cannot be joined
  }
  const auto took = Clock::now() - killed;
  getter.join();
  StatusOr<uint64_t> r = got.get();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(StatusCodeName(r.status().code()), std::string("UNAVAILABLE")) << r.status().ToString();
  EXPECT_NE(r.status().message().find("the node died while copying"), std::string::npos) << r.status().ToString();
  EXPECT_LT(took, std::chrono::seconds(3)) << "the death was noticed late";
  // The node paused before its copy, and it is dead: the buffer holds what the caller left there.
  for (uint64_t i = 0; i < kBlockBytes; ++i) {
    if (dest[i] != kCanary) {
      ADD_FAILURE() << "byte " << i << " of the buffer changed";
      break;
    }
  }
}

}  // namespace
}  // namespace foresight
