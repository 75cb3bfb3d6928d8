// ResolveServing, the one place where a request's policy and budget and the serving defaults become
// what it runs (foresight-worker, `foresight generate`, `foresight-bench decode`), and the serving
// flags every one of those commands registers.
#include "worker/serving_options.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "predictor/shipped_weights.h"
#include "worker/serving_flags.h"

namespace foresight::worker {
namespace {

ModelConfig Config(int32_t max_context = 0) {
  ModelConfig c;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 16;
  c.max_context = max_context;
  return c;
}

ServingOptions Served() {
  ServingOptions o;  // ap at 1024, query share 0.25
  o.weights = predictor::ShippedCnnWeights();
  o.weights_name = predictor::kShippedCnnWeightsName;
  return o;
}

// An AttentionPredictor request whose prompt + max_tokens is exactly its budget runs dense; one
// token more and it runs the predictor.
TEST(ResolveServingTest, AnApRequestThatFitsItsBudgetRunsDenseUpToTheBoundary) {
  const ServingOptions o = Served();
  StatusOr<ServingPlan> fits = ResolveServing(o, "ap", 64, 40, 24, Config(), /*kv_offloaded=*/true);
  ASSERT_TRUE(fits.ok()) << fits.status().ToString();
  EXPECT_FALSE(fits->spec.has_value());
  EXPECT_TRUE(fits->fits_budget);
  EXPECT_EQ(fits->requested, predictor::PolicyKind::kAttentionPredictor);
  EXPECT_EQ(fits->policy, "dense");
  EXPECT_EQ(fits->budget, 0);
  EXPECT_EQ(fits->weights, "");

  StatusOr<ServingPlan> over = ResolveServing(o, "ap", 64, 40, 25, Config(), true);
  ASSERT_TRUE(over.ok()) << over.status().ToString();
  ASSERT_TRUE(over->spec.has_value());
  EXPECT_FALSE(over->fits_budget);
  EXPECT_EQ(over->policy, "ap");
  EXPECT_EQ(over->budget, 64);
  EXPECT_EQ(over->spec->budget.budget_tokens, 64);
  EXPECT_EQ(over->spec->weights, o.weights);
  EXPECT_EQ(over->weights, predictor::kShippedCnnWeightsName);
}

// The whole context is at most the model's: a request asking for more tokens than fit still fits.
TEST(ResolveServingTest, TheContextThatFitsIsCappedByTheModels) {
  StatusOr<ServingPlan> capped = ResolveServing(Served(), "", 64, 40, 1000, Config(/*max_context=*/64), true);
  ASSERT_TRUE(capped.ok()) << capped.status().ToString();
  EXPECT_EQ(capped->policy, "dense");
  StatusOr<ServingPlan> beyond = ResolveServing(Served(), "", 64, 40, 1000, Config(/*max_context=*/65), true);
  ASSERT_TRUE(beyond.ok()) << beyond.status().ToString();
  EXPECT_EQ(beyond->policy, "ap");
}

// Only AttentionPredictor runs dense when it fits: the other policies run as asked.
TEST(ResolveServingTest, OtherPoliciesRunAsAskedWhateverTheContext) {
  StatusOr<ServingPlan> quest = ResolveServing(Served(), "quest", 64, 4, 1, Config(), true);
  ASSERT_TRUE(quest.ok()) << quest.status().ToString();
  ASSERT_TRUE(quest->spec.has_value());
  EXPECT_EQ(quest->spec->kind, predictor::PolicyKind::kQuest);
  EXPECT_EQ(quest->policy, "quest");
  EXPECT_EQ(quest->budget, 64);
  EXPECT_EQ(quest->weights, "");
  StatusOr<ServingPlan> dense = ResolveServing(Served(), "dense", 64, 4000, 100, Config(), true);
  ASSERT_TRUE(dense.ok()) << dense.status().ToString();
  EXPECT_FALSE(dense->spec.has_value());
  EXPECT_FALSE(dense->fits_budget);
  EXPECT_EQ(dense->policy, "dense");
  EXPECT_EQ(dense->budget, 0);
}

TEST(ResolveServingTest, TheOracleIsRefused) {
  StatusOr<ServingPlan> plan = ResolveServing(Served(), "oracle", 0, 4000, 16, Config(), true);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(plan.status().message().find("policy oracle"), std::string::npos) << plan.status().ToString();
  EXPECT_NE(plan.status().message().find("offline-only"), std::string::npos) << plan.status().ToString();
}

TEST(ResolveServingTest, AnUnknownPolicyIsNamed) {
  StatusOr<ServingPlan> plan = ResolveServing(Served(), "nonsense", 0, 4000, 16, Config(), true);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(plan.status().message().find("unknown policy 'nonsense'"), std::string::npos) << plan.status().ToString();
  // So is a bad default, where no request names one.
  ServingOptions bad = Served();
  bad.default_policy = "nonsense";
  EXPECT_EQ(ResolveServing(bad, "", 0, 4000, 16, Config(), true).status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(DefaultPolicyLabel(bad).ok());
}

// Without weights AttentionPredictor is refused, even for a request that would run dense: whether
// it runs must not depend on its length.
TEST(ResolveServingTest, AttentionPredictorWithoutWeightsIsRefused) {
  ServingOptions o = Served();
  o.weights = nullptr;
  for (int64_t prompt : {4000, 4}) {
    StatusOr<ServingPlan> plan = ResolveServing(o, "ap", 0, prompt, 16, Config(), true);
    ASSERT_FALSE(plan.ok()) << prompt;
    EXPECT_EQ(plan.status().code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(plan.status().message().find("weights"), std::string::npos) << plan.status().ToString();
  }
  // Policies without a CNN run.
  EXPECT_TRUE(ResolveServing(o, "h2o", 0, 4000, 16, Config(), true).ok());
}

TEST(ResolveServingTest, ARequestsBudgetOverridesTheDefault) {
  const ServingOptions o = Served();  // 1024
  StatusOr<ServingPlan> own = ResolveServing(o, "quest", 256, 4000, 16, Config(), true);
  ASSERT_TRUE(own.ok()) << own.status().ToString();
  EXPECT_EQ(own->budget, 256);
  EXPECT_EQ(own->spec->budget.budget_tokens, 256);
  EXPECT_EQ(own->spec->budget.sink_tokens, o.sink_tokens);
  EXPECT_EQ(own->spec->budget.local_tokens, o.local_tokens);
  StatusOr<ServingPlan> none = ResolveServing(o, "quest", 0, 4000, 16, Config(), true);
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_EQ(none->budget, 1024);
  // The budget decides whether ap fits: 100 + 16 tokens fit the default, not 64.
  EXPECT_EQ(ResolveServing(o, "ap", 0, 100, 16, Config(), true)->policy, "dense");
  EXPECT_EQ(ResolveServing(o, "ap", 64, 100, 16, Config(), true)->policy, "ap");
  StatusOr<ServingPlan> negative = ResolveServing(o, "quest", -5, 4000, 16, Config(), true);
  ASSERT_FALSE(negative.ok());
  EXPECT_EQ(negative.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(negative.status().message().find("budget -5"), std::string::npos) << negative.status().ToString();
}

// The label names what runs: the served AttentionPredictor, the published method, another share;
// names with '-' read as '_'.
TEST(ResolveServingTest, TheLabelNamesWhatRuns) {
  ServingOptions o = Served();
  EXPECT_EQ(ResolveServing(o, "attention_predictor", 0, 4000, 16, Config(), true)->policy, "ap");
  EXPECT_EQ(ResolveServing(o, "streaming-llm", 0, 4000, 16, Config(), true)->policy, "streaming_llm");
  EXPECT_EQ(*DefaultPolicyLabel(o), "ap");
  o.query_refine = 0.0f;
  EXPECT_EQ(ResolveServing(o, "ap", 0, 4000, 16, Config(), true)->policy, "attention_predictor");
  EXPECT_EQ(*DefaultPolicyLabel(o), "attention_predictor");
  o.query_refine = 0.5f;
  EXPECT_EQ(ResolveServing(o, "ap", 0, 4000, 16, Config(), true)->policy, "ap(query_refine=0.50)");
  o.default_policy = "snapkv";
  EXPECT_EQ(*DefaultPolicyLabel(o), "snapkv");
}

// Where the KV lives decides how the served AttentionPredictor scores its query share (lookahead
// queries, fetched a layer ahead, only when offloaded) and where the published method's calibration
// rows come from (exact only with the whole KV on hand).
TEST(ResolveServingTest, WhereTheKvLivesDecidesLookaheadAndCalibration) {
  ServingOptions o = Served();
  StatusOr<ServingPlan> offloaded = ResolveServing(o, "ap", 0, 4000, 16, Config(), /*kv_offloaded=*/true);
  StatusOr<ServingPlan> resident = ResolveServing(o, "ap", 0, 4000, 16, Config(), /*kv_offloaded=*/false);
  ASSERT_TRUE(offloaded.ok() && resident.ok());
  EXPECT_TRUE(offloaded->attention.lookahead_query);
  EXPECT_FALSE(resident->attention.lookahead_query);
  EXPECT_EQ(offloaded->attention.calibration, CalibrationSource::kCompactKeys);
  EXPECT_EQ(resident->attention.calibration, CalibrationSource::kCompactKeys);
  EXPECT_EQ(resident->spec->calibration_period, 1);
  EXPECT_TRUE(resident->spec->predict_per_kv_head);
  o.query_refine = 0.0f;  // the published method: dense calibration rows every 5th step
  StatusOr<ServingPlan> published_offloaded = ResolveServing(o, "ap", 0, 4000, 16, Config(), true);
  StatusOr<ServingPlan> published_resident = ResolveServing(o, "ap", 0, 4000, 16, Config(), false);
  ASSERT_TRUE(published_offloaded.ok() && published_resident.ok());
  EXPECT_EQ(published_offloaded->attention.calibration, CalibrationSource::kCompactKeys);
  EXPECT_EQ(published_resident->attention.calibration, CalibrationSource::kExact);
  EXPECT_FALSE(published_offloaded->attention.lookahead_query);
  EXPECT_EQ(published_resident->spec->calibration_period, 5);
}

// Parses `args` (without the program name) with the serving flags registered on a fresh app.
int Parse(std::vector<std::string> args, ServingOptions* options) {
  CLI::App app{"test"};
  AddServingFlags(&app, options);
  std::reverse(args.begin(), args.end());  // CLI11 parses a reversed vector
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    return e.get_exit_code() == 0 ? 0 : 100;
  }
  return 0;
}

TEST(ServingFlagsTest, EveryFlagWritesItsOptionAndDefaultsAreTheStructs) {
  ServingOptions o;
  o.default_policy = "h2o";  // a command's own default
  ASSERT_EQ(Parse({}, &o), 0);
  EXPECT_EQ(o.default_policy, "h2o");
  EXPECT_EQ(o.default_budget, 1024);
  EXPECT_EQ(Parse({"--policy", "quest", "--budget", "256", "--sink", "16", "--local", "32", "--dense-layers", "1",
                   "--query-refine", "0", "--weights", "w.safetensors"},
                  &o),
            0);
  EXPECT_EQ(o.default_policy, "quest");
  EXPECT_EQ(o.default_budget, 256);
  EXPECT_EQ(o.sink_tokens, 16);
  EXPECT_EQ(o.local_tokens, 32);
  EXPECT_EQ(o.dense_first_layers, 1);
  EXPECT_EQ(o.query_refine, 0.0f);
  EXPECT_EQ(o.weights_file, "w.safetensors");
}

TEST(ServingFlagsTest, BadValuesAreRefused) {
  for (const std::vector<std::string>& bad : std::vector<std::vector<std::string>>{
           {"--budget", "0"}, {"--budget", "-5"}, {"--sink", "-1"}, {"--query-refine", "1.5"}, {"--budget", "2x"}}) {
    ServingOptions o;
    EXPECT_EQ(Parse(bad, &o), 100) << bad[0] << " " << bad[1];
  }
  ServingOptions unknown;
  unknown.default_policy = "nonsense";
  Status s = FinishServingFlags(&unknown);
  EXPECT_NE(s.message().find("--policy: unknown policy 'nonsense'"), std::string::npos) << s.ToString();
  ServingOptions oracle;
  oracle.default_policy = "oracle";
  EXPECT_EQ(FinishServingFlags(&oracle).code(), StatusCode::kInvalidArgument);
  ServingOptions missing;
  missing.weights_file = "/nonexistent/cnn.safetensors";
  s = FinishServingFlags(&missing);
  EXPECT_NE(s.message().find("--weights"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("/nonexistent/cnn.safetensors"), std::string::npos) << s.ToString();
}

TEST(ServingFlagsTest, FinishingLoadsTheShippedWeightsByDefault) {
  ServingOptions o;
  ASSERT_TRUE(FinishServingFlags(&o).ok());
  EXPECT_EQ(o.weights, predictor::ShippedCnnWeights());
  EXPECT_EQ(o.weights_name, predictor::kShippedCnnWeightsName);
}

}  // namespace
}  // namespace foresight::worker
