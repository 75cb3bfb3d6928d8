#include "worker/quantized_kernels.h"

#include <gtest/gtest.h>
#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <random>

#include "worker/transformer_kernels.h"

namespace foresight::worker {
namespace {

// --- A reference written from the GGUF block layouts, sharing no code with worker/. ---
//
// Blocks of 32 values; multi-byte fields little-endian; f16 is IEEE half precision.
//   Q8_0: 34 bytes: f16 d, int8 q[32]                  x_j = d * q_j
//   Q4_0: 18 bytes: f16 d, u8 qs[16]                   x_j = d * ((qs[j] & 15) - 8), x_{j+16} = d * ((qs[j] >> 4) - 8)
//   Q4_1: 20 bytes: f16 d, f16 m, u8 qs[16]            x_j = d * (qs[j] & 15) + m,   x_{j+16} = d * (qs[j] >> 4) + m
//   Q5_0: 22 bytes: f16 d, u32 qh, u8 qs[16]           as Q4_0 with bit j of qh as 5th bit of value j, minus 16
//   Q5_1: 24 bytes: f16 d, f16 m, u32 qh, u8 qs[16]    as Q4_1 with that 5th bit
// F32, F16 and BF16 (the high half of an f32) are one value per 4 or 2 bytes.
namespace gguf {

// Half precision from its bits: sign, 5 exponent bits (bias 15), 10 fraction bits.
double Half(uint16_t h) {
  const int exponent = (h >> 10) & 31, fraction = h & 1023;
  double v = exponent == 0 ? std::ldexp(fraction, -24) : std::ldexp(1024 + fraction, exponent - 25);
  if (exponent == 31) v = fraction == 0 ? INFINITY : NAN;
  return (h >> 15) ? -v : v;
}

uint16_t U16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t U32(const uint8_t* p) { return p[0] | (p[1] << 8) | (p[2] << 16) | (static_cast<uint32_t>(p[3]) << 24); }

int BlockBytes(TensorType type) {
  switch (type) {
    case TensorType::kQ8_0:
      return 34;
    case TensorType::kQ4_0:
      return 18;
    case TensorType::kQ4_1:
      return 20;
    case TensorType::kQ5_0:
      return 22;
    case TensorType::kQ5_1:
      return 24;
    default:
      return 0;
  }
}

// One quantised block: value j = d * q[j] + m.
struct Block {
  double d = 0, m = 0;
  int q[32] = {};
};

Block DecodeBlock(TensorType type, const uint8_t* b) {
  Block out;
  out.d = Half(U16(b));
  switch (type) {
    case TensorType::kQ8_0:
      for (int j = 0; j < 32; ++j) out.q[j] = static_cast<int8_t>(b[2 + j]);
      break;
    case TensorType::kQ4_0:
      for (int j = 0; j < 16; ++j) {
        out.q[j] = (b[2 + j] & 15) - 8;
        out.q[j + 16] = (b[2 + j] >> 4) - 8;
      }
      break;
    case TensorType::kQ4_1:
      out.m = Half(U16(b + 2));
      for (int j = 0; j < 16; ++j) {
        out.q[j] = b[4 + j] & 15;
        out.q[j + 16] = b[4 + j] >> 4;
      }
      break;
    case TensorType::kQ5_0:
    case TensorType::kQ5_1: {
      const bool q5_1 = type == TensorType::kQ5_1;
      if (q5_1) out.m = Half(U16(b + 2));
      const uint32_t qh = U32(b + (q5_1 ? 4 : 2));
      const uint8_t* qs = b + (q5_1 ? 8 : 6);
      for (int j = 0; j < 16; ++j) {
        out.q[j] = ((qs[j] & 15) | (((qh >> j) & 1) << 4)) - (q5_1 ? 0 : 16);
        out.q[j + 16] = ((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - (q5_1 ? 0 : 16);
      }
      break;
    }
    default:
      ADD_FAILURE() << "no reference decoder for " << TensorTypeName(type);
  }
  return out;
}

// The row's values, exactly (every product and sum here fits a double's 53 bits for the scales used).
std::vector<double> Dequantize(TensorType type, const uint8_t* row, int64_t n) {
  std::vector<double> out(n);
  if (type == TensorType::kF32) {
    for (int64_t i = 0; i < n; ++i) {
      float f;
      std::memcpy(&f, row + 4 * i, 4);
      out[i] = f;
    }
  } else if (type == TensorType::kF16) {
    for (int64_t i = 0; i < n; ++i) out[i] = Half(U16(row + 2 * i));
  } else if (type == TensorType::kBF16) {
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t bits = static_cast<uint32_t>(U16(row + 2 * i)) << 16;
      float f;
      std::memcpy(&f, &bits, 4);
      out[i] = f;
    }
  } else {
    for (int64_t blk = 0; blk < n / 32; ++blk) {
      const Block b = DecodeBlock(type, row + blk * BlockBytes(type));
      for (int j = 0; j < 32; ++j) out[blk * 32 + j] = b.d * b.q[j] + b.m;
    }
  }
  return out;
}

// Random bits for a half that is a normal number of magnitude 2^-8 .. 2^8.
uint16_t RandomHalf(std::mt19937& rng) {
  const uint16_t sign = rng() & 1, exponent = 7 + rng() % 16, fraction = rng() & 1023;
  return static_cast<uint16_t>(sign << 15 | exponent << 10 | fraction);
}

// A row of random blocks: random scales (and mins) in range, random quantised values.
std::vector<uint8_t> RandomRow(TensorType type, int64_t n, std::mt19937& rng) {
  std::vector<uint8_t> row;
  if (type == TensorType::kF32) {
    std::normal_distribution<float> dist(0.0f, 1.0f);
    for (int64_t i = 0; i < n; ++i) {
      const float f = dist(rng);
      uint8_t b[4];
      std::memcpy(b, &f, 4);
      row.insert(row.end(), b, b + 4);
    }
    return row;
  }
  if (type == TensorType::kF16 || type == TensorType::kBF16) {
    for (int64_t i = 0; i < n; ++i) {
      // BF16: the high half of a float of magnitude 2^-8 .. 2^8 (exponent 119 .. 134).
      const uint16_t h = type == TensorType::kF16
                             ? RandomHalf(rng)
                             : static_cast<uint16_t>((rng() & 1) << 15 | (119 + rng() % 16) << 7 | (rng() & 127));
      row.push_back(h & 0xff);
      row.push_back(h >> 8);
    }
    return row;
  }
  const int bytes = BlockBytes(type);
  const bool with_min = type == TensorType::kQ4_1 || type == TensorType::kQ5_1;
  for (int64_t blk = 0; blk < n / 32; ++blk) {
    std::vector<uint8_t> b(bytes);
    for (auto& v : b) v = static_cast<uint8_t>(rng());
    const uint16_t d = RandomHalf(rng);
    b[0] = d & 0xff;
    b[1] = d >> 8;
    if (with_min) {
      const uint16_t m = RandomHalf(rng);
      b[2] = m & 0xff;
      b[3] = m >> 8;
    }
    row.insert(row.end(), b.begin(), b.end());
  }
  return row;
}

}  // namespace gguf

const TensorType kRowTypes[] = {TensorType::kF32,  TensorType::kF16,  TensorType::kBF16, TensorType::kQ8_0,
                                TensorType::kQ4_0, TensorType::kQ4_1, TensorType::kQ5_0, TensorType::kQ5_1};

// Every value the dequantiser produces is the layout's value, rounded once to float.
TEST(QuantizedKernelsTest, DequantiseMatchesTheGgufBlockLayout) {
  std::mt19937 rng(17);
  for (TensorType type : kRowTypes) {
    for (int64_t n : {32, 96, 1536}) {
      const std::vector<uint8_t> row = gguf::RandomRow(type, n, rng);
      ASSERT_EQ(row.size(), TensorTypeBytes(type, n)) << TensorTypeName(type);
      const std::vector<double> want = gguf::Dequantize(type, row.data(), n);
      std::vector<float> got(n);
      DequantizeRow(type, row.data(), n, got.data());
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(got[i], static_cast<float>(want[i])) << TensorTypeName(type) << " n=" << n << " value " << i;
      }
    }
  }
}

// The dot kernels against the layout reference: exact values, then a double-precision dot.
TEST(QuantizedKernelsTest, DotMatchesTheGgufLayoutReference) {
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (TensorType type : kRowTypes) {
    for (int64_t n : {32, 64, 576, 1536}) {
      const std::vector<uint8_t> row = gguf::RandomRow(type, n, rng);
      std::vector<float> x(n);
      for (float& v : x) v = dist(rng);
      const std::vector<double> w = gguf::Dequantize(type, row.data(), n);
      double ref = 0, magnitude = 0;
      for (int64_t i = 0; i < n; ++i) {
        ref += w[i] * x[i];
        magnitude += std::fabs(w[i] * x[i]);
      }
      const float got = DotRow(type, row.data(), x.data(), n);
      // Float accumulation over at most 32 products per block and 48 blocks: well under 2e-5 of the
      // sum of magnitudes.
      EXPECT_NEAR(got, ref, 2e-5 * magnitude + 1e-6) << TensorTypeName(type) << " n=" << n;
    }
  }
}

// The quantiser's output, read back through the layout reference: within a scale step of the input.
// Q8_0 and Q4_0 round x/d to the nearest step (Q4_0's clamp at +7 costs up to one step at the
// extreme opposite the block's largest magnitude); Q4_1 steps from the block minimum. Rounding d
// and m to half precision adds at most |q| * |d| * 2^-11 + |m| * 2^-11.
TEST(QuantizedKernelsTest, QuantiseRoundTripsThroughTheGgufLayoutWithinAStep) {
  std::mt19937 rng(23);
  std::normal_distribution<float> dist(0.0f, 2.0f);
  for (TensorType type : {TensorType::kF32, TensorType::kF16, TensorType::kBF16, TensorType::kQ8_0, TensorType::kQ4_0,
                          TensorType::kQ4_1}) {
    for (int64_t n : {32, 576}) {
      std::vector<float> w(n);
      for (float& v : w) v = dist(rng) + (type == TensorType::kQ4_1 ? 1.0f : 0.0f);
      auto bytes = QuantizeRow(type, w.data(), n);
      ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
      ASSERT_EQ(bytes->size(), TensorTypeBytes(type, n));
      const std::vector<double> back = gguf::Dequantize(type, bytes->data(), n);
      for (int64_t blk = 0; blk < n / 32; ++blk) {
        double amax = 0, lo = INFINITY, hi = -INFINITY;
        for (int j = 0; j < 32; ++j) {
          amax = std::max(amax, std::fabs(double(w[blk * 32 + j])));
          lo = std::min(lo, double(w[blk * 32 + j]));
          hi = std::max(hi, double(w[blk * 32 + j]));
        }
        double step = 0, slack = 0;
        switch (type) {
          case TensorType::kF32:
            break;
          case TensorType::kF16:
            slack = amax * std::ldexp(1.0, -11);
            break;
          case TensorType::kBF16:
            slack = amax * std::ldexp(1.0, -8);
            break;
          case TensorType::kQ8_0:
            step = 0.5 * amax / 127;
            slack = amax * std::ldexp(1.0, -11);
            break;
          case TensorType::kQ4_0:
            step = amax / 8;
            slack = 8 * (amax / 8) * std::ldexp(1.0, -11);
            break;
          case TensorType::kQ4_1:
            step = 0.5 * (hi - lo) / 15;
            slack = (hi - lo) * std::ldexp(1.0, -11) + std::fabs(lo) * std::ldexp(1.0, -11);
            break;
          default:
            break;
        }
        for (int j = 0; j < 32; ++j) {
          const int64_t i = blk * 32 + j;
          ASSERT_LE(std::fabs(back[i] - w[i]), step + slack + 1e-7)
              << TensorTypeName(type) << " n=" << n << " value " << i << ": " << w[i] << " came back as " << back[i];
        }
      }
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

uint16_t Half(float f) { return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }
float FromHalf(uint16_t h) { return _cvtsh_ss(h); }

// 8-bit activations: q = x * 127 / max|x| rounded half to even, d and d * sum(q) rounded to half.
TEST(QuantizedKernelsTest, ActivationQuantisationRule) {
  std::mt19937 rng(11);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  std::vector<float> x(96);
  for (float& v : x) v = dist(rng);
  for (int j = 32; j < 64; ++j) x[j] = 0.0f;  // an all-zero block
  x[70] = 0.5f * 127.0f / 127.0f;             // block 2: amax 127 gives id = 1, so 0.5 ties to 0
  x[71] = 1.5f;                               // ... and 1.5 ties to 2
  x[72] = 127.0f;
  x[73] = -2.5f;  // ... and -2.5 ties to -2
  for (int j = 74; j < 96; ++j) x[j] = std::round(x[j]);
  std::vector<Q8Activations> q(3);
  QuantizeActivations(x.data(), 96, q.data());
  for (int b = 0; b < 3; ++b) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
    const float id = amax == 0 ? 0.0f : 127.0f / amax;
    int32_t sum = 0;
    for (int j = 0; j < 32; ++j) {
      const int want = static_cast<int>(std::nearbyint(x[b * 32 + j] * id));
      ASSERT_EQ(q[b].q[j], want) << "block " << b << " value " << j;
      ASSERT_LE(std::abs(want), 127);
      sum += want;
    }
    EXPECT_EQ(q[b].sum, sum);
    EXPECT_EQ(q[b].d, FromHalf(Half(amax / 127.0f)));
    EXPECT_EQ(q[b].s, FromHalf(Half(amax / 127.0f * static_cast<float>(sum))));
  }
  EXPECT_EQ(q[2].q[6], 0);
  EXPECT_EQ(q[2].q[7], 2);
  EXPECT_EQ(q[2].q[9], -2);
  EXPECT_EQ(q[1].d, 0.0f);
  // The vector kernel against the rule on many blocks of many scales.
  std::vector<float> many(32 * 512);
  for (size_t i = 0; i < many.size(); ++i) many[i] = dist(rng) * std::ldexp(1.0f, static_cast<int>(i / 32 % 40) - 20);
  std::vector<Q8Activations> mq(512);
  QuantizeActivations(many.data(), static_cast<int64_t>(many.size()), mq.data());
  for (int b = 0; b < 512; ++b) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(many[b * 32 + j]));
    const float id = amax == 0 ? 0.0f : 127.0f / amax;
    int32_t sum = 0;
    for (int j = 0; j < 32; ++j) {
      const int want = static_cast<int>(std::nearbyint(many[b * 32 + j] * id));
      ASSERT_EQ(mq[b].q[j], want) << "block " << b << " value " << j;
      sum += want;
    }
    ASSERT_EQ(mq[b].sum, sum) << b;
    ASSERT_EQ(mq[b].d, FromHalf(Half(amax / 127.0f))) << b;
    ASSERT_EQ(mq[b].s, FromHalf(Half(amax / 127.0f * static_cast<float>(sum)))) << b;
  }
}

// A block of `type` with scale 1 (and min 0) holding the given integer weights.
std::vector<uint8_t> IntegerBlock(TensorType type, const int* w) {
  std::vector<uint8_t> blk(TensorTypeBytes(type, 32), 0);
  const uint16_t one = Half(1.0f);
  std::memcpy(blk.data(), &one, 2);
  if (type == TensorType::kQ8_0) {
    for (int j = 0; j < 32; ++j) blk[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(w[j]));
  } else {
    const int off = type == TensorType::kQ4_1 ? 4 : 2;  // Q4_1's min stays 0
    const int bias = type == TensorType::kQ4_0 ? 8 : 0;
    for (int j = 0; j < 16; ++j) blk[off + j] = static_cast<uint8_t>((w[j] + bias) | ((w[j + 16] + bias) << 4));
  }
  return blk;
}

// The integer part of the Q8 dot kernels, exactly: with unit scales and integer activations whose
// block maximum is 127 (so d = 1 and q = x), the result is the integer dot product.
TEST(QuantizedKernelsTest, IntegerDotsAreExact) {
  std::mt19937 rng(5);
  for (TensorType type : {TensorType::kQ8_0, TensorType::kQ4_0, TensorType::kQ4_1}) {
    const int lo = type == TensorType::kQ8_0 ? -127 : type == TensorType::kQ4_0 ? -8 : 0;
    const int hi = type == TensorType::kQ8_0 ? 127 : type == TensorType::kQ4_0 ? 7 : 15;
    std::uniform_int_distribution<int> wd(lo, hi), xd(-127, 127);
    for (int trial = 0; trial < 50; ++trial) {
      const int blocks = 1 + trial % 18;
      std::vector<uint8_t> row;
      std::vector<float> x(blocks * 32);
      int64_t want = 0;
      for (int b = 0; b < blocks; ++b) {
        int w[32];
        for (int j = 0; j < 32; ++j) {
          w[j] = trial == 0 ? hi : wd(rng);  // trial 0: the extreme products
          x[b * 32 + j] = static_cast<float>(trial == 0 ? (j % 2 ? 127 : -127) : xd(rng));
        }
        x[b * 32 + trial % 32] = (trial % 3 == 0) ? -127.0f : 127.0f;
        for (int j = 0; j < 32; ++j) want += static_cast<int64_t>(w[j]) * static_cast<int64_t>(x[b * 32 + j]);
        auto blk = IntegerBlock(type, w);
        row.insert(row.end(), blk.begin(), blk.end());
      }
      std::vector<Q8Activations> q(blocks);
      QuantizeActivations(x.data(), blocks * 32, q.data());
      for (int b = 0; b < blocks; ++b) ASSERT_EQ(q[b].d, 1.0f);
      EXPECT_EQ(DotRowQ8(type, row.data(), q.data(), blocks * 32), static_cast<float>(want))
          << TensorTypeName(type) << " trial " << trial;
    }
  }
}

// The float part: general scales against a double reference built from the integer block sums
// (weights read by the layout reference above),
// and the multi-row kernel bit-identical to the single-row one.
// The batched kernel (continuous batching: several sequences' activation rows against each
// weight block) gives each activation row exactly its single-row result, whatever the batch size.
TEST(QuantizedKernelsTest, BatchedQ8DotsEqualEachRowAlone) {
  std::mt19937 rng(21);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (TensorType type : {TensorType::kQ8_0, TensorType::kQ4_0, TensorType::kQ4_1}) {
    const int64_t n = 576, nb = n / 32, rows = 11;
    std::vector<uint8_t> mat;
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<float> w(n);
      for (float& v : w) v = dist(rng) + (type == TensorType::kQ4_1 ? 0.3f : 0.0f);
      auto bytes = QuantizeRow(type, w.data(), n);
      ASSERT_TRUE(bytes.ok());
      mat.insert(mat.end(), bytes->begin(), bytes->end());
    }
    const uint64_t row_bytes = TensorTypeBytes(type, n);
    for (int64_t m : {1, 2, 3, 5, 8}) {
      std::vector<float> x(m * n);
      for (float& v : x) v = dist(rng);
      std::vector<Q8Activations> q(m * nb);
      for (int64_t t = 0; t < m; ++t) QuantizeActivations(x.data() + t * n, n, q.data() + t * nb);
      std::vector<float> out(m * rows, -1.0f);
      DotRowsQ8Batch(type, mat.data(), row_bytes, rows, q.data(), nb, m, n, out.data(), rows);
      for (int64_t t = 0; t < m; ++t) {
        for (int64_t r = 0; r < rows; ++r) {
          EXPECT_EQ(out[t * rows + r], DotRowQ8(type, mat.data() + r * row_bytes, q.data() + t * nb, n))
              << TensorTypeName(type) << " batch " << m << " activation row " << t << " weight row " << r;
        }
      }
    }
  }
}

// The AVX-512 kernel over packed groups of 8 activation rows gives each row's bits alone.
TEST(QuantizedKernelsTest, PackedQ8DotsEqualEachRowAlone) {
  std::mt19937 rng(22);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (TensorType type : {TensorType::kQ8_0, TensorType::kQ4_1}) {
    if (!PackedQ8Supported(type)) GTEST_SKIP() << "no AVX-512 VNNI on this CPU (or FORESIGHT_NO_AVX512 is set)";
    const int64_t n = 1536, nb = n / 32, rows = 11;
    std::vector<uint8_t> mat;
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<float> w(n);
      for (float& v : w) v = dist(rng) * (r == 3 ? 1e-3f : 1.0f) + (type == TensorType::kQ4_1 ? 0.3f : 0.0f);
      auto bytes = QuantizeRow(type, w.data(), n);
      ASSERT_TRUE(bytes.ok());
      mat.insert(mat.end(), bytes->begin(), bytes->end());
    }
    const uint64_t row_bytes = TensorTypeBytes(type, n);
    for (int64_t m : {8, 16, 24}) {
      std::vector<float> x(m * n);
      for (float& v : x) v = dist(rng);
      for (int64_t i = 0; i < n; ++i) x[5 * n + i] = 0.0f;  // a zero row: d = 0
      std::vector<Q8Activations> q(m * nb);
      for (int64_t t = 0; t < m; ++t) QuantizeActivations(x.data() + t * n, n, q.data() + t * nb);
      PackedQ8Activations packed;
      ResizePackedQ8(m, nb, &packed);
      ASSERT_EQ(packed.groups * kPackedRows, m);
      for (int64_t g = 0; g < packed.groups; ++g) PackQ8Group(q.data(), nb, g, &packed);
      std::vector<float> out(m * rows, -1.0f);
      DotRowsQ8Packed(type, mat.data(), row_bytes, rows, packed, out.data(), rows);
      for (int64_t t = 0; t < m; ++t) {
        for (int64_t r = 0; r < rows; ++r) {
          const float want = DotRowQ8(type, mat.data() + r * row_bytes, q.data() + t * nb, n);
          ASSERT_EQ(std::memcmp(&out[t * rows + r], &want, 4), 0)
              << TensorTypeName(type) << " batch " << m << " activation row " << t << " weight row " << r << ": "
              << out[t * rows + r] << " against " << want;
        }
      }
    }
  }
}

