// The element-wise and row kernels of a Llama-family layer on the CPU: RMSNorm, rotary position
// embedding, SwiGLU's gate, softmax, and a float dot product. Each is the plain reference that the
// CUDA kernels are tested against.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <vector>

#include "worker/model_config.h"

namespace foresight::worker {

// out = x / sqrt(mean(x^2) + eps) * weight, one row of n.
void RmsNorm(const float* x, const float* weight, int64_t n, float eps, float* out);

// Rotary embedding for one position, in place on `n_heads` heads of head_dim values. Angles are
// computed in float as llama.cpp does (theta_i = pos * base^(-2i/d), by repeated multiplication),
// so both engines rotate by bit-identical angles.
class Rope {
 public:
  explicit Rope(const ModelConfig& config);
  void Apply(float* heads, int32_t n_heads, int64_t position) const;

 private:
  int32_t head_dim_;
  RopeStyle style_;
  float theta_scale_;
  std::vector<float> freq_factors_;
};

// gate[i] = silu(gate[i]) * up[i]
void SwiGlu(float* gate, const float* up, int64_t n);

// In place over n values; returns nothing, the row sums to 1.
void Softmax(float* x, int64_t n);

float Dot(const float* a, const float* b, int64_t n);
// y += a * x
void Axpy(float a, const float* x, float* y, int64_t n);
// The same with half-precision x (KV cache rows).
float DotHalf(const uint16_t* a, const float* b, int64_t n);
void AxpyHalf(float a, const uint16_t* x, float* y, int64_t n);
void FloatToHalfRow(const float* x, int64_t n, uint16_t* out);
void HalfToFloatRow(const uint16_t* x, int64_t n, float* out);
// x[i] = (float)(half)x[i]: attention's operands are half precision, as in llama.cpp's CPU path
// (queries against half keys, probabilities against half values).
void RoundToHalf(float* x, int64_t n);

}  // namespace foresight::worker
