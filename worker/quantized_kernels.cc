#include "worker/quantized_kernels.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/half.h"
#include "worker/cpu_features.h"

namespace foresight::worker {
namespace {

constexpr int kQK = 32;  // values per block of the 32-wide quantised types

inline float LoadHalf(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);  // F16C: the same value as HalfToFloat, without branches
}

inline uint16_t FloatToHalf(float f) { return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }

inline uint16_t FloatToBFloat16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);  // NaN
  bits += 0x7fff + ((bits >> 16) & 1);                                                        // round to nearest even
  return static_cast<uint16_t>(bits >> 16);
}

inline float HorizontalSum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

// 8 unsigned bytes -> 8 floats.
inline __m256 U8ToFloat(__m128i bytes) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes)); }
inline __m256 I8ToFloat(__m128i bytes) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes)); }

// sum over 32 values: lo nibbles pair with x[0..16), hi nibbles with x[16..32). `bias` is
// subtracted from each nibble (8 for Q4_0, 0 for Q4_1).
inline __m256 NibbleDot(const uint8_t* qs, const float* x, __m256 bias) {
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i mask = _mm_set1_epi8(0x0f);
  const __m128i lo = _mm_and_si128(packed, mask);
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(packed, 4), mask);
  __m256 s = _mm256_mul_ps(_mm256_sub_ps(U8ToFloat(lo), bias), _mm256_loadu_ps(x));
  s = _mm256_fmadd_ps(_mm256_sub_ps(U8ToFloat(_mm_srli_si128(lo, 8)), bias), _mm256_loadu_ps(x + 8), s);
  s = _mm256_fmadd_ps(_mm256_sub_ps(U8ToFloat(hi), bias), _mm256_loadu_ps(x + 16), s);
  s = _mm256_fmadd_ps(_mm256_sub_ps(U8ToFloat(_mm_srli_si128(hi, 8)), bias), _mm256_loadu_ps(x + 24), s);
  return s;
}

inline __m256 Sum32(const float* x) {
  __m256 s = _mm256_add_ps(_mm256_loadu_ps(x), _mm256_loadu_ps(x + 8));
  return _mm256_add_ps(s, _mm256_add_ps(_mm256_loadu_ps(x + 16), _mm256_loadu_ps(x + 24)));
}

float DotF32(const float* w, const float* x, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
  }
  float s = HorizontalSum(_mm256_add_ps(a0, a1));
  for (; i < n; ++i) s += w[i] * x[i];
  return s;
}

float DotF16(const uint8_t* w, const float* x, int64_t n) {
  const uint16_t* h = reinterpret_cast<const uint16_t*>(w);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 wv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i)));
    acc = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + i), acc);
  }
  float s = HorizontalSum(acc);
  for (; i < n; ++i) s += HalfToFloat(h[i]) * x[i];
  return s;
}

float DotBF16(const uint8_t* w, const float* x, int64_t n) {
  const uint16_t* h = reinterpret_cast<const uint16_t*>(w);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256i wide =
        _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))), 16);
    acc = _mm256_fmadd_ps(_mm256_castsi256_ps(wide), _mm256_loadu_ps(x + i), acc);
  }
  float s = HorizontalSum(acc);
  for (; i < n; ++i) s += BFloat16ToFloat(h[i]) * x[i];
  return s;
}

float DotQ8_0(const uint8_t* w, const float* x, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < n / kQK; ++b, w += 34, x += kQK) {
    const uint8_t* qs = w + 2;
    __m128i q0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
    __m128i q1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs + 16));
    __m256 s = _mm256_mul_ps(I8ToFloat(q0), _mm256_loadu_ps(x));
    s = _mm256_fmadd_ps(I8ToFloat(_mm_srli_si128(q0, 8)), _mm256_loadu_ps(x + 8), s);
    s = _mm256_fmadd_ps(I8ToFloat(q1), _mm256_loadu_ps(x + 16), s);
    s = _mm256_fmadd_ps(I8ToFloat(_mm_srli_si128(q1, 8)), _mm256_loadu_ps(x + 24), s);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(LoadHalf(w)), s, acc);
  }
  return HorizontalSum(acc);
}

