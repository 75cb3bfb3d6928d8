// Acceptance 4: deploy/local-cluster.sh brings up a 3-node cluster plus etcd with one command,
// the cluster serves a ClusterClient, and one command tears it all down.
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cluster/cluster_client.h"
#include "testing/local_node.h"
#include "tests/cluster/local_etcd.h"

namespace foresight {
namespace {

std::string Script() { return std::string(FORESIGHT_SOURCE_DIR) + "/deploy/local-cluster.sh"; }

int RunShell(const std::string& command) {
  const int rc = std::system(command.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// Running and not a zombie.
bool Running(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  if (!in) return false;
  std::string id, comm, state;
  in >> id >> comm >> state;
  return state != "Z";
}

TEST(LocalClusterScriptTest, UpServesAndDownStopsEverything) {
  if (LocalEtcd::Binary().empty()) GTEST_SKIP() << "etcd not installed: apt-get install etcd-server";
  TempDir dir("local-cluster");
  const std::string state = dir.path() + "/state";
  const std::string args = " --dir " + state + " --bin " + FORESIGHT_BIN_DIR + " --ram 64MiB --nvme 256MiB";
  struct Down {  // tears the cluster down even when an assertion fails
    std::string command;
    ~Down() { (void)std::system(command.c_str()); }
  } down{"bash " + Script() + " down" + args + " >/dev/null 2>&1"};

  ASSERT_EQ(RunShell("bash " + Script() + " up -n 3" + args), 0);
  const std::string url = ReadFile(state + "/etcd.url");
  ASSERT_FALSE(url.empty());

  ClusterClientOptions o;
  o.etcd = url;
  o.replication = 2;
  auto cluster = ClusterClient::Connect(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status().ToString();
  EXPECT_EQ((*cluster)->members().size(), 3u);
  std::vector<uint8_t> data(4096, 7), out(4096);
  for (int i = 0; i < 50; ++i) {
    data[0] = static_cast<uint8_t>(i);
    const BlockKey key = PlainKey("script", std::to_string(i));
    ASSERT_TRUE((*cluster)->Put(key, data.data(), data.size()).ok());
    auto n = (*cluster)->Get(key, out.data(), out.size());
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    ASSERT_EQ(out, data);
  }
  EXPECT_EQ(RunShell("bash " + Script() + " status" + args + " >/dev/null"), 0);
  {  // What status reports, as JSON: the three nodes the script started, healthy, holding the blocks.
    const std::string cmd = std::string(FORESIGHT_BIN_DIR) + "/foresight --etcd " + url + " cluster status --json";
    std::string out;
    FILE* pipe = popen(cmd.c_str(), "r");
    ASSERT_NE(pipe, nullptr);
    char buf[4096];
    for (size_t n; (n = fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
    const int rc = pclose(pipe);
    EXPECT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 0) << cmd << "\n" << out;
    auto j = nlohmann::json::parse(out, nullptr, /*allow_exceptions=*/false);
    ASSERT_FALSE(j.is_discarded()) << "not JSON: " << out;
    ASSERT_EQ(j["nodes"].size(), 3u) << out;
    std::set<std::string> ids;
    uint64_t items = 0;
    for (const auto& n : j["nodes"]) {
      ids.insert(n["node_id"].get<std::string>());
      EXPECT_EQ(n["health"], "ok") << n.dump();
      items += n["ram"]["items"].get<uint64_t>() + n["nvme"]["items"].get<uint64_t>();
    }
    EXPECT_EQ(ids, (std::set<std::string>{"n0", "n1", "n2"}));
    EXPECT_EQ(items, 100u) << "50 blocks at R=2";
  }

  std::vector<pid_t> pids;
  for (const char* name : {"n0", "n1", "n2", "etcd"}) pids.push_back(std::stoi(ReadFile(state + "/" + name + ".pid")));
  cluster->reset();
  ASSERT_EQ(RunShell("bash " + Script() + " down" + args), 0);
  for (pid_t pid : pids) EXPECT_FALSE(Running(pid)) << "process " << pid << " still running after down";
  EXPECT_NE(RunShell("bash " + Script() + " status" + args + " >/dev/null 2>&1"), 0);
}

}  // namespace
}  // namespace foresight
