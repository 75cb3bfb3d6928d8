// PrefillRecorder against pooling done by hand on a tiny causal prefill.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "predictor/attention_pooling.h"

#include "predictor/prefill_recorder.h"

namespace foresight::predictor {
namespace {

// A causal softmax row of `n` values drawn from `u`, normalised to sum to 1.
std::vector<float> RandomSoftmaxRow(int64_t n, std::mt19937& rng, std::uniform_real_distribution<float>& u) {
  std::vector<float> p(n);
  float s = 0;
  for (auto& v : p) s += (v = u(rng));
  for (auto& v : p) v /= s;
  return p;
}

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
        const std::vector<float> p = RandomSoftmaxRow(i + 1, rng, u);
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

// Rows handed over already pooled (a prefix's rows kept from an earlier prompt) leave the recorder
// bit-identical to rows heard whole: the window's max and sum and the total over every row.
TEST(PrefillRecorderTest, PooledRowsEqualRowsHeardWhole) {
  const int q_heads = 3;
  for (int64_t prompt : {20, 100, 301}) {
    for (int64_t pooled_upto : {int64_t{0}, prompt / 2, prompt - 1}) {
      PrefillRecorder whole(q_heads, prompt), mixed(q_heads, prompt);
      std::mt19937 rng(static_cast<uint32_t>(prompt));
      std::uniform_real_distribution<float> u(0.0f, 1.0f);
      for (int h = 0; h < q_heads; ++h) {
        for (int64_t i = 0; i < prompt; ++i) {
          const std::vector<float> p = RandomSoftmaxRow(i + 1, rng, u);
          whole.AddRow(h, i, p);
          if (i >= pooled_upto) {
            mixed.AddRow(h, i, p);
            continue;
          }
          std::vector<float> mx((i + 16) / 16), sum((i + 16) / 16);
          PoolAttentionRow(p, 16, mx, sum);
          mixed.AddPooledRow(h, i, mx, sum);
        }
      }
      const PrefillObservation a = whole.Observation(), b = mixed.Observation();
      const std::string what = "prompt " + std::to_string(prompt) + ", pooled up to " + std::to_string(pooled_upto);
      ASSERT_EQ(a.block_max.size(), b.block_max.size()) << what;
      EXPECT_EQ(std::memcmp(a.block_max.data(), b.block_max.data(), a.block_max.size_bytes()), 0) << what;
      EXPECT_EQ(std::memcmp(a.block_sum.data(), b.block_sum.data(), a.block_sum.size_bytes()), 0) << what;
      EXPECT_EQ(std::memcmp(a.block_sum_total.data(), b.block_sum_total.data(), a.block_sum_total.size_bytes()), 0)
          << what;
    }
  }
}

}  // namespace
}  // namespace foresight::predictor
