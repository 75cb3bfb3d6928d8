// `foresight --etcd URL cluster status|repair` on a real 3-node cluster (the command group alone,
// assembled into an app as cli/main.cc does).
#include <fstream>
#include <map>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cluster/cli/cluster_commands.h"
#include "cluster/cluster_client.h"
#include "testing/local_node.h"
#include "tests/cluster/local_etcd.h"

namespace foresight {
namespace {

// Runs the command group; `out` gets its stdout and `err`, when given, its stderr.
int RunCli(std::vector<std::string> args, std::string* out, std::string* err = nullptr) {
  CLI::App app{"foresight"};
  app.require_subcommand(1);
  int exit_code = 0;
  cli::AddClusterCommands(app, &exit_code);
  std::vector<const char*> argv = {"foresight"};
  for (auto& a : args) argv.push_back(a.c_str());
  testing::internal::CaptureStdout();
  if (err != nullptr) testing::internal::CaptureStderr();
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::ParseError& e) {
    exit_code = app.exit(e);
  }
  *out = testing::internal::GetCapturedStdout();
  if (err != nullptr) *err = testing::internal::GetCapturedStderr();
  return exit_code;
}

// `cluster status --json`, parsed; per node id, its row.
std::map<std::string, nlohmann::json> StatusRows(const std::string& url, int* exit_code,
                                                 std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"--etcd", url, "cluster", "status", "--json"};
  args.insert(args.end(), extra.begin(), extra.end());
  std::string out;
  *exit_code = RunCli(args, &out);
  std::map<std::string, nlohmann::json> rows;
  auto j = nlohmann::json::parse(out, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(j.is_discarded()) << "not JSON: " << out;
  if (j.is_discarded()) return rows;
  EXPECT_EQ(j["etcd"], url);
  for (const auto& n : j["nodes"]) rows[n["node_id"].get<std::string>()] = n;
  return rows;
}

uint64_t Items(const nlohmann::json& row) {
  return row["ram"]["items"].get<uint64_t>() + row["nvme"]["items"].get<uint64_t>();
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
  for (int i = 0; i < 30; ++i)
    ASSERT_TRUE((*cluster)->Put(PlainKey("cli", std::to_string(i)), data.data(), data.size()).ok());

  std::string out;
  ASSERT_EQ(RunCli({"--etcd", url, "cluster", "status"}, &out), 0) << out;
  std::printf("%s", out.c_str());
  EXPECT_NE(out.find("3 node(s), 0 down"), std::string::npos);
  for (const char* id : {"n0", "n1", "n2"}) EXPECT_NE(out.find(id), std::string::npos) << id;

  int status_code = -1;
  auto rows = StatusRows(url, &status_code);
  EXPECT_EQ(status_code, 0);
  ASSERT_EQ(rows.size(), 3u);
  uint64_t items = 0;
  for (int i = 0; i < 3; ++i) {
    const std::string id = "n" + std::to_string(i);
    ASSERT_EQ(rows.count(id), 1u) << id;
    EXPECT_EQ(rows[id]["health"], "ok") << id;
    EXPECT_EQ(rows[id]["grpc"], nodes[i]->address()) << id;
    EXPECT_EQ(rows[id]["ucx_port"], nodes[i]->ucx_port()) << id;
    items += Items(rows[id]);
  }
  EXPECT_EQ(items, 30u);

  ASSERT_EQ(RunCli({"--etcd", url, "cluster", "repair", "-R", "2"}, &out), 0) << out;
  EXPECT_NE(out.find("30 copied"), std::string::npos) << out;
  // The copies are really there: every block on two nodes now.
  int code = -1;
  auto repaired = StatusRows(url, &code);
  EXPECT_EQ(code, 0);
  ASSERT_EQ(repaired.size(), 3u);
  uint64_t copies = 0;
  for (const auto& [id, row] : repaired) copies += Items(row);
  EXPECT_EQ(copies, 60u) << "30 blocks at R=2 after the repair";

  // put/get of a file through the cluster, R=2.
  TempDir files("cluster-cli");
  const std::string in = files.path() + "/in.bin", back = files.path() + "/back.bin";
  {
    std::ofstream f(in, std::ios::binary);
    for (int i = 0; i < 10000; ++i) f.put(static_cast<char>(i * 7));
  }
  ASSERT_EQ(RunCli({"--etcd", url, "cluster", "put", "doc", in, "-R", "2"}, &out), 0) << out;
  EXPECT_NE(out.find("10000 bytes on 2 node(s)"), std::string::npos) << out;
  auto with_doc = StatusRows(url, &code);
  copies = 0;
  for (const auto& [id, row] : with_doc) copies += Items(row);
  EXPECT_EQ(copies, 62u) << "the file's block on two nodes";
  std::string err;
  ASSERT_EQ(RunCli({"--etcd", url, "cluster", "get", "doc", back, "-R", "2"}, &out, &err), 0) << err;
  EXPECT_NE(err.find("10000 bytes"), std::string::npos) << err;
  std::ifstream a(in, std::ios::binary), b(back, std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(a), {}), std::string(std::istreambuf_iterator<char>(b), {}));
  EXPECT_NE(RunCli({"--etcd", url, "cluster", "get", "absent", back}, &out, &err), 0);
  EXPECT_NE(err.find("is on no member of the cluster"), std::string::npos) << err;

  // A listed node that does not answer is reported down, and the command fails.
  nodes[1]->Kill9();
  EXPECT_EQ(RunCli({"--etcd", url, "cluster", "status", "--node-timeout", "1"}, &out), 1);
  EXPECT_NE(out.find("DOWN"), std::string::npos) << out;
  auto after_kill = StatusRows(url, &code, {"--node-timeout", "1"});
  EXPECT_EQ(code, 1);
  ASSERT_EQ(after_kill.size(), 3u) << "n1 stays listed until its lease expires";
  EXPECT_EQ(after_kill["n1"]["health"], "down");
  EXPECT_NE(after_kill["n1"]["error"].get<std::string>().find(nodes[1]->address()), std::string::npos)
      << after_kill["n1"].dump();
  for (const char* id : {"n0", "n2"}) EXPECT_EQ(after_kill[id]["health"], "ok") << id;
}

}  // namespace
}  // namespace foresight
