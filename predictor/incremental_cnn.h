// IncrementalCnn: the AttentionPredictor CNN for a history that shifts by one row per decode step,
// updating only what the shift changed instead of recomputing all 64 rows.
//
// Why it works: away from the top and bottom padding, conv2's output row h depends only on input
// rows h-2..h+2, so after a one-row shift interior output rows are the previous step's rows moved
// up by one. The mean over time is kept as a running sum of the interior rows 2..61: each step
// adds the new row 61 and subtracts the row that left (row 2 of the previous step, kept from the
// previous step because its oldest input row is gone), and recomputes the four rows that touch the
// padding (0, 1, 62, 63). That is 6 of 64 conv2 rows per step (about 10x less work) for two extra
// [columns x 32] maps (the running sum in double, the leaving row). Rows entering and leaving the sum
// are computed by the same kernels (predictor/cnn_kernels.h), so they cancel exactly; the result
// equals RunCnn up to the float rounding of the summation order.
//
// Columns appended on the right (the history gains a block, or the predictor's window moves past a
// block that left the local window) change conv2 near the old right edge: the last two old columns
// and the new ones are recomputed over all 64 rows.
//
//   IncrementalCnn cnn(weights);
//   cnn.Reset(image, scores);          // after prefill: full computation
//   ... push a row into the history ...
//   cnn.Advance(image, scores);        // every decode step
//
// Thread-safety: not thread-safe; one object per head. `threads` > 1 splits one call's columns
// over OpenMP threads.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "predictor/cnn_weights.h"
#include "predictor/history_image.h"

namespace foresight::predictor {

class IncrementalCnn {
 public:
  explicit IncrementalCnn(std::shared_ptr<const CnnWeights> weights);

  // Full computation over all rows; (re)initialises the running state. out: image.columns floats.
  void Reset(const HistoryImage& image, float* out, int threads = 1);

  // `image` must be the image of the previous call shifted up by one row: for the previous
  // columns, row h equals the previous row h + 1 (h < 63); row 63 is new; columns may have been
  // appended. With fewer columns than before, or before any Reset, this is a Reset.
  void Advance(const HistoryImage& image, float* out, int threads = 1);

  int64_t columns() const { return columns_; }
  bool initialized() const { return initialized_; }

 private:
  void FullTile(const HistoryImage& image, int64_t begin, int64_t end, float* out);
  void IncrementalTile(const HistoryImage& image, int64_t begin, int64_t end, float* out);
  void Run(const HistoryImage& image, int64_t incremental_end, float* out, int threads);

  // Grows the state to `columns`, keeping values; capacity doubles so appends are amortised.
  void Grow(int64_t columns);

  std::shared_ptr<const CnnWeights> weights_;
  bool initialized_ = false;
  int64_t columns_ = 0;
  int64_t capacity_ = 0;
  // Channel-major so the per-step update streams through contiguous memory.
  std::vector<double> interior_sum_;  // [32][capacity_]: sum of conv2 rows 2..61
  std::vector<float> leaving_row_;    // [32][capacity_]: conv2 row 2, which leaves at the next shift
};

}  // namespace foresight::predictor
