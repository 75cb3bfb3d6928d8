// The worker's CUDA kernels (cuda_kernels.h). Written for clarity first: one thread block per
// row (norms), per (row, head) (RoPE, KV stores) or per (query, head) (attention); matrix products
// are cuBLAS's, in cuda_sequence.cc. No fast-math: expf, cosf, sinf, division and sqrt are the
// IEEE-accurate versions, so results stay within a few ulp of the CPU path's.
#include "worker/cuda/cuda_kernels.h"

#include <math_constants.h>

namespace foresight::worker::cuda {
namespace {

constexpr int kRowThreads = 256;
constexpr int kAttentionThreads = 128;
// The attention kernel walks its blocks in tiles of kTileBlocks: thread i handles position
// i % kBlockTokens of the tile's block i / kBlockTokens, so a tile is 128 keys.
constexpr int kTileBlocks = kAttentionThreads / kBlockTokens;
constexpr int kDimsPerThread = kMaxHeadDim / kAttentionThreads;
constexpr int kWarps = kAttentionThreads / 32;
static_assert(kAttentionThreads % kBlockTokens == 0, "a tile holds whole blocks");

unsigned Blocks(int64_t count, int threads) { return static_cast<unsigned>((count + threads - 1) / threads); }

__device__ float RoundHalf(float x) { return __half2float(__float2half_rn(x)); }

__global__ void EmbedKernel(const void* table, bool table_f16, const int32_t* tokens, int64_t d, float* x) {
  const int64_t t = blockIdx.x;
  const int64_t row = static_cast<int64_t>(tokens[t]) * d;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    x[t * d + i] = table_f16 ? __half2float(static_cast<const __half*>(table)[row + i])
                             : static_cast<const float*>(table)[row + i];
  }
}

__global__ void RmsNormKernel(const float* x, const float* weight, int64_t d, float eps, float* out) {
  __shared__ double partial[kRowThreads];
  const float* xr = x + blockIdx.x * d;
  double ss = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    const float sq = xr[i] * xr[i];  // squared in float, summed in double, as RmsNorm does
    ss += static_cast<double>(sq);
  }
  partial[threadIdx.x] = ss;
  __syncthreads();
  for (int stride = kRowThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  const float mean = static_cast<float>(partial[0] / static_cast<double>(d));
  const float scale = 1.0f / sqrtf(mean + eps);
  float* o = out + blockIdx.x * d;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) o[i] = (xr[i] * scale) * weight[i];
}

__global__ void ToHalfKernel(const float* x, int64_t count, __half* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < count) out[i] = __float2half_rn(x[i]);
}

__global__ void AddBiasKernel(float* x, const float* bias, int64_t width) {
  float* row = x + blockIdx.x * width;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) row[i] += bias[i];
}

// blockIdx = (row, head); thread i rotates the pair (a, b) of frequency i.
__global__ void RopeKernel(float* x, int32_t heads, int32_t head_dim, int64_t p0, float theta_scale,
                           const float* freq_factors, bool interleaved, bool round_to_half) {
  const int64_t t = blockIdx.x;
  const int half = head_dim / 2;
  float* h = x + (t * heads + blockIdx.y) * head_dim;
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    // The CPU multiplies theta by theta_scale once per frequency; repeating that product here
    // gives bit-identical angles (pow would not).
    float theta = static_cast<float>(p0 + t);
    for (int j = 0; j < i; ++j) theta *= theta_scale;
    const float angle = theta / freq_factors[i];
    const float cs = cosf(angle), sn = sinf(angle);
    const int a = interleaved ? 2 * i : i;
    const int b = interleaved ? 2 * i + 1 : i + half;
    const float x0 = h[a], x1 = h[b];
    float ra = fmaf(x0, cs, -(x1 * sn));
    float rb = fmaf(x0, sn, x1 * cs);
    if (round_to_half) {
      ra = RoundHalf(ra);
      rb = RoundHalf(rb);
    }
    h[a] = ra;
    h[b] = rb;
  }
}

// blockIdx = (row, KV head); threads over head_dim.
__global__ void StoreKvKernel(const float* k, const float* v, int64_t p0, int32_t kv_heads, int32_t head_dim,
                              __half* kv) {
  const int64_t t = blockIdx.x, pos = p0 + t;
  const int32_t h = blockIdx.y;
  const int64_t head_elems = 2LL * kBlockTokens * head_dim;
  __half* block = kv + (pos / kBlockTokens) * kv_heads * head_elems + h * head_elems;
  __half* kd = block + (pos % kBlockTokens) * head_dim;
  __half* vd = block + (kBlockTokens + pos % kBlockTokens) * head_dim;
  const int64_t src = (t * kv_heads + h) * head_dim;
  for (int i = threadIdx.x; i < head_dim; i += blockDim.x) {
    kd[i] = __float2half_rn(k[src + i]);
    vd[i] = __float2half_rn(v[src + i]);
  }
}

