// Trace writer and reader: a round trip through the file keeps every value; misuse is reported.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "predictor/trace.h"
#include "tests/predictor/synthetic_trace.h"

namespace foresight::predictor {
namespace {

std::string TempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("foresight_pred_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

void ExpectSameTrace(const Trace& a, const Trace& b) {
  ASSERT_EQ(a.geometry().layers, b.geometry().layers);
  EXPECT_EQ(a.geometry().q_heads, b.geometry().q_heads);
  EXPECT_EQ(a.geometry().kv_heads, b.geometry().kv_heads);
  EXPECT_EQ(a.geometry().head_dim, b.geometry().head_dim);
  EXPECT_EQ(a.geometry().prompt_tokens, b.geometry().prompt_tokens);
  ASSERT_EQ(a.decode_steps(), b.decode_steps());
  for (int l = 0; l < a.geometry().layers; ++l) {
    const auto& x = a.layer(l);
    const auto& y = b.layer(l);
    EXPECT_EQ(x.prefill_block_max, y.prefill_block_max);
    EXPECT_EQ(x.prefill_block_sum, y.prefill_block_sum);
    EXPECT_EQ(x.prefill_block_sum_total, y.prefill_block_sum_total);
    EXPECT_EQ(x.decode_block_max, y.decode_block_max);
    EXPECT_EQ(x.decode_block_sum, y.decode_block_sum);
    EXPECT_EQ(x.decode_query, y.decode_query);
    EXPECT_EQ(x.digests.data(), y.digests.data());
    EXPECT_EQ(x.digests.tokens(), y.digests.tokens());
  }
}

TEST(TraceTest, SaveLoadRoundTrip) {
  testing::SyntheticTraceOptions o;
  o.prompt_tokens = 100;
  o.decode_steps = 20;
  Trace trace = testing::MakeSyntheticTrace(o);
  const std::string path = TempPath("roundtrip.safetensors");
  ASSERT_TRUE(trace.Save(path).ok());
  auto loaded = Trace::Load(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  ExpectSameTrace(trace, *loaded);
  EXPECT_EQ(loaded->metadata().at("source"), "synthetic");
  std::filesystem::remove(path);
}

// Writes a larger synthetic trace where FORESIGHT_SYNTHETIC_TRACE_OUT points, for exercising
// `foresight predictor eval` by hand; synthetic numbers are never model results.
TEST(TraceTest, WritesSyntheticTraceOnRequest) {
  const char* out = std::getenv("FORESIGHT_SYNTHETIC_TRACE_OUT");
  if (out == nullptr) GTEST_SKIP() << "set FORESIGHT_SYNTHETIC_TRACE_OUT to write a synthetic trace";
  testing::SyntheticTraceOptions o;
  o.layers = 4;
  o.q_heads = 8;
  o.kv_heads = 2;
  o.prompt_tokens = 2000;
  o.decode_steps = 64;
  ASSERT_TRUE(testing::MakeSyntheticTrace(o).Save(out).ok());
}

TEST(TraceTest, WriterProducesTheSameTraceStepByStep) {
  testing::SyntheticTraceOptions o;
  o.prompt_tokens = 40;  // shorter than the 64-row history
  o.decode_steps = 30;   // crosses block boundaries
  Trace trace = testing::MakeSyntheticTrace(o);
  const std::string path = TempPath("writer.safetensors");
  auto writer = TraceWriter::Create(path, trace.geometry(), {{"source", "synthetic"}});
  ASSERT_TRUE(writer.ok());
  std::vector<float> bmax, bsum;
  for (int l = 0; l < o.layers; ++l) ASSERT_TRUE((*writer)->RecordPrefill(l, trace.prefill(l)).ok());
  for (int64_t s = 0; s < o.decode_steps; ++s) {
    for (int l = 0; l < o.layers; ++l) {
      trace.DecodeRows(l, s, &bmax, &bsum);
      ASSERT_TRUE((*writer)->RecordDecodeStep(l, s, trace.query(l, s), bmax, bsum).ok());
    }
  }
  EXPECT_FALSE((*writer)->Finish().ok()) << "finishing without key digests must fail";
  for (int l = 0; l < o.layers; ++l) ASSERT_TRUE((*writer)->RecordKeyDigests(l, trace.key_digests(l)).ok());
  ASSERT_TRUE((*writer)->Finish().ok());
  auto loaded = Trace::Load(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  ExpectSameTrace(trace, *loaded);
  std::filesystem::remove(path);
}

TEST(TraceTest, RejectsMisuse) {
  TraceGeometry g{.layers = 1, .q_heads = 2, .kv_heads = 1, .head_dim = 4, .block_tokens = 16, .prompt_tokens = 20};
  auto writer = TraceWriter::Create(TempPath("bad.safetensors"), g);
  ASSERT_TRUE(writer.ok());
  std::vector<float> q(8), row(2 * 2);
  Status s = (*writer)->RecordDecodeStep(0, 1, q, row, row);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("expected decode step 0"), std::string::npos) << s.message();
  std::vector<float> wrong(3);
  EXPECT_FALSE((*writer)->RecordDecodeStep(0, 0, q, wrong, wrong).ok());
  EXPECT_FALSE((*writer)->Finish().ok());  // no prefill
  TraceGeometry bad = g;
  bad.kv_heads = 3;
  EXPECT_FALSE(TraceWriter::Create(TempPath("bad2.safetensors"), bad).ok());
  auto not_trace =
      Trace::Load(FORESIGHT_SOURCE_DIR "/../shared/reference/attention_predictor/cnn_longchat.safetensors");
  EXPECT_FALSE(not_trace.ok());
}

TEST(KeyDigestsTest, TracksPerBlockMinMaxAndBoundsEveryKey) {
  KeyDigests d(2, 3, 4);
  std::mt19937 rng(9);
  std::normal_distribution<float> n;
  std::vector<std::vector<float>> keys;
  for (int t = 0; t < 10; ++t) {
    std::vector<float> k(6);
    for (auto& v : k) v = n(rng);
    keys.push_back(k);
    d.AppendToken(k);
  }
  EXPECT_EQ(d.tokens(), 10);
  EXPECT_EQ(d.num_blocks(), 3);
  EXPECT_EQ(d.complete_blocks(), 2);
  const float q[3] = {0.5f, -1.0f, 2.0f};
  for (int kv = 0; kv < 2; ++kv) {
    for (int b = 0; b < 3; ++b) {
      float best = -INFINITY;
      for (int t = b * 4; t < std::min(10, b * 4 + 4); ++t) {
        float dot = 0;
        for (int c = 0; c < 3; ++c) {
          EXPECT_LE(d.min(kv, b)[c], keys[t][kv * 3 + c]);
          EXPECT_GE(d.max(kv, b)[c], keys[t][kv * 3 + c]);
          dot += q[c] * keys[t][kv * 3 + c];
        }
        best = std::max(best, dot);
      }
      EXPECT_GE(d.UpperBound(kv, b, q), best - 1e-5f);
    }
  }
}

}  // namespace
}  // namespace foresight::predictor