float DotQ4_0(const uint8_t* w, const float* x, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  const __m256 bias = _mm256_set1_ps(8.0f);
  for (int64_t b = 0; b < n / kQK; ++b, w += 18, x += kQK) {
    acc = _mm256_fmadd_ps(_mm256_set1_ps(LoadHalf(w)), NibbleDot(w + 2, x, bias), acc);
  }
  return HorizontalSum(acc);
}

float DotQ4_1(const uint8_t* w, const float* x, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t b = 0; b < n / kQK; ++b, w += 20, x += kQK) {
    acc = _mm256_fmadd_ps(_mm256_set1_ps(LoadHalf(w)), NibbleDot(w + 4, x, zero), acc);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(LoadHalf(w + 2)), Sum32(x), acc);
  }
  return HorizontalSum(acc);
}

void DequantQ5(const uint8_t* w, int64_t n, float* dst, bool with_min) {
  const int bytes = with_min ? 24 : 22;
  for (int64_t b = 0; b < n / kQK; ++b, w += bytes, dst += kQK) {
    const float d = LoadHalf(w);
    const float m = with_min ? LoadHalf(w + 2) : 0.0f;
    const uint8_t* p = w + (with_min ? 4 : 2);
    uint32_t qh;
    std::memcpy(&qh, p, 4);
    const uint8_t* qs = p + 4;
    const int offset = with_min ? 0 : 16;
    for (int j = 0; j < 16; ++j) {
      const int h0 = ((qh >> j) << 4) & 0x10;
      const int h1 = (qh >> (j + 12)) & 0x10;
      dst[j] = static_cast<float>(((qs[j] & 0x0f) | h0) - offset) * d + m;
      dst[j + 16] = static_cast<float>(((qs[j] >> 4) | h1) - offset) * d + m;
    }
  }
}

float DotByDequant(TensorType type, const uint8_t* w, const float* x, int64_t n) {
  float buf[256];
  float s = 0;
  const int64_t bytes_per_256 = TensorTypeBytes(type, 256);
  for (int64_t i = 0; i < n; i += 256, w += bytes_per_256) {
    const int64_t len = std::min<int64_t>(256, n - i);
    DequantizeRow(type, w, len, buf);
    s += DotF32(buf, x + i, len);
  }
  return s;
}

inline float HalfRound(float f) { return _cvtsh_ss(FloatToHalf(f)); }

inline int32_t HorizontalSumI32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

// 32 unsigned (<128) x 32 signed bytes -> 8 int32 partial sums.
inline __m256i DotU8S8(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

inline __m256i UnpackNibbles(const uint8_t* qs) {
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i mask = _mm_set1_epi8(0x0f);
  const __m128i lo = _mm_and_si128(packed, mask);
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(packed, 4), mask);
  return _mm256_set_m128i(hi, lo);
}

}  // namespace

bool UsesQ8Activations(TensorType type) {
  return type == TensorType::kQ4_0 || type == TensorType::kQ4_1 || type == TensorType::kQ8_0;
}

