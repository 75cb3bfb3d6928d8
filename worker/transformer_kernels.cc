#include "worker/transformer_kernels.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "worker/cpu_features.h"

namespace foresight::worker {

namespace {

// Lanes 0-7 in lo, 8-15 in hi, summed in SumLanes' order: (j, j+8), then (j, j+4), (j, j+2), (0, 1).
inline float SumLanes16(__m256 lo, __m256 hi) {
  const __m256 t8 = _mm256_add_ps(lo, hi);
  __m128 t4 = _mm_add_ps(_mm256_castps256_ps128(t8), _mm256_extractf128_ps(t8, 1));
  t4 = _mm_add_ps(t4, _mm_movehl_ps(t4, t4));
  t4 = _mm_add_ss(t4, _mm_movehdup_ps(t4));
  return _mm_cvtss_f32(t4);
}

// j * 2^n for integral n in [-192, 192], rounded once (a result below the normal range rounds to a
// subnormal or zero, above it to infinity).
inline __m256 ScaleByPowerOfTwo(__m256 j, __m256 n) {
  const __m256 n1 = _mm256_min_ps(_mm256_max_ps(n, _mm256_set1_ps(-126.0f)), _mm256_set1_ps(127.0f));
  const __m256 n2 = _mm256_sub_ps(n, n1);  // in [-66, 65]
  auto pow2 = [](__m256 e) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(e), _mm256_set1_epi32(127)), 23));
  };
  return _mm256_mul_ps(_mm256_mul_ps(j, pow2(n1)), pow2(n2));  // the first product is exact
}

// exp(x): x = n ln2 + b with n = round(x / ln2) (ln2 in two parts), exp(b) by a degree-5
// polynomial evaluated as 1 + b (c1 + ...), then scaled by 2^n. |n| > 192 gives 0 or infinity.
inline __m256 ExpPoly8(__m256 x) {
  const __m256 shift = _mm256_set1_ps(0x1.8p23f);
  const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), shift);
  const __m256 n = _mm256_sub_ps(z, shift);
  const __m256 b =
      _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f), _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
  const __m256 u = _mm256_mul_ps(b, b);
  const __m256 hi = _mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f));
  const __m256 mid = _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f));
  const __m256 lo = _mm256_fmadd_ps(_mm256_set1_ps(0x1.ffffecp-1f), b, _mm256_set1_ps(1.0f));
  const __m256 poly = _mm256_fmadd_ps(_mm256_fmadd_ps(hi, u, mid), u, lo);
  const __m256 abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), n);
  const __m256 far = _mm256_cmp_ps(abs_n, _mm256_set1_ps(192.0f), _CMP_GT_OQ);
  const __m256 in_range_n = _mm256_blendv_ps(n, _mm256_setzero_ps(), far);
  const __m256 res = ScaleByPowerOfTwo(poly, in_range_n);
  if (_mm256_movemask_ps(far) == 0) return res;
  const __m256 positive = _mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_GT_OQ);
  const __m256 alt = _mm256_and_ps(positive, _mm256_set1_ps(INFINITY));
  return _mm256_blendv_ps(res, alt, far);
}

}  // namespace

float ExpPoly(float x) { return _mm256_cvtss_f32(ExpPoly8(_mm256_set1_ps(x))); }

void RmsNorm(const float* x, const float* weight, int64_t n, float eps, float* out) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float sq = x[i] * x[i];  // squared in float, summed in double
    ss += static_cast<double>(sq);
  }
  const float mean = static_cast<float>(ss / static_cast<double>(n));
  const float scale = 1.0f / std::sqrt(mean + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = (x[i] * scale) * weight[i];
}

Rope::Rope(const ModelConfig& c)
    : head_dim_(c.head_dim),
      style_(c.rope_style),
      theta_scale_(std::pow(c.rope_theta, -2.0f / static_cast<float>(c.head_dim))),
      freq_factors_(c.rope_freq_factors) {
  if (freq_factors_.empty()) freq_factors_.assign(head_dim_ / 2, 1.0f);
}

