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

IncrementalCnn::IncrementalCnn(std::shared_ptr<const CnnWeights> weights, int period)
    : weights_(std::move(weights)), period_(std::clamp(period, 1, kMaxPeriod)) {
  // Interior rows 2..61 fall into 60 / k whole groups of k rows when k divides 60: each group
  // enters together and leaves together, so its sum can be kept from its entry (k + 4 rows per
  // update instead of 2k + 4, for 60 / k float maps). Below 4 the maps cost more than they save.
  if (period_ >= 4 && 60 % period_ == 0) groups_ = 60 / period_;
}

void IncrementalCnn::Grow(int64_t columns) {
  if (columns > capacity_) {
    const int64_t capacity = std::max<int64_t>(columns, capacity_ * 2);
    std::vector<double> interior(kC2 * capacity, 0.0);
    // With group sums the leaving rows are stored per group, not as one leaving sum.
    std::vector<double> leaving(groups_ > 0 ? 0 : kC2 * capacity, 0.0);
    for (int o = 0; o < kC2; ++o) {
      std::memcpy(&interior[o * capacity], &interior_sum_[o * capacity_], sizeof(double) * columns_);
      if (groups_ == 0) std::memcpy(&leaving[o * capacity], &leaving_sum_[o * capacity_], sizeof(double) * columns_);
    }
    std::vector<float> group_sums(static_cast<size_t>(groups_) * kC2 * capacity, 0.0f);
    for (int g = 0; g < groups_; ++g) {
      for (int o = 0; o < kC2; ++o) {
        std::memcpy(&group_sums[(g * kC2 + o) * capacity], &group_sums_[(g * kC2 + o) * capacity_],
                    sizeof(float) * columns_);
      }
    }
    interior_sum_.swap(interior);
    leaving_sum_.swap(leaving);
    group_sums_.swap(group_sums);
    capacity_ = capacity;
  }
  columns_ = columns;
}

namespace {

// Runs conv2 (with ReLU) over output rows [first, last] of the tile, walking down with a ring of
// three conv1 rows, and hands each row to add(h, row) as [32][padded_width] floats.
template <typename Add>
void Conv2Rows(const CnnWeights& w, const HistoryImage& image, const CnnTile& tile, TileScratch& scratch, int first,
               int last, Add&& add) {
  const size_t block = static_cast<size_t>(kCnnChannels1) * tile.a1_stride();
  if (scratch.a1.size() < 3 * block) scratch.a1.resize(3 * block);
  scratch.rows.resize(kC2 * tile.padded_width());
  float* ring[3] = {scratch.a1.data(), scratch.a1.data() + block, scratch.a1.data() + 2 * block};
  internal::Conv1Row(w, image, first - 1, tile, scratch, ring[0]);
  internal::Conv1Row(w, image, first, tile, scratch, ring[1]);
  for (int h = first; h <= last; ++h) {
    internal::Conv1Row(w, image, h + 1, tile, scratch, ring[2]);
    internal::Conv2Row(w, ring[0], ring[1], ring[2], tile, scratch.rows.data());
    add(h, scratch.rows.data());
    float* oldest = ring[0];
    ring[0] = ring[1];
    ring[1] = ring[2];
    ring[2] = oldest;
  }
}

// sum[o * P + k] += row[o * P + k] over the tile's 32 x P values.
void Accumulate(const float* row, int64_t n, double* sum) {
  for (int64_t i = 0; i < n; ++i) sum[i] += row[i];
}

}  // namespace

void IncrementalCnn::FullTile(const HistoryImage& image, int64_t begin, int64_t end, float* out) {
  const CnnWeights& w = *weights_;
  const CnnTile tile(begin, end, image.columns);
  TileScratch& scratch = internal::ThreadScratch();
  scratch.Prepare(tile);
  const int64_t P = tile.padded_width(), width = tile.width(), n = kC2 * P;
  scratch.boundary.assign(n, 0.0);  // rows 0, 1, 62, 63
  scratch.dsum.assign(n, 0.0);      // interior rows 2..61
  scratch.leaving.assign(n, 0.0);   // rows 2..period+1
  if (groups_ > 0) scratch.groups.assign(static_cast<size_t>(groups_) * n, 0.0);
  Conv2Rows(w, image, tile, scratch, 0, kCnnRows - 1, [&](int h, const float* row) {
    const bool interior = h >= 2 && h <= kCnnRows - 3;
    if (interior && groups_ > 0) {
      Accumulate(row, n, &scratch.groups[(h - 2) / period_ * n]);
      return;
    }
    Accumulate(row, n, interior ? scratch.dsum.data() : scratch.boundary.data());
    if (interior && h <= period_ + 1) Accumulate(row, n, scratch.leaving.data());
  });
  if (groups_ > 0) {
    // Group g (rows 2 + g*k ...) leaves at the g-th update from now. The interior sum is the sum
    // of the stored (float) group sums, so that each later subtraction cancels exactly.
    for (int g = 0; g < groups_; ++g) {
      float* slot = &group_sums_[static_cast<size_t>((full_slot_ + g) % groups_) * kC2 * capacity_];
      const double* sum = &scratch.groups[g * n];
      for (int o = 0; o < kC2; ++o) {
        for (int64_t k = 0; k < width; ++k) {
          const float f = static_cast<float>(sum[o * P + k]);
          slot[o * capacity_ + begin + k] = f;
          scratch.dsum[o * P + k] += f;
        }
      }
    }
  }
  Readout(begin, width, P, Fold::kFull, out);
}

