#include "worker/policy_attention.h"

#include <gtest/gtest.h>

#include "tests/worker/reference_env.h"
#include "worker/generator.h"
#include "worker/synthetic_model.h"

namespace foresight::worker {
namespace {

std::vector<TokenId> Prompt(int n) {
  std::vector<TokenId> t(n);
  for (int i = 0; i < n; ++i) t[i] = static_cast<TokenId>((i * 53 + 7) % 256);
  return t;
}

StatusOr<GenerateResult> RunPolicy(const Model& model, const std::vector<TokenId>& prompt, predictor::PolicyKind kind,
                                   int64_t budget, std::unique_ptr<PolicyDecodeAttention>* keep) {
  predictor::PolicySpec spec;
  spec.kind = kind;
  spec.budget.budget_tokens = budget;
  FS_ASSIGN_OR_RETURN(*keep, PolicyDecodeAttention::Create(model.config(), spec, static_cast<int64_t>(prompt.size())));
  PolicyDecodeAttention* p = keep->get();
  GenerateOptions options;
  options.max_tokens = 20;
  options.ignore_eos = true;
  options.hook = p;
  options.prefill_observer = p;
  options.after_prefill = [p] { return p->FinishPrefill(); };
  options.after_step = [p] { return p->status(); };
  return Generate(model, prompt, options);
}

TEST(PolicyAttentionTest, BudgetCoveringEverythingEqualsDense) {
  auto model = MakeSyntheticModel(SyntheticModelSpec{});
  ASSERT_TRUE(model.ok());
  const std::vector<TokenId> prompt = Prompt(300);
  GenerateOptions dense_options;
  dense_options.max_tokens = 20;
  dense_options.ignore_eos = true;
  auto dense = Generate(**model, prompt, dense_options);
  ASSERT_TRUE(dense.ok());
  for (auto kind : {predictor::PolicyKind::kStreamingLLM, predictor::PolicyKind::kQuest, predictor::PolicyKind::kH2O,
                    predictor::PolicyKind::kSnapKV}) {
    std::unique_ptr<PolicyDecodeAttention> keep;
    auto full = RunPolicy(**model, prompt, kind, 4096, &keep);
    ASSERT_TRUE(full.ok()) << full.status().ToString();
    EXPECT_EQ(full->tokens, dense->tokens) << predictor::PolicyKindName(kind);
    EXPECT_EQ(full->stats.blocks_attended, full->stats.blocks_total);
  }
}

TEST(PolicyAttentionTest, SmallBudgetAttendsFewerBlocks) {
  auto model = MakeSyntheticModel(SyntheticModelSpec{});
  ASSERT_TRUE(model.ok());
  const std::vector<TokenId> prompt = Prompt(600);
  for (auto kind : {predictor::PolicyKind::kStreamingLLM, predictor::PolicyKind::kQuest, predictor::PolicyKind::kH2O}) {
    std::unique_ptr<PolicyDecodeAttention> keep;
    auto sparse = RunPolicy(**model, prompt, kind, 256, &keep);
    ASSERT_TRUE(sparse.ok()) << sparse.status().ToString();
    const double per_head_step =
        static_cast<double>(sparse->stats.blocks_attended) /
        (sparse->stats.decode_tokens * (*model)->config().n_layers * (*model)->config().n_kv_heads);
    // 256 tokens: 4 sink + up to 5 local blocks + 8 chosen per query head; a KV head attends the
    // union of its 2 query heads' choices (at most 4 + 5 + 16), out of ~38 blocks.
    EXPECT_LE(per_head_step, 25.0) << predictor::PolicyKindName(kind);
    EXPECT_GE(per_head_step, 12.0) << predictor::PolicyKindName(kind);
  }
}

TEST(PolicyAttentionTest, OracleIsRefused) {
  predictor::PolicySpec spec;
  spec.kind = predictor::PolicyKind::kOracle;
  ModelConfig c;
  c.n_layers = 1;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.head_dim = 8;
  auto p = PolicyDecodeAttention::Create(c, spec, 10);
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("offline"), std::string::npos);
}

}  // namespace
}  // namespace foresight::worker
