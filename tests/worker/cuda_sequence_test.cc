// The CUDA backend (worker/cuda/cuda_sequence.h) against the CPU one (worker/sequence.h) on
// synthetic models with random weights: chunked prefill logits, dense and sparse decode logits, and
// what a decode hook sees (queries, KV bytes) and hears back (per-block attention). Skips where no
// GPU is usable; the "no device" error path runs there instead.
//
// Tolerances. Both backends round to half at the same points (queries, keys, values, attention
// probabilities), but their float arithmetic differs in order (cuBLAS vs OpenBLAS sums, warp
// reductions vs 16 lanes) and in the last ulp of exp, cos and sin. A last-bit difference before a
// half rounding becomes a one-half-ulp difference (2^-11 relative) after it, and the two layers
// carry it on. Bounds on max |gpu - cpu| over max |cpu| per row of logits (set from that reasoning;
// not yet measured on a GPU):
//   F32 weights: 2e-3 (float products on both sides; the differences are those roundings);
//   F16 weights: 1e-2 (the GPU also rounds activations to half for its half matrix products);
//   Q8_0 weights: 5e-2 (the CPU quantises activations to 8 bits, as llama.cpp does; the GPU
//     multiplies half activations by the dequantised half weights).
// Top-1 must agree wherever the CPU's top two logits are further apart than twice the tolerance.
#include <gtest/gtest.h>

#include <unistd.h>
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <random>

#include "worker/backend.h"
#include "worker/cuda/cuda_sequence.h"
#include "worker/sampler.h"
#include "worker/synthetic_model.h"
#include "worker/transformer_kernels.h"

namespace foresight::worker {
namespace {

// Sink block 0, every other middle block (which ones differs by KV head and layer), and the last
// (local) block: the shape of a selection policy's lists, long enough to span more than one of the
// attention kernel's 8-block tiles. Records what the step's attention looked like.
class FixedBlocksHook : public DecodeAttentionHook {
 public:
  explicit FixedBlocksHook(int32_t n_layers)
      : queries(n_layers), last_block(n_layers), block_max(n_layers), block_sum(n_layers) {}

  bool SelectBlocks(int32_t layer, int64_t position, const float* q, const KvCache& kv,
                    std::vector<std::vector<int32_t>>* blocks) override {
    const int64_t n_blocks = kv.blocks();
    const BlockLayout& layout = kv.layout();
    const int64_t qo = n_heads * layout.head_dim();
    queries[layer].assign(q, q + qo);
    const uint16_t* last = reinterpret_cast<const uint16_t*>(kv.block_data(layer, n_blocks - 1));
    last_block[layer].resize(layout.block_bytes() / 2);
    HalfToFloatRow(last, static_cast<int64_t>(last_block[layer].size()), last_block[layer].data());
    if (!sparse) return false;
    for (size_t h = 0; h < blocks->size(); ++h) {
      std::vector<int32_t>& b = (*blocks)[h];
      b.assign(1, 0);
      for (int32_t m = 1; m + 1 < n_blocks; ++m) {
        if ((m + h + layer) % 2 == 0) b.push_back(m);
      }
      if (n_blocks > 1) b.push_back(static_cast<int32_t>(n_blocks - 1));
    }
    return true;
  }
  void OnAttention(int32_t layer, int64_t position, const float* q, bool dense, const float* bmax, const float* bsum,
                   int64_t n_blocks) override {
    block_max[layer].assign(bmax, bmax + n_heads * n_blocks);
    block_sum[layer].assign(bsum, bsum + n_heads * n_blocks);
    was_dense = dense;
  }

