#include "predictor/cnn_cpu.h"

#include <omp.h>

#include <vector>

#include "predictor/cnn_kernels.h"

namespace foresight::predictor {
namespace {

using internal::CnnTile;
using internal::TileScratch;

// Output columns [tile.begin, tile.end) of one image: slides a 3-row window of conv1 rows down the
// image, accumulating conv2 rows into the per-channel sum over time.
void RunTile(const CnnWeights& w, const HistoryImage& image, const CnnTile& tile, float* out) {
  TileScratch& scratch = internal::ThreadScratch();
  scratch.Prepare(tile);
  const int64_t A = tile.a1_stride(), P = tile.padded_width();
  const size_t block = static_cast<size_t>(kCnnChannels1) * A;
  std::vector<float>& a1 = scratch.a1;
  std::vector<float>& row_out = scratch.rows;
  std::vector<float>& sum = scratch.sum;
  if (a1.size() < 3 * block) a1.resize(3 * block);
  row_out.resize(static_cast<size_t>(kCnnChannels2) * P);
  sum.assign(static_cast<size_t>(kCnnChannels2) * P, 0.0f);
  float* ring[3] = {a1.data(), a1.data() + block, a1.data() + 2 * block};
  // ring[0] = row h-1, ring[1] = row h, ring[2] = row h+1
  internal::Conv1Row(w, image, -1, tile, scratch, ring[0]);
  internal::Conv1Row(w, image, 0, tile, scratch, ring[1]);
  for (int h = 0; h < kCnnRows; ++h) {
    internal::Conv1Row(w, image, h + 1, tile, scratch, ring[2]);
    internal::Conv2Row(w, ring[0], ring[1], ring[2], tile, row_out.data());
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += row_out[i];
    float* oldest = ring[0];
    ring[0] = ring[1];
    ring[1] = ring[2];
    ring[2] = oldest;
  }
  for (int64_t k = 0; k < tile.width(); ++k) {
    float y = 0.0f;
    for (int o = 0; o < kCnnChannels2; ++o) y += w.conv3_weight[o] * (sum[o * P + k] / kCnnRows);
    out[tile.begin + k] = y + w.conv3_bias;
  }
}

}  // namespace

void RunCnn(const CnnWeights& weights, const HistoryImage& image, float* out) {
  for (int64_t c = 0; c < image.columns; c += internal::kTileColumns) {
    RunTile(weights, image, CnnTile(c, std::min(image.columns, c + internal::kTileColumns), image.columns), out);
  }
}

void RunCnnBatch(const CnnWeights& weights, std::span<const HistoryImage> images, std::span<float* const> outputs,
                 int threads) {
  struct Work {
    size_t image;
    int64_t begin;
  };
  std::vector<Work> work;
  for (size_t i = 0; i < images.size(); ++i) {
    for (int64_t c = 0; c < images[i].columns; c += internal::kTileColumns) work.push_back({i, c});
  }
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1)
  for (size_t n = 0; n < work.size(); ++n) {
    const HistoryImage& image = images[work[n].image];
    const int64_t end = std::min(image.columns, work[n].begin + internal::kTileColumns);
    RunTile(weights, image, CnnTile(work[n].begin, end, image.columns), outputs[work[n].image]);
  }
}

}  // namespace foresight::predictor
