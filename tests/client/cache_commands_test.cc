// The single-node commands of the built `foresight` binary (client/cli/cache_commands.cc) against a
// real foresight-cached with an NVMe tier: put, get, ls, stat, evict, flush, health, their --json
// output parsed, and bad input refused with a clear message and a non-zero exit.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/block_key.h"
#include "testing/local_node.h"

namespace foresight {
namespace {

struct CliRun {
  int exit_code = -1;
  std::string out, err;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs the `foresight` beside this test binary with `args`; stdout and stderr captured.
CliRun Foresight(const std::vector<std::string>& args, const std::string& dir) {
  const std::string out_path = dir + "/stdout", err_path = dir + "/stderr";
  const std::string binary = ExecutableDir() + "/foresight";
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(binary.c_str()));
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    const int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out < 0 || err < 0) _exit(126);
    dup2(out, 1);
    dup2(err, 2);
    execv(binary.c_str(), argv.data());
    _exit(127);
  }
  CliRun r;
  int status = 0;
  if (pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  r.out = ReadFile(out_path);
  r.err = ReadFile(err_path);
  return r;
}

nlohmann::json Json(const CliRun& r) {
  auto j = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(j.is_discarded()) << "not JSON: " << r.out << "\nstderr: " << r.err;
  return j;
}

class CacheCommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::make_unique<TempDir>("cache_commands");
    std::filesystem::create_directories(dir_->path() + "/nvme");
    auto node = LocalNode::Start({"--ram-bytes", "64MiB", "--nvme-dir", dir_->path() + "/nvme"});
    ASSERT_TRUE(node.ok()) << node.status().ToString();
    node_ = std::move(*node);
  }

  // `foresight --cache NODE ARGS...`
  CliRun Cli(std::vector<std::string> args) {
    args.insert(args.begin(), {"--cache", node_->address(), "--namespace", "cli-test"});
    return Foresight(args, dir_->path());
  }

  std::string Path(const std::string& name) const { return dir_->path() + "/" + name; }

  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<LocalNode> node_;
};

TEST_F(CacheCommandsTest, PutGetLsStatEvictRoundTrip) {
  std::string data(300000, '\0');
  std::mt19937 rng(5);
  for (char& c : data) c = static_cast<char>(rng());
  { std::ofstream(Path("in.bin"), std::ios::binary) << data; }
  const std::string hex = PlainKey("cli-test", "weights").ToHex();

  CliRun put = Cli({"put", "weights", Path("in.bin"), "--json"});
  ASSERT_EQ(put.exit_code, 0) << put.err;
  nlohmann::json pj = Json(put);
  EXPECT_EQ(pj["key"], hex);
  EXPECT_EQ(pj["size"], data.size());
  EXPECT_TRUE(pj["data_path"] == "ucx" || pj["data_path"] == "grpc") << pj.dump();

  CliRun get = Cli({"get", "weights", Path("out.bin")});
  ASSERT_EQ(get.exit_code, 0) << get.err;
  EXPECT_TRUE(ReadFile(Path("out.bin")) == data) << "get returned other bytes than put stored";
  // The raw key form, and stdout.
  CliRun get_hex = Cli({"get", "hex:" + hex, "-"});
  ASSERT_EQ(get_hex.exit_code, 0) << get_hex.err;
  EXPECT_TRUE(get_hex.out == data);
  // Both data paths read the same bytes.
  CliRun get_grpc = Cli({"--transport", "grpc", "get", "weights", Path("out_grpc.bin")});
  ASSERT_EQ(get_grpc.exit_code, 0) << get_grpc.err;
  EXPECT_TRUE(ReadFile(Path("out_grpc.bin")) == data);

  CliRun ls = Cli({"ls", "--json"});
  ASSERT_EQ(ls.exit_code, 0) << ls.err;
  nlohmann::json lj = Json(ls);
  ASSERT_TRUE(lj.is_array()) << lj.dump();
  ASSERT_EQ(lj.size(), 1u) << lj.dump();
  EXPECT_EQ(lj[0]["key"], hex);
  EXPECT_EQ(lj[0]["size"], data.size());
  EXPECT_EQ(lj[0]["in_ram"], true);

  CliRun stat = Cli({"stat", "weights", "--json"});
  ASSERT_EQ(stat.exit_code, 0) << stat.err;
  EXPECT_EQ(Json(stat)["key"], hex);

  CliRun evict = Cli({"evict", "weights"});
  ASSERT_EQ(evict.exit_code, 0) << evict.err;
  EXPECT_NE(evict.out.find(hex), std::string::npos) << evict.out;

  CliRun gone = Cli({"get", "weights", Path("gone.bin")});
  EXPECT_NE(gone.exit_code, 0) << "get of an evicted key succeeded";
  EXPECT_NE(gone.err.find("NOT_FOUND"), std::string::npos) << gone.err;
  EXPECT_NE(gone.err.find("weights"), std::string::npos) << "the error must name the key: " << gone.err;
  EXPECT_FALSE(std::filesystem::exists(Path("gone.bin"))) << "a failed get wrote its output file";
  ls = Cli({"ls", "--json"});
  ASSERT_EQ(ls.exit_code, 0) << ls.err;
  EXPECT_TRUE(Json(ls).empty()) << ls.out;
  // Evicting what is not there says so.
  CliRun evict_again = Cli({"evict", "weights"});
  EXPECT_NE(evict_again.exit_code, 0);
  EXPECT_NE(evict_again.err.find("NOT_FOUND"), std::string::npos) << evict_again.err;
  EXPECT_NE(evict_again.err.find("evict weights"), std::string::npos) << evict_again.err;
}

