#include "worker/compact_keys.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>

#include "worker/quantized_kernels.h"
#include "worker/transformer_kernels.h"

namespace foresight::worker {
namespace {

constexpr int64_t kTokensPerTask = 512;  // tokens of one KV head per OpenMP task
// Below this many (query head, key) pairs a pass runs on the calling thread: waking an OpenMP team
// (sleeping threads, OMP_WAIT_POLICY=passive) costs more than it saves on a short row.
constexpr int64_t kParallelPairs = 1 << 18;

// 32 x 32 signed bytes (|v| <= 127) -> 8 int32 partial sums: maddubs needs one unsigned operand,
// so the key's signs move onto the query.
inline __m256i DotS8(__m256i k, __m256i q) {
  const __m256i pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(k, k), _mm256_sign_epi8(q, k));
  return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
}

// Lane u of the result = the sum of v[u]'s eight lanes.
inline __m256i FoldEight(const __m256i v[8]) {
  const __m256i a = _mm256_hadd_epi32(v[0], v[1]);
  const __m256i b = _mm256_hadd_epi32(v[2], v[3]);
  const __m256i c = _mm256_hadd_epi32(v[4], v[5]);
  const __m256i d = _mm256_hadd_epi32(v[6], v[7]);
  const __m256i ab = _mm256_hadd_epi32(a, b);  // v0..v3 of the low half | v0..v3 of the high half
  const __m256i cd = _mm256_hadd_epi32(c, d);
  return _mm256_add_epi32(_mm256_permute2x128_si256(ab, cd, 0x20), _mm256_permute2x128_si256(ab, cd, 0x31));
}

}  // namespace

CompactKeyCopy::CompactKeyCopy(int32_t n_heads, int32_t kv_heads, int32_t head_dim)
    : n_heads_(n_heads),
      kv_heads_(kv_heads),
      head_dim_(head_dim),
      values_(kv_heads),
      scales_(kv_heads, std::vector<std::vector<float>>((head_dim + 31) / 32)) {}

uint64_t CompactKeyCopy::bytes() const {
  // As stored: one byte per value and a half-precision scale per 32 values.
  return static_cast<uint64_t>(tokens_) * kv_heads_ * Blocks() * 34;
}

void CompactKeyCopy::AppendToken(const float* keys) {
  const int64_t nb = Blocks(), dim = PaddedDim();
  key_row_.assign(dim, 0.0f);  // zero-padded to whole blocks
  std::vector<Q8Activations>& q8 = key_q8_;
  q8.resize(nb);
  for (int32_t h = 0; h < kv_heads_; ++h) {
    std::copy_n(keys + static_cast<int64_t>(h) * head_dim_, head_dim_, key_row_.begin());
    // Q8_0, as llama.cpp rounds it: d = max|x| / 127 in half precision, q = round(x / d).
    QuantizeActivations(key_row_.data(), dim, q8.data());
    std::vector<int8_t>& values = values_[h];
    for (int64_t b = 0; b < nb; ++b) {
      values.insert(values.end(), q8[b].q, q8[b].q + 32);
      scales_[h][b].push_back(q8[b].d);
    }
  }
  ++tokens_;
}

void CompactKeyCopy::Append(const KvCache& kv, int32_t layer, int64_t upto) {
  token_keys_.resize(static_cast<size_t>(kv_heads_) * head_dim_);
  if (upto - tokens_ > 1) {
    // A whole prompt at once (after a prefix import, 7K tokens): one allocation per array instead
    // of a doubling series of copies, as large as the doubling would have made it, so that the
    // decode steps after it do not copy either. (Not per token: a reserve per decode step would
    // copy the whole array every step.)
    for (int32_t h = 0; h < kv_heads_; ++h) {
      values_[h].reserve(std::bit_ceil(static_cast<size_t>(upto) * PaddedDim()));
      for (std::vector<float>& s : scales_[h]) s.reserve(std::bit_ceil(static_cast<size_t>(upto)));
    }
  }
  for (int64_t p = tokens_; p < upto; ++p) {
    for (int32_t h = 0; h < kv_heads_; ++h) HalfToFloatRow(kv.key(layer, h, p), head_dim_, &token_keys_[h * head_dim_]);
    AppendToken(token_keys_.data());
  }
}

