// AttentionHistory: one query head's pooled attention history as the AttentionPredictor keeps it:
// the last 64 rows (oldest first) of block-max-pooled attention, one column per key block. When
// the key length gains a block, older rows read 0 in the new column.
//
// Rows live in a ring buffer, so a push moves no data; HistoryImage views (row pointers) feed the
// CNN directly.
//
// Thread-safety: not thread-safe; one object per (sequence, layer, head).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "predictor/cnn_weights.h"
#include "predictor/history_image.h"

namespace foresight::predictor {

class AttentionHistory {
 public:
  AttentionHistory() = default;

  // Replaces the history with `num_rows` (<= 64) rows of `columns` values, oldest first, laid out
  // row-major; the rows above them are zero (a prompt shorter than 64 tokens).
  void Reset(std::span<const float> rows, int64_t num_rows, int64_t columns);

  // Drops the oldest row and appends `row` as the newest. Columns beyond the current width are
  // added (0 in every older row); a shorter row reads 0 in its missing columns.
  void Push(std::span<const float> row);

  int64_t columns() const { return columns_; }
  // Row h (0 = oldest, 63 = newest); columns() values.
  const float* row(int h) const { return &data_[((oldest_ + h) % kCnnRows) * capacity_]; }
  // Columns [begin, end) of every row (end <= columns()).
  HistoryImage Image(int64_t begin, int64_t end) const;

 private:
  void Reserve(int64_t columns);
  int64_t columns_ = 0;
  int64_t capacity_ = 0;
  int oldest_ = 0;           // ring index of row 0
  std::vector<float> data_;  // [64][capacity_]
};

}  // namespace foresight::predictor
