#include "predictor/cnn_kernels.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

namespace foresight::predictor::internal {

CnnTile::CnnTile(int64_t begin, int64_t end, int64_t columns) : begin(begin), end(end), columns(columns) {
  padded_width_ = (end - begin + 15) / 16 * 16;
}

void TileScratch::Prepare(const CnnTile& tile) {
  const size_t x_size = 3 * tile.x_stride(), zero_size = kCnnChannels1 * tile.a1_stride();
  if (x.size() < x_size) x.resize(x_size);
  if (zero.size() < zero_size) zero.assign(zero_size, 0.0f);
}

TileScratch& ThreadScratch() {
  thread_local TileScratch scratch;
  return scratch;
}

void Conv1Row(const CnnWeights& w, const HistoryImage& image, int row, const CnnTile& tile, TileScratch& scratch,
              float* a1) {
  const int64_t A = tile.a1_stride(), X = tile.x_stride();
  if (row < 0 || row >= kCnnRows) {
    std::memset(a1, 0, sizeof(float) * kCnnChannels1 * A);
    return;
  }
  // Input columns begin-2 .. begin-2+X, zero outside the image and for padding rows.
  const int64_t x0 = tile.begin - 2;
  for (int dy = 0; dy < 3; ++dy) {
    float* dst = &scratch.x[dy * X];
    const int r = row + dy - 1;
    if (r < 0 || r >= kCnnRows) {
      std::memset(dst, 0, sizeof(float) * X);
      continue;
    }
    const float* src = image.rows[r];
    const int64_t lo = std::clamp<int64_t>(-x0, 0, X);
    const int64_t hi = std::clamp<int64_t>(image.columns - x0, lo, X);
    std::memset(dst, 0, sizeof(float) * lo);
    if (hi > lo) std::memcpy(dst + lo, src + x0 + lo, sizeof(float) * (hi - lo));
    std::memset(dst + hi, 0, sizeof(float) * (X - hi));
  }
  const float* xs = scratch.x.data();
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t j = 0; j < A; j += 8) {
    __m256 v[9];
    for (int dy = 0; dy < 3; ++dy) {
      for (int dx = 0; dx < 3; ++dx) v[dy * 3 + dx] = _mm256_loadu_ps(xs + dy * X + j + dx);
    }
    for (int i = 0; i < kCnnChannels1; ++i) {
      __m256 acc = _mm256_set1_ps(w.conv1_bias[i]);
      for (int k = 0; k < 9; ++k) acc = _mm256_fmadd_ps(_mm256_set1_ps(w.conv1_weight[i][k]), v[k], acc);
      _mm256_storeu_ps(a1 + i * A + j, _mm256_max_ps(acc, zero));
    }
  }
  // conv1 outputs outside the image are conv2's zero padding, not relu(bias).
  const int64_t first_valid = std::clamp<int64_t>(1 - tile.begin, 0, A);  // global col 0
  const int64_t end_valid = std::clamp<int64_t>(tile.columns - tile.begin + 1, first_valid, A);
  for (int i = 0; i < kCnnChannels1; ++i) {
    float* r = a1 + i * A;
    std::fill(r, r + first_valid, 0.0f);
    std::fill(r + end_valid, r + A, 0.0f);
  }
}

void Conv2Row(const CnnWeights& w, const float* a1_above, const float* a1_row, const float* a1_below,
              const CnnTile& tile, float* out) {
  const int64_t A = tile.a1_stride(), P = tile.padded_width();
  const float* rows[3] = {a1_above, a1_row, a1_below};
  const __m256 zero = _mm256_setzero_ps();
  // The 8 accumulators must live in registers. GCC at -O2 keeps them in a stack array (load, FMA,
  // store per multiply-add) unless the small loops over them are unrolled, which made this loop
  // several times slower (docs/perf-notes.md, session 6); the unrolling changes no lane's order of
  // fused multiply-adds, so no bits.
  for (int64_t k = 0; k < P; k += 16) {
    for (int o = 0; o < kCnnChannels2; o += 4) {
      __m256 acc[4][2];
#pragma GCC unroll 4
      for (int u = 0; u < 4; ++u) acc[u][0] = acc[u][1] = _mm256_set1_ps(w.conv2_bias[o + u]);
      for (int i = 0; i < kCnnChannels1; ++i) {
        for (int dy = 0; dy < 3; ++dy) {
          const float* a = rows[dy] + i * A + k;
#pragma GCC unroll 3
          for (int dx = 0; dx < 3; ++dx) {
            const __m256 v0 = _mm256_loadu_ps(a + dx);
            const __m256 v1 = _mm256_loadu_ps(a + dx + 8);
            const int widx = i * 9 + dy * 3 + dx;
#pragma GCC unroll 4
            for (int u = 0; u < 4; ++u) {
              const __m256 wv = _mm256_broadcast_ss(&w.conv2_weight[o + u][widx]);
              acc[u][0] = _mm256_fmadd_ps(wv, v0, acc[u][0]);
              acc[u][1] = _mm256_fmadd_ps(wv, v1, acc[u][1]);
            }
          }
        }
      }
#pragma GCC unroll 4
      for (int u = 0; u < 4; ++u) {
        _mm256_storeu_ps(out + (o + u) * P + k, _mm256_max_ps(acc[u][0], zero));
        _mm256_storeu_ps(out + (o + u) * P + k + 8, _mm256_max_ps(acc[u][1], zero));
      }
    }
  }
}

}  // namespace foresight::predictor::internal
