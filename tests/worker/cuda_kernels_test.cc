// Each kernel of worker/cuda/cuda_kernels.h against its CPU reference (worker/transformer_kernels.h,
// and attention as Sequence::DecodeAttention defines it) on random data. Skips where no GPU is
// usable. Bounds are relative to the largest reference value; they allow the last-ulp differences
// of expf/cosf/sinf against the CPU's polynomial exp and glibc, and summation order.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "worker/cuda/cuda_kernels.h"
#include "worker/cuda/cuda_sequence.h"
#include "worker/kv_cache.h"
#include "worker/transformer_kernels.h"

namespace foresight::worker {
namespace {

template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(const std::vector<T>& host) : n_(host.size()) {
    EXPECT_EQ(cudaMalloc(&p_, std::max<size_t>(1, n_) * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(p_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~DeviceArray() { cudaFree(p_); }
  T* get() const { return static_cast<T*>(p_); }
  std::vector<T> ToHost() const {
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<T> host(n_);
    EXPECT_EQ(cudaMemcpy(host.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return host;
  }

 private:
  void* p_ = nullptr;
  size_t n_;
};

std::vector<float> Random(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

double MaxRelativeDiff(const std::vector<float>& ref, const std::vector<float>& got) {
  double scale = 0, diff = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    scale = std::max(scale, std::fabs(static_cast<double>(ref[i])));
    diff = std::max(diff, std::fabs(static_cast<double>(got[i]) - ref[i]));
  }
  return scale > 0 ? diff / scale : diff;
}

#define SKIP_WITHOUT_GPU()                                                   \
  do {                                                                       \
    Status device = CudaDeviceStatus();                                      \
    if (!device.ok()) GTEST_SKIP() << "no usable GPU: " << device.message(); \
  } while (0)

TEST(CudaKernelsTest, RmsNormMatchesCpu) {
  SKIP_WITHOUT_GPU();
  const int64_t n = 5, d = 576;
  const std::vector<float> x = Random(n * d, 1, 3.0f), w = Random(d, 2);
  std::vector<float> ref(n * d);
  for (int64_t t = 0; t < n; ++t) RmsNorm(x.data() + t * d, w.data(), d, 1e-5f, ref.data() + t * d);
  DeviceArray<float> dx(x), dw(w), dout(std::vector<float>(n * d));
  ASSERT_EQ(cuda::LaunchRmsNorm(dx.get(), dw.get(), n, d, 1e-5f, dout.get(), nullptr), cudaSuccess);
  EXPECT_LE(MaxRelativeDiff(ref, dout.ToHost()), 1e-6);
}

TEST(CudaKernelsTest, RopeMatchesCpuInBothStylesWithLlama3Factors) {
  SKIP_WITHOUT_GPU();
  for (RopeStyle style : {RopeStyle::kInterleaved, RopeStyle::kHalves}) {
    for (int hd : {16, 64, 128}) {
      ModelConfig c;
      c.head_dim = hd;
      c.rope_theta = 500000.0f;
      c.rope_style = style;
      c.rope_freq_factors = Llama3RopeFreqFactors(hd, c.rope_theta, 8.0f, 1.0f, 4.0f, 8192.0f);
      const int32_t heads = 3;
      const int64_t n = 4, p0 = 9000;
      const std::vector<float> x = Random(n * heads * hd, 3);
      for (bool round : {false, true}) {
        std::vector<float> ref = x;
        Rope rope(c);
        for (int64_t t = 0; t < n; ++t) {
          rope.Apply(ref.data() + t * heads * hd, heads, p0 + t);
          if (round) RoundToHalf(ref.data() + t * heads * hd, heads * hd);
        }
        DeviceArray<float> dx(x), dff(c.rope_freq_factors);
        const float theta_scale = std::pow(c.rope_theta, -2.0f / static_cast<float>(c.head_dim));
        ASSERT_EQ(cuda::LaunchRope(dx.get(), n, heads, hd, p0, theta_scale, dff.get(), style == RopeStyle::kInterleaved,
                                   round, nullptr),
                  cudaSuccess);
        // Rounded to half, a last-bit difference may become one half ulp.
        EXPECT_LE(MaxRelativeDiff(ref, dx.ToHost()), round ? 2e-3 : 1e-5) << "head size " << hd << " round " << round;
      }
    }
  }
}

TEST(CudaKernelsTest, SwiGluAddAndBiasMatchCpu) {
  SKIP_WITHOUT_GPU();
  const int64_t n = 1000;
  std::vector<float> gate = Random(n, 4, 4.0f);
  const std::vector<float> up = Random(n, 5);
  DeviceArray<float> dg(gate), du(up);
  SwiGlu(gate.data(), up.data(), n);
  ASSERT_EQ(cuda::LaunchSwiGlu(dg.get(), du.get(), n, nullptr), cudaSuccess);
  EXPECT_LE(MaxRelativeDiff(gate, dg.ToHost()), 1e-5);

  const std::vector<float> x = Random(3 * 40, 6), bias = Random(40, 7);
  DeviceArray<float> dx(x), db(bias), dy(bias);
  ASSERT_EQ(cuda::LaunchAddBias(dx.get(), db.get(), 3, 40, nullptr), cudaSuccess);
  std::vector<float> ref = x;
  for (int t = 0; t < 3; ++t)
    for (int i = 0; i < 40; ++i) ref[t * 40 + i] += bias[i];
  EXPECT_EQ(dx.ToHost(), ref);
  DeviceArray<float> da(bias);
  ASSERT_EQ(cuda::LaunchAdd(da.get(), dy.get(), 40, nullptr), cudaSuccess);
  std::vector<float> twice(bias);
  for (float& v : twice) v += v;
  EXPECT_EQ(da.ToHost(), twice);
}

TEST(CudaKernelsTest, EmbedAndToHalfMatchCpu) {
  SKIP_WITHOUT_GPU();
  const int64_t vocab = 50, d = 24;
  const std::vector<float> table = Random(vocab * d, 8);
  std::vector<uint16_t> table_half(table.size());
  FloatToHalfRow(table.data(), static_cast<int64_t>(table.size()), table_half.data());
  const std::vector<int32_t> tokens = {3, 49, 0, 3};
  DeviceArray<float> dt(table), out(std::vector<float>(tokens.size() * d));
  DeviceArray<uint16_t> dth(table_half);
  DeviceArray<int32_t> dtok(tokens);
  for (bool f16 : {false, true}) {
    ASSERT_EQ(cuda::LaunchEmbed(f16 ? static_cast<const void*>(dth.get()) : dt.get(), f16, dtok.get(),
                                static_cast<int64_t>(tokens.size()), d, out.get(), nullptr),
              cudaSuccess);
    std::vector<float> ref;
    for (int32_t t : tokens) {
      std::vector<float> row(table.begin() + t * d, table.begin() + (t + 1) * d);
      if (f16) RoundToHalf(row.data(), d);
      ref.insert(ref.end(), row.begin(), row.end());
    }
    EXPECT_EQ(out.ToHost(), ref) << "f16 " << f16;
  }
  DeviceArray<uint16_t> halves(std::vector<uint16_t>(table.size()));
  ASSERT_EQ(cuda::LaunchToHalf(dt.get(), static_cast<int64_t>(table.size()), reinterpret_cast<__half*>(halves.get()),
                               nullptr),
            cudaSuccess);
  EXPECT_EQ(halves.ToHost(), table_half);
}

// KV geometry for the store and attention tests, with a KvCache (layer 0) holding the reference.
struct KvFixture {
  int32_t n_heads, kv_heads, head_dim;
  int64_t tokens;
  KvCache kv;
  KvFixture(int32_t nh, int32_t kvh, int32_t hd, int64_t t)
      : n_heads(nh), kv_heads(kvh), head_dim(hd), tokens(t), kv(1, kvh, hd) {
    kv.Resize(tokens);
  }
  // Layer 0's blocks one after another: the device layout.
  std::vector<uint16_t> Contiguous() const {
    const uint64_t bytes = kv.layout().block_bytes();
    std::vector<uint16_t> out(kv.blocks() * bytes / 2);
    for (int64_t b = 0; b < kv.blocks(); ++b) std::memcpy(out.data() + b * bytes / 2, kv.block_data(0, b), bytes);
    return out;
  }
};

TEST(CudaKernelsTest, StoreKvWritesTheBlockLayout) {
  SKIP_WITHOUT_GPU();
  KvFixture f(4, 2, 64, 50);
  const int64_t p0 = 13, n = 30;  // spans a partial first and last block
  const std::vector<float> k = Random(n * f.kv_heads * f.head_dim, 9), v = Random(n * f.kv_heads * f.head_dim, 10);
  for (int64_t t = 0; t < n; ++t) {
    for (int32_t h = 0; h < f.kv_heads; ++h) {
      FloatToHalfRow(k.data() + (t * f.kv_heads + h) * f.head_dim, f.head_dim, f.kv.key(0, h, p0 + t));
      FloatToHalfRow(v.data() + (t * f.kv_heads + h) * f.head_dim, f.head_dim, f.kv.value(0, h, p0 + t));
    }
  }
  const std::vector<uint16_t> ref = f.Contiguous();
  DeviceArray<uint16_t> dkv(std::vector<uint16_t>(ref.size(), 0));
  DeviceArray<float> dk(k), dv(v);
  ASSERT_EQ(cuda::LaunchStoreKv(dk.get(), dv.get(), n, p0, f.kv_heads, f.head_dim, reinterpret_cast<__half*>(dkv.get()),
                                nullptr),
            cudaSuccess);
  EXPECT_EQ(dkv.ToHost(), ref);  // the same rounding (to nearest even), the same bytes
}

// Attention of query head h (at `visible` - 1) over `blocks`, as Sequence::DecodeAttention does it,
// with the value sum in double.
void ReferenceAttention(const KvFixture& f, const float* q, int32_t h, int64_t visible,
                        const std::vector<int32_t>& blocks, float* out, float* block_max, float* block_sum) {
  const int32_t hd = f.head_dim, kvh = h / (f.n_heads / f.kv_heads);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  std::vector<float> sc;
  std::vector<int64_t> pos;
  for (int32_t b : blocks) {
    for (int64_t p = int64_t{b} * 16; p < std::min<int64_t>((b + 1) * 16, visible); ++p) {
      sc.push_back(DotHalf(f.kv.key(0, kvh, p), q, hd) * scale);
      pos.push_back(p);
    }
  }
  Softmax(sc.data(), static_cast<int64_t>(sc.size()));
  RoundToHalf(sc.data(), static_cast<int64_t>(sc.size()));
  std::vector<double> acc(hd, 0.0);
  std::vector<float> row(hd);
  for (size_t i = 0; i < sc.size(); ++i) {
    HalfToFloatRow(f.kv.value(0, kvh, pos[i]), hd, row.data());
    for (int32_t d = 0; d < hd; ++d) acc[d] += static_cast<double>(sc[i]) * row[d];
    if (block_max != nullptr) {
      const int64_t b = pos[i] / 16;
      block_max[b] = std::max(block_max[b], sc[i]);
      block_sum[b] += sc[i];
    }
  }
  for (int32_t d = 0; d < hd; ++d) out[d] = static_cast<float>(acc[d]);
}

class CudaAttentionTest : public ::testing::TestWithParam<std::tuple<int, int, int>> {};

TEST_P(CudaAttentionTest, CausalAndSparseMatchCpu) {
  SKIP_WITHOUT_GPU();
  const auto [n_heads, kv_heads, hd] = GetParam();
  KvFixture f(n_heads, kv_heads, hd, 300);  // 19 blocks: three tiles of 8, the last partial
  std::mt19937 rng(11);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> row(hd);
  for (int64_t p = 0; p < f.tokens; ++p) {
    for (int32_t h = 0; h < kv_heads; ++h) {
      for (float& x : row) x = dist(rng);
      FloatToHalfRow(row.data(), hd, f.kv.key(0, h, p));
      for (float& x : row) x = dist(rng);
      FloatToHalfRow(row.data(), hd, f.kv.value(0, h, p));
    }
  }
  DeviceArray<uint16_t> dkv(f.Contiguous());
  const int64_t qo = int64_t{n_heads} * hd;

  // Causal: 37 queries ending at the last token (a prefill chunk after 263 earlier tokens).
  {
    const int64_t n = 37, p0 = f.tokens - n;
    std::vector<float> q = Random(n * qo, 12, 0.5f);
    RoundToHalf(q.data(), static_cast<int64_t>(q.size()));
    std::vector<float> ref(n * qo);
    for (int64_t t = 0; t < n; ++t) {
      const int64_t visible = p0 + t + 1;
      std::vector<int32_t> all((visible + 15) / 16);
      for (size_t b = 0; b < all.size(); ++b) all[b] = static_cast<int32_t>(b);
      for (int32_t h = 0; h < n_heads; ++h) {
        ReferenceAttention(f, q.data() + t * qo + h * hd, h, visible, all, ref.data() + t * qo + h * hd, nullptr,
                           nullptr);
      }
    }
    DeviceArray<float> dq(q), dout(std::vector<float>(n * qo));
    cuda::AttentionArgs a;
    a.q = dq.get();
    a.kv = reinterpret_cast<const __half*>(dkv.get());
    a.out = dout.get();
    a.n = n;
    a.p0 = p0;
    a.n_heads = n_heads;
    a.kv_heads = kv_heads;
    a.head_dim = hd;
    a.scale = 1.0f / std::sqrt(static_cast<float>(hd));
    ASSERT_EQ(cuda::LaunchAttention(a, nullptr), cudaSuccess);
    EXPECT_LE(MaxRelativeDiff(ref, dout.ToHost()), 2e-3);
  }

  // Sparse decode at the last token: a long list (more than one tile), a short one, an empty one.
  {
    const int64_t p0 = f.tokens - 1, n_blocks = (f.tokens + 15) / 16;
    std::vector<std::vector<int32_t>> lists(kv_heads);
    for (int32_t h = 0; h < kv_heads; ++h) {
      if (h % 3 == 0) {
        for (int32_t b = 0; b < n_blocks; ++b)
          if (b == 0 || b % 2 == 1 || b == n_blocks - 1) lists[h].push_back(b);
      } else if (h % 3 == 1) {
        lists[h] = {0, static_cast<int32_t>(n_blocks - 1)};
      }  // h % 3 == 2: nothing attended
    }
    std::vector<int32_t> offsets = {0}, ids;
    for (const auto& l : lists) {
      ids.insert(ids.end(), l.begin(), l.end());
      offsets.push_back(static_cast<int32_t>(ids.size()));
    }
    std::vector<float> q = Random(qo, 13, 0.5f);
    RoundToHalf(q.data(), qo);
    std::vector<float> ref(qo), ref_max(n_heads * n_blocks, 0.0f), ref_sum(n_heads * n_blocks, 0.0f);
    for (int32_t h = 0; h < n_heads; ++h) {
      ReferenceAttention(f, q.data() + h * hd, h, f.tokens, lists[h / (n_heads / kv_heads)], ref.data() + h * hd,
                         ref_max.data() + h * n_blocks, ref_sum.data() + h * n_blocks);
    }
    DeviceArray<float> dq(q), dout(std::vector<float>(qo, 1.0f)), dmax(std::vector<float>(n_heads * n_blocks, 0.0f)),
        dsum(std::vector<float>(n_heads * n_blocks, 0.0f));
    DeviceArray<int32_t> doff(offsets), dids(ids);
    cuda::AttentionArgs a;
    a.q = dq.get();
    a.kv = reinterpret_cast<const __half*>(dkv.get());
    a.out = dout.get();
    a.n = 1;
    a.p0 = p0;
    a.n_heads = n_heads;
    a.kv_heads = kv_heads;
    a.head_dim = hd;
    a.scale = 1.0f / std::sqrt(static_cast<float>(hd));
    a.block_offsets = doff.get();
    a.block_ids = dids.get();
    a.block_max = dmax.get();
    a.block_sum = dsum.get();
    a.n_blocks = n_blocks;
    ASSERT_EQ(cuda::LaunchAttention(a, nullptr), cudaSuccess);
    EXPECT_LE(MaxRelativeDiff(ref, dout.ToHost()), 2e-3);
    const std::vector<float> got_max = dmax.ToHost(), got_sum = dsum.ToHost();
    for (size_t i = 0; i < ref_max.size(); ++i) {
      EXPECT_NEAR(got_max[i], ref_max[i], 2e-3) << "entry " << i;
      EXPECT_NEAR(got_sum[i], ref_sum[i], 2e-3) << "entry " << i;
    }
  }
}

// (query heads, KV heads, head size): GQA groups of 2 and 4, head sizes up to kMaxHeadDim.
INSTANTIATE_TEST_SUITE_P(Geometries, CudaAttentionTest,
                         ::testing::Values(std::make_tuple(6, 3, 64), std::make_tuple(8, 2, 128),
                                           std::make_tuple(4, 4, 16), std::make_tuple(2, 1, 256)));

}  // namespace
}  // namespace foresight::worker