__global__ void SwiGluKernel(float* gate, const float* up, int64_t count) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= count) return;
  const float g = gate[i];
  gate[i] = g / (1.0f + expf(-g)) * up[i];
}

__global__ void AddKernel(float* x, const float* y, int64_t count) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < count) x[i] += y[i];
}

// Running softmax state (max m, sum s of exp(x - m)) of two halves, merged.
__device__ void MergeSoftmax(float& m, float& s, float m2, float s2) {
  const float mx = fmaxf(m, m2);
  if (mx == -CUDART_INF_F) return;  // both empty
  s = s * expf(m - mx) + s2 * expf(m2 - mx);
  m = mx;
}

// blockIdx = (query head, query). Two passes over the query's blocks, tile by tile: the first finds
// the softmax's max and sum, the second computes each probability (rounded to half, as the CPU
// path rounds them) and accumulates probability times value. Scores are recomputed in the second
// pass instead of stored, so memory does not grow with the context.
__global__ void __launch_bounds__(kAttentionThreads) AttentionKernel(AttentionArgs a) {
  __shared__ float q[kMaxHeadDim];
  __shared__ float probs[kAttentionThreads];
  __shared__ int32_t tile_blocks[kTileBlocks];
  __shared__ float warp_m[kWarps], warp_s[kWarps];
  __shared__ float final_m, final_inv;

  const int32_t h = blockIdx.x;
  const int64_t t = blockIdx.y;
  const int32_t kvh = h / (a.n_heads / a.kv_heads);
  const int32_t hd = a.head_dim;
  const int64_t visible = a.p0 + t + 1;
  const int64_t head_elems = 2LL * kBlockTokens * hd;
  const int64_t block_elems = a.kv_heads * head_elems;
  const int slot = threadIdx.x / kBlockTokens, lane = threadIdx.x % kBlockTokens;

  const float* qh = a.q + (t * a.n_heads + h) * hd;
  for (int i = threadIdx.x; i < hd; i += blockDim.x) q[i] = qh[i];
  int64_t first = 0, count = (visible + kBlockTokens - 1) / kBlockTokens;
  if (a.block_ids != nullptr) {
    first = a.block_offsets[kvh];
    count = a.block_offsets[kvh + 1] - first;
  }
  __syncthreads();

  auto block_at = [&](int64_t i) -> int32_t {
    return a.block_ids != nullptr ? a.block_ids[first + i] : static_cast<int32_t>(i);
  };
  // The score of this thread's key in block b, or -inf past the query's position (the block's
  // count, as DecodeAttention's counts[i]).
  auto score = [&](int32_t b) -> float {
    const int64_t pos = static_cast<int64_t>(b) * kBlockTokens + lane;
    if (pos >= visible) return -CUDART_INF_F;
    const __half* k = a.kv + b * block_elems + kvh * head_elems + static_cast<int64_t>(lane) * hd;
    float acc = 0.0f;
    for (int i = 0; i < hd; ++i) acc = fmaf(__half2float(k[i]), q[i], acc);
    return acc * a.scale;
  };

  // Pass 1: max and sum.
  float m = -CUDART_INF_F, s = 0.0f;
  for (int64_t i0 = 0; i0 < count; i0 += kTileBlocks) {
    const int64_t i = i0 + slot;
    if (i < count) {
      const float x = score(block_at(i));
      if (x != -CUDART_INF_F) MergeSoftmax(m, s, x, 1.0f);
    }
  }
  for (int offset = 16; offset > 0; offset /= 2) {
    const float m2 = __shfl_down_sync(0xffffffffu, m, offset);
    const float s2 = __shfl_down_sync(0xffffffffu, s, offset);
    MergeSoftmax(m, s, m2, s2);
  }
  if (threadIdx.x % 32 == 0) {
    warp_m[threadIdx.x / 32] = m;
    warp_s[threadIdx.x / 32] = s;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float bm = warp_m[0], bs = warp_s[0];
    for (int w = 1; w < kWarps; ++w) MergeSoftmax(bm, bs, warp_m[w], warp_s[w]);
    final_m = bm;
    // Softmax multiplies by the reciprocal of the sum; no key (an empty block list) gives zeros.
    final_inv = bs > 0.0f ? static_cast<float>(1.0 / static_cast<double>(bs)) : 0.0f;
  }
  __syncthreads();
  const float mx = final_m, inv = final_inv;

  // Pass 2: probabilities and the weighted sum of values.
  float acc[kDimsPerThread];
  for (int r = 0; r < kDimsPerThread; ++r) acc[r] = 0.0f;
  for (int64_t i0 = 0; i0 < count; i0 += kTileBlocks) {
    const int64_t i = i0 + slot;
    int32_t b = -1;
    float p = 0.0f;
    if (i < count) {
      b = block_at(i);
      const float x = score(b);
      if (x != -CUDART_INF_F) p = RoundHalf(expf(x - mx) * inv);
    }
    probs[threadIdx.x] = p;
    if (lane == 0) tile_blocks[slot] = b;
    __syncthreads();
    if (a.block_max != nullptr && lane == 0 && b >= 0) {
      float bmax = 0.0f, bsum = 0.0f;
      for (int j = 0; j < kBlockTokens; ++j) {
        bmax = fmaxf(bmax, probs[slot * kBlockTokens + j]);
        bsum += probs[slot * kBlockTokens + j];
      }
      a.block_max[h * a.n_blocks + b] = bmax;
      a.block_sum[h * a.n_blocks + b] = bsum;
    }
    for (int r = 0; r < kDimsPerThread; ++r) {
      const int dim = threadIdx.x + r * kAttentionThreads;
      if (dim >= hd) break;
      for (int j = 0; j < kAttentionThreads; ++j) {
        const int32_t bj = tile_blocks[j / kBlockTokens];
        if (bj < 0) break;  // slots past the list's end (they come last)
        const float pj = probs[j];
        if (pj == 0.0f) continue;
        const __half* v =
            a.kv + bj * block_elems + kvh * head_elems + static_cast<int64_t>(kBlockTokens + j % kBlockTokens) * hd;
        acc[r] = fmaf(pj, __half2float(v[dim]), acc[r]);
      }
    }
    __syncthreads();  // probs and tile_blocks are rewritten by the next tile
  }
  float* out = a.out + (t * a.n_heads + h) * hd;
  for (int r = 0; r < kDimsPerThread; ++r) {
    const int dim = threadIdx.x + r * kAttentionThreads;
    if (dim < hd) out[dim] = acc[r];
  }
}

}  // namespace

