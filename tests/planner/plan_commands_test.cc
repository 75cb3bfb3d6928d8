// `foresight plan` end to end in process: a plan from a profile file, and bad input refused with a
// message naming the field (issue 20, acceptance 4).
#include "planner/cli/plan_commands.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "planner/churn_table.h"
#include "planner/machine_profile.h"

namespace foresight::cli {
namespace {

struct Result {
  int exit_code = -1;
  std::string out, err;
};

Result RunPlanCommand(std::vector<std::string> args) {
  CLI::App app{"test"};
  app.require_subcommand(1);
  Result r;
  AddPlanCommands(app, &r.exit_code);
  std::reverse(args.begin(), args.end());  // CLI11 parses a reversed vector
  ::testing::internal::CaptureStdout();
  ::testing::internal::CaptureStderr();
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    r.exit_code = app.exit(e) == 0 ? 0 : 100;
  }
  r.out = ::testing::internal::GetCapturedStdout();
  r.err = ::testing::internal::GetCapturedStderr();
  return r;
}

class PlanCommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("plan-commands-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    planner::MachineProfile p;
    p.measurements = {{"ram-tcp", "get", 4096, 1, 16, 1.0, 100, 300, 1, 1},
                      {"ram-tcp", "put", 16384, 1, 16, 0.5, 100, 300, 1, 1},
                      {"nvme", "get", 4096, 1, 16, 0.2, 500, 900, 1, 1}};
    profile_ = (dir_ / "profile.json").string();
    std::ofstream(profile_) << planner::MachineProfileToJson(p);
    planner::ChurnTable churn;
    churn.rows = {{"ap", 1024, 8000, 76.0, 9.0, 208, 6.0, 0.95}};
    churn_ = (dir_ / "churn.json").string();
    std::ofstream(churn_) << planner::ChurnTableToJson(churn);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // `plan` with a SmolLM2 point; `changes` are flags and values that replace or add to it.
  std::vector<std::string> Args(std::vector<std::string> changes) {
    std::vector<std::pair<std::string, std::string>> flags = {
        {"--profile", profile_}, {"--churn", churn_},    {"--model", "smollm2-135m"}, {"--context", "8192"},
        {"--budget", "1024"},    {"--node-ram", "1GiB"}, {"--node-nvme", "10GiB"}};
    std::vector<std::string> args = {"plan"};
    for (size_t i = 0; i < changes.size(); ++i) {
      const bool takes_value = i + 1 < changes.size() && changes[i + 1].rfind("--", 0) != 0;
      auto it = std::find_if(flags.begin(), flags.end(), [&](const auto& f) { return f.first == changes[i]; });
      if (it != flags.end()) {
        it->second = changes[++i];
      } else {
        args.push_back(changes[i]);
        if (takes_value) args.push_back(changes[++i]);
      }
    }
    for (const auto& [flag, value] : flags) {
      args.push_back(flag);
      args.push_back(value);
    }
    return args;
  }

  std::filesystem::path dir_;
  std::string profile_, churn_;
};

TEST_F(PlanCommandsTest, PrintsAPlanAsJson) {
  Result r = RunPlanCommand(Args({"--json", "--sequences", "4", "--replication", "2"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["kv_bytes_per_token"], 23040);
  EXPECT_EQ(j["kv_bytes_per_sequence"], 23040 * 8192);
  EXPECT_EQ(j["ram_sequences_per_node"], 5);
  EXPECT_EQ(j["nvme_sequences_per_node"], 56);
  EXPECT_GT(j["fetch_bytes_per_token"].get<double>(), 0);
  EXPECT_GT(j["fetch_bytes_per_second_per_worker"].get<double>(), 0);
  EXPECT_TRUE(j["bottleneck"].contains("headroom"));
  EXPECT_GE(j["nodes_needed"].get<int>(), 2);
  Result table = RunPlanCommand(Args({}));
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("nodes_needed"), std::string::npos) << table.out;
}

TEST_F(PlanCommandsTest, PlotDrawsTheThreeCharts) {
  const std::string plots = (dir_ / "plots").string();
  Result r = RunPlanCommand(Args({"--plot", plots, "--sequences", "8"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* name : {"sequences-per-node.svg", "bandwidth.svg", "nodes-needed.svg"}) {
    std::ifstream in(std::filesystem::path(plots) / name);
    ASSERT_TRUE(in) << name;
    const std::string svg((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(svg.rfind("<svg", 0), 0u) << name;
    EXPECT_NE(svg.find("<path d=\"M"), std::string::npos) << name << ": no line drawn";
    EXPECT_NE(svg.find("font-weight=\"bold\""), std::string::npos) << name << ": no title";
  }
}

TEST_F(PlanCommandsTest, RefusesBadInputNamingTheField) {
  auto refused = [&](std::vector<std::string> args, const std::string& field) {
    Result r = RunPlanCommand(args);
    EXPECT_EQ(r.exit_code, 1) << field;
    EXPECT_NE(r.err.find(field), std::string::npos) << r.err;
  };
  std::vector<std::string> args = Args({"--model", "llama-9b"});
  refused(args, "--model \"llama-9b\"");
  args = Args({"--node-ram", "12 parsecs"});
  refused(args, "--node-ram \"12 parsecs\"");
  args = Args({"--node-nvme", "lots"});
  refused(args, "--node-nvme \"lots\"");
  args = Args({"--budget", "9000"});
  refused(args, "--budget 9000 is larger than --context 8192");
  args = Args({"--context", "8k tokens"});
  refused(args, "--context \"8k tokens\"");
  args = Args({"--kv-dtype", "int3"});
  refused(args, "--kv-dtype");
  planner::MachineProfile p;
  p.measurements = {{"ram-tcp", "get", 4096, 1, 16, 1.0, 1, 1, 1, 1}};
  std::string text = planner::MachineProfileToJson(p);
  text.replace(text.find("\"version\": 2"), 12, "\"version\": 7");
  std::ofstream(profile_) << text;
  refused(Args({}), "\"version\" is 7");
}

// plan-churn's RAM simulation refuses bad input before replaying anything.
TEST_F(PlanCommandsTest, PlanChurnRefusesBadLruFlagsNamingTheFlag) {
  Result sizes = RunPlanCommand({"plan-churn", "--traces", "none.safetensors", "--lru-sizes", "64MiB,lots"});
  EXPECT_NE(sizes.exit_code, 0);
  EXPECT_NE(sizes.err.find("--lru-sizes"), std::string::npos) << sizes.err;
  Result sequences =
      RunPlanCommand({"plan-churn", "--traces", "none.safetensors", "--lru-sizes", "64MiB", "--lru-sequences", "0"});
  EXPECT_NE(sequences.exit_code, 0);
  EXPECT_NE(sequences.err.find("--lru-sequences"), std::string::npos) << sequences.err;
}

}  // namespace
}  // namespace foresight::cli