TEST(QuantizedKernelsTest, Q8DotsMatchScalarReference) {
  std::mt19937 rng(9);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (TensorType type : {TensorType::kQ8_0, TensorType::kQ4_0, TensorType::kQ4_1}) {
    for (int64_t n : {32, 576, 1536}) {
      const int64_t rows = 9, nb = n / 32;
      std::vector<uint8_t> mat;
      for (int64_t r = 0; r < rows; ++r) {
        std::vector<float> w(n);
        for (float& v : w) v = dist(rng) + (type == TensorType::kQ4_1 ? 0.3f : 0.0f);
        auto bytes = QuantizeRow(type, w.data(), n);
        ASSERT_TRUE(bytes.ok());
        mat.insert(mat.end(), bytes->begin(), bytes->end());
      }
      const uint64_t row_bytes = TensorTypeBytes(type, n);
      std::vector<float> x(n);
      for (float& v : x) v = dist(rng);
      std::vector<Q8Activations> q(nb);
      QuantizeActivations(x.data(), n, q.data());
      std::vector<float> many(rows);
      DotRowsQ8(type, mat.data(), row_bytes, rows, q.data(), n, many.data());
      for (int64_t r = 0; r < rows; ++r) {
        const uint8_t* row = mat.data() + r * row_bytes;
        double ref = 0, scale = 0;
        for (int64_t b = 0; b < nb; ++b) {
          const gguf::Block wb = gguf::DecodeBlock(type, row + b * gguf::BlockBytes(type));
          int64_t isum = 0;  // integer weights times integer activations
          for (int j = 0; j < 32; ++j) isum += static_cast<int64_t>(wb.q[j]) * q[b].q[j];
          ref += wb.d * q[b].d * isum + wb.m * q[b].s;
          scale += std::fabs(wb.d * q[b].d * isum) + std::fabs(wb.m * q[b].s);
        }
        const float one = DotRowQ8(type, row, q.data(), n);
        EXPECT_NEAR(one, ref, 1e-6 * scale + 1e-6) << TensorTypeName(type) << " n=" << n << " row " << r;
        EXPECT_EQ(one, many[r]) << "multi-row kernel differs at row " << r;
      }
    }
  }
}

