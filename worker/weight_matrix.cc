#include "worker/weight_matrix.h"

#include <cblas.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>

#include "worker/quantized_kernels.h"

namespace foresight::worker {
namespace {
// Below this many activation rows, dot products on the encoded rows beat dequantise + sgemm.
constexpr int64_t kGemmMinRows = 4;
}  // namespace

void SingleThreadedBlas() {
  static const bool done = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)done;
}

WeightMatrix::WeightMatrix(TensorType type, int64_t rows, int64_t cols, const uint8_t* data,
                           std::shared_ptr<const std::vector<uint8_t>> owned)
    : type_(type), rows_(rows), cols_(cols), row_bytes_(TensorTypeBytes(type, cols)), data_(data), owned_(std::move(owned)) {}

void WeightMatrix::DequantizeRowTo(int64_t r, float* out) const { DequantizeRow(type_, row(r), cols_, out); }

void WeightMatrix::Multiply(const float* x, int64_t n, float* y, std::vector<float>* scratch) const {
  const bool q8 = UsesQ8Activations(type_);
  if (n < kGemmMinRows && q8) {
    const int64_t nb = cols_ / 32;
    std::vector<Q8Activations> xq(static_cast<size_t>(n * nb));
    for (int64_t t = 0; t < n; ++t) QuantizeActivations(x + t * cols_, cols_, xq.data() + t * nb);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows_; ++r) {
      for (int64_t t = 0; t < n; ++t) y[t * rows_ + r] = DotRowQ8(type_, row(r), xq.data() + t * nb, cols_);
    }
    return;
  }
  if (n < kGemmMinRows) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows_; ++r) {
      for (int64_t t = 0; t < n; ++t) y[t * rows_ + r] = DotRow(type_, row(r), x + t * cols_, cols_);
    }
    return;
  }
  // The same activation rounding as the integer path, so prefill and decode agree. For Q4_1 the
  // integer path adds m * s with s = half(d * sum(q)); `correction` holds s - d * sum(q) per
  // (token, block), multiplied below by the blocks' m.
  std::vector<float> rounded, correction;
  const int64_t nb = cols_ / 32;
  if (q8) {
    rounded.resize(n * cols_);
    if (type_ == TensorType::kQ4_1) correction.resize(n * nb);
    std::vector<Q8Activations> blocks(nb);
    for (int64_t t = 0; t < n; ++t) {
      QuantizeActivations(x + t * cols_, cols_, blocks.data());
      for (int64_t b = 0; b < nb; ++b) {
        for (int j = 0; j < 32; ++j) rounded[t * cols_ + b * 32 + j] = blocks[b].d * blocks[b].q[j];
        if (!correction.empty()) correction[t * nb + b] = blocks[b].s - blocks[b].d * static_cast<float>(blocks[b].sum);
      }
    }
    x = rounded.data();
  }
  // One OpenMP team does everything: each thread dequantises its slice of rows and multiplies it
  // with a single-threaded sgemm (OpenBLAS's own threads are turned off; see SingleThreadedBlas).
  SingleThreadedBlas();
  const bool f32 = type_ == TensorType::kF32;
  if (!f32) scratch->resize(static_cast<size_t>(rows_ * cols_));
  std::vector<float> mins(correction.empty() ? 0 : rows_ * nb);
#pragma omp parallel
  {
    const int64_t threads = omp_get_num_threads(), id = omp_get_thread_num();
    const int64_t per = (rows_ + threads - 1) / threads;
    const int64_t r0 = std::min(rows_, id * per), r1 = std::min(rows_, r0 + per);
    if (r1 > r0) {
      const float* w = reinterpret_cast<const float*>(data_);
      if (!f32) {
        float* dst = scratch->data();
        for (int64_t r = r0; r < r1; ++r) DequantizeRow(type_, row(r), cols_, dst + r * cols_);
        w = dst;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n), static_cast<int>(r1 - r0),
                  static_cast<int>(cols_), 1.0f, x, static_cast<int>(cols_), w + r0 * cols_, static_cast<int>(cols_),
                  0.0f, y + r0, static_cast<int>(rows_));
      if (!correction.empty()) {
        for (int64_t r = r0; r < r1; ++r) {
          for (int64_t b = 0; b < nb; ++b) mins[r * nb + b] = _cvtsh_ss(*reinterpret_cast<const uint16_t*>(row(r) + b * 20 + 2));
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n), static_cast<int>(r1 - r0),
                    static_cast<int>(nb), 1.0f, correction.data(), static_cast<int>(nb), mins.data() + r0 * nb,
                    static_cast<int>(nb), 1.0f, y + r0, static_cast<int>(rows_));
      }
    }
  }
}

}  // namespace foresight::worker
