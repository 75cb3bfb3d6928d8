// PrefillRecorder against pooling done by hand on a tiny causal prefill.
#include <gtest/gtest.h>

#include <random>

#include "predictor/prefill_recorder.h"

namespace foresight::predictor {
namespace {

TEST(PrefillRecorderTest, KeepsLastRowsAndTotalMass) {
  const int q_heads = 2;
  for (int64_t prompt : {5, 40, 100}) {
    PrefillRecorder rec(q_heads, prompt);
    const int64_t rows = std::min<int64_t>(prompt, 64), blocks = (prompt + 15) / 16;
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> u(0.01f, 1.0f);
    std::vector<std::vector<std::vector<float>>> all(q_heads);
    for (int h = 0; h < q_heads; ++h) {
      for (int64_t i = 0; i < prompt; ++i) {
        std::vector<float> p(i + 1);
        float s = 0;
        for (auto& v : p) s += (v = u(rng));
        for (auto& v : p) v /= s;
        rec.AddRow(h, i, p);
        all[h].push_back(p);
      }
    }
    const PrefillObservation obs = rec.Observation();
    ASSERT_EQ(obs.rows, rows);
    for (int h = 0; h < q_heads; ++h) {
      for (int64_t b = 0; b < blocks; ++b) {
        double total = 0;
        for (int64_t i = 0; i < prompt; ++i) {
          for (int64_t k = b * 16; k < std::min<int64_t>(i + 1, b * 16 + 16); ++k) total += all[h][i][k];
        }
        EXPECT_NEAR(obs.block_sum_total[h * blocks + b], total, 1e-4);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t i = prompt - rows + r;
          float mx = 0, sum = 0;
          for (int64_t k = b * 16; k < std::min<int64_t>(i + 1, b * 16 + 16); ++k) {
            mx = std::max(mx, all[h][i][k]);
            sum += all[h][i][k];
          }
          EXPECT_FLOAT_EQ(obs.block_max[(h * rows + r) * blocks + b], mx);
          EXPECT_NEAR(obs.block_sum[(h * rows + r) * blocks + b], sum, 1e-6);
        }
      }
    }
  }
}

}  // namespace
}  // namespace foresight::predictor