void IncrementalCnn::IncrementalTile(const HistoryImage& image, int64_t begin, int64_t end, float* out) {
  const CnnWeights& w = *weights_;
  const CnnTile tile(begin, end, image.columns);
  TileScratch& scratch = internal::ThreadScratch();
  scratch.Prepare(tile);
  const int64_t P = tile.padded_width(), width = tile.width(), n = kC2 * P;
  const int k = period_;
  scratch.boundary.assign(n, 0.0);  // rows 0, 1, 62, 63
  scratch.dsum.assign(n, 0.0);      // rows 62-k..61, which entered with this shift
  scratch.leaving.assign(n, 0.0);   // rows 2..k+1, which leave at the next update
  // Top band: rows 0..k+1 (with groups, rows 0 and 1: the leaving group's sum is stored);
  // bottom band: rows 62-k..63.
  Conv2Rows(w, image, tile, scratch, 0, groups_ > 0 ? 1 : k + 1, [&](int h, const float* row) {
    Accumulate(row, n, h < 2 ? scratch.boundary.data() : scratch.leaving.data());
  });
  Conv2Rows(w, image, tile, scratch, kCnnRows - 2 - k, kCnnRows - 1, [&](int h, const float* row) {
    Accumulate(row, n, h >= kCnnRows - 2 ? scratch.boundary.data() : scratch.dsum.data());
  });
  if (groups_ > 0) {
    // The group leaving now is stored in update_slot_; the group entering now leaves last, so it
    // takes that slot. The state keeps float sums; scratch.leaving becomes what the readout
    // subtracts, scratch.dsum what it adds.
    float* slot = &group_sums_[static_cast<size_t>(update_slot_) * kC2 * capacity_];
    for (int o = 0; o < kC2; ++o) {
      for (int64_t c = 0; c < width; ++c) {
        const float entering = static_cast<float>(scratch.dsum[o * P + c]);
        float& stored = slot[o * capacity_ + begin + c];
        scratch.leaving[o * P + c] = stored;
        scratch.dsum[o * P + c] = entering;
        stored = entering;
      }
    }
    Readout(begin, width, P, Fold::kGroups, out);
    return;
  }
  Readout(begin, width, P, Fold::kLeavingSum, out);
}

// Folds the tile's row sums into the running state and writes the scores: conv3 (1x1) over the
// mean of the 64 conv2 rows. kFull: the interior sum is scratch.dsum. Otherwise it gains the
// entering rows (scratch.dsum) and loses the leaving ones: the sum stored at the previous update
// (kLeavingSum, which then stores scratch.leaving for the next one) or scratch.leaving (kGroups).
// Both came from the same kernels on the same inputs, so they cancel exactly.
void IncrementalCnn::Readout(int64_t begin, int64_t width, int64_t P, Fold fold, float* out) {
  const CnnWeights& w = *weights_;
  TileScratch& scratch = internal::ThreadScratch();
  scratch.y.assign(width, 0.0);
  double* y = scratch.y.data();
  for (int o = 0; o < kC2; ++o) {
    double* interior = &interior_sum_[o * capacity_ + begin];
    double* stored = groups_ > 0 ? nullptr : &leaving_sum_[o * capacity_ + begin];
    const double* fresh = &scratch.dsum[o * P];
    const double* leaving = &scratch.leaving[o * P];
    const double* boundary = &scratch.boundary[o * P];
    const double w3 = w.conv3_weight[o];
    for (int64_t k = 0; k < width; ++k) {
      if (fold == Fold::kFull) {
        interior[k] = fresh[k];
      } else {
        interior[k] = interior[k] - (fold == Fold::kGroups ? leaving[k] : stored[k]) + fresh[k];
      }
      if (stored != nullptr) stored[k] = leaving[k];
      y[k] += w3 * ((interior[k] + boundary[k]) / kCnnRows);
    }
  }
  for (int64_t k = 0; k < width; ++k) out[begin + k] = static_cast<float>(y[k]) + w.conv3_bias;
}

void IncrementalCnn::Plan(const HistoryImage& image, bool reset, std::vector<Piece>* pieces) {
  if (reset || !initialized_ || image.columns < columns_) {
    columns_ = 0;
    initialized_ = true;
  }
  // Appended columns change conv2 in the last two old columns (their right neighbours were padding).
  const int64_t incremental_end = columns_ == 0               ? 0
                                  : image.columns == columns_ ? columns_
                                                              : std::max<int64_t>(0, columns_ - 2);
  if (groups_ > 0 && incremental_end > 0) {
    // This update's leaving group is in leave_slot_; from now on the next one leaves first, and
    // columns computed in full store their groups from there.
    update_slot_ = leave_slot_;
    leave_slot_ = (leave_slot_ + 1) % groups_;
  }
  full_slot_ = leave_slot_;
  Grow(image.columns);
  for (int64_t c = 0; c < incremental_end; c += internal::kTileColumns) {
    pieces->push_back({c, std::min(incremental_end, c + internal::kTileColumns), true});
  }
  for (int64_t c = incremental_end; c < image.columns; c += internal::kTileColumns) {
    pieces->push_back({c, std::min(image.columns, c + internal::kTileColumns), false});
  }
}

void IncrementalCnn::RunPiece(const HistoryImage& image, const Piece& piece, float* out) {
  if (piece.incremental) {
    IncrementalTile(image, piece.begin, piece.end, out);
  } else {
    FullTile(image, piece.begin, piece.end, out);
  }
}

void IncrementalCnn::Update(const HistoryImage& image, bool reset, float* out, int threads) {
  pieces_.clear();
  Plan(image, reset, &pieces_);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1)
  for (size_t i = 0; i < pieces_.size(); ++i) RunPiece(image, pieces_[i], out);
}

void IncrementalCnn::Reset(const HistoryImage& image, float* out, int threads) { Update(image, true, out, threads); }

void IncrementalCnn::Advance(const HistoryImage& image, float* out, int threads) { Update(image, false, out, threads); }

}  // namespace foresight::predictor
