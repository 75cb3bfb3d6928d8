// Generate's stopping rule (worker/generator.h StopReason), shared with the worker service: every
// generation ends for a reason it reports.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>

#include "tests/worker/test_tokens.h"
#include "worker/backend.h"
#include "worker/generator.h"
#include "worker/synthetic_model.h"

namespace foresight::worker {
namespace {

TEST(StopReasonTest, EachLimitInOrder) {
  // No tokenizer: no end-of-generation token to stop at.
  EXPECT_EQ(StopReason(nullptr, true, 5, 1, 3, 10, 100), "");
  EXPECT_EQ(StopReason(nullptr, true, 5, 3, 3, 10, 100), "max_tokens");
  EXPECT_EQ(StopReason(nullptr, true, 5, 1, 3, 99, 100), "context");  // the next token has no room
  EXPECT_EQ(StopReason(nullptr, true, 5, 1, 3, 98, 100), "");
  EXPECT_EQ(StopReason(nullptr, true, 5, 3, 3, 99, 100), "max_tokens");  // both: the request's limit first
  EXPECT_EQ(StopReason(nullptr, true, 5, 1, 3, 10, 0), "");              // no context limit known
}

TEST(GenerateTest, ReportsWhyItStopped) {
  SyntheticModelSpec spec;
  spec.max_context = 40;
  auto model = MakeSyntheticModel(spec);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const std::vector<TokenId> prompt = testing::TestTokens(30);

  GenerateOptions o;
  o.max_tokens = 4;
  auto r = Generate(**model, prompt, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->tokens.size(), 4u);
  EXPECT_EQ(r->finish_reason, "max_tokens");

  o.max_tokens = 100;  // more than the 10 positions left in the context
  r = Generate(**model, prompt, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->tokens.size(), 10u);
  EXPECT_EQ(r->finish_reason, "context");
}

TEST(GenerateTest, GreedyIsTheLoopItReplaced) {
  // The generation loop before the sampler: std::max_element over each step's logits.
  auto model = MakeSyntheticModel(SyntheticModelSpec{});
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const std::vector<TokenId> prompt = testing::TestTokens(20);
  std::unique_ptr<Backend> cpu = NewCpuBackend(**model);
  std::unique_ptr<BackendSequence> seq = *cpu->NewSequence();
  std::vector<float> logits;
  ASSERT_TRUE(seq->Prefill(prompt, &logits).ok());
  std::vector<TokenId> want;
  for (int i = 0; i < 12; ++i) {
    want.push_back(static_cast<TokenId>(std::max_element(logits.begin(), logits.end()) - logits.begin()));
    ASSERT_TRUE(seq->Decode(want.back(), &logits).ok());
  }
  GenerateOptions o;
  o.max_tokens = 12;
  o.ignore_eos = true;
  auto r = Generate(**model, prompt, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->tokens, want);
  // top_k 1 samples the same tokens, whatever the temperature and seed.
  o.sampling.temperature = 2.0f;
  o.sampling.top_k = 1;
  o.sampling.seed = 99;
  r = Generate(**model, prompt, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->tokens, want);
}

TEST(GenerateTest, RefusesBadSamplingBeforeRunning) {
  auto model = MakeSyntheticModel(SyntheticModelSpec{});
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  GenerateOptions o;
  o.sampling.temperature = -1.0f;
  auto r = Generate(**model, testing::TestTokens(4), o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("temperature"), std::string::npos) << r.status().message();
}

}  // namespace
}  // namespace foresight::worker
