// The CPU kernels against a plain float64 reference on random data, and the incremental CNN
// against the full computation over a long simulated decode.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "predictor/attention_history.h"
#include "predictor/cnn_cpu.h"
#include "predictor/incremental_cnn.h"
#include "predictor/shipped_weights.h"
#include "predictor/trace.h"
#include "tests/predictor/cnn_naive_reference.h"

namespace foresight::predictor {
namespace {

using testing::NaiveCnn;
using testing::RelativeError;

std::shared_ptr<const CnnWeights> TestWeights() {
  auto loaded =
      CnnWeights::Load(FORESIGHT_SOURCE_DIR "/../shared/reference/attention_predictor/cnn_llama3.1.safetensors");
  if (loaded.ok()) return *loaded;
  return CnnWeights::Random(7);
}

// Attention-like rows: mostly small, a few large values.
std::vector<float> RandomRow(std::mt19937& rng, int64_t columns) {
  std::vector<float> row(columns);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  for (auto& v : row) {
    const float r = u(rng);
    v = r < 0.9f ? 0.01f * r : r;
  }
  return row;
}

TEST(CnnKernelsTest, MatchesNaiveReferenceOnRandomImages) {
  auto w = CnnWeights::Random(11);
  std::mt19937 rng(1);
  for (int64_t L : {1, 2, 3, 7, 15, 16, 17, 33, 255, 256, 257, 300}) {
    std::vector<float> x(kCnnRows * L);
    std::normal_distribution<float> n(0.0f, 1.0f);
    for (auto& v : x) v = n(rng);
    const HistoryImage image = HistoryImage::Contiguous(x.data(), L, L);
    std::vector<float> got(L);
    RunCnn(*w, image, got.data());
    const double err = RelativeError(got, NaiveCnn(*w, image));
    EXPECT_LT(err, 1e-5) << "L=" << L;
  }
}

TEST(CnnKernelsTest, BatchIsIndependentOfThreads) {
  auto w = TestWeights();
  std::mt19937 rng(2);
  std::vector<std::vector<float>> data;
  std::vector<HistoryImage> images;
  for (int64_t L : {5, 300, 600}) {
    data.push_back({});
    for (int h = 0; h < kCnnRows; ++h) {
      auto r = RandomRow(rng, L);
      data.back().insert(data.back().end(), r.begin(), r.end());
    }
  }
  for (auto& d : data) images.push_back(HistoryImage::Contiguous(d.data(), d.size() / kCnnRows, d.size() / kCnnRows));
  std::vector<std::vector<float>> one(3), many(3);
  std::vector<float*> p1, p2;
  for (int i = 0; i < 3; ++i) {
    one[i].resize(images[i].columns);
    many[i].resize(images[i].columns);
    p1.push_back(one[i].data());
    p2.push_back(many[i].data());
  }
  RunCnnBatch(*w, images, p1, 1);
  RunCnnBatch(*w, images, p2, 4);
  EXPECT_EQ(one, many);
}

// Simulates the predictor's use: a history that gains a block every 16 decode steps, sparse rows
// with calibration (dense) rows every 5th step, and a CNN window [4, first_local_block) whose right
// edge moves over columns that already hold values. The CNN is updated every `period` steps
// (k rows at a time); every update must equal the full CNN over that step's history.
class IncrementalCnnPeriodTest : public ::testing::TestWithParam<int> {};

TEST_P(IncrementalCnnPeriodTest, EqualsFullAtEveryUpdateOverThousandStepsWithGrowthAndCalibration) {
  const int period = GetParam();
  auto w = TestWeights();
  std::mt19937 rng(3);
  const int64_t prompt = 700;
  auto blocks = [](int64_t tokens) { return (tokens + 15) / 16; };
  auto window_end = [](int64_t tokens) { return std::max<int64_t>(4, (tokens - 64) / 16); };
  AttentionHistory history;
  {
    const int64_t nb = blocks(prompt);
    std::vector<float> rows;
    for (int r = 0; r < 64; ++r) {
      auto row = RandomRow(rng, nb);
      rows.insert(rows.end(), row.begin(), row.end());
    }
    history.Reset(rows, 64, nb);
  }
  IncrementalCnn incremental(w, period);
  ASSERT_EQ(incremental.period(), period);
  std::vector<float> inc, full;
  double worst = 0.0;
  int growth_updates = 0, updates = 0;
  int64_t last_columns = 0;
  const int kSteps = 1000;
  for (int step = 0; step <= kSteps; ++step) {
    const int64_t tokens = prompt + step;
    if (step > 0) {
      auto row = RandomRow(rng, blocks(tokens));
      if (step % 5 != 4) {
        // Sparse step: only some blocks were attended.
        for (size_t c = 0; c < row.size(); ++c)
          if (rng() % 4 != 0) row[c] = 0.0f;
      }
      history.Push(row);
    }
    if (step % period != 0) continue;
    const HistoryImage image = history.Image(4, window_end(tokens + 1));
    inc.resize(image.columns);
    full.resize(image.columns);
    if (step == 0)
      incremental.Reset(image, inc.data());
    else
      incremental.Advance(image, inc.data());
    RunCnn(*w, image, full.data());
    ++updates;
    if (image.columns != last_columns) ++growth_updates;
    last_columns = image.columns;
    const double err = RelativeError(inc, full);
    worst = std::max(worst, err);
    ASSERT_LT(err, 1e-5) << "period " << period << " step " << step << " columns " << image.columns;
  }
  std::printf(
      "period %d: incremental vs full at %d updates over %d steps (%d with new columns): "
      "max relative error %.3g\n",
      period, updates, kSteps, growth_updates, worst);
  EXPECT_GT(growth_updates, std::min(50, updates / 2));
}

INSTANTIATE_TEST_SUITE_P(Periods, IncrementalCnnPeriodTest, ::testing::Values(1, 2, 4, 5, 8, 10, 12, 16, 20, 29));

// Real histories: SmolLM2's pooled attention on held-out text (the committed trace of
// shipped_weights_test.cc: 1,069 prompt tokens, 32 dense decode steps, 2 layers), one history per
// KV head as served (the max over its query heads), the shipped weights; the window grows as decode
// moves blocks out of the local window. Every update equals the full CNN.
TEST(IncrementalCnnTest, EqualsFullAtEveryUpdateOnRealHistories) {
  auto trace = Trace::Load(FORESIGHT_SOURCE_DIR "/tests/predictor/data/heldout-mpl2-1k.trace.safetensors");
  ASSERT_TRUE(trace.ok()) << trace.status().ToString();
  const TraceGeometry& g = trace->geometry();
  const int group = g.q_heads / g.kv_heads;
  auto window_end = [&](int64_t tokens) { return std::max<int64_t>(4, (tokens - 64) / 16); };
  int updates = 0, growth = 0;
  double worst = 0.0;
  for (int period : {1, 4, 8, 10}) {
    for (int layer = 0; layer < g.layers; ++layer) {
      const PrefillObservation pre = trace->prefill(layer);
      const int64_t bp = g.prompt_blocks(), rows = pre.rows;
      for (int kv = 0; kv < g.kv_heads; ++kv) {
        std::vector<float> merged(rows * bp, 0.0f);
        for (int j = 0; j < group; ++j) {
          const float* src = pre.block_max.data() + (kv * group + j) * rows * bp;
          for (int64_t i = 0; i < rows * bp; ++i) merged[i] = std::max(merged[i], src[i]);
        }
        AttentionHistory history;
        history.Reset(merged, rows, bp);
        IncrementalCnn cnn(ShippedCnnWeights(), period);
        std::vector<float> inc, full, bmax, bsum;
        int64_t last_columns = -1;
        for (int64_t step = 0; step <= trace->decode_steps(); ++step) {
          if (step > 0) {
            trace->DecodeRows(layer, step - 1, &bmax, &bsum);
            const int64_t nb = g.blocks_at(step - 1);
            std::vector<float> row(nb, 0.0f);
            for (int j = 0; j < group; ++j) {
              for (int64_t b = 0; b < nb; ++b) row[b] = std::max(row[b], bmax[(kv * group + j) * nb + b]);
            }
            history.Push(row);
          }
          if (step % period != 0) continue;
          const HistoryImage image = history.Image(4, window_end(g.key_tokens(step)));
          inc.resize(image.columns);
          full.resize(image.columns);
          if (step == 0)
            cnn.Reset(image, inc.data());
          else
            cnn.Advance(image, inc.data());
          RunCnn(*ShippedCnnWeights(), image, full.data());
          const double err = RelativeError(inc, full);
          worst = std::max(worst, err);
          ASSERT_LT(err, 1e-5) << "period " << period << " layer " << layer << " KV head " << kv << " step " << step;
          ++updates;
          if (last_columns >= 0 && image.columns != last_columns) ++growth;
          last_columns = image.columns;
        }
      }
    }
  }
  std::printf("real histories: %d updates (%d with new columns), max relative error %.3g\n", updates, growth, worst);
  EXPECT_GT(growth, 0);
}

// A period beyond kMaxPeriod is clamped (the rows entering and the rows leaving next must not
// overlap); the policy then falls back to the full CNN.
TEST(IncrementalCnnTest, PeriodIsClampedToItsRange) {
  auto w = CnnWeights::Random(5);
  EXPECT_EQ(IncrementalCnn(w, 0).period(), 1);
  EXPECT_EQ(IncrementalCnn(w, 100).period(), IncrementalCnn::kMaxPeriod);
}

TEST(IncrementalCnnTest, SeveralColumnsAtOnceAndShrinkFallBackToCorrectResults) {
  auto w = CnnWeights::Random(5);
  std::mt19937 rng(4);
  AttentionHistory history;
  std::vector<float> rows;
  for (int r = 0; r < 64; ++r) {
    auto row = RandomRow(rng, 10);
    rows.insert(rows.end(), row.begin(), row.end());
  }
  history.Reset(rows, 64, 10);
  IncrementalCnn cnn(w);
  std::vector<float> out(10), want;
  cnn.Reset(history.Image(0, 10), out.data());
  for (int64_t columns : {10, 14, 14, 40, 12, 300, 301}) {
    history.Push(RandomRow(rng, std::max<int64_t>(columns, history.columns())));
    const HistoryImage image = history.Image(0, columns);
    out.resize(columns);
    cnn.Advance(image, out.data());
    const auto ref = NaiveCnn(*w, image);
    EXPECT_LT(RelativeError(out, ref), 1e-5) << "columns " << columns;
  }
}

TEST(AttentionHistoryTest, KeepsLastSixtyFourRowsWithZerosInNewColumns) {
  AttentionHistory h;
  std::vector<float> init(3 * 2);
  for (int i = 0; i < 6; ++i) init[i] = float(i + 1);
  h.Reset(init, 3, 2);
  EXPECT_EQ(h.columns(), 2);
  EXPECT_EQ(h.row(0)[0], 0.0f);  // padding rows above a short prefill
  EXPECT_EQ(h.row(61)[0], 1.0f);
  EXPECT_EQ(h.row(63)[1], 6.0f);
  std::vector<float> wide = {7, 8, 9};
  h.Push(wide);
  EXPECT_EQ(h.columns(), 3);
  EXPECT_EQ(h.row(63)[2], 9.0f);
  EXPECT_EQ(h.row(62)[2], 0.0f);  // older rows read 0 in the new column
  EXPECT_EQ(h.row(62)[1], 6.0f);
  for (int i = 0; i < 70; ++i) h.Push(std::vector<float>{float(100 + i)});
  EXPECT_EQ(h.row(63)[0], 169.0f);
  EXPECT_EQ(h.row(0)[0], 106.0f);
  EXPECT_EQ(h.row(0)[2], 0.0f);  // a short row reads 0 in its missing columns
}

}  // namespace
}  // namespace foresight::predictor