cudaError_t LaunchEmbed(const void* table, bool table_f16, const int32_t* tokens, int64_t n, int64_t d, float* x,
                        cudaStream_t stream) {
  EmbedKernel<<<static_cast<unsigned>(n), kRowThreads, 0, stream>>>(table, table_f16, tokens, d, x);
  return cudaGetLastError();
}

cudaError_t LaunchRmsNorm(const float* x, const float* weight, int64_t n, int64_t d, float eps, float* out,
                          cudaStream_t stream) {
  RmsNormKernel<<<static_cast<unsigned>(n), kRowThreads, 0, stream>>>(x, weight, d, eps, out);
  return cudaGetLastError();
}

cudaError_t LaunchToHalf(const float* x, int64_t count, __half* out, cudaStream_t stream) {
  ToHalfKernel<<<Blocks(count, kRowThreads), kRowThreads, 0, stream>>>(x, count, out);
  return cudaGetLastError();
}

cudaError_t LaunchAddBias(float* x, const float* bias, int64_t n, int64_t width, cudaStream_t stream) {
  AddBiasKernel<<<static_cast<unsigned>(n), kRowThreads, 0, stream>>>(x, bias, width);
  return cudaGetLastError();
}

cudaError_t LaunchRope(float* x, int64_t n, int32_t heads, int32_t head_dim, int64_t p0, float theta_scale,
                       const float* freq_factors, bool interleaved, bool round_to_half, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>(heads));
  RopeKernel<<<grid, kMaxHeadDim / 2, 0, stream>>>(x, heads, head_dim, p0, theta_scale, freq_factors, interleaved,
                                                   round_to_half);
  return cudaGetLastError();
}

cudaError_t LaunchStoreKv(const float* k, const float* v, int64_t n, int64_t p0, int32_t kv_heads, int32_t head_dim,
                          __half* kv, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>(kv_heads));
  StoreKvKernel<<<grid, kMaxHeadDim, 0, stream>>>(k, v, p0, kv_heads, head_dim, kv);
  return cudaGetLastError();
}

cudaError_t LaunchSwiGlu(float* gate, const float* up, int64_t count, cudaStream_t stream) {
  SwiGluKernel<<<Blocks(count, kRowThreads), kRowThreads, 0, stream>>>(gate, up, count);
  return cudaGetLastError();
}

cudaError_t LaunchAdd(float* x, const float* y, int64_t count, cudaStream_t stream) {
  AddKernel<<<Blocks(count, kRowThreads), kRowThreads, 0, stream>>>(x, y, count);
  return cudaGetLastError();
}

cudaError_t LaunchAttention(const AttentionArgs& args, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(args.n_heads), static_cast<unsigned>(args.n));
  AttentionKernel<<<grid, kAttentionThreads, 0, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace foresight::worker::cuda