// The lane order of half dot products and of SumLanes, exactly (scalar fused multiply-adds).
TEST(TransformerKernelsTest, HalfDotAndLaneSumOrder) {
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  auto pairwise = [](const float* l) {
    float t[8];
    for (int j = 0; j < 8; ++j) t[j] = l[j] + l[j + 8];
    for (int j = 0; j < 4; ++j) t[j] += t[j + 4];
    for (int j = 0; j < 2; ++j) t[j] += t[j + 2];
    return t[0] + t[1];
  };
  for (int64_t n : {16, 64, 70, 128}) {
    std::vector<uint16_t> a(n);
    std::vector<float> b(n);
    for (auto& v : a) v = Half(dist(rng));
    for (auto& v : b) v = FromHalf(Half(dist(rng)));
    float lanes[16] = {};
    for (int64_t i = 0; i < n; ++i) lanes[i % 16] = std::fmaf(FromHalf(a[i]), b[i], lanes[i % 16]);
    EXPECT_EQ(DotHalf(a.data(), b.data(), n), pairwise(lanes)) << "n=" << n;
  }
  const int64_t n = 67;
  std::vector<float> l(16 * n), out(n);
  for (float& v : l) v = dist(rng);
  SumLanes(l.data(), n, out.data());
  for (int64_t i = 0; i < n; ++i) {
    float col[16];
    for (int j = 0; j < 16; ++j) col[j] = l[j * n + i];
    ASSERT_EQ(out[i], pairwise(col)) << i;
  }
}

