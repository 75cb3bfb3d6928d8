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

// Encodes n floats as `type` (F32, F16, BF16, Q8_0, Q4_0, Q4_1), round-to-nearest; returns the bytes.
StatusOr<std::vector<uint8_t>> QuantizeRow(TensorType type, const float* src, int64_t n);

}  // namespace foresight::worker
