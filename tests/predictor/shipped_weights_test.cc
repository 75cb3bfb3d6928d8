// The weights compiled into the binaries are predictor/weights/foresight-smollm2.safetensors, bit
// for bit; LoadCnnWeightsOrShipped picks them for an empty path and names a missing file.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "predictor/recovery_eval.h"
#include "predictor/shipped_weights.h"
#include "predictor/trace.h"

namespace foresight::predictor {
namespace {

const std::string kSourceFile = FORESIGHT_SOURCE_DIR "/predictor/weights/foresight-smollm2.safetensors";

TEST(ShippedWeightsTest, EqualTheSourceFileBitForBit) {
  std::shared_ptr<const CnnWeights> shipped = ShippedCnnWeights();
  ASSERT_NE(shipped, nullptr);
  auto from_file = CnnWeights::Load(kSourceFile);
  ASSERT_TRUE(from_file.ok()) << from_file.status().ToString();
  // CnnWeights is plain float arrays: equal bytes are equal weights (NaN payloads included).
  EXPECT_EQ(std::memcmp(shipped.get(), from_file->get(), sizeof(CnnWeights)), 0);
  EXPECT_EQ(ShippedCnnWeights(), shipped) << "parsed once, then shared";
}

TEST(ShippedWeightsTest, EmptyPathLoadsTheShippedWeights) {
  auto w = LoadCnnWeightsOrShipped("");
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(*w, ShippedCnnWeights());
  EXPECT_EQ(CnnWeightsName(""), kShippedCnnWeightsName);
  EXPECT_EQ(CnnWeightsName(kSourceFile), kSourceFile);
}

TEST(ShippedWeightsTest, AFileIsLoadedAndAMissingOneIsNamed) {
  auto w = LoadCnnWeightsOrShipped(kSourceFile);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_NE(*w, ShippedCnnWeights());
  const std::string missing = "/nonexistent/foresight-weights.safetensors";
  auto bad = LoadCnnWeightsOrShipped(missing);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(missing), std::string::npos) << bad.status().ToString();
}

TEST(ShippedWeightsTest, FromBytesRefusesTruncatedDataAndNamesIt) {
  std::ifstream in(kSourceFile, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_GT(bytes.size(), 1000u);
  auto whole = CnnWeights::FromBytes("in-memory copy", bytes.data(), bytes.size());
  ASSERT_TRUE(whole.ok()) << whole.status().ToString();
  auto cut = CnnWeights::FromBytes("in-memory copy", bytes.data(), bytes.size() - 100);
  ASSERT_FALSE(cut.ok());
  EXPECT_NE(cut.status().message().find("in-memory copy"), std::string::npos) << cut.status().ToString();
}

// The held-out recovery recorded in predictor/weights/README.md, on the small held-out trace
// committed beside this test (MPL-2.0's first 1,069 tokens on SmolLM2, layers 8 and 20, 32 decode
// steps; tools/gen/trim_trace.py). Other weights, or a change to the CNN or the policies, move
// these figures.
TEST(ShippedWeightsTest, ReproduceTheirRecordedHeldOutRecovery) {
  auto trace = Trace::Load(FORESIGHT_SOURCE_DIR "/tests/predictor/data/heldout-mpl2-1k.trace.safetensors");
  ASSERT_TRUE(trace.ok()) << trace.status().ToString();
  RecoveryOptions options;
  PolicySpec exact;
  exact.kind = PolicyKind::kAttentionPredictor;
  exact.weights = ShippedCnnWeights();
  PolicySpec served = exact;
  served.predict_per_kv_head = true;
  served.reuse_steps = PolicySpec::kServingUpdatePeriod;
  options.variants = {{"attention_predictor", exact}, {"ap_served_cnn", served}};
  options.budgets = {256, 512};
  const Trace* traces[] = {&*trace};
  auto results = EvaluateRecovery(traces, options);
  ASSERT_TRUE(results.ok()) << results.status().ToString();
  // label, budget, recovery, kv_union_recovery (predictor/weights/README.md).
  const struct {
    const char* label;
    int64_t budget;
    double recovery, kv_union;
  } recorded[] = {{"attention_predictor", 256, 0.860382, 0.879740},
                  {"attention_predictor", 512, 0.950647, 0.966377},
                  {"ap_served_cnn", 256, 0.850501, 0.850501},
                  {"ap_served_cnn", 512, 0.946046, 0.946046}};
  ASSERT_EQ(results->size(), std::size(recorded));
  for (size_t i = 0; i < results->size(); ++i) {
    const RecoveryResult& r = (*results)[i];
    EXPECT_EQ(r.label, recorded[i].label);
    EXPECT_EQ(r.budget, recorded[i].budget);
    EXPECT_NEAR(r.recovery, recorded[i].recovery, 5e-5) << r.label << " at " << r.budget;
    EXPECT_NEAR(r.kv_union_recovery, recorded[i].kv_union, 5e-5) << r.label << " at " << r.budget;
  }
}

}  // namespace
}  // namespace foresight::predictor
