// WeightMatrix: a [rows x cols] weight in any supported encoding, multiplied without being copied
// into float32 at load time. y = W x for each activation row.
//
// Q4_0, Q4_1 and Q8_0 (any number of activation rows): the activations are quantised to 8 bits in
// blocks of 32 and multiplied by integer dot products (DotRowsQ8), as llama.cpp's CPU backend does,
// so both engines produce the same bits. Other types: few activation rows use vectorised row dot
// products on the encoded rows; many rows dequantise the matrix into a float32 scratch and use
// OpenBLAS sgemm. Rows are split across OpenMP threads.
//
// Thread-safety: immutable; MultiplyRows may be called from one thread at a time per scratch.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "worker/tensor_type.h"

namespace foresight::worker {

// Parallelism is OpenMP's alone: OpenBLAS's own thread pool is set to one thread on first use, so
// the two pools never compete for cores (they did, and decode slowed many times over on a busy
// machine). Process-wide.
void SingleThreadedBlas();

class WeightMatrix {
 public:
  WeightMatrix() = default;
  // A view of encoded rows (the bytes outlive this object: a memory map or `owned`).
  WeightMatrix(TensorType type, int64_t rows, int64_t cols, const uint8_t* data,
               std::shared_ptr<const std::vector<uint8_t>> owned = nullptr);

  TensorType type() const { return type_; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  bool empty() const { return data_ == nullptr; }
  const uint8_t* row(int64_t r) const { return data_ + r * row_bytes_; }
  uint64_t bytes() const { return row_bytes_ * rows_; }

  void DequantizeRowTo(int64_t r, float* out) const;
  // y[n x rows] = x[n x cols] * W^T. `scratch` holds the float32 copy in the sgemm path.
  void Multiply(const float* x, int64_t n, float* y, std::vector<float>* scratch) const;

 private:
  TensorType type_ = TensorType::kF32;
  int64_t rows_ = 0, cols_ = 0;
  uint64_t row_bytes_ = 0;
  const uint8_t* data_ = nullptr;
  std::shared_ptr<const std::vector<uint8_t>> owned_;
};

}  // namespace foresight::worker
