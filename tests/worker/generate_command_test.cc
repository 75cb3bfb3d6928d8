// `foresight generate --backend ...` through the real command group (the code the foresight binary
// runs). Where no GPU is usable (or the build has no CUDA), --backend cuda fails with an error that
// says why; where one is, it generates.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <tuple>

#include "worker/cli/worker_commands.h"
#include "worker/synthetic_model.h"
#if FORESIGHT_WORKER_HAVE_CUDA
#include "worker/cuda/cuda_sequence.h"
#endif

namespace foresight::worker {
namespace {

int RunCommand(std::vector<std::string> args) {
  CLI::App app{"test"};
  app.require_subcommand(1);
  int exit_code = -1;
  cli::AddWorkerCommands(app, &exit_code);
  std::reverse(args.begin(), args.end());  // CLI11 parses a reversed vector
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 100;
  }
  return exit_code;
}

class GenerateCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ =
        (std::filesystem::temp_directory_path() / ("foresight_generate_cli_" + std::to_string(::getpid()) + ".gguf"))
            .string();
    ASSERT_TRUE(WriteSyntheticGguf(SyntheticModelSpec{}, path_).ok());
  }
  void TearDown() override { std::filesystem::remove(path_); }
  std::string path_;
};

TEST_F(GenerateCommandTest, CpuBackendGenerates) {
  EXPECT_EQ(RunCommand({"generate", "--model", path_, "--prompt-tokens", "1,2,3,4", "--max-tokens", "3", "--json",
                        "--backend", "cpu"}),
            0);
}

TEST_F(GenerateCommandTest, UnknownBackendIsAUsageError) {
  EXPECT_EQ(RunCommand({"generate", "--model", path_, "--prompt-tokens", "1,2", "--backend", "tpu"}), 100);
}

TEST_F(GenerateCommandTest, BadNumbersAreRefusedNotClampedOrThrown) {
  // Each used to be accepted: a negative budget silently became 1024, "2x" became 2, and
  // `eval quality --budget abc` threw std::invalid_argument out of the program.
  for (const std::vector<std::string>& bad : std::vector<std::vector<std::string>>{
           {"generate", "--model", path_, "--prompt-tokens", "1,2", "--policy", "quest", "--budget", "-5"},
           {"generate", "--model", path_, "--prompt-tokens", "1,2", "--threads", "0"},
           {"generate", "--model", path_, "--prompt-tokens", "1,2", "--sink", "-1"}}) {
    EXPECT_EQ(RunCommand(bad), 100) << bad[bad.size() - 2] << " " << bad.back();
  }
  ::testing::internal::CaptureStderr();
  const int bad_token = RunCommand({"generate", "--model", path_, "--prompt-tokens", "1,2x", "--max-tokens", "1"});
  const std::string token_error = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(bad_token, 0);
  EXPECT_NE(token_error.find("--prompt-tokens: \"2x\" is not a whole number"), std::string::npos) << token_error;

  const std::string text = path_ + ".txt";
  { std::ofstream(text) << "a held-out text of a few words"; }
  ::testing::internal::CaptureStderr();
  const int bad_budget = RunCommand({"eval", "quality", "--model", path_, "--text", text, "--budget", "256,abc"});
  const std::string budget_error = ::testing::internal::GetCapturedStderr();
  std::filesystem::remove(text);
  EXPECT_NE(bad_budget, 0);
  EXPECT_NE(budget_error.find("--budget: \"abc\" is not a whole number"), std::string::npos) << budget_error;
}

TEST_F(GenerateCommandTest, SamplingFlagsReachGenerate) {
  auto run_json = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = {"generate",     "--model", path_,    "--prompt-tokens", "1,2,3,4",
                                     "--max-tokens", "12",      "--json", "--print-tokens"};
    args.insert(args.end(), extra.begin(), extra.end());
    ::testing::internal::CaptureStdout();
    const int code = RunCommand(args);
    const std::string out = ::testing::internal::GetCapturedStdout();
    EXPECT_EQ(code, 0) << out;
    auto j = nlohmann::json::parse(out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << out;
    return j;
  };
  const auto greedy = run_json({});
  EXPECT_FALSE(greedy.contains("sampling"));
  const std::vector<std::string> sampled = {"--temperature", "1000", "--top-k", "50",
                                            "--top-p",       "0.95", "--seed",  "11"};
  const auto a = run_json(sampled), b = run_json(sampled);
  ASSERT_TRUE(a.contains("sampling")) << a.dump();
  EXPECT_EQ(a["sampling"]["seed"], 11);
  EXPECT_EQ(a["sampling"]["top_k"], 50);
  EXPECT_EQ(a["tokens"], b["tokens"]);       // the same seed, the same tokens
  EXPECT_NE(a["tokens"], greedy["tokens"]);  // a synthetic model is sure of its token; T = 1000 is not
  const auto top1 = run_json({"--temperature", "1", "--top-k", "1", "--seed", "5"});
  EXPECT_EQ(top1["tokens"], greedy["tokens"]);
  const auto stop = run_json({"--stop", "x", "--stop", "yz"});
  EXPECT_EQ(stop["stop"], nlohmann::json({"x", "yz"}));
}

TEST_F(GenerateCommandTest, BadSamplingFlagsAreRefusedByName) {
  for (const auto& [flag, value, field] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"--temperature", "-1", "temperature"}, {"--top-p", "0", "top_p"}, {"--top-p", "1.5", "top_p"}}) {
    ::testing::internal::CaptureStderr();
    const int code = RunCommand({"generate", "--model", path_, "--prompt-tokens", "1,2", flag, value});
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_EQ(code, 1) << flag << " " << value;
    EXPECT_NE(err.find(field), std::string::npos) << err;
  }
  EXPECT_EQ(RunCommand({"generate", "--model", path_, "--prompt-tokens", "1,2", "--top-k", "-1"}), 100);
}