// The block kernels give the per-position kernels' bits.
TEST(TransformerKernelsTest, BlockKernelsMatchPerPositionKernels) {
  std::mt19937 rng(8);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (int64_t n : {64, 72, 20}) {
    const std::vector<int32_t> counts = {16, 16, 5, 16, 9};  // sparse selections leave gaps
    std::vector<std::vector<uint16_t>> blocks;
    std::vector<const uint16_t*> ptrs;
    std::vector<float> probs;
    for (int32_t c : counts) {
      blocks.emplace_back(16 * n);
      for (auto& v : blocks.back()) v = Half(dist(rng));
      for (int32_t j = 0; j < c; ++j) probs.push_back(FromHalf(Half(std::fabs(dist(rng)) * 0.05f)));
    }
    for (auto& b : blocks) ptrs.push_back(b.data());
    std::vector<float> q(n);
    for (float& v : q) v = FromHalf(Half(dist(rng)));
    std::vector<float> want(16 * n, 0.0f), got(16 * n, 0.0f);
    size_t at = 0;
    for (size_t k = 0; k < counts.size(); ++k) {
      std::vector<float> scores(counts[k]);
      DotHalfRows(ptrs[k], counts[k], n, q.data(), 0.125f, scores.data());
      for (int32_t j = 0; j < counts[k]; ++j) {
        ASSERT_EQ(scores[j], DotHalf(ptrs[k] + j * n, q.data(), n) * 0.125f) << "n=" << n;
        AxpyHalf(probs[at++], ptrs[k] + j * n, want.data() + j * n, n);
      }
    }
    AccumulateHalfBlocks(probs.data(), ptrs.data(), counts.data(), static_cast<int64_t>(counts.size()), n, got.data());
    for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(got[i], want[i]) << "n=" << n << " at " << i;
  }
}