void Rope::Apply(float* heads, int32_t n_heads, int64_t position) const {
  const int half = head_dim_ / 2;
  float cs[256], sn[256];
  float theta = static_cast<float>(position);
  for (int i = 0; i < half; ++i) {
    const float angle = theta / freq_factors_[i];
    cs[i] = std::cos(angle);
    sn[i] = std::sin(angle);
    theta *= theta_scale_;
  }
  for (int32_t h = 0; h < n_heads; ++h) {
    float* x = heads + static_cast<int64_t>(h) * head_dim_;
    for (int i = 0; i < half; ++i) {
      const int a = style_ == RopeStyle::kInterleaved ? 2 * i : i;
      const int b = style_ == RopeStyle::kInterleaved ? 2 * i + 1 : i + half;
      const float x0 = x[a], x1 = x[b];
      // Fused as llama.cpp's build fuses them (x0's product is the fused one): the last bit matters.
      x[a] = std::fma(x0, cs[i], -(x1 * sn[i]));
      x[b] = std::fma(x0, sn[i], x1 * cs[i]);
    }
  }
}

void SwiGlu(float* gate, const float* up, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {  // whole groups of 16 as in the reference (lanes are independent)
    for (int64_t h = i; h < i + 16; h += 8) {
      const __m256 x = _mm256_loadu_ps(gate + h);
      const __m256 e = ExpPoly8(_mm256_sub_ps(_mm256_setzero_ps(), x));
      const __m256 silu = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
      _mm256_storeu_ps(gate + h, _mm256_mul_ps(silu, _mm256_loadu_ps(up + h)));
    }
  }
  for (; i < n; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

namespace {

// max(x[0..n)) as the scalar loop m = std::max(m, x[i]) finds it (a NaN is skipped: max_ps returns
// its second operand), in 32 lanes: the serial scalar chain cost more than the exponentials.
inline float MaxOf(const float* x, int64_t n) {
  __m256 m[4];
  for (__m256& v : m) v = _mm256_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) m[j] = _mm256_max_ps(_mm256_loadu_ps(x + i + 8 * j), m[j]);
  }
  for (; i + 8 <= n; i += 8) m[0] = _mm256_max_ps(_mm256_loadu_ps(x + i), m[0]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_max_ps(_mm256_max_ps(m[0], m[1]), _mm256_max_ps(m[2], m[3])));
  float r = -INFINITY;
  for (float v : lanes) r = std::max(r, v);
  for (; i < n; ++i) r = std::max(r, x[i]);
  return r;
}

}  // namespace

void Softmax(float* x, int64_t n) {
  if (n <= 0) return;
  const float m = MaxOf(x, n);
  const __m256 mv = _mm256_set1_ps(m);
  double sum = 0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 lo = ExpPoly8(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv));
    const __m256 hi = ExpPoly8(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), mv));
    _mm256_storeu_ps(x + i, lo);
    _mm256_storeu_ps(x + i + 8, hi);
    sum += static_cast<double>(SumLanes16(lo, hi));
  }
  if (i < n) {  // a partial group: the missing values are masked positions, exp = 0
    alignas(32) float buf[16];
    const int64_t rest = n - i;
    for (int j = 0; j < 16; ++j) buf[j] = j < rest ? x[i + j] : -INFINITY;
    __m256 lo = ExpPoly8(_mm256_sub_ps(_mm256_load_ps(buf), mv));
    __m256 hi = ExpPoly8(_mm256_sub_ps(_mm256_load_ps(buf + 8), mv));
    _mm256_store_ps(buf, lo);
    _mm256_store_ps(buf + 8, hi);
    for (int j = rest; j < 16; ++j) buf[j] = 0.0f;
    sum += static_cast<double>(SumLanes16(_mm256_load_ps(buf), _mm256_load_ps(buf + 8)));
    for (int64_t j = 0; j < rest; ++j) x[i + j] = buf[j];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t j = 0; j < n; ++j) x[j] *= inv;
}