// generate resolves its policy as foresight-worker does (worker/serving_options.h): ap whose prompt
// and --max-tokens fit its budget runs dense, and the output says dense; one token more runs ap.
// It generates the same tokens as --policy dense.
TEST_F(GenerateCommandTest, AnApRunThatFitsItsBudgetRunsDenseAndSaysSo) {
  std::string prompt;  // 40 tokens
  for (int i = 0; i < 40; ++i) prompt += (i ? "," : "") + std::to_string((i * 53 + 7) % 256);
  auto run_json = [&](const std::string& max_tokens, std::vector<std::string> extra) {
    std::vector<std::string> args = {
        "generate", "--model", path_, "--prompt-tokens", prompt, "--max-tokens", max_tokens,       "--budget",
        "64",       "--sink",  "16",  "--local",         "16",   "--json",       "--print-tokens", "--ignore-eos"};
    args.insert(args.end(), extra.begin(), extra.end());
    ::testing::internal::CaptureStdout();
    const int code = RunCommand(args);
    const std::string out = ::testing::internal::GetCapturedStdout();
    EXPECT_EQ(code, 0) << out;
    auto j = nlohmann::json::parse(out.substr(std::min(out.size(), out.find('{'))), nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << out;
    return j;
  };
  const auto fits = run_json("24", {});  // 40 + 24 = 64: fits
  EXPECT_EQ(fits["policy"], "dense");
  EXPECT_EQ(fits["budget"], 0);
  EXPECT_FALSE(fits.contains("weights"));
  const auto dense = run_json("24", {"--policy", "dense"});
  EXPECT_EQ(fits["tokens"], dense["tokens"]);
  const auto over = run_json("25", {});  // 65: one over
  EXPECT_EQ(over["policy"], "ap");
  EXPECT_EQ(over["budget"], 64);
  EXPECT_TRUE(over.contains("weights"));

  ::testing::internal::CaptureStderr();
  ::testing::internal::CaptureStdout();
  const int code = RunCommand({"generate", "--model", path_, "--prompt-tokens", "1,2,3,4", "--max-tokens", "2"});
  ::testing::internal::GetCapturedStdout();
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(code, 0) << err;
  EXPECT_NE(err.find("policy dense (asked for ap: the prompt and --max-tokens fit its budget of 1024)"),
            std::string::npos)
      << err;
}

// The serving flags belong to the worker with --worker, but for the request's policy and budget.
TEST_F(GenerateCommandTest, WorkerSettingsAreRefusedWithWorker) {
  for (const std::string flag : {"--sink", "--local", "--dense-layers", "--query-refine"}) {
    ::testing::internal::CaptureStderr();
    const int code = RunCommand({"generate", "--worker", "127.0.0.1:1", "--prompt", "hi", flag, "0"});
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_EQ(code, 1) << flag;
    EXPECT_NE(err.find("are the worker's settings"), std::string::npos) << flag << ": " << err;
  }
}

TEST_F(GenerateCommandTest, CudaBackendRunsOrSaysWhyNot) {
  const std::vector<std::string> args = {"generate",     "--model", path_,    "--prompt-tokens", "1,2,3,4",
                                         "--max-tokens", "3",       "--json", "--backend",       "cuda"};
#if FORESIGHT_WORKER_HAVE_CUDA
  const Status device = CudaDeviceStatus();
  if (device.ok()) {
    EXPECT_EQ(RunCommand(args), 0);
    return;
  }
  const std::string expected = "cuda backend: no CUDA device";
#else
  const std::string expected = "cuda backend: this build has no CUDA support";
#endif
  testing::internal::CaptureStderr();
  const int code = RunCommand(args);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(code, 1);
  EXPECT_NE(err.find(expected), std::string::npos) << err;
}

// Selection policies run on the CUDA backend as on the CPU: seeded by the GPU prefill's rows, they
// attend fewer blocks than dense.
TEST_F(GenerateCommandTest, CudaBackendRunsSelectionPolicies) {
#if FORESIGHT_WORKER_HAVE_CUDA
  if (!CudaDeviceStatus().ok()) GTEST_SKIP() << "the device error comes first without a GPU";
  std::string prompt;  // 300 tokens: 19 blocks, beyond a budget of 128 tokens
  for (int i = 0; i < 300; ++i) prompt += (i ? "," : "") + std::to_string((i * 53 + 7) % 256);
  for (const std::string policy : {"quest", "ap", "h2o"}) {
    testing::internal::CaptureStdout();
    const int code = RunCommand({"generate", "--model", path_, "--prompt-tokens", prompt, "--max-tokens", "8",
                                 "--ignore-eos", "--json", "--backend", "cuda", "--policy", policy, "--budget", "128",
                                 "--sink", "16", "--local", "16"});
    const std::string out = testing::internal::GetCapturedStdout();
    ASSERT_EQ(code, 0) << policy;
    const auto j = nlohmann::json::parse(out.substr(out.find('{')));
    EXPECT_EQ(j["backend"], "cuda");
    EXPECT_EQ(j["generated_tokens"], 8) << policy;
    EXPECT_LT(j["blocks_attended_per_step"].get<double>(), j["blocks_total_per_step"].get<double>()) << policy;
  }
#else
  GTEST_SKIP() << "no CUDA in this build";
#endif
}

}  // namespace
}  // namespace foresight::worker
