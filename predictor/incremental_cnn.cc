#include "predictor/incremental_cnn.h"

#include <omp.h>

#include <algorithm>

#include "predictor/cnn_kernels.h"

namespace foresight::predictor {
namespace {

using internal::CnnTile;
using internal::TileScratch;
constexpr int kC2 = kCnnChannels2;

// Scores from the per-channel sum over all 64 rows.
inline float Readout(const CnnWeights& w, const double* channel_sums) {
  double y = 0.0;
  for (int o = 0; o < kC2; ++o) y += w.conv3_weight[o] * (channel_sums[o] / kCnnRows);
  return static_cast<float>(y) + w.conv3_bias;
}

}  // namespace

IncrementalCnn::IncrementalCnn(std::shared_ptr<const CnnWeights> weights)
    : weights_(std::move(weights)) {}

void IncrementalCnn::FullTile(const HistoryImage& image, int64_t begin, int64_t end, float* out) {
  const CnnWeights& w = *weights_;
  const CnnTile tile(begin, end, image.columns);
  TileScratch scratch(tile);
  const int64_t P = tile.padded_width();
  const size_t block = static_cast<size_t>(kCnnChannels1) * tile.a1_stride();
  std::vector<float> a1(3 * block), row(kC2 * P), boundary(kC2 * P, 0.0f);
  std::vector<double> interior(kC2 * P, 0.0);
  float* ring[3] = {a1.data(), a1.data() + block, a1.data() + 2 * block};
  internal::Conv1Row(w, image, -1, tile, scratch, ring[0]);
  internal::Conv1Row(w, image, 0, tile, scratch, ring[1]);
  for (int h = 0; h < kCnnRows; ++h) {
    internal::Conv1Row(w, image, h + 1, tile, scratch, ring[2]);
    internal::Conv2Row(w, ring[0], ring[1], ring[2], tile, row.data());
    if (h >= 2 && h <= 61) {
      for (size_t i = 0; i < interior.size(); ++i) interior[i] += row[i];
    } else {
      for (size_t i = 0; i < boundary.size(); ++i) boundary[i] += row[i];
    }
    if (h == 2) {
      for (int64_t k = 0; k < tile.width(); ++k) {
        for (int o = 0; o < kC2; ++o) leaving_row_[(begin + k) * kC2 + o] = row[o * P + k];
      }
    }
    float* oldest = ring[0];
    ring[0] = ring[1];
    ring[1] = ring[2];
    ring[2] = oldest;
  }
  double sums[kC2];
  for (int64_t k = 0; k < tile.width(); ++k) {
    double* state = &interior_sum_[(begin + k) * kC2];
    for (int o = 0; o < kC2; ++o) {
      state[o] = interior[o * P + k];
      sums[o] = state[o] + boundary[o * P + k];
    }
    out[begin + k] = Readout(w, sums);
  }
}

void IncrementalCnn::IncrementalTile(const HistoryImage& image, int64_t begin, int64_t end,
                                     float* out) {
  const CnnWeights& w = *weights_;
  const CnnTile tile(begin, end, image.columns);
  TileScratch scratch(tile);
  const int64_t P = tile.padded_width();
  const size_t block = static_cast<size_t>(kCnnChannels1) * tile.a1_stride();
  // conv1 rows 0..3 and 60..63: all that conv2 rows 0, 1, 2 and 61, 62, 63 read.
  std::vector<float> a1(8 * block);
  auto a1_row = [&](int r) -> const float* {
    if (r < 0 || r >= kCnnRows) return scratch.zero.data();
    return a1.data() + (r < 4 ? r : r - 56) * block;
  };
  for (int r : {0, 1, 2, 3, 60, 61, 62, 63}) {
    internal::Conv1Row(w, image, r, tile, scratch, a1.data() + (r < 4 ? r : r - 56) * block);
  }
  std::vector<float> rows(6 * kC2 * P);
  const int conv2_rows[6] = {0, 1, 2, 61, 62, 63};
  for (int i = 0; i < 6; ++i) {
    const int h = conv2_rows[i];
    internal::Conv2Row(w, a1_row(h - 1), a1_row(h), a1_row(h + 1), tile, &rows[i * kC2 * P]);
  }
  auto at = [&](int i, int o, int64_t k) { return rows[(i * kC2 + o) * P + k]; };
  double sums[kC2];
  for (int64_t k = 0; k < tile.width(); ++k) {
    double* interior = &interior_sum_[(begin + k) * kC2];
    float* leaving = &leaving_row_[(begin + k) * kC2];
    for (int o = 0; o < kC2; ++o) {
      interior[o] = interior[o] - leaving[o] + at(3, o, k);
      leaving[o] = at(2, o, k);
      sums[o] = interior[o] + (static_cast<double>(at(0, o, k)) + at(1, o, k) + at(4, o, k) + at(5, o, k));
    }
    out[begin + k] = Readout(w, sums);
  }
}

void IncrementalCnn::Run(const HistoryImage& image, int64_t incremental_end, float* out,
                         int threads) {
  struct Work {
    int64_t begin, end;
    bool incremental;
  };
  std::vector<Work> work;
  for (int64_t c = 0; c < incremental_end; c += internal::kTileColumns) {
    work.push_back({c, std::min(incremental_end, c + internal::kTileColumns), true});
  }
  for (int64_t c = incremental_end; c < image.columns; c += internal::kTileColumns) {
    work.push_back({c, std::min(image.columns, c + internal::kTileColumns), false});
  }
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1)
  for (size_t i = 0; i < work.size(); ++i) {
    if (work[i].incremental) {
      IncrementalTile(image, work[i].begin, work[i].end, out);
    } else {
      FullTile(image, work[i].begin, work[i].end, out);
    }
  }
}

void IncrementalCnn::Reset(const HistoryImage& image, float* out, int threads) {
  columns_ = image.columns;
  interior_sum_.assign(columns_ * kC2, 0.0);
  leaving_row_.assign(columns_ * kC2, 0.0f);
  Run(image, 0, out, threads);
  initialized_ = true;
}

void IncrementalCnn::Advance(const HistoryImage& image, float* out, int threads) {
  if (!initialized_ || image.columns < columns_) {
    Reset(image, out, threads);
    return;
  }
  // Appended columns change conv2 in the last two old columns (their right neighbours were padding).
  const int64_t incremental_end =
      image.columns == columns_ ? columns_ : std::max<int64_t>(0, columns_ - 2);
  columns_ = image.columns;
  interior_sum_.resize(columns_ * kC2, 0.0);
  leaving_row_.resize(columns_ * kC2, 0.0f);
  Run(image, incremental_end, out, threads);
}

}  // namespace foresight::predictor
