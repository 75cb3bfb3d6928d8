#include "predictor/attention_history.h"

#include <algorithm>
#include <cstring>

namespace foresight::predictor {

void AttentionHistory::Reserve(int64_t columns) {
  if (columns <= capacity_) return;
  const int64_t capacity = std::max<int64_t>(columns, capacity_ * 2);
  std::vector<float> data(kCnnRows * capacity, 0.0f);
  for (int r = 0; r < kCnnRows; ++r) {
    if (columns_ > 0) std::memcpy(&data[r * capacity], &data_[r * capacity_], sizeof(float) * columns_);
  }
  data_.swap(data);
  capacity_ = capacity;
}

void AttentionHistory::Reset(std::span<const float> rows, int64_t num_rows, int64_t columns) {
  columns_ = 0;
  capacity_ = 0;
  oldest_ = 0;
  data_.clear();
  Reserve(std::max<int64_t>(columns, 1));
  columns_ = columns;
  num_rows = std::min<int64_t>(num_rows, kCnnRows);
  const int64_t first = kCnnRows - num_rows;
  for (int64_t r = 0; r < num_rows; ++r) {
    std::memcpy(&data_[(first + r) * capacity_], &rows[r * columns], sizeof(float) * columns);
  }
}

void AttentionHistory::Push(std::span<const float> row) {
  const int64_t n = static_cast<int64_t>(row.size());
  if (n > columns_) {
    Reserve(n);
    // Older rows read 0 in the new columns; Reserve zero-fills only fresh storage, so clear the
    // range explicitly (it may hold stale values from a longer history before a Reset).
    for (int r = 0; r < kCnnRows; ++r) std::fill_n(&data_[r * capacity_ + columns_], n - columns_, 0.0f);
    columns_ = n;
  }
  float* dst = &data_[oldest_ * capacity_];  // the oldest row's storage becomes the newest row
  std::memcpy(dst, row.data(), sizeof(float) * n);
  std::fill(dst + n, dst + columns_, 0.0f);
  oldest_ = (oldest_ + 1) % kCnnRows;
}

HistoryImage AttentionHistory::Image(int64_t begin, int64_t end) const {
  HistoryImage image;
  image.columns = std::max<int64_t>(0, end - begin);
  for (int h = 0; h < kCnnRows; ++h) image.rows[h] = row(h) + begin;
  return image;
}

}  // namespace foresight::predictor
