#include "worker/quantized_kernels.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

namespace foresight::worker {
namespace {

// The dot kernels against the reference: dequantise, then a double-precision dot.
TEST(QuantizedKernelsTest, DotMatchesDequantiseThenDot) {
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (TensorType type : {TensorType::kF32, TensorType::kF16, TensorType::kBF16, TensorType::kQ8_0,
                          TensorType::kQ4_0, TensorType::kQ4_1}) {
    for (int64_t n : {32, 64, 576, 1536}) {
      std::vector<float> w(n), x(n), deq(n);
      for (float& v : w) v = dist(rng);
      for (float& v : x) v = dist(rng);
      auto bytes = QuantizeRow(type, w.data(), n);
      ASSERT_TRUE(bytes.ok());
      DequantizeRow(type, bytes->data(), n, deq.data());
      double ref = 0;
      for (int64_t i = 0; i < n; ++i) ref += static_cast<double>(deq[i]) * x[i];
      const float got = DotRow(type, bytes->data(), x.data(), n);
      EXPECT_NEAR(got, ref, 1e-4 * std::sqrt(static_cast<double>(n)) * 4) << TensorTypeName(type) << " n=" << n;
    }
  }
}

// Q5 types have no quantiser here: build blocks by hand and check the decoding rule.
TEST(QuantizedKernelsTest, Q5DecodingRule) {
  // Q5_0: d = 1.0 (f16 0x3c00), qh bit j is the 5th bit of value j.
  std::vector<uint8_t> block(22, 0);
  block[0] = 0x00;
  block[1] = 0x3c;
  const uint32_t qh = 0x00010001;  // value 0 and value 16 get the high bit
  std::memcpy(block.data() + 2, &qh, 4);
  block[6] = 0x21;  // value 0 low nibble 1, value 16 low nibble 2
  float out[32];
  DequantizeRow(TensorType::kQ5_0, block.data(), 32, out);
  EXPECT_FLOAT_EQ(out[0], (1 | 16) - 16);
  EXPECT_FLOAT_EQ(out[16], (2 | 16) - 16);
  EXPECT_FLOAT_EQ(out[1], -16);
  std::vector<float> x(32, 1.0f);
  float sum = 0;
  for (float v : out) sum += v;
  EXPECT_NEAR(DotRow(TensorType::kQ5_0, block.data(), x.data(), 32), sum, 1e-4);
}

}  // namespace
}  // namespace foresight::worker
