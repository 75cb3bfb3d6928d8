// Generate (worker/generator.h) on the real default model, SmolLM2-135M-Instruct: a chat answer
// ends on the model's end-of-generation token, or goes on past it when asked to; stop strings,
// min_tokens and seeded sampling end to end. Skips when the default model is not fetched (as the
// other tests on it do).
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "tests/worker/reference_env.h"
#include "worker/generator.h"
#include "worker/model.h"

namespace foresight::worker {
namespace {

class GenerateModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto model = testing::OpenGoldenModel([](const std::string& path) { return Model::Open(path); });
    if (!model.ok()) {
      error_ = new Status(model.status());
      return;
    }
    model_ = model->release();
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
    delete error_;
    error_ = nullptr;
  }
  void SetUp() override {
    if (error_ != nullptr && error_->code() == StatusCode::kNotFound) GTEST_SKIP() << error_->message();
    ASSERT_EQ(error_, nullptr) << error_->ToString();
    ASSERT_NE(model_, nullptr);
    ASSERT_NE(model_->tokenizer(), nullptr);
  }

  const Tokenizer& tok() const { return *model_->tokenizer(); }
  // A chat prompt whose greedy answer is a few words.
  std::vector<TokenId> ShortAnswerPrompt() const {
    StatusOr<std::string> chat = tok().FormatChat("What is the capital of France? Answer in one word.");
    EXPECT_TRUE(chat.ok()) << chat.status().ToString();
    return tok().Encode(*chat, /*add_bos=*/true, /*parse_special=*/true);
  }
  GenerateResult Run(const GenerateOptions& options) const {
    StatusOr<GenerateResult> r = Generate(*model_, ShortAnswerPrompt(), options);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : GenerateResult{};
  }

  static const Model* model_;
  static Status* error_;
};

const Model* GenerateModelTest::model_ = nullptr;
Status* GenerateModelTest::error_ = nullptr;

TEST_F(GenerateModelTest, EndsOnTheModelsEndOfGenerationToken) {
  GenerateOptions o;
  o.max_tokens = 256;
  std::string streamed;
  o.on_text = [&](const std::string& piece) { streamed += piece; };
  const GenerateResult r = Run(o);
  ASSERT_FALSE(r.tokens.empty());
  EXPECT_EQ(r.finish_reason, "eos") << "text: " << r.text;
  EXPECT_LT(r.tokens.size(), 32u) << "text: " << r.text;
  EXPECT_TRUE(tok().IsEndOfGeneration(r.tokens.back())) << r.tokens.back();
  for (size_t i = 0; i + 1 < r.tokens.size(); ++i) EXPECT_FALSE(tok().IsEndOfGeneration(r.tokens[i])) << i;
  EXPECT_NE(r.text.find("Paris"), std::string::npos) << r.text;
  EXPECT_EQ(r.text.find("<|im_end|>"), std::string::npos) << r.text;  // the end token adds no text
  EXPECT_EQ(streamed, r.text);
}

TEST_F(GenerateModelTest, GoesPastTheEndOfGenerationTokenWhenAsked) {
  GenerateOptions o;
  o.max_tokens = 256;
  const GenerateResult stopped = Run(o);
  ASSERT_EQ(stopped.finish_reason, "eos");
  const size_t n = stopped.tokens.size();

  o.max_tokens = static_cast<int32_t>(n) + 8;
  o.ignore_eos = true;
  const GenerateResult r = Run(o);
  EXPECT_EQ(r.finish_reason, "max_tokens");
  ASSERT_EQ(r.tokens.size(), n + 8);
  // The same greedy tokens up to and including the end token, then more after it.
  EXPECT_EQ(std::vector<TokenId>(r.tokens.begin(), r.tokens.begin() + n), stopped.tokens);
  EXPECT_TRUE(tok().IsEndOfGeneration(r.tokens[n - 1]));
}

TEST_F(GenerateModelTest, MinTokensKeepsTheEndTokenAway) {
  GenerateOptions o;
  o.max_tokens = 256;
  const size_t n = Run(o).tokens.size();
  o.min_tokens = static_cast<int32_t>(n) + 4;
  o.max_tokens = o.min_tokens + 4;
  const GenerateResult r = Run(o);
  ASSERT_GE(r.tokens.size(), static_cast<size_t>(o.min_tokens));
  for (int32_t i = 0; i < o.min_tokens; ++i) EXPECT_FALSE(tok().IsEndOfGeneration(r.tokens[i])) << i;
}

TEST_F(GenerateModelTest, AStopStringEndsGenerationBeforeIt) {
  GenerateOptions o;
  o.max_tokens = 256;
  const GenerateResult full = Run(o);
  const size_t at = full.text.find("Paris");
  ASSERT_NE(at, std::string::npos) << full.text;
  o.stop = {"ari", "never appears in this answer"};
  std::string streamed;
  o.on_text = [&](const std::string& piece) { streamed += piece; };
  const GenerateResult r = Run(o);
  EXPECT_EQ(r.finish_reason, "stop");
  EXPECT_EQ(r.text, full.text.substr(0, at + 1));  // "...P"
  EXPECT_EQ(streamed, r.text);
  EXPECT_LT(r.tokens.size(), full.tokens.size());
}

TEST_F(GenerateModelTest, AStopStringBeforeMinTokensDoesNotStop) {
  GenerateOptions o;
  o.max_tokens = 256;
  const GenerateResult full = Run(o);
  const size_t at = full.text.find("Paris");
  ASSERT_NE(at, std::string::npos) << full.text;
  o.stop = {"Paris"};
  o.min_tokens = static_cast<int32_t>(full.tokens.size()) + 2;
  o.max_tokens = o.min_tokens + 2;
  const GenerateResult r = Run(o);
  EXPECT_NE(r.finish_reason, "stop");
  EXPECT_GE(r.tokens.size(), static_cast<size_t>(o.min_tokens));
  EXPECT_EQ(r.text.rfind(full.text.substr(0, at + 5), 0), 0u) << r.text;  // "Paris" shown as text
}

TEST_F(GenerateModelTest, SeededSamplingRepeatsAndTopKOneIsGreedy) {
  GenerateOptions greedy;
  greedy.max_tokens = 24;
  greedy.ignore_eos = true;
  const GenerateResult g = Run(greedy);

  GenerateOptions sampled = greedy;
  sampled.sampling.temperature = 1.5f;
  sampled.sampling.seed = 7;
  const GenerateResult a = Run(sampled), b = Run(sampled);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.text, b.text);
  sampled.sampling.seed = 8;
  EXPECT_NE(Run(sampled).tokens, a.tokens);

  GenerateOptions top1 = greedy;
  top1.sampling.temperature = 1.0f;
  top1.sampling.top_k = 1;
  EXPECT_EQ(Run(top1).tokens, g.tokens);
}

TEST_F(GenerateModelTest, BadSamplingParametersAreRefusedByName) {
  GenerateOptions o;
  o.sampling.top_p = 0.0f;
  StatusOr<GenerateResult> r = Generate(*model_, ShortAnswerPrompt(), o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("top_p"), std::string::npos) << r.status().message();
  o = GenerateOptions{};
  o.min_tokens = -1;
  r = Generate(*model_, ShortAnswerPrompt(), o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("min_tokens"), std::string::npos) << r.status().message();
}

}  // namespace
}  // namespace foresight::worker
