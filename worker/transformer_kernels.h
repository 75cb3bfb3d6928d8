// The element-wise and row kernels of a Llama-family layer on the CPU: RMSNorm, rotary position
// embedding, SwiGLU's gate, softmax, and a float dot product. Each is the plain reference that the
// CUDA kernels are tested against.
//
// Where llama.cpp's CPU backend is the reference (worker_model_reference_test), these follow its
// arithmetic operation for operation, so that both engines round the same way: RMSNorm sums float
// squares in double; SwiGLU and softmax use the same polynomial exp (exp2 range reduction and a
// degree-5 polynomial, ExpPoly below); softmax sums groups of 16 in float and the groups in double;
// half-precision dot products accumulate 16 lanes and reduce them pairwise (SumLanes). The order
// matters on a 4-bit model: a last-bit difference flips an 8-bit activation rounding somewhere,
// and that difference grows through the layers (docs/worker.md, "Verification").
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

// gate[i] = silu(gate[i]) * up[i], silu(x) = x / (1 + ExpPoly(-x)).
void SwiGlu(float* gate, const float* up, int64_t n);

// exp(x) by the polynomial the kernels above use (max error about 1.5 ulp; 0 below -104, inf above
// 88.7). Scalar version of the vector code, for tests.
float ExpPoly(float x);

// In place over n values; the row sums to 1 (up to rounding). exp by ExpPoly; the sum is taken in
// groups of 16 values (float, SumLanes' order), the group sums in double.
void Softmax(float* x, int64_t n);
// The softmax of x[0..n) pooled per block of 16 values, without writing the probabilities:
// block_max[b] and block_sum[b] for b < ceil(n / 16) (the same exponentials as Softmax). For
// attention rows that only feed a block-level consumer (the predictor's history).
void SoftmaxPooled16(const float* x, int64_t n, float* block_max, float* block_sum);

float Dot(const float* a, const float* b, int64_t n);
// y += a * x
void Axpy(float a, const float* x, float* y, int64_t n);
// The same with half-precision x (KV cache rows). DotHalf accumulates kAttentionLanes lanes (lane
// j holds the elements i with i % 16 == j, by fused multiply-adds in order of i) and returns their
// SumLanes: llama.cpp's order for a query against a half key.
float DotHalf(const uint16_t* a, const float* b, int64_t n);
void AxpyHalf(float a, const uint16_t* x, float* y, int64_t n);

// Attention's weighted sum of half value rows in llama.cpp's order: the row of position p is added
// (AxpyHalf) into lane p % kAttentionLanes of a [kAttentionLanes x n] scratch that starts at zero,
// then SumLanes folds the lanes into the output. Positions must be added in increasing order.
constexpr int kAttentionLanes = 16;
// Block versions of the two steps, bit-identical to the per-position calls and faster (the query
// and the lane accumulators stay in registers). out[i] = DotHalf(rows + i * n, b, n) * scale.
void DotHalfRows(const uint16_t* rows, int64_t count, int64_t n, const float* b, float scale, float* out);
// For blocks k = 0..n_blocks of kAttentionLanes positions each, in position order: block k has
// counts[k] value rows of n halves at values[k]; its row j is added, times the next weight of
// `probs`, into lane j (the AxpyHalf into lane p % kAttentionLanes above, for blocks that start at
// a multiple of kAttentionLanes).
void AccumulateHalfBlocks(const float* probs, const uint16_t* const* values, const int32_t* counts, int64_t n_blocks,
                          int64_t n, float* lanes);
// Prefill attention reads each key and value row for many queries: the group's query heads and
// several query positions. These two kernels convert a half row once for up to kMaxQueryRows of
// them, keeping every (query, key) sum in the single-query order above, so the results are the
// bits of one call per query. DotHalfRowsQueries: out[j][i] = DotHalfRows' out[i] for query
// queries[j], j < n_queries (any number; n % 16 == 0 uses the shared kernel).
constexpr int kMaxQueryRows = 6;
void DotHalfRowsQueries(const uint16_t* rows, int64_t count, int64_t n, const float* const* queries, int64_t n_queries,
                        float scale, float* const* out);
// AccumulateHalfBlocks for n_rows probability rows over the same n_blocks full blocks
// (kAttentionLanes rows each): row r reads probs[r] and accumulates into lanes[r].
void AccumulateHalfBlocksRows(const float* const* probs, float* const* lanes, int64_t n_rows,
                              const uint16_t* const* values, int64_t n_blocks, int64_t n);
// out[i] = sum over the 16 lanes of lanes[lane * n + i], pairwise: lanes j and j+8, then j and
// j+4, then j and j+2, then 0 and 1.
void SumLanes(const float* lanes, int64_t n, float* out);
void FloatToHalfRow(const float* x, int64_t n, uint16_t* out);
void HalfToFloatRow(const uint16_t* x, int64_t n, float* out);
// x[i] = (float)(half)x[i]: attention's operands are half precision, as in llama.cpp's CPU path
// (queries against half keys, probabilities against half values).
void RoundToHalf(float* x, int64_t n);

}  // namespace foresight::worker
