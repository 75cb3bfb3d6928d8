// The CUDA kernels of the worker's GPU forward pass (worker/cuda/cuda_sequence.h), one launcher per
// kernel. Each has a CPU reference in worker/transformer_kernels.h or worker/sequence.cc and
// follows its arithmetic (half-precision rounding points included); the comparison test is
// tests/worker/cuda_sequence_test.cc.
//
// Internal to worker/cuda/: only cuda_sequence.cc includes this. Launchers are asynchronous on
// `stream` and return the launch's cudaError_t (cudaGetLastError), never a later failure.
//
// Thread-safety: pure functions.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace foresight::worker::cuda {

// KV block geometry on the device, the same bytes as common/block_layout.h: a layer's blocks lie
// one after another, block b at kv + b * BlockElems(); inside a block, KV head h holds
// K[kBlockTokens][head_dim] then V[kBlockTokens][head_dim].
constexpr int kBlockTokens = 16;
// The attention kernel's thread block holds one query head's query in shared memory and each
// thread accumulates at most kMaxHeadDim / kAttentionThreads output dimensions.
constexpr int kMaxHeadDim = 256;

// x[t] = row tokens[t] of `table` ([vocab x d], float or half).
cudaError_t LaunchEmbed(const void* table, bool table_f16, const int32_t* tokens, int64_t n, int64_t d, float* x,
                        cudaStream_t stream);
// Per row of d: out = x / sqrt(mean(x^2) + eps) * weight; squares summed in double (RmsNorm).
cudaError_t LaunchRmsNorm(const float* x, const float* weight, int64_t n, int64_t d, float eps, float* out,
                          cudaStream_t stream);
// out[i] = (half)x[i]: activations for a half-precision matrix product.
cudaError_t LaunchToHalf(const float* x, int64_t count, __half* out, cudaStream_t stream);
// x[t][i] += bias[i] over n rows of `width`.
cudaError_t LaunchAddBias(float* x, const float* bias, int64_t n, int64_t width, cudaStream_t stream);
// Rotary embedding in place on n rows of `heads` heads; row t is at position p0 + t (Rope::Apply:
// angle_i = (pos * theta_scale^i by repeated float multiplication) / freq_factors[i]). With
// round_to_half every value is rounded to half afterwards (queries: RoundToHalf).
cudaError_t LaunchRope(float* x, int64_t n, int32_t heads, int32_t head_dim, int64_t p0, float theta_scale,
                       const float* freq_factors, bool interleaved, bool round_to_half, cudaStream_t stream);
// Writes n rows of keys and values ([n x kv_heads x head_dim] float) as half into the layer's
// blocks at positions p0 .. p0 + n - 1.
cudaError_t LaunchStoreKv(const float* k, const float* v, int64_t n, int64_t p0, int32_t kv_heads, int32_t head_dim,
                          __half* kv, cudaStream_t stream);
// gate[i] = silu(gate[i]) * up[i].
cudaError_t LaunchSwiGlu(float* gate, const float* up, int64_t count, cudaStream_t stream);
// x[i] += y[i] (the residual).
cudaError_t LaunchAdd(float* x, const float* y, int64_t count, cudaStream_t stream);

struct AttentionArgs {
  const float* q = nullptr;    // [n x n_heads x head_dim], roped and rounded to half
  const __half* kv = nullptr;  // the layer's blocks
  float* out = nullptr;        // [n x n_heads x head_dim]
  // Query t sits at position p0 + t and sees keys 0 .. p0 + t (causal).
  int64_t n = 0, p0 = 0;
  int32_t n_heads = 0, kv_heads = 0, head_dim = 0;
  float scale = 1.0f;
  // Sparse decode (n == 1): KV head h attends blocks block_ids[block_offsets[h] .. block_offsets[h + 1]),
  // ascending and below the block count (DecodeAttentionHook::SelectBlocks' lists). Null: every
  // block up to the query's position.
  const int32_t* block_offsets = nullptr;
  const int32_t* block_ids = nullptr;
  // Decode only, or null: per query head and block, the max and the sum of the head's attention
  // probabilities in that block, [n_heads x n_blocks]; blocks not attended are left as they are
  // (the caller zeroes them).
  float* block_max = nullptr;
  float* block_sum = nullptr;
  int64_t n_blocks = 0;
};
// Causal attention of every query over its blocks, in the CPU path's precision: float scores of
// the half query against half keys, softmax, probabilities rounded to half, float sums of
// probability times half value.
cudaError_t LaunchAttention(const AttentionArgs& args, cudaStream_t stream);

}  // namespace foresight::worker::cuda
