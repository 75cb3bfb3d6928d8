#include "predictor/incremental_cnn.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "predictor/cnn_kernels.h"

namespace foresight::predictor {
namespace {

using internal::CnnTile;
using internal::TileScratch;
constexpr int kC2 = kCnnChannels2;

}  // namespace

IncrementalCnn::IncrementalCnn(std::shared_ptr<const CnnWeights> weights)
    : weights_(std::move(weights)) {}

void IncrementalCnn::Grow(int64_t columns) {
  if (columns > capacity_) {
    const int64_t capacity = std::max<int64_t>(columns, capacity_ * 2);
    std::vector<double> interior(kC2 * capacity, 0.0);
    std::vector<float> leaving(kC2 * capacity, 0.0f);
    for (int o = 0; o < kC2; ++o) {
      std::memcpy(&interior[o * capacity], &interior_sum_[o * capacity_], sizeof(double) * columns_);
      std::memcpy(&leaving[o * capacity], &leaving_row_[o * capacity_], sizeof(float) * columns_);
    }
    interior_sum_.swap(interior);
    leaving_row_.swap(leaving);
    capacity_ = capacity;
  }
  columns_ = columns;
}

void IncrementalCnn::FullTile(const HistoryImage& image, int64_t begin, int64_t end, float* out) {
  const CnnWeights& w = *weights_;
  const CnnTile tile(begin, end, image.columns);
  TileScratch& scratch = internal::ThreadScratch();
  scratch.Prepare(tile);
  const int64_t P = tile.padded_width(), width = tile.width();
  const size_t block = static_cast<size_t>(kCnnChannels1) * tile.a1_stride();
  if (scratch.a1.size() < 3 * block) scratch.a1.resize(3 * block);
  scratch.rows.resize(kC2 * P);
  scratch.sum.assign(kC2 * P, 0.0f);  // boundary rows 0, 1, 62, 63
  scratch.dsum.assign(kC2 * P, 0.0);  // interior rows 2..61
  float* ring[3] = {scratch.a1.data(), scratch.a1.data() + block, scratch.a1.data() + 2 * block};
  const float* row = scratch.rows.data();
  internal::Conv1Row(w, image, -1, tile, scratch, ring[0]);
  internal::Conv1Row(w, image, 0, tile, scratch, ring[1]);
  for (int h = 0; h < kCnnRows; ++h) {
    internal::Conv1Row(w, image, h + 1, tile, scratch, ring[2]);
    internal::Conv2Row(w, ring[0], ring[1], ring[2], tile, scratch.rows.data());
    if (h >= 2 && h <= 61) {
      for (int64_t i = 0; i < kC2 * P; ++i) scratch.dsum[i] += row[i];
    } else {
      for (int64_t i = 0; i < kC2 * P; ++i) scratch.sum[i] += row[i];
    }
    if (h == 2) {
      for (int o = 0; o < kC2; ++o) std::copy_n(&row[o * P], width, &leaving_row_[o * capacity_ + begin]);
    }
    float* oldest = ring[0];
    ring[0] = ring[1];
    ring[1] = ring[2];
    ring[2] = oldest;
  }
  std::vector<double> y(width, 0.0);
  for (int o = 0; o < kC2; ++o) {
    double* interior = &interior_sum_[o * capacity_ + begin];
    const double* fresh = &scratch.dsum[o * P];
    const float* boundary = &scratch.sum[o * P];
    for (int64_t k = 0; k < width; ++k) {
      interior[k] = fresh[k];
      y[k] += w.conv3_weight[o] * ((interior[k] + boundary[k]) / kCnnRows);
    }
  }
  for (int64_t k = 0; k < width; ++k) out[begin + k] = static_cast<float>(y[k]) + w.conv3_bias;
}

void IncrementalCnn::IncrementalTile(const HistoryImage& image, int64_t begin, int64_t end,
                                     float* out) {
  const CnnWeights& w = *weights_;
  const CnnTile tile(begin, end, image.columns);
  TileScratch& scratch = internal::ThreadScratch();
  scratch.Prepare(tile);
  const int64_t P = tile.padded_width(), width = tile.width();
  const size_t block = static_cast<size_t>(kCnnChannels1) * tile.a1_stride();
  // conv1 rows 0..3 and 60..63: all that conv2 rows 0, 1, 2 and 61, 62, 63 read.
  if (scratch.a1.size() < 8 * block) scratch.a1.resize(8 * block);
  float* a1 = scratch.a1.data();
  auto slot = [](int r) { return r < 4 ? r : r - 56; };
  auto a1_row = [&](int r) -> const float* {
    if (r < 0 || r >= kCnnRows) return scratch.zero.data();
    return a1 + slot(r) * block;
  };
  for (int r : {0, 1, 2, 3, 60, 61, 62, 63}) {
    internal::Conv1Row(w, image, r, tile, scratch, a1 + slot(r) * block);
  }
  scratch.rows.resize(6 * kC2 * P);
  const int conv2_rows[6] = {0, 1, 2, 61, 62, 63};
  for (int i = 0; i < 6; ++i) {
    const int h = conv2_rows[i];
    internal::Conv2Row(w, a1_row(h - 1), a1_row(h), a1_row(h + 1), tile, &scratch.rows[i * kC2 * P]);
  }
  scratch.dsum.assign(width, 0.0);  // the readout, accumulated channel by channel
  double* y = scratch.dsum.data();
  for (int o = 0; o < kC2; ++o) {
    const float* r0 = &scratch.rows[(0 * kC2 + o) * P];
    const float* r1 = &scratch.rows[(1 * kC2 + o) * P];
    const float* r2 = &scratch.rows[(2 * kC2 + o) * P];
    const float* r61 = &scratch.rows[(3 * kC2 + o) * P];
    const float* r62 = &scratch.rows[(4 * kC2 + o) * P];
    const float* r63 = &scratch.rows[(5 * kC2 + o) * P];
    double* interior = &interior_sum_[o * capacity_ + begin];
    float* leaving = &leaving_row_[o * capacity_ + begin];
    const double w3 = w.conv3_weight[o];
    for (int64_t k = 0; k < width; ++k) {
      // Subtract the row that left, add the row that entered: both came from the same kernels
      // on the same inputs, so they cancel exactly.
      interior[k] = interior[k] - leaving[k] + r61[k];
      leaving[k] = r2[k];
      const double boundary = static_cast<double>(r0[k]) + r1[k] + r62[k] + r63[k];
      y[k] += w3 * ((interior[k] + boundary) / kCnnRows);
    }
  }
  for (int64_t k = 0; k < width; ++k) out[begin + k] = static_cast<float>(y[k]) + w.conv3_bias;
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
  columns_ = 0;
  Grow(image.columns);
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
  Grow(image.columns);
  Run(image, incremental_end, out, threads);
}

}  // namespace foresight::predictor