// Prefill's many-query kernels give each query's bits from the one-query kernels.
TEST(TransformerKernelsTest, ManyQueryKernelsMatchOneQueryKernels) {
  std::mt19937 rng(9);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (int64_t n : {64, 128, 72, 20}) {
    for (int64_t rows : {1, 3, 5, 6, 7, 12, 13}) {
      const int64_t n_blocks = 5;
      std::vector<std::vector<uint16_t>> blocks(n_blocks, std::vector<uint16_t>(16 * n));
      std::vector<const uint16_t*> ptrs;
      for (auto& b : blocks) {
        for (auto& v : b) v = Half(dist(rng));
        ptrs.push_back(b.data());
      }
      std::vector<std::vector<float>> q(rows, std::vector<float>(n)), probs(rows, std::vector<float>(16 * n_blocks));
      std::vector<std::vector<float>> got(rows, std::vector<float>(16)), lanes(rows, std::vector<float>(16 * n));
      std::vector<std::vector<float>> want_lanes = lanes;
      std::vector<const float*> qp, pp;
      std::vector<float*> gp, lp;
      for (int64_t r = 0; r < rows; ++r) {
        for (float& v : q[r]) v = FromHalf(Half(dist(rng)));
        for (float& v : probs[r]) v = FromHalf(Half(std::fabs(dist(rng)) * 0.05f));
        for (float& v : lanes[r]) v = dist(rng);  // accumulation goes on from what the lanes hold
        want_lanes[r] = lanes[r];
        qp.push_back(q[r].data());
        pp.push_back(probs[r].data());
        gp.push_back(got[r].data());
        lp.push_back(lanes[r].data());
      }
      const int32_t count = 11;
      DotHalfRowsQueries(ptrs[2], count, n, qp.data(), rows, 0.125f, gp.data());
      AccumulateHalfBlocksRows(pp.data(), lp.data(), rows, ptrs.data(), n_blocks, n);
      const std::vector<int32_t> counts(n_blocks, 16);
      for (int64_t r = 0; r < rows; ++r) {
        std::vector<float> want(count);
        DotHalfRows(ptrs[2], count, n, q[r].data(), 0.125f, want.data());
        for (int32_t i = 0; i < count; ++i)
          ASSERT_EQ(got[r][i], want[i]) << "n=" << n << " rows=" << rows << " r=" << r;
        AccumulateHalfBlocks(probs[r].data(), ptrs.data(), counts.data(), n_blocks, n, want_lanes[r].data());
        for (int64_t i = 0; i < 16 * n; ++i) {
          ASSERT_EQ(lanes[r][i], want_lanes[r][i]) << "n=" << n << " rows=" << rows << " r=" << r << " at " << i;
        }
      }
    }
  }
}