void SoftmaxPooled16(const float* x, int64_t n, float* block_max, float* block_sum) {
  if (n <= 0) return;
  __m256 mv = _mm256_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(x + i));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, mv);
  float m = -INFINITY;
  for (float v : lanes) m = std::max(m, v);
  for (; i < n; ++i) m = std::max(m, x[i]);
  const __m256 shift = _mm256_set1_ps(m);
  const int64_t blocks = (n + 15) / 16;
  double total = 0;
  alignas(32) float buf[16];
  for (int64_t b = 0; b < blocks; ++b) {
    const float* p = x + b * 16;
    if (b * 16 + 16 > n) {  // a partial block: the missing values are padding, exp = 0
      const int64_t rest = n - b * 16;
      for (int j = 0; j < 16; ++j) buf[j] = j < rest ? p[j] : -INFINITY;
      p = buf;
    }
    const __m256 lo = ExpPoly8(_mm256_sub_ps(_mm256_loadu_ps(p), shift));
    const __m256 hi = ExpPoly8(_mm256_sub_ps(_mm256_loadu_ps(p + 8), shift));
    __m128 mx =
        _mm_max_ps(_mm256_castps256_ps128(_mm256_max_ps(lo, hi)), _mm256_extractf128_ps(_mm256_max_ps(lo, hi), 1));
    mx = _mm_max_ps(mx, _mm_movehl_ps(mx, mx));
    mx = _mm_max_ss(mx, _mm_movehdup_ps(mx));
    const float sum = SumLanes16(lo, hi);
    block_max[b] = _mm_cvtss_f32(mx);
    block_sum[b] = sum;
    total += sum;
  }
  const float inv = static_cast<float>(1.0 / total);
  for (int64_t b = 0; b < blocks; ++b) {
    block_max[b] *= inv;
    block_sum[b] *= inv;
  }
}

float Dot(const float* a, const float* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  acc0 = _mm256_add_ps(acc0, acc1);
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc0), _mm256_extractf128_ps(acc0, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  float r = _mm_cvtss_f32(s);
  for (; i < n; ++i) r += a[i] * b[i];
  return r;
}

void Axpy(float a, const float* x, float* y, int64_t n) {
  const __m256 av = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += a * x[i];
}

float DotHalf(const uint16_t* a, const float* b, int64_t n) {
  __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    lo = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i))),
                         _mm256_loadu_ps(b + i), lo);
    hi = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i + 8))),
                         _mm256_loadu_ps(b + i + 8), hi);
  }
  if (i < n) {  // a partial group of 16: the missing elements are zero
    alignas(32) float pa[16] = {}, pb[16] = {};
    for (int64_t j = 0; i + j < n; ++j) {
      pa[j] = _cvtsh_ss(a[i + j]);
      pb[j] = b[i + j];
    }
    lo = _mm256_fmadd_ps(_mm256_load_ps(pa), _mm256_load_ps(pb), lo);
    hi = _mm256_fmadd_ps(_mm256_load_ps(pa + 8), _mm256_load_ps(pb + 8), hi);
  }
  return SumLanes16(lo, hi);
}

void DotHalfRows(const uint16_t* rows, int64_t count, int64_t n, const float* b, float scale, float* out) {
  if (n % 16 != 0) {
    for (int64_t i = 0; i < count; ++i) out[i] = DotHalf(rows + i * n, b, n) * scale;
    return;
  }
  for (int64_t i = 0; i < count; ++i) {
    const uint16_t* a = rows + i * n;
    __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
    for (int64_t k = 0; k < n; k += 16) {
      lo = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + k))),
                           _mm256_loadu_ps(b + k), lo);
      hi = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + k + 8))),
                           _mm256_loadu_ps(b + k + 8), hi);
    }
    out[i] = SumLanes16(lo, hi) * scale;
  }
}

