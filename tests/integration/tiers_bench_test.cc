// The tiers benchmark is what measures issue 2's throughput targets, so it is tested like the rest:
// a short real run (node, UCX shm and TCP, ucx_perftest, the plain-socket references) whose JSON
// must be complete and self-consistent. Figures are not judged here; benchmarks print them.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace foresight {
namespace {

struct BenchRun {
  int exit_code = -1;
  std::vector<nlohmann::json> rows;
  std::string bad_line;  // the first stdout line that is not a JSON object, if any
};

BenchRun RunTiers(const std::string& args) {
  BenchRun run;
  const std::string command = std::string(FORESIGHT_BIN_DIR) + "/foresight-bench tiers " + args + " 2>/dev/null";
  FILE* out = popen(command.c_str(), "r");
  if (out == nullptr) return run;
  std::string line;
  for (int c; (c = std::fgetc(out)) != EOF;) {
    if (c != '\n') {
      line.push_back(static_cast<char>(c));
      continue;
    }
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_object()) {
      run.rows.push_back(std::move(j));
    } else if (run.bad_line.empty()) {
      run.bad_line = line;
    }
    line.clear();
  }
  const int status = pclose(out);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

// --profile writes the machine profile `foresight plan` reads (planner/machine_profile.h): every
// measured row, no ceilings, in the versioned format, with the concurrent-client rows.
TEST(TiersBenchTest, ProfileHoldsEveryMeasuredRow) {
  const std::string file = ::testing::TempDir() + "tiers-profile-" + std::to_string(getpid()) + ".json";
  BenchRun run =
      RunTiers("--profile " + file +
               " --json --paths ram-shm,nvme --sizes 4KiB,64KiB --inflight 1,4 --clients 1,3 --row-bytes 4MiB "
               "--huge-pages off");
  ASSERT_EQ(run.exit_code, 0);
  FILE* in = std::fopen(file.c_str(), "r");
  ASSERT_NE(in, nullptr) << "no profile at " << file;
  std::string text;
  for (int c; (c = std::fgetc(in)) != EOF;) text.push_back(static_cast<char>(c));
  std::fclose(in);
  std::remove(file.c_str());
  const auto profile = nlohmann::json::parse(text, nullptr, false);
  ASSERT_TRUE(profile.is_object()) << text;
  EXPECT_EQ(profile["format"], "foresight-machine-profile");
  EXPECT_EQ(profile["version"], 2);
  // 2 paths x 2 ops x 2 sizes x 2 in-flight counts from one client, and the RAM path's gets from
  // 3 clients at once at each size, as the JSON rows printed.
  ASSERT_EQ(profile["measurements"].size(), 18u);
  EXPECT_EQ(run.rows.size(), 18u);
  int three_clients = 0;
  for (const auto& m : profile["measurements"]) {
    EXPECT_TRUE(m["path"] == "ram-shm" || m["path"] == "nvme") << m.dump();
    EXPECT_GT(m["gbps"].get<double>(), 0) << m.dump();
    EXPECT_GT(m["node_cpu_s_per_gb"].get<double>(), 0) << m.dump();
    if (m["clients"] == 3) {
      ++three_clients;
      EXPECT_EQ(m["path"], "ram-shm") << m.dump();
      EXPECT_EQ(m["op"], "get") << m.dump();
      EXPECT_EQ(m["inflight"], 1) << m.dump();
    } else {
      EXPECT_EQ(m["clients"], 1) << m.dump();
    }
  }
  EXPECT_EQ(three_clients, 2);
}

TEST(TiersBenchTest, QuickRunPrintsEveryPathAndCeiling) {
  BenchRun run = RunTiers(
      "--quick --json --paths ram-shm,ram-tcp --sizes 1MiB --inflight 4 --trials 1 --row-bytes 32MiB "
      "--huge-pages off");
  ASSERT_EQ(run.exit_code, 0) << "foresight-bench tiers failed (a transfer error, or a path that did not start)";
  EXPECT_EQ(run.bad_line, "");

  std::map<std::pair<std::string, std::string>, nlohmann::json> by_name;  // (path, op) -> row
  for (const auto& row : run.rows) {
    for (const char* field : {"path", "op", "block_bytes", "inflight", "gbps", "p50_us", "p99_us", "ceiling_gbps",
                              "ratio", "ceiling", "transport", "errors"}) {
      ASSERT_TRUE(row.contains(field)) << field << " missing from " << row.dump();
    }
    EXPECT_EQ(row["block_bytes"], 1048576) << row.dump();
    by_name[{row["path"], row["op"]}] = row;
  }

  for (const char* path : {"ram-shm", "ram-tcp"}) {
    for (const char* op : {"put", "get"}) {
      auto it = by_name.find({path, op});
      ASSERT_NE(it, by_name.end()) << path << " " << op << " row missing";
      const auto& row = it->second;
      EXPECT_EQ(row["errors"], 0) << row.dump();
      EXPECT_EQ(row["inflight"], 4) << row.dump();
      EXPECT_GT(row["gbps"].get<double>(), 0) << row.dump();
      EXPECT_GT(row["p50_us"].get<double>(), 0) << row.dump();
      EXPECT_LE(row["p50_us"].get<double>(), row["p99_us"].get<double>()) << row.dump();
      ASSERT_TRUE(row["ceiling_gbps"].is_number()) << "no ceiling for " << row.dump();
      EXPECT_NEAR(row["ratio"].get<double>(), row["gbps"].get<double>() / row["ceiling_gbps"].get<double>(), 1e-9);
      // The path really went where it says: UCX TCP, or shared memory (sysv or posix).
      const std::string transport = row["transport"];
      if (std::string(path) == "ram-tcp") {
        EXPECT_EQ(transport, "tcp") << row.dump();
      } else {
        EXPECT_TRUE(transport.rfind("sysv", 0) == 0 || transport.rfind("posix", 0) == 0) << row.dump();
      }
    }
  }
  const auto ceiling_of = [&](const char* path) {
    return by_name[std::make_pair(std::string(path), "get")]["ceiling"];
  };
  EXPECT_EQ(ceiling_of("ram-shm"), "memcpy");
  EXPECT_EQ(ceiling_of("ram-tcp"), "ucx_perftest ucp_am_bw tcp -O 4");

  // Every reference ran and gave a figure: a reference that fails prints 0, so 0 is a failure.
  // tcp-stream-verify in particular is 0 when a block arrives with the wrong checksum.
  for (const char* op : {"memcpy", "xxh3-verify", "memcpy+verify", "perftest-am-tcp", "perftest-am-shm", "tcp-stream",
                         "tcp-stream-hot", "tcp-stream-verify"}) {
    auto it = by_name.find({"ceiling", op});
    ASSERT_NE(it, by_name.end()) << "reference " << op << " missing";
    EXPECT_GT(it->second["gbps"].get<double>(), 0) << it->second.dump();
  }
}

TEST(TiersBenchTest, BadFlagIsNamed) {
  const std::string command =
      std::string(FORESIGHT_BIN_DIR) + "/foresight-bench tiers --sizes 3furlongs 2>&1 >/dev/null";
  FILE* out = popen(command.c_str(), "r");
  ASSERT_NE(out, nullptr);
  std::string text;
  for (int c; (c = std::fgetc(out)) != EOF;) text.push_back(static_cast<char>(c));
  const int status = pclose(out);
  EXPECT_NE(WEXITSTATUS(status), 0);
  EXPECT_NE(text.find("'3furlongs'"), std::string::npos) << text;
}

}  // namespace
}  // namespace foresight
