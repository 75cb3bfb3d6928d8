// `foresight predictor cnn|eval` through the real command group (the same code the foresight
// binary runs), without the rest of the binary.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "common/safetensors.h"
#include "predictor/cli/predictor_commands.h"
#include "predictor/trace.h"
#include "tests/predictor/synthetic_trace.h"

namespace foresight::predictor {
namespace {

const std::string kReferenceDir = FORESIGHT_SOURCE_DIR "/../shared/reference/attention_predictor/";

std::string TempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("foresight_pred_cli_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

int RunCommand(std::vector<std::string> args) {
  CLI::App app{"test"};
  app.require_subcommand(1);
  int exit_code = -1;
  cli::AddPredictorCommands(app, &exit_code);
  std::reverse(args.begin(), args.end());  // CLI11 parses a reversed vector
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 100;
  }
  return exit_code;
}

TEST(PredictorCommandsTest, CnnReproducesPublishedVectorsForBothCheckpoints) {
  if (!std::filesystem::exists(kReferenceDir + "vectors.safetensors")) GTEST_SKIP() << "no reference data";
  for (const std::string checkpoint : {"llama3.1", "longchat"}) {
    const std::string out = TempPath(checkpoint + ".safetensors");
    ASSERT_EQ(
        RunCommand({"predictor", "cnn", "--weights", kReferenceDir + "cnn_" + checkpoint + ".safetensors", "--input",
                    kReferenceDir + "vectors.safetensors", "--output", out, "--expect-suffix", checkpoint}),
        0);
    auto file = SafetensorsFile::Open(out);
    ASSERT_TRUE(file.ok()) << file.status().ToString();
    auto y = (*file)->Get("case6.output");
    ASSERT_TRUE(y.ok());
    EXPECT_EQ((*y)->shape, (std::vector<int64_t>{1, 1000}));
    EXPECT_EQ((*y)->dtype, DType::kF32);
    std::filesystem::remove(out);
  }
}

TEST(PredictorCommandsTest, CnnFailsOnWrongExpectationsAndMissingFiles) {
  if (!std::filesystem::exists(kReferenceDir + "vectors.safetensors")) GTEST_SKIP() << "no reference data";
  const std::string out = TempPath("mismatch.safetensors");
  // llama3.1 weights cannot reproduce the longchat outputs.
  EXPECT_EQ(RunCommand({"predictor", "cnn", "--weights", kReferenceDir + "cnn_llama3.1.safetensors", "--input",
                        kReferenceDir + "vectors.safetensors", "--output", out, "--expect-suffix", "longchat"}),
            2);
  EXPECT_EQ(RunCommand({"predictor", "cnn", "--weights", "/nonexistent.safetensors", "--input",
                        kReferenceDir + "vectors.safetensors", "--output", out}),
            1);
  std::filesystem::remove(out);
}

TEST(PredictorCommandsTest, EvalRunsOnATrace) {
  testing::SyntheticTraceOptions o;
  o.prompt_tokens = 300;
  o.decode_steps = 12;
  const std::string trace = TempPath("trace.safetensors");
  ASSERT_TRUE(testing::MakeSyntheticTrace(o).Save(trace).ok());
  EXPECT_EQ(RunCommand({"predictor", "eval", "--trace", trace, "--policy", "quest,h2o,oracle", "--budget", "160,256",
                        "--json"}),
            0);
  // Without --weights, attention_predictor runs with the shipped weights; a missing file is an error.
  EXPECT_EQ(RunCommand({"predictor", "eval", "--trace", trace, "--policy", "attention_predictor", "--budget", "160"}),
            0);
  EXPECT_EQ(RunCommand({"predictor", "eval", "--trace", trace, "--policy", "attention_predictor", "--weights",
                        "/nonexistent.safetensors"}),
            1);
  EXPECT_EQ(RunCommand({"predictor", "eval", "--trace", trace, "--policy", "lru"}), 1);
  std::filesystem::remove(trace);
}

}  // namespace
}  // namespace foresight::predictor
