// The CUDA CNN against the CPU one on random data; skips cleanly where no GPU is usable.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "predictor/cnn_cpu.h"
#include "predictor/cuda/cnn_cuda.h"
#include "tests/predictor/cnn_naive_reference.h"

namespace foresight::predictor {
namespace {

TEST(CnnCudaTest, MatchesCpuOnRandomImages) {
  std::string why;
  if (!CudaDeviceAvailable(&why)) GTEST_SKIP() << "no usable GPU: " << why;
  auto weights = CnnWeights::Random(21);
  auto cuda = CudaCnn::Create(*weights);
  ASSERT_TRUE(cuda.ok()) << cuda.status().ToString();
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  for (int64_t columns : {1, 5, 31, 32, 33, 257, 1000}) {
    const int64_t n = 3;
    std::vector<float> images(n * kCnnRows * columns);
    for (auto& v : images) v = u(rng) < 0.9f ? 0.01f * u(rng) : u(rng);
    std::vector<float> gpu(n * columns), cpu(n * columns);
    ASSERT_TRUE((*cuda)->Run(images.data(), n, columns, gpu.data()).ok());
    for (int64_t i = 0; i < n; ++i) {
      RunCnn(*weights, HistoryImage::Contiguous(&images[i * kCnnRows * columns], columns, columns), &cpu[i * columns]);
    }
    EXPECT_LT(testing::RelativeError(gpu, cpu), 1e-5) << "columns " << columns;
  }
}

TEST(CnnCudaTest, CreateReportsUnavailableWithoutGpu) {
  std::string why;
  if (CudaDeviceAvailable(&why)) GTEST_SKIP() << "a GPU is present";
  auto cuda = CudaCnn::Create(*CnnWeights::Random(1));
  ASSERT_FALSE(cuda.ok());
  EXPECT_EQ(cuda.status().code(), StatusCode::kUnavailable) << cuda.status().ToString();
}

}  // namespace
}  // namespace foresight::predictor
