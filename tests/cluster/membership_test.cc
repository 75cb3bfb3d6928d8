// NodeMembership through the real daemon: foresight-cached --etcd registers under a lease,
// SIGTERM deregisters at once, kill -9 leaves the entry until the lease expires, a restart
// registers a new incarnation; bad flags are refused with a message.
#include <thread>

#include <gtest/gtest.h>

#include "cluster/cluster_client.h"
#include "cluster/etcd_client.h"
#include "testing/local_node.h"
#include "tests/cluster/local_etcd.h"

namespace foresight {
namespace {

using namespace std::chrono_literals;

TEST(MembershipTest, RegistersDeregistersExpiresAndReregisters) {
  if (LocalEtcd::Binary().empty()) GTEST_SKIP() << "etcd not installed: apt-get install etcd-server";
  auto server = LocalEtcd::Start();
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  auto etcd = EtcdClient::Create((*server)->url());
  ASSERT_TRUE(etcd.ok());
  const std::vector<std::string> flags = {"--ram-bytes", "16MiB", "--etcd",     (*server)->url(),
                                          "--node-id",   "m1",    "--etcd-ttl", "2"};

  auto node = LocalNode::Start(flags);
  ASSERT_TRUE(node.ok()) << node.status().ToString();
  auto entry = (*etcd)->Get("/foresight/nodes/m1");  // READY comes after joining
  ASSERT_TRUE(entry.ok()) << entry.status().ToString();
  auto member = ParseClusterMember(entry->value);
  ASSERT_TRUE(member.ok());
  EXPECT_EQ(member->grpc, (*node)->address());
  EXPECT_EQ(member->ucx_port, static_cast<uint32_t>((*node)->ucx_port()));
  EXPECT_NE(entry->lease, 0);
  // The keepalive holds it: watched for twice the TTL, the entry stays, under the same lease.
  for (const auto watch_end = std::chrono::steady_clock::now() + 4s; std::chrono::steady_clock::now() < watch_end;) {
    auto held = (*etcd)->Get("/foresight/nodes/m1");
    ASSERT_TRUE(held.ok()) << "the entry expired although the node keeps it alive: " << held.status().ToString();
    ASSERT_EQ(held->lease, entry->lease);
    std::this_thread::sleep_for(100ms);
  }

  EXPECT_EQ((*node)->Stop(), 0);
  EXPECT_EQ((*etcd)->Get("/foresight/nodes/m1").status().code(), StatusCode::kNotFound) << "SIGTERM deregisters";

  node = LocalNode::Start(flags);
  ASSERT_TRUE(node.ok());
  auto second = ParseClusterMember((*etcd)->Get("/foresight/nodes/m1")->value);
  ASSERT_TRUE(second.ok());
  EXPECT_NE(second->incarnation, member->incarnation);
  (*node)->Kill9();
  EXPECT_TRUE((*etcd)->Get("/foresight/nodes/m1").ok()) << "a crashed node stays listed until its lease expires";
  // Polled, with a deadline far past the TTL: on a loaded machine etcd may notice the expiry late.
  const auto start = std::chrono::steady_clock::now();
  while ((*etcd)->Get("/foresight/nodes/m1").ok() && std::chrono::steady_clock::now() - start < 30s)
    std::this_thread::sleep_for(100ms);
  const double gone_after = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("[membership] kill -9: entry gone after %.1f s (TTL 2 s)\n", gone_after);
  EXPECT_EQ((*etcd)->Get("/foresight/nodes/m1").status().code(), StatusCode::kNotFound)
      << "the entry of a killed node outlived its lease by far (" << gone_after << " s)";
}

TEST(MembershipTest, RefusesAnAdvertiseAddressClientsCannotDial) {
  if (LocalEtcd::Binary().empty()) GTEST_SKIP() << "etcd not installed: apt-get install etcd-server";
  auto node = LocalNode::Start({"--etcd", "http://127.0.0.1:1", "--node-id", "x", "--advertise", "0.0.0.0:7600"});
  ASSERT_FALSE(node.ok());
  EXPECT_NE(node.status().message().find("--advertise"), std::string::npos) << node.status().ToString();
}

}  // namespace
}  // namespace foresight