void AccumulateHalfBlocks(const float* probs, const uint16_t* const* values, const int32_t* counts, int64_t n_blocks,
                          int64_t n, float* lanes) {
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) {
    for (int half = 0; half < 2; ++half) {
      const int first = half * 8;
      __m256 acc[8];
      for (int j = 0; j < 8; ++j) acc[j] = _mm256_loadu_ps(lanes + (first + j) * n + c);
      const float* p = probs;
      for (int64_t k = 0; k < n_blocks; ++k) {
        const uint16_t* v = values[k] + c;
        const int live = std::min(8, counts[k] - first);
        if (live == 8) {
          for (int j = 0; j < 8; ++j) {
            const __m256 row = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v + (first + j) * n)));
            acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(p[first + j]), row, acc[j]);
          }
        } else {
          for (int j = 0; j < live; ++j) {
            const __m256 row = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v + (first + j) * n)));
            acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(p[first + j]), row, acc[j]);
          }
        }
        p += counts[k];
      }
      for (int j = 0; j < 8; ++j) _mm256_storeu_ps(lanes + (first + j) * n + c, acc[j]);
    }
  }
  if (c < n) {  // dimensions past the last multiple of 8
    const float* p = probs;
    for (int64_t k = 0; k < n_blocks; ++k) {
      for (int32_t j = 0; j < counts[k]; ++j) {
        for (int64_t i = c; i < n; ++i)
          lanes[j * n + i] = std::fma(p[j], _cvtsh_ss(values[k][j * n + i]), lanes[j * n + i]);
      }
      p += counts[k];
    }
  }
}

namespace {

inline __m256 LoadHalf8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// Q queries against each key row, the key converted once; n % 16 == 0.
template <int Q>
void DotHalfRowsTile(const uint16_t* rows, int64_t count, int64_t n, const float* const* queries, float scale,
                     float* const* out) {
  const float* qs[Q];
#pragma GCC unroll 8
  for (int j = 0; j < Q; ++j) qs[j] = queries[j];
  for (int64_t i = 0; i < count; ++i) {
    const uint16_t* a = rows + i * n;
    __m256 lo[Q], hi[Q];
#pragma GCC unroll 8
    for (int j = 0; j < Q; ++j) lo[j] = hi[j] = _mm256_setzero_ps();
    for (int64_t k = 0; k < n; k += 16) {
      const __m256 alo = LoadHalf8(a + k), ahi = LoadHalf8(a + k + 8);
#pragma GCC unroll 8
      for (int j = 0; j < Q; ++j) {
        lo[j] = _mm256_fmadd_ps(alo, _mm256_loadu_ps(qs[j] + k), lo[j]);
        hi[j] = _mm256_fmadd_ps(ahi, _mm256_loadu_ps(qs[j] + k + 8), hi[j]);
      }
    }
#pragma GCC unroll 8
    for (int j = 0; j < Q; ++j) out[j][i] = SumLanes16(lo[j], hi[j]) * scale;
  }
}

// R probability rows over full blocks, two lanes at a time, each value row converted once; n % 8 == 0.
template <int R>
void AccumulateRowsTile(const float* const* probs, float* const* lanes, const uint16_t* const* values, int64_t n_blocks,
                        int64_t n) {
  for (int64_t c = 0; c < n; c += 8) {
    for (int first = 0; first < kAttentionLanes; first += 2) {
      __m256 acc[R][2];
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        acc[r][0] = _mm256_loadu_ps(lanes[r] + first * n + c);
        acc[r][1] = _mm256_loadu_ps(lanes[r] + (first + 1) * n + c);
      }
      for (int64_t k = 0; k < n_blocks; ++k) {
        const uint16_t* v = values[k] + first * n + c;
        const __m256 v0 = LoadHalf8(v), v1 = LoadHalf8(v + n);
        const int64_t at = k * kAttentionLanes + first;
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          acc[r][0] = _mm256_fmadd_ps(_mm256_set1_ps(probs[r][at]), v0, acc[r][0]);
          acc[r][1] = _mm256_fmadd_ps(_mm256_set1_ps(probs[r][at + 1]), v1, acc[r][1]);
        }
      }
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        _mm256_storeu_ps(lanes[r] + first * n + c, acc[r][0]);
        _mm256_storeu_ps(lanes[r] + (first + 1) * n + c, acc[r][1]);
      }
    }
  }
}

#define FORESIGHT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))

