// Internal: the AVX2/FMA building blocks that both the full and the incremental CNN use, one
// image row at a time over a tile of columns. Sharing them is what makes the incremental CNN
// exact: a conv2 output row computed when it enters the running mean and again when it leaves is
// the same sequence of fused multiply-adds, so it is bit-for-bit the same value.
//
// Thread-safety: pure functions over caller-owned buffers; one TileScratch per thread.
#pragma once

#include <cstdint>
#include <vector>

#include "predictor/cnn_weights.h"
#include "predictor/history_image.h"

namespace foresight::predictor::internal {

inline constexpr int64_t kTileColumns = 256;

// Output columns [begin, end) of an image with `columns` columns. conv2's output column c needs
// conv1 columns c-1..c+1, which need input columns c-2..c+2.
struct CnnTile {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t columns = 0;  // the image's width (zero padding beyond it)

  CnnTile(int64_t begin, int64_t end, int64_t columns);
  int64_t width() const { return end - begin; }
  int64_t padded_width() const { return padded_width_; }  // width rounded up to 16 lanes
  // Row stride of a conv1 tile row: local column j holds global column begin - 1 + j.
  int64_t a1_stride() const { return padded_width_ + 8; }
  int64_t x_stride() const { return a1_stride() + 8; }

 private:
  int64_t padded_width_ = 0;
};

// Buffers for one tile, reused across calls: tiles are at most kTileColumns wide, so after the
// first call nothing is allocated (large allocations would otherwise be fresh zeroed pages from
// the kernel on every decode step).
struct TileScratch {
  std::vector<float> x;                      // 3 input rows, x_stride each
  std::vector<float> zero;                   // a zero conv1 row block (16 x a1_stride): padding above/below
  std::vector<float> a1;                     // conv1 rows (the caller decides how many)
  std::vector<float> rows;                   // conv2 rows
  std::vector<float> sum;                    // per-channel float sums
  std::vector<double> dsum;                  // per-channel double sums
  std::vector<double> leaving, boundary, y;  // IncrementalCnn's other row sums and its readout
  std::vector<double> groups;                // IncrementalCnn: per-group sums of a full tile

  // Sizes x and zero for `tile`; the others are sized by their users.
  void Prepare(const CnnTile& tile);
};

// This thread's scratch (one per OpenMP worker thread).
TileScratch& ThreadScratch();

// conv1 + ReLU of image row `row` (-1 and 64 give the zero padding row) over the tile:
// a1[i * a1_stride + j], i < 16. Columns outside the image are 0 (conv2's zero padding).
void Conv1Row(const CnnWeights& w, const HistoryImage& image, int row, const CnnTile& tile, TileScratch& scratch,
              float* a1);

// conv2 + ReLU of one output row from its three conv1 rows: out[o * padded_width + k] for output
// column tile.begin + k (lanes k >= width are scratch).
void Conv2Row(const CnnWeights& w, const float* a1_above, const float* a1_row, const float* a1_below,
              const CnnTile& tile, float* out);

}  // namespace foresight::predictor::internal