void QuantizeActivations(const float* x, int64_t n, Q8Activations* out) {
  // Vector form of: amax = max |x[j]| (std::max order: a NaN is skipped, as max_ps does with the
  // running max second); q[j] = nearbyint(x[j] * id) (cvtps rounds half to even); sum(q).
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (int64_t b = 0; b < n / kQK; ++b, x += kQK) {
    __m256 xv[4];
    __m256 m = _mm256_setzero_ps();
    for (int j = 0; j < 4; ++j) {
      xv[j] = _mm256_loadu_ps(x + 8 * j);
      m = _mm256_max_ps(_mm256_andnot_ps(sign, xv[j]), m);
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    const float d = amax / 127.0f;
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    const __m256 idv = _mm256_set1_ps(id);
    __m256i qi[4];
    for (int j = 0; j < 4; ++j) qi[j] = _mm256_cvtps_epi32(_mm256_mul_ps(xv[j], idv));
    __m256i sums = _mm256_add_epi32(_mm256_add_epi32(qi[0], qi[1]), _mm256_add_epi32(qi[2], qi[3]));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
    const int32_t sum = _mm_cvtsi128_si32(s4);
    // |q| <= 127: the saturating packs keep every value; the permute undoes their lane order.
    const __m256i q16 = _mm256_packs_epi32(qi[0], qi[1]), q16b = _mm256_packs_epi32(qi[2], qi[3]);
    const __m256i q8 =
        _mm256_permutevar8x32_epi32(_mm256_packs_epi16(q16, q16b), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[b].q), q8);
    out[b].d = HalfRound(d);
    out[b].s = HalfRound(d * static_cast<float>(sum));
    out[b].sum = sum;
  }
}

void RoundActivationsToQ8(float* x, int64_t n) {
  Q8Activations blocks[8];
  for (int64_t at = 0; at < n; at += 8 * kQK) {
    const int64_t len = std::min<int64_t>(8 * kQK, n - at);
    QuantizeActivations(x + at, len, blocks);
    for (int64_t i = 0; i < len; ++i) x[at + i] = blocks[i / kQK].d * blocks[i / kQK].q[i % kQK];
  }
}

namespace {

// Weight rows are streamed from memory once per token: prefetching the rows this far ahead (the
// next group of the caller's consecutive rows) measured faster than the hardware prefetcher alone.
constexpr int kPrefetchRows = 8;

// R weight rows against T activation rows (x + t * x_stride blocks), out[t * out_stride + r].
// Each (row, activation) sum is taken in the single-row order (a vector accumulator over blocks,
// then its horizontal sum, plus the scalar min terms), so the result does not depend on T: a
// sequence's products are the same bits alone and batched. A weight block is loaded and unpacked
// once for the T activation rows.
template <int R, int T>
void DotTileQ8(TensorType type, const uint8_t* w, uint64_t row_bytes, const Q8Activations* x, int64_t x_stride,
               int64_t n, float* out, int64_t out_stride) {
  __m256 acc[R][T];
  float extra[R][T];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      acc[r][t] = _mm256_setzero_ps();
      extra[r][t] = 0.0f;
    }
  }
  const int64_t nb = n / kQK;
  if (type == TensorType::kQ8_0) {
    for (int64_t b = 0; b < nb; ++b) {
      __m256i qx[T];
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) qx[t] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[t * x_stride + b].q));
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const uint8_t* blk = w + r * row_bytes + b * 34;
        _mm_prefetch(reinterpret_cast<const char*>(blk + kPrefetchRows * row_bytes), _MM_HINT_T0);
        const __m256i qw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
        const __m256i aw = _mm256_sign_epi8(qw, qw);
        const float dw = LoadHalf(blk);
#pragma GCC unroll 4
        for (int t = 0; t < T; ++t) {
          const __m256i dot = DotU8S8(aw, _mm256_sign_epi8(qx[t], qw));
          acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * x[t * x_stride + b].d), _mm256_cvtepi32_ps(dot), acc[r][t]);
        }
      }
    }
  } else if (type == TensorType::kQ4_1) {
    for (int64_t b = 0; b < nb; ++b) {
      __m256i qx[T];
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) qx[t] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[t * x_stride + b].q));
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const uint8_t* blk = w + r * row_bytes + b * 20;
        _mm_prefetch(reinterpret_cast<const char*>(blk + kPrefetchRows * row_bytes), _MM_HINT_T0);
        const __m256i qw = UnpackNibbles(blk + 4);
        const float dw = LoadHalf(blk), mw = LoadHalf(blk + 2);
