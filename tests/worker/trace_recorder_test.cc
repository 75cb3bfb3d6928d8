#include "worker/trace_recorder.h"

#include <gtest/gtest.h>

#include <numeric>

#include "predictor/trace.h"
#include "tests/worker/reference_env.h"
#include "worker/synthetic_model.h"

namespace foresight::worker {
namespace {

TEST(TraceRecorderTest, RecordsAReadableTrace) {
  SyntheticModelSpec spec;
  spec.n_layers = 2;
  const std::string model_path = testing::TestTempDir() + "/trace_model.gguf";
  ASSERT_TRUE(WriteSyntheticGguf(spec, model_path).ok());
  auto model = Model::Open(model_path);
  ASSERT_TRUE(model.ok());
  std::vector<TokenId> prompt(70);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<TokenId>((i * 37) % 256);
  const std::string out = testing::TestTempDir() + "/trace.safetensors";
  auto summary = RecordTrace(**model, prompt, 12, out);
  ASSERT_TRUE(summary.ok()) << summary.status().ToString();
  EXPECT_EQ(summary->generated.size(), 12u);

  auto trace = predictor::Trace::Load(out);
  ASSERT_TRUE(trace.ok()) << trace.status().ToString();
  const auto& g = trace->geometry();
  EXPECT_EQ(g.layers, 2);
  EXPECT_EQ(g.q_heads, spec.n_heads);
  EXPECT_EQ(g.kv_heads, spec.n_kv_heads);
  EXPECT_EQ(g.prompt_tokens, 70);
  EXPECT_EQ(trace->decode_steps(), 12);
  for (int l = 0; l < 2; ++l) {
    for (int64_t step : {0, 11}) {
      std::vector<float> block_max, block_sum;
      trace->DecodeRows(l, step, &block_max, &block_sum);
      const int64_t blocks = g.blocks_at(step);
      ASSERT_EQ(block_sum.size(), static_cast<size_t>(g.q_heads * blocks));
      for (int h = 0; h < g.q_heads; ++h) {
        const double mass = std::accumulate(block_sum.begin() + h * blocks, block_sum.begin() + (h + 1) * blocks, 0.0);
        EXPECT_NEAR(mass, 1.0, 1e-2) << "layer " << l << " step " << step << " head " << h;
        for (int64_t b = 0; b < blocks; ++b) EXPECT_LE(block_max[h * blocks + b], block_sum[h * blocks + b] + 1e-6);
      }
    }
    const predictor::PrefillObservation p = trace->prefill(l);
    EXPECT_EQ(p.rows, 64);
    EXPECT_EQ(trace->key_digests(l).tokens(), 70 + 12);
  }
}

}  // namespace
}  // namespace foresight::worker