void CompactKeyCopy::QuantizeQueries(const float* queries) {
  const int64_t nb = Blocks(), dim = PaddedDim();
  query_q8_.resize(static_cast<size_t>(n_heads_) * nb);
  key_row_.assign(dim, 0.0f);
  for (int32_t h = 0; h < n_heads_; ++h) {
    std::copy_n(queries + static_cast<int64_t>(h) * head_dim_, head_dim_, key_row_.begin());
    QuantizeActivations(key_row_.data(), dim, &query_q8_[h * nb]);
  }
}

int64_t CompactKeyCopy::LogitTasks(int64_t ctx) const {
  return kv_heads_ * ((ctx + kTokensPerTask - 1) / kTokensPerTask);
}

void CompactKeyCopy::LogitTask(int64_t task, int64_t ctx, float* logits) const {
  const int32_t group = n_heads_ / kv_heads_;
  const int64_t nb = Blocks(), dim = PaddedDim();
  const float inv = 1.0f / std::sqrt(static_cast<float>(head_dim_));
  const int64_t tasks_per_head = (ctx + kTokensPerTask - 1) / kTokensPerTask;
  const int32_t kvh = static_cast<int32_t>(task / tasks_per_head);
  const int64_t t0 = (task % tasks_per_head) * kTokensPerTask, t1 = std::min(ctx, t0 + kTokensPerTask);
  const int8_t* keys = values_[kvh].data();
  for (int32_t j = 0; j < group; ++j) {
    const int32_t h = kvh * group + j;
    const Q8Activations* qa = &query_q8_[h * nb];
    float* out = logits + static_cast<int64_t>(h) * ctx;
    int64_t t = t0;
    for (; t + 8 <= t1; t += 8) {
      __m256 sum = _mm256_setzero_ps();
      for (int64_t b = 0; b < nb; ++b) {
        const __m256i qx = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qa[b].q));
        __m256i dots[8];
#pragma GCC unroll 8
        for (int u = 0; u < 8; ++u) {
          const __m256i k = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(keys + (t + u) * dim + b * 32));
          dots[u] = DotS8(k, qx);
        }
        const __m256 scale = _mm256_mul_ps(_mm256_loadu_ps(&scales_[kvh][b][t]), _mm256_set1_ps(qa[b].d));
        sum = _mm256_fmadd_ps(_mm256_cvtepi32_ps(FoldEight(dots)), scale, sum);
      }
      _mm256_storeu_ps(out + t, _mm256_mul_ps(sum, _mm256_set1_ps(inv)));
    }
    for (; t < t1; ++t) {  // the same arithmetic, one key at a time
      float sum = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        int32_t dot = 0;
        for (int i = 0; i < 32; ++i) dot += keys[t * dim + b * 32 + i] * qa[b].q[i];
        sum = std::fma(static_cast<float>(dot), scales_[kvh][b][t] * qa[b].d, sum);
      }
      out[t] = sum * inv;
    }
  }
}

void CompactKeyCopy::Logits(const float* queries, int64_t ctx, std::vector<float>* logits) {
  ctx = std::min(ctx, tokens_);
  logits->resize(static_cast<size_t>(n_heads_) * ctx);
  QuantizeQueries(queries);
  const int64_t tasks = LogitTasks(ctx);
#pragma omp parallel for schedule(dynamic, 1) if (n_heads_ * ctx >= kParallelPairs)
  for (int64_t task = 0; task < tasks; ++task) LogitTask(task, ctx, logits->data());
}

void CompactKeyCopy::DenseRow(const float* queries, int64_t ctx, std::vector<float>* block_max,
                              std::vector<float>* block_sum) {
  ctx = std::min(ctx, tokens_);
  const int64_t n_blocks = (ctx + 15) / 16;
  block_max->resize(static_cast<size_t>(n_heads_) * n_blocks);
  block_sum->resize(static_cast<size_t>(n_heads_) * n_blocks);
  logits_.resize(static_cast<size_t>(n_heads_) * ctx);
  QuantizeQueries(queries);
  const int64_t tasks = LogitTasks(ctx);
  // One thread team for both passes (a team's wake-up costs more than a pass over a short row).
#pragma omp parallel if (n_heads_ * ctx >= kParallelPairs)
  {
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) LogitTask(task, ctx, logits_.data());
#pragma omp for schedule(dynamic, 1)
    for (int32_t h = 0; h < n_heads_; ++h) {
      SoftmaxPooled16(logits_.data() + static_cast<int64_t>(h) * ctx, ctx, block_max->data() + h * n_blocks,
                      block_sum->data() + h * n_blocks);
    }
  }
}

}  // namespace foresight::worker