#pragma GCC unroll 4
        for (int t = 0; t < T; ++t) {
          const Q8Activations& xb = x[t * x_stride + b];
          const __m256i dot = DotU8S8(qw, qx[t]);
          acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * xb.d), _mm256_cvtepi32_ps(dot), acc[r][t]);
          extra[r][t] += mw * xb.s;
        }
      }
    }
  } else {  // Q4_0: sum (q - 8) * qx = sum q * qx - 8 * sum qx
    for (int64_t b = 0; b < nb; ++b) {
      __m256i qx[T];
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) qx[t] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[t * x_stride + b].q));
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const uint8_t* blk = w + r * row_bytes + b * 18;
        _mm_prefetch(reinterpret_cast<const char*>(blk + kPrefetchRows * row_bytes), _MM_HINT_T0);
        const __m256i qw = UnpackNibbles(blk + 2);
        const float dw = LoadHalf(blk);
#pragma GCC unroll 4
        for (int t = 0; t < T; ++t) {
          const Q8Activations& xb = x[t * x_stride + b];
          const int32_t dot = HorizontalSumI32(DotU8S8(qw, qx[t])) - 8 * xb.sum;
          extra[r][t] += dw * xb.d * static_cast<float>(dot);
        }
      }
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) out[t * out_stride + r] = HorizontalSum(acc[r][t]) + extra[r][t];
  }
}

}  // namespace

float DotRowQ8(TensorType type, const uint8_t* w, const Q8Activations* x, int64_t n) {
  float out;
  DotTileQ8<1, 1>(type, w, 0, x, 0, n, &out, 0);
  return out;
}

void DotRowsQ8(TensorType type, const uint8_t* rows, uint64_t row_bytes, int64_t count, const Q8Activations* x,
               int64_t n, float* out) {
  DotRowsQ8Batch(type, rows, row_bytes, count, x, 0, 1, n, out, 0);
}

void DotRowsQ8Batch(TensorType type, const uint8_t* rows, uint64_t row_bytes, int64_t count, const Q8Activations* x,
                    int64_t x_stride, int64_t m, int64_t n, float* out, int64_t out_stride) {
  int64_t t = 0;
  for (; t + 2 <= m; t += 2) {
    const Q8Activations* xt = x + t * x_stride;
    float* ot = out + t * out_stride;
    int64_t r = 0;
    for (; r + 4 <= count; r += 4)
      DotTileQ8<4, 2>(type, rows + r * row_bytes, row_bytes, xt, x_stride, n, ot + r, out_stride);
    for (; r < count; ++r) DotTileQ8<1, 2>(type, rows + r * row_bytes, row_bytes, xt, x_stride, n, ot + r, out_stride);
  }
  for (; t < m; ++t) {
    const Q8Activations* xt = x + t * x_stride;
    float* ot = out + t * out_stride;
    int64_t r = 0;
    for (; r + 4 <= count; r += 4)
      DotTileQ8<4, 1>(type, rows + r * row_bytes, row_bytes, xt, x_stride, n, ot + r, out_stride);
    for (; r < count; ++r) DotTileQ8<1, 1>(type, rows + r * row_bytes, row_bytes, xt, x_stride, n, ot + r, out_stride);
  }
}