// GCC 12's AVX-512 headers start some intrinsics from an "undefined" register and then warn about it.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// 4 keys (already float) x 4 queries, one 512-bit accumulator per (key, query): lane j holds
// DotHalf's lane j. The 16 sums are folded together in SumLanes16's order (lanes j + 8, then j + 4,
// j + 2, then 0 + 1); dot 4 * key + query ends in lane 4 * query + key, so each query's 4 scores are
// one 128-bit store. Keys past `keys` and queries past `queries` repeat the last one, unstored.
FORESIGHT_AVX512 void DotRows4x4(const float* keys_f32, int keys, int64_t n, const float* const* q, int queries,
                                 float scale, float* const* out, int64_t at) {
  const float* a[4];
  const float* b[4];
  for (int k = 0; k < 4; ++k) a[k] = keys_f32 + std::min(k, keys - 1) * n;
  for (int j = 0; j < 4; ++j) b[j] = q[std::min(j, queries - 1)];
  __m512 acc[16];
#pragma GCC unroll 16
  for (int d = 0; d < 16; ++d) acc[d] = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    __m512 kv[4], qv[4];
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      kv[k] = _mm512_loadu_ps(a[k] + i);
      qv[k] = _mm512_loadu_ps(b[k] + i);
    }
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) acc[4 * k + j] = _mm512_fmadd_ps(kv[k], qv[j], acc[4 * k + j]);
    }
  }
  __m512 c[8], d4[4], e[2];
#pragma GCC unroll 8
  for (int m = 0; m < 8; ++m) {  // lanes j + 8: [t8 of dot 2m | t8 of dot 2m + 1]
    c[m] = _mm512_add_ps(_mm512_shuffle_f32x4(acc[2 * m], acc[2 * m + 1], 0x44),
                         _mm512_shuffle_f32x4(acc[2 * m], acc[2 * m + 1], 0xee));
  }
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k) {  // lanes j + 4: 128-bit lane l holds dot 4k + l
    d4[k] = _mm512_add_ps(_mm512_shuffle_f32x4(c[2 * k], c[2 * k + 1], 0x88),
                          _mm512_shuffle_f32x4(c[2 * k], c[2 * k + 1], 0xdd));
  }
#pragma GCC unroll 2
  for (int j = 0; j < 2; ++j) {  // lanes j + 2: 128-bit lane l holds dots 8j + l and 8j + 4 + l
    e[j] = _mm512_add_ps(_mm512_shuffle_ps(d4[2 * j], d4[2 * j + 1], 0x44),
                         _mm512_shuffle_ps(d4[2 * j], d4[2 * j + 1], 0xee));
  }
  // lanes 0 + 1: 128-bit lane l holds dots l, 4 + l, 8 + l, 12 + l
  const __m512 r = _mm512_mul_ps(
      _mm512_add_ps(_mm512_shuffle_ps(e[0], e[1], 0x88), _mm512_shuffle_ps(e[0], e[1], 0xdd)), _mm512_set1_ps(scale));
  const __mmask8 live = static_cast<__mmask8>((1u << keys) - 1);
  _mm_mask_storeu_ps(out[0] + at, live, _mm512_castps512_ps128(r));
  if (queries > 1) _mm_mask_storeu_ps(out[1] + at, live, _mm512_extractf32x4_ps(r, 1));
  if (queries > 2) _mm_mask_storeu_ps(out[2] + at, live, _mm512_extractf32x4_ps(r, 2));
  if (queries > 3) _mm_mask_storeu_ps(out[3] + at, live, _mm512_extractf32x4_ps(r, 3));
}