TEST_F(CacheCommandsTest, FlushWritesRamBlocksToNvmeAndHealthReportsServing) {
  std::string data(4096, 'x');
  { std::ofstream(Path("in.bin"), std::ios::binary) << data; }
  ASSERT_EQ(Cli({"put", "a", Path("in.bin")}).exit_code, 0);
  CliRun before = Cli({"stat", "a", "--json"});
  ASSERT_EQ(before.exit_code, 0) << before.err;
  EXPECT_EQ(Json(before)["on_nvme"], false);

  CliRun flush = Cli({"flush", "--json"});
  ASSERT_EQ(flush.exit_code, 0) << flush.err;
  nlohmann::json fj = Json(flush);
  EXPECT_EQ(fj["flushed"], true);
  EXPECT_EQ(fj["address"], node_->address());
  EXPECT_GE(fj["nvme"]["items"].get<uint64_t>(), 1u) << fj.dump();
  CliRun after = Cli({"stat", "a", "--json"});
  ASSERT_EQ(after.exit_code, 0) << after.err;
  EXPECT_EQ(Json(after)["on_nvme"], true) << "flush did not write the block down to NVMe";

  CliRun health = Cli({"health", "--json"});
  ASSERT_EQ(health.exit_code, 0) << health.err;
  nlohmann::json hj = Json(health);
  EXPECT_EQ(hj["serving"], true);
  EXPECT_EQ(hj["address"], node_->address());
  EXPECT_TRUE(hj["data_path"] == "ucx" || hj["data_path"] == "grpc") << hj.dump();

  CliRun stat = Cli({"stat", "--json"});
  ASSERT_EQ(stat.exit_code, 0) << stat.err;
  nlohmann::json sj = Json(stat);
  EXPECT_EQ(sj["ram"]["items"], 1);
  EXPECT_EQ(sj["nvme"]["items"], 1);
}

TEST_F(CacheCommandsTest, BadInputGivesAClearErrorAndANonZeroExit) {
  // A file that does not exist.
  CliRun missing = Cli({"put", "k", Path("no-such-file")});
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.err.find("no-such-file"), std::string::npos) << "the error must name the file: " << missing.err;
  // A key that is not one.
  CliRun bad_key = Cli({"get", "hex:zz", Path("out.bin")});
  EXPECT_NE(bad_key.exit_code, 0);
  EXPECT_NE(bad_key.err.find("INVALID_ARGUMENT"), std::string::npos) << bad_key.err;
  // A node that is not there (a port nobody listens on), and an address that is not one.
  for (const std::string& address : {std::string("127.0.0.1:1"), std::string("not an address")}) {
    SCOPED_TRACE(address);
    CliRun nobody = Foresight({"--cache", address, "--timeout", "3", "health"}, dir_->path());
    EXPECT_NE(nobody.exit_code, 0);
    EXPECT_NE(nobody.err.find(address), std::string::npos) << "the error must name the address: " << nobody.err;
    EXPECT_NE(nobody.err.find("UNAVAILABLE"), std::string::npos) << nobody.err;
  }
  // An unknown data path.
  CliRun transport = Cli({"--transport", "carrier-pigeon", "health"});
  EXPECT_NE(transport.exit_code, 0);
  EXPECT_NE(transport.err.find("carrier-pigeon"), std::string::npos) << transport.err;
  // The node is still serving after all that.
  EXPECT_EQ(Cli({"health"}).exit_code, 0);
}

}  // namespace
}  // namespace foresight