namespace {

#define FORESIGHT_AVX512_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

// R weight rows against a packed group of 8 activation rows: DotTileQ8<R, 8>'s arithmetic lane for
// lane (the 8 int32 block sums of a row are one half of a 512-bit register; VNNI's dpbusd gives the
// same sums as maddubs + madd, which cannot saturate here: |w| <= 128, |x| <= 127), the scales
// d_w * d_x and Q4_1's min term computed as single products and FMAs in block order, as there.
// GCC 12's AVX-512 headers start some intrinsics from an "undefined" register and then warn about it.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
template <int R>
FORESIGHT_AVX512_VNNI void DotTileQ8Packed(TensorType type, const uint8_t* w, uint64_t row_bytes, const int8_t* q,
                                           const float* d, const float* s, int64_t nb, float* out, int64_t out_stride) {
  __m512 acc[R][4];
  __m256 extra[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    extra[r] = _mm256_setzero_ps();
#pragma GCC unroll 4
    for (int p = 0; p < 4; ++p) acc[r][p] = _mm512_setzero_ps();
  }
  const __m512i zero = _mm512_setzero_si512();
  if (type == TensorType::kQ8_0) {
    for (int64_t b = 0; b < nb; ++b) {
      const int8_t* qb = q + b * 4 * 64;
      const float* db = d + b * 4 * 16;
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const uint8_t* blk = w + r * row_bytes + b * 34;
        _mm_prefetch(reinterpret_cast<const char*>(blk + kPrefetchRows * row_bytes), _MM_HINT_T0);
        const __m512i qw = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2)));
        const __m512i aw = _mm512_abs_epi8(qw);
        const __mmask64 negative = _mm512_movepi8_mask(qw);
        const __m512 dw = _mm512_set1_ps(LoadHalf(blk));
#pragma GCC unroll 4
        for (int p = 0; p < 4; ++p) {
          const __m512i qx = _mm512_loadu_si512(qb + p * 64);
          const __m512i sx = _mm512_mask_sub_epi8(qx, negative, zero, qx);  // sign(x, w); x where w = 0 meets aw = 0
          const __m512i dot = _mm512_dpbusd_epi32(zero, aw, sx);
          acc[r][p] =
              _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_loadu_ps(db + p * 16)), _mm512_cvtepi32_ps(dot), acc[r][p]);
        }
      }
    }
  } else {  // Q4_1
    for (int64_t b = 0; b < nb; ++b) {
      const int8_t* qb = q + b * 4 * 64;
      const float* db = d + b * 4 * 16;
      const __m256 sb = _mm256_loadu_ps(s + b * 8);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const uint8_t* blk = w + r * row_bytes + b * 20;
        _mm_prefetch(reinterpret_cast<const char*>(blk + kPrefetchRows * row_bytes), _MM_HINT_T0);
        const __m512i qw = _mm512_broadcast_i64x4(UnpackNibbles(blk + 4));
        const __m512 dw = _mm512_set1_ps(LoadHalf(blk));
        const float mw = LoadHalf(blk + 2);
#pragma GCC unroll 4
        for (int p = 0; p < 4; ++p) {
          const __m512i dot = _mm512_dpbusd_epi32(zero, qw, _mm512_loadu_si512(qb + p * 64));
          acc[r][p] =
              _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_loadu_ps(db + p * 16)), _mm512_cvtepi32_ps(dot), acc[r][p]);
        }
        extra[r] = _mm256_fmadd_ps(_mm256_set1_ps(mw), sb, extra[r]);
      }
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    alignas(32) float e[8];
    _mm256_store_ps(e, extra[r]);
#pragma GCC unroll 4
    for (int p = 0; p < 4; ++p) {
      out[(2 * p) * out_stride + r] = HorizontalSum(_mm512_castps512_ps256(acc[r][p])) + e[2 * p];
      out[(2 * p + 1) * out_stride + r] = HorizontalSum(_mm512_extractf32x8_ps(acc[r][p], 1)) + e[2 * p + 1];
    }
  }
}

#pragma GCC diagnostic pop

}  // namespace

bool PackedQ8Supported(TensorType type) {
  return (type == TensorType::kQ8_0 || type == TensorType::kQ4_1) && UseAvx512();
}

void ResizePackedQ8(int64_t m, int64_t nb, PackedQ8Activations* out) {
  out->groups = m / kPackedRows;
  out->blocks = nb;
  const size_t per_group = static_cast<size_t>(nb);
  if (out->q.size() < out->groups * per_group * 4 * 64) out->q.resize(out->groups * per_group * 4 * 64);
  if (out->d.size() < out->groups * per_group * 4 * 16) out->d.resize(out->groups * per_group * 4 * 16);
  if (out->s.size() < out->groups * per_group * 8) out->s.resize(out->groups * per_group * 8);
}

