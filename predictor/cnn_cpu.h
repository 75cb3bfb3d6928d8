// The AttentionPredictor CNN on the CPU, recomputed over all 64 history rows (the "full"
// computation): AVX2/FMA over columns, OpenMP over images and column tiles. Exactly the published
// network (see predictor/cnn_weights.h); float32 with the 64-row mean summed in float.
//
//   std::vector<float> scores(image.columns);
//   RunCnn(*weights, image, scores.data());
//
// Thread-safety: pure functions; `threads` > 1 opens an OpenMP parallel region.
#pragma once

#include <cstdint>
#include <span>

#include "predictor/cnn_weights.h"
#include "predictor/history_image.h"

namespace foresight::predictor {

// out[c] for c < image.columns: the predicted next-step score of column c. Single-threaded.
void RunCnn(const CnnWeights& weights, const HistoryImage& image, float* out);

// Many images (heads, or the N of a [N, 64, L] batch), spread over `threads` OpenMP threads by
// (image, column tile). outputs[i] holds images[i].columns floats.
void RunCnnBatch(const CnnWeights& weights, std::span<const HistoryImage> images, std::span<float* const> outputs,
                 int threads);

}  // namespace foresight::predictor
