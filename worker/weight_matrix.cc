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
    : type_(type),
      rows_(rows),
      cols_(cols),
      row_bytes_(TensorTypeBytes(type, cols)),
      data_(data),
      owned_(std::move(owned)) {}

void WeightMatrix::DequantizeRowTo(int64_t r, float* out) const { DequantizeRow(type_, row(r), cols_, out); }

void WeightMatrix::Multiply(const float* x, int64_t n, float* y, std::vector<float>* scratch) const {
  const bool q8 = UsesQ8Activations(type_);
  if (q8) {  // any number of rows: the integer kernels are llama.cpp's arithmetic, and fast
    const int64_t nb = cols_ / 32;
    constexpr int64_t kRowsPerTask = 16;  // a task's weight rows stay in L1 across the tokens
    const int64_t tasks = (rows_ + kRowsPerTask - 1) / kRowsPerTask;
    auto multiply = [&](const Q8Activations* xq, int64_t task) {
      const int64_t r0 = task * kRowsPerTask, count = std::min(kRowsPerTask, rows_ - r0);
      DotRowsQ8Batch(type_, row(r0), row_bytes_, count, xq, nb, n, cols_, y + r0, rows_);
    };
    const bool parallel = rows_ * cols_ >= 32768;
    if (n < kGemmMinRows) {
      // Decode: every thread quantises the few activation rows itself (microseconds), which saves
      // a barrier per product; on a busy machine each barrier can cost a time slice.
#pragma omp parallel if (parallel)
      {
        Q8Activations xq[kGemmMinRows * 8192 / 32];
        const bool fits = n * nb <= static_cast<int64_t>(sizeof(xq) / sizeof(xq[0]));
        std::vector<Q8Activations> big(fits ? 0 : n * nb);
        Q8Activations* q = fits ? xq : big.data();
        for (int64_t t = 0; t < n; ++t) QuantizeActivations(x + t * cols_, cols_, q + t * nb);
#pragma omp for schedule(static) nowait
        for (int64_t task = 0; task < tasks; ++task) multiply(q, task);
      }
      return;
    }
    std::vector<Q8Activations> xq(static_cast<size_t>(n * nb));
    // Whole groups of kPackedRows rows go through the AVX-512 kernel where the CPU has one (the
    // same bits; quantized_kernels.h), the rest through DotRowsQ8Batch. The packed copy is this
    // thread's and kept across calls.
    static thread_local PackedQ8Activations packed_here;
    PackedQ8Activations* packed = &packed_here;
    const bool pack = n >= kPackedRows && PackedQ8Supported(type_);
    if (pack) ResizePackedQ8(n, nb, packed);
    const int64_t packed_rows = pack ? packed->groups * kPackedRows : 0;
#pragma omp parallel if (parallel)
    {
#pragma omp for schedule(static)
      for (int64_t t = 0; t < n; ++t) QuantizeActivations(x + t * cols_, cols_, xq.data() + t * nb);
      if (pack) {
#pragma omp for schedule(static)
        for (int64_t g = 0; g < packed->groups; ++g) PackQ8Group(xq.data(), nb, g, packed);
      }
#pragma omp for schedule(static)
      for (int64_t task = 0; task < tasks; ++task) {
        const int64_t r0 = task * kRowsPerTask, count = std::min(kRowsPerTask, rows_ - r0);
        if (pack) DotRowsQ8Packed(type_, row(r0), row_bytes_, count, *packed, y + r0, rows_);
        DotRowsQ8Batch(type_, row(r0), row_bytes_, count, xq.data() + packed_rows * nb, nb, n - packed_rows, cols_,
                       y + packed_rows * rows_ + r0, rows_);
      }
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
  // One OpenMP team does everything: each thread dequantises its slice of rows and multiplies it
  // with a single-threaded sgemm (OpenBLAS's own threads are turned off; see SingleThreadedBlas).
  SingleThreadedBlas();
  const bool f32 = type_ == TensorType::kF32;
  if (!f32) scratch->resize(static_cast<size_t>(rows_ * cols_));
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
    }
  }
}

}  // namespace foresight::worker