TEST(TransformerKernelsTest, ExpSoftmaxSwiGluRmsNorm) {
  for (float x = -103.0f; x < 88.0f; x += 0.173f) {
    const double want = std::exp(static_cast<double>(x));
    ASSERT_NEAR(ExpPoly(x), want, 2.5 * want * 1.2e-7 + 1e-44) << x;
  }
  EXPECT_EQ(ExpPoly(0.0f), 1.0f);
  EXPECT_EQ(ExpPoly(-200.0f), 0.0f);
  EXPECT_TRUE(std::isinf(ExpPoly(200.0f)));

  std::mt19937 rng(4);
  std::normal_distribution<float> dist(0.0f, 4.0f);
  for (int64_t n : {1, 15, 16, 37, 256}) {
    std::vector<float> x(n), y(n);
    for (float& v : x) v = dist(rng);
    y = x;
    Softmax(y.data(), n);
    const double m = *std::max_element(x.begin(), x.end());
    double z = 0;
    for (float v : x) z += std::exp(v - m);
    for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(y[i], std::exp(x[i] - m) / z, 1e-6) << n;
  }
  std::vector<float> g(1536 + 5), u(g.size()), r(g.size());
  for (size_t i = 0; i < g.size(); ++i) {
    g[i] = dist(rng);
    u[i] = dist(rng);
  }
  std::vector<float> out = g;
  SwiGlu(out.data(), u.data(), static_cast<int64_t>(g.size()));
  for (size_t i = 0; i < g.size(); ++i) {
    const double want = g[i] / (1.0 + std::exp(-static_cast<double>(g[i]))) * u[i];
    ASSERT_NEAR(out[i], want, 1e-6 * (1 + std::fabs(want))) << i;
  }
  RmsNorm(g.data(), u.data(), 576, 1e-5f, r.data());
  double ss = 0;
  for (int i = 0; i < 576; ++i) ss += static_cast<double>(g[i]) * g[i];
  const double scale = 1.0 / std::sqrt(ss / 576 + 1e-5);
  for (int i = 0; i < 576; ++i) ASSERT_NEAR(r[i], g[i] * scale * u[i], 1e-5 * (1 + std::fabs(g[i] * scale * u[i])));
}

}  // namespace
}  // namespace foresight::worker