// Up to 16 keys at a time are converted to float once (the 4 x 4 tiles read each key once per 4
// queries); n % 16 == 0 and n <= kMaxDims512.
constexpr int64_t kMaxDims512 = 256;
FORESIGHT_AVX512 void DotHalfRowsQueries512(const uint16_t* rows, int64_t count, int64_t n, const float* const* queries,
                                            int64_t n_queries, float scale, float* const* out) {
  alignas(64) float keys[16 * kMaxDims512];
  for (int64_t i0 = 0; i0 < count; i0 += 16) {
    const int64_t kc = std::min<int64_t>(16, count - i0);
    for (int64_t i = 0; i < kc * n; i += 16) {
      _mm512_store_ps(keys + i,
                      _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows + i0 * n + i))));
    }
    for (int64_t j = 0; j < n_queries; j += 4) {
      const int nq = static_cast<int>(std::min<int64_t>(4, n_queries - j));
      for (int64_t i = 0; i < kc; i += 4) {
        DotRows4x4(keys + i * n, static_cast<int>(std::min<int64_t>(4, kc - i)), n, queries + j, nq, scale, out + j,
                   i0 + i);
      }
    }
  }
}

// AccumulateRowsTile with 16 dimensions per register: R rows x 2 lanes.
template <int R>
FORESIGHT_AVX512 void AccumulateRowsTile512(const float* const* probs, float* const* lanes,
                                            const uint16_t* const* values, int64_t n_blocks, int64_t n) {
  for (int64_t c = 0; c < n; c += 16) {
    for (int first = 0; first < kAttentionLanes; first += 2) {
      __m512 acc[R][2];
#pragma GCC unroll 12
      for (int r = 0; r < R; ++r) {
        acc[r][0] = _mm512_loadu_ps(lanes[r] + first * n + c);
        acc[r][1] = _mm512_loadu_ps(lanes[r] + (first + 1) * n + c);
      }
      for (int64_t k = 0; k < n_blocks; ++k) {
        const uint16_t* v = values[k] + first * n + c;
        if (k + 4 < n_blocks) _mm_prefetch(reinterpret_cast<const char*>(values[k + 4] + first * n + c), _MM_HINT_T0);
        const __m512 v0 = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v)));
        const __m512 v1 = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + n)));
        const int64_t at = k * kAttentionLanes + first;
#pragma GCC unroll 12
        for (int r = 0; r < R; ++r) {
          acc[r][0] = _mm512_fmadd_ps(_mm512_set1_ps(probs[r][at]), v0, acc[r][0]);
          acc[r][1] = _mm512_fmadd_ps(_mm512_set1_ps(probs[r][at + 1]), v1, acc[r][1]);
        }
      }
#pragma GCC unroll 12
      for (int r = 0; r < R; ++r) {
        _mm512_storeu_ps(lanes[r] + first * n + c, acc[r][0]);
        _mm512_storeu_ps(lanes[r] + (first + 1) * n + c, acc[r][1]);
      }
    }
  }
}

#pragma GCC diagnostic pop

using AccumulateRowsFn = void (*)(const float* const*, float* const*, const uint16_t* const*, int64_t, int64_t);
constexpr int kMaxRows512 = 12;
constexpr AccumulateRowsFn kAccumulateRows512[kMaxRows512 + 1] = {
    nullptr,
    AccumulateRowsTile512<1>,
    AccumulateRowsTile512<2>,
    AccumulateRowsTile512<3>,
    AccumulateRowsTile512<4>,
    AccumulateRowsTile512<5>,
    AccumulateRowsTile512<6>,
    AccumulateRowsTile512<7>,
    AccumulateRowsTile512<8>,
    AccumulateRowsTile512<9>,
    AccumulateRowsTile512<10>,
    AccumulateRowsTile512<11>,
    AccumulateRowsTile512<12>,
};

}  // namespace

void DotHalfRowsQueries(const uint16_t* rows, int64_t count, int64_t n, const float* const* queries, int64_t n_queries,
                        float scale, float* const* out) {
  if (n % 16 != 0) {
    for (int64_t j = 0; j < n_queries; ++j) DotHalfRows(rows, count, n, queries[j], scale, out[j]);
    return;
  }
  if (n <= kMaxDims512 && UseAvx512()) {
    DotHalfRowsQueries512(rows, count, n, queries, n_queries, scale, out);
    return;
  }
  for (int64_t j = 0; j < n_queries; j += kMaxQueryRows) {
    switch (std::min<int64_t>(kMaxQueryRows, n_queries - j)) {
      case 1:
        DotHalfRowsTile<1>(rows, count, n, queries + j, scale, out + j);
        break;
      case 2:
        DotHalfRowsTile<2>(rows, count, n, queries + j, scale, out + j);
        break;
      case 3:
        DotHalfRowsTile<3>(rows, count, n, queries + j, scale, out + j);
        break;
      case 4:
        DotHalfRowsTile<4>(rows, count, n, queries + j, scale, out + j);
        break;
      case 5:
        DotHalfRowsTile<5>(rows, count, n, queries + j, scale, out + j);
        break;
      default:
        DotHalfRowsTile<6>(rows, count, n, queries + j, scale, out + j);
        break;
    }
  }
}

