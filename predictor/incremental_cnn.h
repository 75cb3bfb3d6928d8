// IncrementalCnn: the AttentionPredictor CNN for a history that shifts by `period` rows between two
// updates (one row per decode step; the served predictor updates every few steps and reuses its
// scores in between), computing only what the shift changed instead of all 64 rows.
//
// Why it works: away from the top and bottom padding, conv2's output row h depends only on input
// rows h-2..h+2, so after a shift of k rows the interior output rows are the previous update's rows
// moved up by k. The mean over time is kept as a running sum of the interior rows 2..61: an update
// adds the k rows that entered (62-k..61), subtracts the k that left (rows 2..k+1 of the previous
// update, summed then because their oldest input rows are gone now), and recomputes the four rows
// that touch the padding (0, 1, 62, 63). So an update computes 2k + 4 of 64 conv2 rows: 6 per step
// at k = 1, 2.5 at k = 8 (the CNN is ~95% conv2), for two [columns x 32] double maps (the running
// sum and the next update's leaving sum). When k divides 60 (k >= 4), rows enter and leave in whole
// groups of k, so each group's sum is kept from its entry instead: k + 4 rows per update (1.4 per
// step at the served k = 10) for 60 / k more float maps. Rows entering and
// leaving the sum are computed by the same kernels (predictor/cnn_kernels.h) on the same inputs, so
// they cancel exactly; every update equals RunCnn up to the float rounding of the summation order.
//
// Columns appended on the right (the history gains a block, or the predictor's window moves past a
// block that left the local window) change conv2 near the old right edge: the last two old columns
// and the new ones are recomputed over all 64 rows.
//
//   IncrementalCnn cnn(weights, /*period=*/10);
//   cnn.Reset(image, scores);          // after prefill: full computation
//   ... push 10 rows into the history (10 decode steps) ...
//   cnn.Advance(image, scores);        // every 10th decode step
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
  // Most rows an update may shift by: the rows entering (62-k..61) and the rows that will leave
  // at the next update (2..k+1) must not overlap.
  static constexpr int kMaxPeriod = 29;

  // period: rows the history shifts between two calls, 1..kMaxPeriod (clamped).
  explicit IncrementalCnn(std::shared_ptr<const CnnWeights> weights, int period = 1);

  // Full computation over all rows; (re)initialises the running state. out: image.columns floats.
  void Reset(const HistoryImage& image, float* out, int threads = 1);

  // `image` must be the image of the previous call shifted up by period() rows: for the previous
  // columns, row h equals the previous row h + period (h < 64 - period); the last period() rows
  // are new; columns may have been appended. With fewer columns than before, or before any Reset,
  // this is a Reset.
  void Advance(const HistoryImage& image, float* out, int threads = 1);

  // For a caller that updates several CNNs in one thread team: Plan prepares the update that
  // Advance (or Reset, when `reset`) would make and appends its independent pieces (tiles of
  // columns) to `pieces`; RunPiece then computes each piece once, on any thread, in any order,
  // before the next Plan. Advance and Reset are exactly that over `threads` threads.
  struct Piece {
    int64_t begin = 0, end = 0;  // output columns
    bool incremental = false;    // false: all 64 rows (new columns, or a reset)
  };
  void Plan(const HistoryImage& image, bool reset, std::vector<Piece>* pieces);
  void RunPiece(const HistoryImage& image, const Piece& piece, float* out);

  int64_t columns() const { return columns_; }
  int period() const { return period_; }
  bool initialized() const { return initialized_; }

 private:
  void FullTile(const HistoryImage& image, int64_t begin, int64_t end, float* out);
  void IncrementalTile(const HistoryImage& image, int64_t begin, int64_t end, float* out);
  enum class Fold { kFull, kLeavingSum, kGroups };
  void Readout(int64_t begin, int64_t width, int64_t padded_width, Fold fold, float* out);
  void Update(const HistoryImage& image, bool reset, float* out, int threads);

  // Grows the state to `columns`, keeping values; capacity doubles so appends are amortised.
  void Grow(int64_t columns);

  std::shared_ptr<const CnnWeights> weights_;
  int period_ = 1;
  bool initialized_ = false;
  int64_t columns_ = 0;
  int64_t capacity_ = 0;
  // Channel-major so the per-step update streams through contiguous memory.
  std::vector<double> interior_sum_;  // [32][capacity_]: sum of conv2 rows 2..61
  std::vector<Piece> pieces_;         // Update's scratch
  // With groups_ > 0 (period k >= 4 dividing 60): interior rows 2..61 in 60 / k groups of k rows,
  // each group's sum kept from the update it entered ([groups_][32][capacity_] floats, a ring);
  // leave_slot_ holds the group that leaves at the next update. An update then computes k + 4
  // conv2 rows. Otherwise leaving_sum_ is computed one update ahead (2k + 4 rows).
  int groups_ = 0;
  std::vector<float> group_sums_;
  int leave_slot_ = 0;
  int update_slot_ = 0;              // Plan -> RunPiece: the slot of this update's leaving group
  int full_slot_ = 0;                // Plan -> RunPiece: where a full column's group 0 goes
  std::vector<double> leaving_sum_;  // [32][capacity_] (empty with groups_): conv2 rows 2..period+1, which leave
                                     // at the next update
};

}  // namespace foresight::predictor
