// Recovery evaluation on a synthetic trace: the bounds any correct evaluation must respect.
#include <gtest/gtest.h>

#include <map>

#include "predictor/cnn_weights.h"
#include "predictor/recovery_eval.h"
#include "tests/predictor/synthetic_trace.h"

namespace foresight::predictor {
namespace {

TEST(RecoveryEvalTest, DenseIsOneOracleBoundsEveryPolicyAndUnionBoundsOwn) {
  testing::SyntheticTraceOptions o;
  o.prompt_tokens = 700;
  o.decode_steps = 30;
  Trace trace = testing::MakeSyntheticTrace(o);
  RecoveryOptions options;
  auto weights = CnnWeights::Load(FORESIGHT_SOURCE_DIR "/../shared/reference/attention_predictor/cnn_llama3.1.safetensors");
  for (PolicyKind k : AllPolicyKinds()) {
    if (k == PolicyKind::kAttentionPredictor && !weights.ok()) continue;
    PolicySpec spec;
    spec.kind = k;
    if (weights.ok()) spec.weights = *weights;
    options.variants.push_back({std::string(PolicyKindName(k)), spec});
  }
  options.budgets = {192, 256, 384};
  options.threads = 2;
  const Trace* traces[] = {&trace};
  auto results = EvaluateRecovery(traces, options);
  ASSERT_TRUE(results.ok()) << results.status().ToString();
  std::map<std::pair<std::string, int64_t>, RecoveryResult> by;
  for (const auto& r : *results) {
    by[{r.label, r.budget}] = r;
    std::printf("%-20s %5lld recovery %.4f union %.4f blocks %.1f\n", r.label.c_str(),
                static_cast<long long>(r.budget), r.recovery, r.kv_union_recovery, r.mean_selected_blocks);
    EXPECT_GE(r.recovery, 0.0);
    EXPECT_LE(r.recovery, 1.0 + 1e-5);
    EXPECT_GE(r.kv_union_recovery, r.recovery - 1e-9);
    EXPECT_EQ(r.per_layer.size(), static_cast<size_t>(o.layers));
    EXPECT_EQ(r.samples, o.layers * o.q_heads * o.decode_steps);
  }
  auto recovery = [&](const std::string& label, int64_t budget) {
    return by[std::make_pair(label, budget)].recovery;
  };
  for (int64_t b : options.budgets) {
    EXPECT_NEAR(recovery("dense", b), 1.0, 1e-5);
    for (const auto& [key, r] : by) {
      // Dense ignores the budget; every other policy keeps at most the budget's blocks.
      if (key.second == b && key.first != "dense") {
        EXPECT_LE(r.recovery, recovery("oracle", b) + 1e-6) << key.first;
      }
    }
  }
  EXPECT_LT(recovery("oracle", 192), recovery("oracle", 384));
}

}  // namespace
}  // namespace foresight::predictor
