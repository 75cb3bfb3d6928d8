#include "worker/quality_eval.h"

#include <gtest/gtest.h>

#include "predictor/shipped_weights.h"
#include "worker/synthetic_model.h"

namespace foresight::worker {
namespace {

TEST(QualityEvalTest, FullBudgetEqualsDenseAndSmallBudgetIsSparse) {
  auto model = MakeSyntheticModel(SyntheticModelSpec{});
  ASSERT_TRUE(model.ok());
  std::vector<TokenId> tokens(420);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<TokenId>((i * 61 + 11) % 256);
  QualitySpec spec;
  spec.policies = {predictor::PolicyKind::kStreamingLLM, predictor::PolicyKind::kQuest, predictor::PolicyKind::kOracle};
  spec.budgets = {192, 4096};
  auto rows = EvaluateQuality(**model, tokens, 400, 20, spec);
  ASSERT_TRUE(rows.ok()) << rows.status().ToString();
  ASSERT_EQ(rows->size(), 7u);
  const QualityRow& dense = (*rows)[0];
  EXPECT_EQ(dense.policy, "dense");
  EXPECT_DOUBLE_EQ(dense.top1_agreement, 1.0);
  EXPECT_GT(dense.perplexity, 1.0);
  for (const QualityRow& r : *rows) {
    EXPECT_EQ(r.context, 400);
    if (r.budget == 4096) {
      EXPECT_NEAR(r.perplexity, dense.perplexity, 1e-6 * dense.perplexity) << r.policy;
      EXPECT_DOUBLE_EQ(r.top1_agreement, 1.0) << r.policy;
      EXPECT_DOUBLE_EQ(r.blocks_fraction, 1.0) << r.policy;
      EXPECT_NEAR(r.recovery, 1.0, 1e-5) << r.policy;  // every block attended: all the mass
    } else if (r.budget == 192) {
      EXPECT_LT(r.blocks_fraction, 0.75) << r.policy;
      EXPECT_GT(r.recovery, 0.0) << r.policy;
      EXPECT_LT(r.recovery, 1.0) << r.policy;
    }
  }
  EXPECT_EQ((*rows)[1].policy, "streaming-llm");
  // The oracle keeps each step's true top blocks: at the same budget it recovers more attention
  // mass than a fixed window or Quest's estimate.
  const QualityRow& streaming = (*rows)[1];
  const QualityRow& quest = (*rows)[3];
  const QualityRow& oracle = (*rows)[5];
  ASSERT_EQ(oracle.policy, "oracle");
  ASSERT_EQ(oracle.budget, 192);
  EXPECT_GT(oracle.recovery, streaming.recovery);
  EXPECT_GE(oracle.recovery, quest.recovery);
}

TEST(QualityEvalTest, SparseRecoveryLeavesOutTheDenseCalibrationSteps) {
  auto model = MakeSyntheticModel(SyntheticModelSpec{});
  ASSERT_TRUE(model.ok());
  std::vector<TokenId> tokens(430);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<TokenId>((i * 61 + 11) % 256);
  QualitySpec spec;
  spec.policies = {predictor::PolicyKind::kQuest, predictor::PolicyKind::kAttentionPredictor};
  spec.budgets = {192};
  spec.weights = predictor::ShippedCnnWeights();
  spec.calibration_period = 5;  // the published method: every 5th decode step attends densely
  spec.query_refine = {0.0f};
  auto rows = EvaluateQuality(**model, tokens, 400, 30, spec);
  ASSERT_TRUE(rows.ok()) << rows.status().ToString();
  ASSERT_EQ(rows->size(), 3u);
  const QualityRow& quest = (*rows)[1];
  const QualityRow& ap = (*rows)[2];
  ASSERT_EQ(quest.policy, "quest");
  ASSERT_EQ(ap.policy, "attention-predictor");
  // Quest never attends densely: both figures are the same average.
  EXPECT_DOUBLE_EQ(quest.sparse_recovery, quest.recovery);
  // AttentionPredictor's calibration steps count 1 in `recovery` only. With 29 decode steps, 5 of
  // them (every 5th) dense: recovery = (5 + 24 x sparse) / 29.
  EXPECT_LT(ap.sparse_recovery, 1.0);
  EXPECT_NEAR(ap.recovery, (5.0 + 24.0 * ap.sparse_recovery) / 29.0, 1e-9);
}

TEST(QualityEvalTest, TooShortTextIsRefused) {
  auto model = MakeSyntheticModel(SyntheticModelSpec{});
  ASSERT_TRUE(model.ok());
  auto rows = EvaluateQuality(**model, std::vector<TokenId>(10, 1), 8, 8, QualitySpec{});
  ASSERT_FALSE(rows.ok());
  EXPECT_NE(rows.status().message().find("16 tokens"), std::string::npos) << rows.status().ToString();
}

}  // namespace
}  // namespace foresight::worker
