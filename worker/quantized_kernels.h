// Row kernels over weight encodings (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1): dequantise a
// row to float32, take a row's dot product with float32 activations without materialising it
// (AVX2/FMA/F16C), and quantise float32 rows (used to write test checkpoints).
//
// The dequantisers are the reference: the dot kernels are tested against dequantise-then-dot on
// random data (tests/worker/quantized_kernels_test.cc).
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "worker/tensor_type.h"

namespace foresight::worker {

// True for the types the kernels below accept.
bool KernelSupports(TensorType type);

// dst[0..n) = values of the row at `src` (n a multiple of the type's block size).
void DequantizeRow(TensorType type, const uint8_t* src, int64_t n, float* dst);

// sum_i row[i] * x[i] over n values.
float DotRow(TensorType type, const uint8_t* row, const float* x, int64_t n);

// Activations quantised to 8 bits in blocks of 32, for integer dot products with Q4_0, Q4_1 and
// Q8_0 rows (llama.cpp computes these types the same way: d = max|x|/127 and q = round(x/d), with
// d and d*sum(q) rounded to half precision).
struct Q8Activations {
  float d;      // scale (half-rounded)
  float s;      // d * sum(q) (half-rounded)
  int32_t sum;  // sum(q)
  int8_t q[32];
};

// True for weight types with an integer kernel against Q8Activations.
bool UsesQ8Activations(TensorType type);
void QuantizeActivations(const float* x, int64_t n, Q8Activations* out);
// x[i] replaced by its 8-bit quantised value d*q (the float path's view of the same numbers).
void RoundActivationsToQ8(float* x, int64_t n);
// sum_i row[i] * x[i] for a Q4_0, Q4_1 or Q8_0 row: integer products within a block, then
// llama.cpp's float order (a vector accumulator of d_w * d_x * int sums over the blocks, its
// horizontal sum, plus the Q4_1 rows' sum of m_w * s_x in block order).
float DotRowQ8(TensorType type, const uint8_t* row, const Q8Activations* x, int64_t n);
// The same for `count` consecutive rows (`row_bytes` apart) into out[0..count): identical results,
// faster (the activation blocks are loaded once per 4 rows).
void DotRowsQ8(TensorType type, const uint8_t* rows, uint64_t row_bytes, int64_t count, const Q8Activations* x,
               int64_t n, float* out);
// The same for m activation rows (row t at x + t * x_stride blocks): out[t * out_stride + r]. Each
// value equals what DotRowsQ8 gives for that activation row alone, bit for bit.
void DotRowsQ8Batch(TensorType type, const uint8_t* rows, uint64_t row_bytes, int64_t count, const Q8Activations* x,
                    int64_t x_stride, int64_t m, int64_t n, float* out, int64_t out_stride);

// Activation rows repacked for the AVX-512 VNNI kernel (two rows per 512-bit register), in groups
// of kPackedRows rows; per group and block: the 8 rows' quants in pairs (q), their scales spread
// over each pair's lanes (d), and their d * sum(q) (s).
constexpr int kPackedRows = 8;
struct PackedQ8Activations {
  int64_t groups = 0, blocks = 0;
  std::vector<int8_t> q;  // [groups][blocks][4][64]
  std::vector<float> d;   // [groups][blocks][4][16]
  std::vector<float> s;   // [groups][blocks][8]
};
// True when DotRowsQ8Packed runs for `type` here: Q8_0 and Q4_1 where UseAvx512()
// (worker/cpu_features.h).
bool PackedQ8Supported(TensorType type);
// Sizes `out` for m rows of nb blocks (m / kPackedRows whole groups; no allocation once large enough).
void ResizePackedQ8(int64_t m, int64_t nb, PackedQ8Activations* out);
// Fills group g of `out` from rows g * kPackedRows.. of x (row t at x + t * x_stride blocks).
void PackQ8Group(const Q8Activations* x, int64_t x_stride, int64_t g, PackedQ8Activations* out);
// DotRowsQ8Batch over the packed groups' rows: out[t * out_stride + r] for t < groups * kPackedRows,
// the same bits as DotRowQ8 for each row alone. Only where PackedQ8Supported(type).
void DotRowsQ8Packed(TensorType type, const uint8_t* rows, uint64_t row_bytes, int64_t count,
                     const PackedQ8Activations& x, float* out, int64_t out_stride);
// Encodes n floats as `type` (F32, F16, BF16, Q8_0, Q4_0, Q4_1), round-to-nearest; returns the bytes.
StatusOr<std::vector<uint8_t>> QuantizeRow(TensorType type, const float* src, int64_t n);

}  // namespace foresight::worker