void PackQ8Group(const Q8Activations* x, int64_t x_stride, int64_t g, PackedQ8Activations* out) {
  const int64_t nb = out->blocks;
  int8_t* q = out->q.data() + g * nb * 4 * 64;
  float* d = out->d.data() + g * nb * 4 * 16;
  float* s = out->s.data() + g * nb * 8;
  for (int64_t b = 0; b < nb; ++b) {
    for (int t = 0; t < kPackedRows; ++t) {
      const Q8Activations& xb = x[(g * kPackedRows + t) * x_stride + b];
      std::memcpy(q + (b * 4 + t / 2) * 64 + (t % 2) * 32, xb.q, 32);
      std::fill_n(d + (b * 4 + t / 2) * 16 + (t % 2) * 8, 8, xb.d);
      s[b * 8 + t] = xb.s;
    }
  }
}

void DotRowsQ8Packed(TensorType type, const uint8_t* rows, uint64_t row_bytes, int64_t count,
                     const PackedQ8Activations& x, float* out, int64_t out_stride) {
  const int64_t nb = x.blocks;
  for (int64_t g = 0; g < x.groups; ++g) {
    const int8_t* q = x.q.data() + g * nb * 4 * 64;
    const float* d = x.d.data() + g * nb * 4 * 16;
    const float* s = x.s.data() + g * nb * 8;
    float* og = out + g * kPackedRows * out_stride;
    int64_t r = 0;
    for (; r + 4 <= count; r += 4)
      DotTileQ8Packed<4>(type, rows + r * row_bytes, row_bytes, q, d, s, nb, og + r, out_stride);
    for (; r < count; ++r) DotTileQ8Packed<1>(type, rows + r * row_bytes, row_bytes, q, d, s, nb, og + r, out_stride);
  }
}

bool KernelSupports(TensorType type) {
  switch (type) {
    case TensorType::kF32:
    case TensorType::kF16:
    case TensorType::kBF16:
    case TensorType::kQ8_0:
    case TensorType::kQ4_0:
    case TensorType::kQ4_1:
    case TensorType::kQ5_0:
    case TensorType::kQ5_1:
      return true;
    default:
      return false;
  }
}

void DequantizeRow(TensorType type, const uint8_t* src, int64_t n, float* dst) {
  switch (type) {
    case TensorType::kF32:
      std::memcpy(dst, src, n * 4);
      return;
    case TensorType::kF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = LoadHalf(src + 2 * i);
      return;
    case TensorType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = BFloat16ToFloat(h);
      }
      return;
    case TensorType::kQ8_0:
      for (int64_t b = 0; b < n / kQK; ++b, src += 34) {
        const float d = LoadHalf(src);
        for (int j = 0; j < kQK; ++j) dst[b * kQK + j] = d * static_cast<int8_t>(src[2 + j]);
      }
      return;
    case TensorType::kQ4_0:
      for (int64_t b = 0; b < n / kQK; ++b, src += 18) {
        const float d = LoadHalf(src);
        for (int j = 0; j < 16; ++j) {
          dst[b * kQK + j] = d * ((src[2 + j] & 0x0f) - 8);
          dst[b * kQK + j + 16] = d * ((src[2 + j] >> 4) - 8);
        }
      }
      return;
    case TensorType::kQ4_1:
      for (int64_t b = 0; b < n / kQK; ++b, src += 20) {
        const float d = LoadHalf(src), m = LoadHalf(src + 2);
        for (int j = 0; j < 16; ++j) {
          dst[b * kQK + j] = d * (src[4 + j] & 0x0f) + m;
          dst[b * kQK + j + 16] = d * (src[4 + j] >> 4) + m;
        }
      }
      return;
    case TensorType::kQ5_0:
      DequantQ5(src, n, dst, false);
      return;
    case TensorType::kQ5_1:
      DequantQ5(src, n, dst, true);
      return;
    default:
      std::fill(dst, dst + n, std::nanf(""));
  }
}

