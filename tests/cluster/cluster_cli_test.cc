// `foresight --etcd URL cluster status|repair` on a real 3-node cluster (the command group alone,
// assembled into an app as client/cli/main.cc does).
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cluster/cli/cluster_commands.h"
#include "cluster/cluster_client.h"
#include "testing/local_node.h"
#include "tests/cluster/local_etcd.h"

namespace foresight {
namespace {

int RunCli(std::vector<std::string> args, std::string* out) {
  CLI::App app{"foresight"};
  app.require_subcommand(1);
  int exit_code = 0;
  cli::AddClusterCommands(app, &exit_code);
  std::vector<const char*> argv = {"foresight"};
  for (auto& a : args) argv.push_back(a.c_str());
  testing::internal::CaptureStdout();
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::ParseError& e) {
    exit_code = app.exit(e);
  }
  *out = testing::internal::GetCapturedStdout();
  return exit_code;
}

TEST(ClusterCliTest, StatusListsNodesWithFillAndHealthAndRepairCopies) {
  if (LocalEtcd::Binary().empty()) GTEST_SKIP() << "etcd not installed: apt-get install etcd-server";
  auto etcd = LocalEtcd::Start();
  ASSERT_TRUE(etcd.ok()) << etcd.status().ToString();
  const std::string url = (*etcd)->url();
  std::vector<std::unique_ptr<LocalNode>> nodes;
  for (int i = 0; i < 3; ++i) {
    auto n = LocalNode::Start({"--ram-bytes", "32MiB", "--etcd", url, "--node-id", "n" + std::to_string(i)});
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    nodes.push_back(std::move(*n));
  }
  ClusterClientOptions o;
  o.etcd = url;
  auto cluster = ClusterClient::Connect(o);  // R=1: the repair below makes a second copy
  ASSERT_TRUE(cluster.ok()) << cluster.status().ToString();
  std::vector<uint8_t> data(8192, 1);
  for (int i = 0; i < 30; ++i) ASSERT_TRUE((*cluster)->Put(PlainKey("cli", std::to_string(i)), data.data(), data.size()).ok());

  std::string out;
  ASSERT_EQ(RunCli({"--etcd", url, "cluster", "status"}, &out), 0) << out;
  std::printf("%s", out.c_str());
  EXPECT_NE(out.find("3 node(s), 0 down"), std::string::npos);
  for (const char* id : {"n0", "n1", "n2"}) EXPECT_NE(out.find(id), std::string::npos) << id;

  ASSERT_EQ(RunCli({"--etcd", url, "cluster", "status", "--json"}, &out), 0);
  auto j = nlohmann::json::parse(out);
  ASSERT_EQ(j["nodes"].size(), 3u);
  uint64_t items = 0;
  for (const auto& n : j["nodes"]) {
    EXPECT_EQ(n["health"], "ok");
    items += n["ram"]["items"].get<uint64_t>();
  }
  EXPECT_EQ(items, 30u);

  ASSERT_EQ(RunCli({"--etcd", url, "cluster", "repair", "-R", "2"}, &out), 0) << out;
  EXPECT_NE(out.find("30 copied"), std::string::npos) << out;

  // put/get of a file through the cluster, R=2.
  TempDir files("cluster-cli");
  const std::string in = files.path() + "/in.bin", back = files.path() + "/back.bin";
  {
    std::ofstream f(in, std::ios::binary);
    for (int i = 0; i < 10000; ++i) f.put(static_cast<char>(i * 7));
  }
  ASSERT_EQ(RunCli({"--etcd", url, "cluster", "put", "doc", in, "-R", "2"}, &out), 0) << out;
  EXPECT_NE(out.find("10000 bytes on 2 node(s)"), std::string::npos) << out;
  ASSERT_EQ(RunCli({"--etcd", url, "cluster", "get", "doc", back, "-R", "2"}, &out), 0);
  std::ifstream a(in, std::ios::binary), b(back, std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(a), {}), std::string(std::istreambuf_iterator<char>(b), {}));
  EXPECT_NE(RunCli({"--etcd", url, "cluster", "get", "absent", back}, &out), 0);

  // A listed node that does not answer is reported down, and the command fails.
  nodes[1]->Kill9();
  EXPECT_EQ(RunCli({"--etcd", url, "cluster", "status", "--node-timeout", "1"}, &out), 1);
  EXPECT_NE(out.find("DOWN"), std::string::npos) << out;
}

}  // namespace
}  // namespace foresight