  bool sparse = true;
  int64_t n_heads = 0;
  bool was_dense = false;
  std::vector<std::vector<float>> queries, last_block, block_max, block_sum;  // per layer, the last step's
};

// max |b - a| / max |a| over each row of `width` values; the largest over the rows.
double MaxRelativeDiff(const std::vector<float>& a, const std::vector<float>& b, int64_t width) {
  double worst = 0;
  for (size_t r = 0; r * width < a.size(); ++r) {
    double scale = 0, diff = 0;
    for (int64_t i = 0; i < width; ++i) {
      scale = std::max(scale, std::fabs(static_cast<double>(a[r * width + i])));
      diff = std::max(diff, std::fabs(static_cast<double>(b[r * width + i]) - a[r * width + i]));
    }
    worst = std::max(worst, scale > 0 ? diff / scale : diff);
  }
  return worst;
}

// Logits rows close within `tolerance`, and equal top-1 where the CPU's margin is clear.
void ExpectLogitsAgree(const std::vector<float>& cpu, const std::vector<float>& gpu, int64_t vocab, double tolerance,
                       const std::string& what) {
  ASSERT_EQ(cpu.size(), gpu.size()) << what;
  const double diff = MaxRelativeDiff(cpu, gpu, vocab);
  std::printf("%s: max relative logit difference %.3g\n", what.c_str(), diff);
  EXPECT_LE(diff, tolerance) << what;
  for (size_t r = 0; r * vocab < cpu.size(); ++r) {
    auto row = cpu.begin() + r * vocab, grow = gpu.begin() + r * vocab;
    std::vector<float> sorted(row, row + vocab);
    std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
    double scale = 0;
    for (int64_t i = 0; i < vocab; ++i) scale = std::max(scale, std::fabs(static_cast<double>(row[i])));
    if (sorted[0] - sorted[1] <= 2 * tolerance * scale) continue;  // a near tie: either answer is right
    EXPECT_EQ(worker::Argmax(&*row, vocab), worker::Argmax(&*grow, vocab)) << what << " row " << r;
  }
}

// The greedy token of the last row (the generation loops' rule, worker/sampler.h).
TokenId LastRowArgmax(const std::vector<float>& logits, int64_t vocab) {
  return worker::Argmax(logits.data() + logits.size() - vocab, vocab);
}

void CompareBackends(const Model& model, double tolerance, const std::string& name) {
  const ModelConfig& c = model.config();
  const int64_t vocab = c.vocab_size;
  auto gpu_model = CudaModel::Upload(model);
  ASSERT_TRUE(gpu_model.ok()) << gpu_model.status().ToString();
  // Chunks of 64: the later chunks attend the earlier ones; 300 tokens (19 blocks, three attention
  // tiles) end in a partial block.
  std::unique_ptr<Backend> cpu_backend = NewCpuBackend(model);
  std::unique_ptr<BackendSequence> cpu_seq = *cpu_backend->NewSequence(64);
  BackendSequence& cpu = *cpu_seq;
  auto gpu_or = CudaSequence::Create(**gpu_model, 64);
  ASSERT_TRUE(gpu_or.ok()) << gpu_or.status().ToString();
  CudaSequence& gpu = **gpu_or;
  std::mt19937 rng(7);
  std::vector<TokenId> prompt(300);
  for (TokenId& t : prompt) t = static_cast<TokenId>(rng() % vocab);

  std::vector<float> lc, lg;
  ASSERT_TRUE(cpu.Prefill(prompt, &lc, /*all_logits=*/true).ok());
  Status s = gpu.Prefill(prompt, &lg, /*all_logits=*/true);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ExpectLogitsAgree(lc, lg, vocab, tolerance, name + " prefill");
  EXPECT_EQ(gpu.position(), cpu.position());

  // Both decode the CPU's choice, so that one flipped near-tie cannot make the inputs differ.
  for (int step = 0; step < 3; ++step) {
    const TokenId next = LastRowArgmax(lc, vocab);
    ASSERT_TRUE(cpu.Decode(next, &lc).ok());
    s = gpu.Decode(next, &lg);
    ASSERT_TRUE(s.ok()) << s.ToString();
    ExpectLogitsAgree(lc, lg, vocab, tolerance, name + " dense decode " + std::to_string(step));
  }

  FixedBlocksHook hc(c.n_layers), hg(c.n_layers);
  hc.n_heads = hg.n_heads = c.n_heads;
  for (int step = 0; step < 3; ++step) {
    const TokenId next = LastRowArgmax(lc, vocab);
    ASSERT_TRUE(cpu.Decode(next, &lc, &hc).ok());
    s = gpu.Decode(next, &lg, &hg);
    ASSERT_TRUE(s.ok()) << s.ToString();
    const std::string what = name + " sparse decode " + std::to_string(step);
    ExpectLogitsAgree(lc, lg, vocab, tolerance, what);
    EXPECT_FALSE(hg.was_dense) << what;
    for (int32_t l = 0; l < c.n_layers; ++l) {
      EXPECT_LE(MaxRelativeDiff(hc.queries[l], hg.queries[l], c.head_dim * c.n_heads), tolerance)
          << what << " layer " << l;
      EXPECT_LE(MaxRelativeDiff(hc.last_block[l], hg.last_block[l], hc.last_block[l].size()), tolerance)
          << what << " layer " << l << " KV block";
      ASSERT_EQ(hc.block_max[l].size(), hg.block_max[l].size());
      for (size_t i = 0; i < hc.block_max[l].size(); ++i) {
        // Probabilities in [0, 1]: an absolute bound, a few half ulps near 1 or the tolerance.
        const double bound = std::max(2e-3, tolerance);
        EXPECT_NEAR(hc.block_max[l][i], hg.block_max[l][i], bound) << what << " layer " << l << " entry " << i;
        EXPECT_NEAR(hc.block_sum[l][i], hg.block_sum[l][i], bound) << what << " layer " << l << " entry " << i;
        EXPECT_EQ(hc.block_sum[l][i] == 0.0f, hg.block_sum[l][i] == 0.0f) << "the same blocks attended";
      }
    }
  }
  EXPECT_EQ(gpu.stats().blocks_attended, cpu.stats().blocks_attended);
  EXPECT_EQ(gpu.stats().blocks_total, cpu.stats().blocks_total);
  EXPECT_LT(gpu.stats().blocks_attended, gpu.stats().blocks_total);

  // Rewind drops the last step; it is redone densely through the hook (which then declines).
  const int64_t before = gpu.position() - 1;
  gpu.Rewind(before);
  cpu.Rewind(before);
  hc.sparse = hg.sparse = false;
  const TokenId again = prompt[0];
  ASSERT_TRUE(cpu.Decode(again, &lc, &hc).ok());
  s = gpu.Decode(again, &lg, &hg);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(hg.was_dense);
  EXPECT_EQ(gpu.position(), cpu.position());
  ExpectLogitsAgree(lc, lg, vocab, tolerance, name + " dense decode after rewind");
}

SyntheticModelSpec SmallSpec(TensorType type) {
  SyntheticModelSpec s;
  s.type = type;
  s.seed = 11;
  return s;
}

TEST(CudaSequenceTest, F32ModelMatchesCpu) {
  Status device = CudaDeviceStatus();
  if (!device.ok()) GTEST_SKIP() << "no usable GPU: " << device.message();
  auto model = MakeSyntheticModel(SmallSpec(TensorType::kF32));
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  CompareBackends(**model, 2e-3, "f32 halves-RoPE");
}

// Head size 64, 8 query heads over 2 KV heads, qkv bias, untied output, interleaved RoPE with
// llama3 frequency factors, F16 matrices.
TEST(CudaSequenceTest, F16ModelWithBiasAndLlama3RopeMatchesCpu) {
  Status device = CudaDeviceStatus();
  if (!device.ok()) GTEST_SKIP() << "no usable GPU: " << device.message();
  SyntheticModelSpec spec = SmallSpec(TensorType::kF16);
  spec.architecture = "qwen2";
  spec.d_model = 128;
  spec.n_heads = 8;
  spec.n_kv_heads = 2;
  spec.head_dim = 64;
  spec.ffn_dim = 256;
  spec.qkv_bias = true;
  spec.tied_embeddings = false;
  auto base = MakeSyntheticModel(spec);
  ASSERT_TRUE(base.ok()) << base.status().ToString();
  ModelWeights w = (*base)->weights();
  w.config.rope_style = RopeStyle::kInterleaved;
  w.config.rope_theta = 500000.0f;
  w.config.rope_freq_factors = Llama3RopeFreqFactors(w.config.head_dim, w.config.rope_theta, 8.0f, 1.0f, 4.0f, 64.0f);
  auto model = Model::FromWeights(std::move(w), nullptr, "synthetic llama3");
  CompareBackends(*model, 1e-2, "f16 llama3-RoPE");
}

// Through a GGUF file: quantised matrices dequantised to half on upload.
TEST(CudaSequenceTest, Q8_0GgufModelMatchesCpu) {
  Status device = CudaDeviceStatus();
  if (!device.ok()) GTEST_SKIP() << "no usable GPU: " << device.message();
  const std::string path =
      (std::filesystem::temp_directory_path() / ("foresight_cuda_seq_" + std::to_string(::getpid()) + ".gguf"))
          .string();
  ASSERT_TRUE(WriteSyntheticGguf(SmallSpec(TensorType::kQ8_0), path).ok());
  auto model = Model::Open(path);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  CompareBackends(**model, 5e-2, "q8_0 gguf");
  std::filesystem::remove(path);
}

TEST(CudaSequenceTest, NoDeviceIsReportedAsUnavailable) {
  Status device = CudaDeviceStatus();
  if (device.ok()) GTEST_SKIP() << "a GPU is present";
  EXPECT_EQ(device.code(), StatusCode::kUnavailable);
  EXPECT_NE(device.message().find("cuda backend: no CUDA device"), std::string::npos) << device.message();
  auto model = MakeSyntheticModel(SmallSpec(TensorType::kF32));
  ASSERT_TRUE(model.ok());
  auto gpu = CudaModel::Upload(**model);
  ASSERT_FALSE(gpu.ok());
  EXPECT_EQ(gpu.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(gpu.status().message(), device.message());
}

TEST(CudaSequenceTest, BadDeviceIndexIsRefused) {
  Status device = CudaDeviceStatus(-1);
  EXPECT_FALSE(device.ok());
  EXPECT_EQ(device.code(), StatusCode::kUnavailable);
}

}  // namespace
}  // namespace foresight::worker
