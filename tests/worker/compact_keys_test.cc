// The compact key copy's kernel against a plain reference: every key and query rounded to Q8_0 by
// hand here (d = max|x| / 127 in half precision, q = round half to even), then dot products in
// double. Sizes cover the eight-key groups, the tail, GQA groups and padded head dimensions.
#include "worker/compact_keys.h"

#include <gtest/gtest.h>
#include <immintrin.h>

#include <cmath>
#include <random>
#include <vector>

namespace foresight::worker {
namespace {

// x rounded to Q8_0 per 32 values (zero-padded), as a plain float vector of d * q.
std::vector<double> RoundQ8(const float* x, int n) {
  const int padded = (n + 31) / 32 * 32;
  std::vector<double> out(padded, 0.0);
  for (int b = 0; b < padded; b += 32) {
    float amax = 0.0f;
    for (int i = b; i < b + 32 && i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float d = _cvtsh_ss(_cvtss_sh(amax / 127.0f, 0));
    for (int i = b; i < b + 32 && i < n; ++i) {
      const float q = amax == 0.0f ? 0.0f : std::nearbyint(x[i] * (127.0f / amax));
      out[i] = static_cast<double>(d) * q;
    }
  }
  return out;
}

struct Case {
  int n_heads, kv_heads, head_dim, tokens;
};

TEST(CompactKeyCopyTest, LogitsEqualAPlainDequantisedProduct) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const Case& c :
       {Case{9, 3, 64, 1000}, Case{4, 4, 32, 7}, Case{8, 2, 128, 531}, Case{6, 3, 48, 300}, Case{2, 1, 64, 8}}) {
    CompactKeyCopy copy(c.n_heads, c.kv_heads, c.head_dim);
    std::vector<float> keys(static_cast<size_t>(c.tokens) * c.kv_heads * c.head_dim);
    for (auto& v : keys) v = normal(rng) * (1.0f + 3.0f * (rng() % 7 == 0));
    for (int t = 0; t < c.tokens; ++t) copy.AppendToken(keys.data() + static_cast<size_t>(t) * c.kv_heads * c.head_dim);
    ASSERT_EQ(copy.tokens(), c.tokens);
    std::vector<float> queries(static_cast<size_t>(c.n_heads) * c.head_dim);
    for (auto& v : queries) v = normal(rng);
    const int ctx = c.tokens - c.tokens / 5;  // a prefix of the keys
    std::vector<float> logits;
    copy.Logits(queries.data(), ctx, &logits);
    ASSERT_EQ(logits.size(), static_cast<size_t>(c.n_heads) * ctx);
    const int group = c.n_heads / c.kv_heads;
    double worst = 0.0;
    for (int h = 0; h < c.n_heads; ++h) {
      const std::vector<double> q = RoundQ8(queries.data() + h * c.head_dim, c.head_dim);
      for (int t = 0; t < ctx; ++t) {
        const float* key = keys.data() + (static_cast<size_t>(t) * c.kv_heads + h / group) * c.head_dim;
        const std::vector<double> k = RoundQ8(key, c.head_dim);
        double want = 0.0;
        for (size_t i = 0; i < k.size(); ++i) want += q[i] * k[i];
        want /= std::sqrt(static_cast<double>(c.head_dim));
        const double got = logits[static_cast<size_t>(h) * ctx + t];
        worst = std::max(worst, std::fabs(got - want) / (1.0 + std::fabs(want)));
      }
    }
    EXPECT_LT(worst, 1e-5) << c.n_heads << "/" << c.kv_heads << " heads, dim " << c.head_dim << ", " << c.tokens
                           << " tokens";
  }
}

TEST(CompactKeyCopyTest, DenseRowIsTheSoftmaxPooledPerBlock) {
  std::mt19937 rng(6);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int heads = 4, kv_heads = 2, dim = 64, tokens = 250;
  CompactKeyCopy copy(heads, kv_heads, dim);
  std::vector<float> key(kv_heads * dim), queries(heads * dim);
  for (int t = 0; t < tokens; ++t) {
    for (auto& v : key) v = normal(rng);
    copy.AppendToken(key.data());
  }
  for (auto& v : queries) v = 2.0f * normal(rng);
  std::vector<float> logits, block_max, block_sum;
  copy.Logits(queries.data(), tokens, &logits);
  copy.DenseRow(queries.data(), tokens, &block_max, &block_sum);
  const int blocks = (tokens + 15) / 16;
  ASSERT_EQ(block_max.size(), static_cast<size_t>(heads * blocks));
  for (int h = 0; h < heads; ++h) {
    double m = -INFINITY, z = 0.0;
    for (int t = 0; t < tokens; ++t) m = std::max(m, static_cast<double>(logits[h * tokens + t]));
    for (int t = 0; t < tokens; ++t) z += std::exp(logits[h * tokens + t] - m);
    double total = 0.0;
    for (int b = 0; b < blocks; ++b) {
      double bmax = 0.0, bsum = 0.0;
      for (int t = b * 16; t < std::min(tokens, b * 16 + 16); ++t) {
        const double p = std::exp(logits[h * tokens + t] - m) / z;
        bmax = std::max(bmax, p);
        bsum += p;
      }
      EXPECT_NEAR(block_max[h * blocks + b], bmax, 1e-5) << "head " << h << " block " << b;
      EXPECT_NEAR(block_sum[h * blocks + b], bsum, 1e-5) << "head " << h << " block " << b;
      total += block_sum[h * blocks + b];
    }
    EXPECT_NEAR(total, 1.0, 1e-4);
  }
}

}  // namespace
}  // namespace foresight::worker