float DotRow(TensorType type, const uint8_t* row, const float* x, int64_t n) {
  switch (type) {
    case TensorType::kF32:
      return DotF32(reinterpret_cast<const float*>(row), x, n);
    case TensorType::kF16:
      return DotF16(row, x, n);
    case TensorType::kBF16:
      return DotBF16(row, x, n);
    case TensorType::kQ8_0:
      return DotQ8_0(row, x, n);
    case TensorType::kQ4_0:
      return DotQ4_0(row, x, n);
    case TensorType::kQ4_1:
      return DotQ4_1(row, x, n);
    default:
      return DotByDequant(type, row, x, n);
  }
}

StatusOr<std::vector<uint8_t>> QuantizeRow(TensorType type, const float* src, int64_t n) {
  std::vector<uint8_t> out(TensorTypeBytes(type, n));
  uint8_t* p = out.data();
  auto put_half = [](uint8_t* at, float f) {
    uint16_t h = FloatToHalf(f);
    std::memcpy(at, &h, 2);
  };
  switch (type) {
    case TensorType::kF32:
      std::memcpy(p, src, n * 4);
      return out;
    case TensorType::kF16:
      for (int64_t i = 0; i < n; ++i) put_half(p + 2 * i, src[i]);
      return out;
    case TensorType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h = FloatToBFloat16(src[i]);
        std::memcpy(p + 2 * i, &h, 2);
      }
      return out;
    default:
      break;
  }
  if (n % kQK != 0) return InvalidArgument("row length " + std::to_string(n) + " is not a multiple of 32");
  for (int64_t b = 0; b < n / kQK; ++b) {
    const float* x = src + b * kQK;
    if (type == TensorType::kQ8_0) {
      float amax = 0;
      for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
      const float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
      put_half(p, d);
      for (int j = 0; j < kQK; ++j) p[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::lround(x[j] * id)));
      p += 34;
    } else if (type == TensorType::kQ4_0) {
      float amax = 0, extreme = 0;
      for (int j = 0; j < kQK; ++j) {
        if (std::fabs(x[j]) > amax) {
          amax = std::fabs(x[j]);
          extreme = x[j];
        }
      }
      const float d = extreme / -8.0f, id = d != 0 ? 1.0f / d : 0.0f;
      put_half(p, d);
      for (int j = 0; j < 16; ++j) {
        const int q0 = std::clamp(static_cast<int>(std::floor(x[j] * id + 8.5f)), 0, 15);
        const int q1 = std::clamp(static_cast<int>(std::floor(x[j + 16] * id + 8.5f)), 0, 15);
        p[2 + j] = static_cast<uint8_t>(q0 | (q1 << 4));
      }
      p += 18;
    } else if (type == TensorType::kQ4_1) {
      float lo = x[0], hi = x[0];
      for (int j = 1; j < kQK; ++j) {
        lo = std::min(lo, x[j]);
        hi = std::max(hi, x[j]);
      }
      const float d = (hi - lo) / 15.0f, id = d != 0 ? 1.0f / d : 0.0f;
      put_half(p, d);
      put_half(p + 2, lo);
      for (int j = 0; j < 16; ++j) {
        const int q0 = std::clamp(static_cast<int>(std::floor((x[j] - lo) * id + 0.5f)), 0, 15);
        const int q1 = std::clamp(static_cast<int>(std::floor((x[j + 16] - lo) * id + 0.5f)), 0, 15);
        p[4 + j] = static_cast<uint8_t>(q0 | (q1 << 4));
      }
      p += 20;
    } else {
      return Unimplemented(std::string("quantising to ") + TensorTypeName(type) + " is not supported");
    }
  }
  return out;
}

}  // namespace foresight::worker
