// The built binaries use the AttentionPredictor weights compiled into them: run from a directory
// outside the checkout, with no --weights, `foresight generate --policy ap` reports the shipped
// weights; --weights naming a missing file fails with an error that names it (generate and
// foresight-worker).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "predictor/shipped_weights.h"
#include "worker/synthetic_model.h"

namespace foresight::worker {
namespace {

struct ProcessResult {
  int exit_code = -1;
  std::string output;  // stdout, then stderr
};

std::string Quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs build/bin/`binary` with `args` in directory `cwd`.
ProcessResult RunIn(const std::string& cwd, const std::string& binary, const std::vector<std::string>& args) {
  std::string command = "cd " + Quote(cwd) + " && " + Quote(std::string(FORESIGHT_BIN_DIR) + "/" + binary);
  for (const std::string& a : args) command += " " + Quote(a);
  command += " 2>&1";
  ProcessResult run;
  FILE* out = popen(command.c_str(), "r");
  if (out == nullptr) return run;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), out)) > 0) run.output.append(buf, n);
  const int status = pclose(out);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

class ShippedWeightsCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // A fresh directory outside the checkout: nothing beside it, no ../shared.
    dir_ = std::filesystem::temp_directory_path() / ("foresight_shipped_weights_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    ASSERT_TRUE(std::filesystem::create_directories(dir_));
    ASSERT_EQ(std::string(FORESIGHT_SOURCE_DIR).rfind(dir_.string(), 0), std::string::npos);
    model_ = (dir_ / "model.gguf").string();
    ASSERT_TRUE(WriteSyntheticGguf(SyntheticModelSpec{}, model_).ok());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::filesystem::path dir_;
  std::string model_;
};

TEST_F(ShippedWeightsCliTest, GenerateUsesTheShippedWeightsFromAnyDirectory) {
  const ProcessResult run =
      RunIn(dir_.string(), "foresight",
            {"generate", "--model", model_, "--policy", "ap", "--budget", "64", "--prompt-tokens",
             "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,"
             "34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,64,"
             "65,66,67,68,69,70,71,72,73,74,75,76,77,78,79,80",
             "--sink", "16", "--local", "16", "--max-tokens", "2", "--json"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const nlohmann::json j = nlohmann::json::parse(run.output.substr(run.output.find('{')), nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << run.output;
  EXPECT_EQ(j.value("policy", ""), "ap") << run.output;
  EXPECT_EQ(j.value("weights", ""), predictor::kShippedCnnWeightsName) << run.output;
  EXPECT_EQ(j.value("generated_tokens", 0), 2) << run.output;
}

TEST_F(ShippedWeightsCliTest, GenerateDefaultsToTheServedAttentionPredictor) {
  std::string prompt;  // 80 tokens, beyond a budget of 64
  for (int i = 1; i <= 80; ++i) prompt += (i > 1 ? "," : "") + std::to_string(i);
  const ProcessResult run = RunIn(dir_.string(), "foresight",
                                  {"generate", "--model", model_, "--prompt-tokens", prompt, "--budget", "64", "--sink",
                                   "16", "--local", "16", "--max-tokens", "1", "--json"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const nlohmann::json j = nlohmann::json::parse(run.output.substr(run.output.find('{')), nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << run.output;
  EXPECT_EQ(j.value("policy", ""), "ap") << run.output;
  EXPECT_EQ(j.value("budget", 0), 64) << run.output;
  EXPECT_EQ(j.value("weights", ""), predictor::kShippedCnnWeightsName) << run.output;
  // A prompt that fits the default budget (1024) runs dense, as the worker runs it, and says so.
  const ProcessResult short_run = RunIn(
      dir_.string(), "foresight", {"generate", "--model", model_, "--prompt-tokens", "1,2,3,4", "--max-tokens", "1"});
  ASSERT_EQ(short_run.exit_code, 0) << short_run.output;
  EXPECT_NE(short_run.output.find("policy dense (asked for ap: the prompt and --max-tokens fit its budget of 1024)"),
            std::string::npos)
      << short_run.output;
}

TEST_F(ShippedWeightsCliTest, AMissingWeightsFileIsNamed) {
  const std::string missing = (dir_ / "no-such-weights.safetensors").string();
  const ProcessResult gen =
      RunIn(dir_.string(), "foresight",
            {"generate", "--model", model_, "--prompt-tokens", "1,2,3,4", "--max-tokens", "1", "--weights", missing});
  EXPECT_EQ(gen.exit_code, 1) << gen.output;
  EXPECT_NE(gen.output.find("--weights"), std::string::npos) << gen.output;
  EXPECT_NE(gen.output.find(missing), std::string::npos) << gen.output;
  // The worker loads its weights before it connects to the cache service: no node is needed.
  const ProcessResult worker =
      RunIn(dir_.string(), "foresight-worker", {"--cache", "127.0.0.1:1", "--model", model_, "--weights", missing});
  EXPECT_NE(worker.exit_code, 0) << worker.output;
  EXPECT_NE(worker.output.find(missing), std::string::npos) << worker.output;
}

}  // namespace
}  // namespace foresight::worker
