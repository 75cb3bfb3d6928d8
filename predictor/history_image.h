// HistoryImage: the CNN's input for one head, 64 rows (oldest first) of `columns` pooled scores,
// each row a pointer so that a ring buffer (AttentionHistory) or a contiguous [64, L] tensor can be
// passed without copying. Columns outside [0, columns) and rows outside [0, 64) are the
// convolutions' zero padding.
//
// Thread-safety: a view; valid while the rows it points to live.
#pragma once

#include <array>
#include <cstdint>

#include "predictor/cnn_weights.h"

namespace foresight::predictor {

struct HistoryImage {
  std::array<const float*, kCnnRows> rows{};
  int64_t columns = 0;

  // A contiguous [64, columns] array with row stride `stride` (>= columns).
  static HistoryImage Contiguous(const float* data, int64_t columns, int64_t stride) {
    HistoryImage image;
    image.columns = columns;
    for (int h = 0; h < kCnnRows; ++h) image.rows[h] = data + h * stride;
    return image;
  }
};

}  // namespace foresight::predictor