void AccumulateHalfBlocksRows(const float* const* probs, float* const* lanes, int64_t n_rows,
                              const uint16_t* const* values, int64_t n_blocks, int64_t n) {
  if (n % 8 != 0) {
    const std::vector<int32_t> counts(static_cast<size_t>(n_blocks), kAttentionLanes);
    for (int64_t r = 0; r < n_rows; ++r) AccumulateHalfBlocks(probs[r], values, counts.data(), n_blocks, n, lanes[r]);
    return;
  }
  if (n % 16 == 0 && UseAvx512()) {
    for (int64_t r = 0; r < n_rows; r += kMaxRows512) {
      kAccumulateRows512[std::min<int64_t>(kMaxRows512, n_rows - r)](probs + r, lanes + r, values, n_blocks, n);
    }
    return;
  }
  for (int64_t r = 0; r < n_rows; r += kMaxQueryRows) {
    switch (std::min<int64_t>(kMaxQueryRows, n_rows - r)) {
      case 1:
        AccumulateRowsTile<1>(probs + r, lanes + r, values, n_blocks, n);
        break;
      case 2:
        AccumulateRowsTile<2>(probs + r, lanes + r, values, n_blocks, n);
        break;
      case 3:
        AccumulateRowsTile<3>(probs + r, lanes + r, values, n_blocks, n);
        break;
      case 4:
        AccumulateRowsTile<4>(probs + r, lanes + r, values, n_blocks, n);
        break;
      case 5:
        AccumulateRowsTile<5>(probs + r, lanes + r, values, n_blocks, n);
        break;
      default:
        AccumulateRowsTile<6>(probs + r, lanes + r, values, n_blocks, n);
        break;
    }
  }
}

void SumLanes(const float* lanes, int64_t n, float* out) {
  auto at = [&](int lane, int64_t i) { return _mm256_loadu_ps(lanes + lane * n + i); };
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 t[8];
    for (int j = 0; j < 8; ++j) t[j] = _mm256_add_ps(at(j, i), at(j + 8, i));
    for (int j = 0; j < 4; ++j) t[j] = _mm256_add_ps(t[j], t[j + 4]);
    for (int j = 0; j < 2; ++j) t[j] = _mm256_add_ps(t[j], t[j + 2]);
    _mm256_storeu_ps(out + i, _mm256_add_ps(t[0], t[1]));
  }
  for (; i < n; ++i) {
    float t[8];
    for (int j = 0; j < 8; ++j) t[j] = lanes[j * n + i] + lanes[(j + 8) * n + i];
    for (int j = 0; j < 4; ++j) t[j] += t[j + 4];
    for (int j = 0; j < 2; ++j) t[j] += t[j + 2];
    out[i] = t[0] + t[1];
  }
}

void AxpyHalf(float a, const uint16_t* x, float* y, int64_t n) {
  const __m256 av = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 xv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i)));
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, xv, _mm256_loadu_ps(y + i)));
  }
  for (; i < n; ++i) y[i] += a * _cvtsh_ss(x[i]);
}

void FloatToHalfRow(const float* x, int64_t n, uint16_t* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  }
  for (; i < n; ++i) out[i] = _cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT);
}

void HalfToFloatRow(const uint16_t* x, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i))));
  }
  for (; i < n; ++i) out[i] = _cvtsh_ss(x[i]);
}

void RoundToHalf(float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(x + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT)));
  }
  for (; i < n; ++i) x[i] = _cvtsh_ss(_cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT));
}

}  // namespace foresight::worker
