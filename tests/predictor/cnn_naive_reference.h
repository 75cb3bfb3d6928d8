// A deliberately plain float64 implementation of the AttentionPredictor CNN, written from the
// PyTorch semantics in the reference README, for checking the optimised kernels on random data.
#pragma once

#include <vector>

#include "predictor/cnn_weights.h"
#include "predictor/history_image.h"

namespace foresight::predictor::testing {

inline std::vector<double> NaiveCnn(const CnnWeights& w, const HistoryImage& image) {
  const int H = kCnnRows;
  const int64_t L = image.columns;
  auto x = [&](int h, int64_t c) -> double { return (h < 0 || h >= H || c < 0 || c >= L) ? 0.0 : image.rows[h][c]; };
  std::vector<double> a1(16 * H * L);
  for (int i = 0; i < 16; ++i)
    for (int h = 0; h < H; ++h)
      for (int64_t c = 0; c < L; ++c) {
        double s = w.conv1_bias[i];
        for (int dy = 0; dy < 3; ++dy)
          for (int dx = 0; dx < 3; ++dx) s += double(w.conv1_weight[i][dy * 3 + dx]) * x(h + dy - 1, c + dx - 1);
        a1[(i * H + h) * L + c] = s > 0 ? s : 0;
      }
  auto a = [&](int i, int h, int64_t c) -> double {
    return (h < 0 || h >= H || c < 0 || c >= L) ? 0.0 : a1[(i * H + h) * L + c];
  };
  std::vector<double> y(L);
  for (int64_t c = 0; c < L; ++c) {
    double out = w.conv3_bias;
    for (int o = 0; o < 32; ++o) {
      double mean = 0;
      for (int h = 0; h < H; ++h) {
        double s = w.conv2_bias[o];
        for (int i = 0; i < 16; ++i)
          for (int dy = 0; dy < 3; ++dy)
            for (int dx = 0; dx < 3; ++dx)
              s += double(w.conv2_weight[o][i * 9 + dy * 3 + dx]) * a(i, h + dy - 1, c + dx - 1);
        mean += s > 0 ? s : 0;
      }
      out += double(w.conv3_weight[o]) * (mean / H);
    }
    y[c] = out;
  }
  return y;
}

// max |got - want| / max |want|: the relative error used throughout the predictor tests.
template <typename A, typename B>
double RelativeError(const A& got, const B& want) {
  double diff = 0, ref = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    diff = std::max(diff, std::abs(double(got[i]) - double(want[i])));
    ref = std::max(ref, std::abs(double(want[i])));
  }
  return ref == 0 ? diff : diff / ref;
}

}  // namespace foresight::predictor::testing
