// The CPU CNN against the published test vectors: both checkpoints, every case.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "common/safetensors.h"
#include "predictor/cnn_cpu.h"
#include "predictor/cnn_weights.h"

namespace foresight::predictor {
namespace {

const std::string kReferenceDir = FORESIGHT_SOURCE_DIR "/../shared/reference/attention_predictor/";

// Relative error of a case: max over all N x L outputs of |got - want|, divided by the max of
// |want| over the case (so a near-zero output does not blow the ratio up).
double CaseRelativeError(const std::vector<float>& got, const std::vector<double>& want) {
  double max_diff = 0.0, max_ref = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    max_diff = std::max(max_diff, std::abs(static_cast<double>(got[i]) - want[i]));
    max_ref = std::max(max_ref, std::abs(want[i]));
  }
  return max_ref == 0.0 ? max_diff : max_diff / max_ref;
}

class CnnReferenceTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CnnReferenceTest, ReproducesPublishedVectors) {
  const std::string checkpoint = GetParam();
  auto weights = CnnWeights::Load(kReferenceDir + "cnn_" + checkpoint + ".safetensors");
  auto vectors = SafetensorsFile::Open(kReferenceDir + "vectors.safetensors");
  if (!weights.ok() || !vectors.ok()) GTEST_SKIP() << "reference data not found in " << kReferenceDir;
  int cases = 0;
  for (const auto& [name, tensor] : (*vectors)->tensors()) {
    const std::string suffix = ".input";
    if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    const std::string prefix = name.substr(0, name.size() - suffix.size());
    auto expected = (*vectors)->Get(prefix + "." + checkpoint);
    ASSERT_TRUE(expected.ok()) << expected.status().ToString();
    ASSERT_EQ(tensor.shape.size(), 3u);
    const int64_t n = tensor.shape[0], h = tensor.shape[1], l = tensor.shape[2];
    ASSERT_EQ(h, kCnnRows);
    const std::vector<float> input = tensor.ToFloat32();
    const std::vector<double> want = (*expected)->ToFloat64();
    std::vector<float> got(n * l);
    std::vector<HistoryImage> images;
    std::vector<float*> outputs;
    for (int64_t i = 0; i < n; ++i) {
      images.push_back(HistoryImage::Contiguous(&input[i * h * l], l, l));
      outputs.push_back(&got[i * l]);
    }
    RunCnnBatch(**weights, images, outputs, 2);
    const double err = CaseRelativeError(got, want);
    std::printf("%s %s N=%lld L=%lld relative error %.3g\n", checkpoint.c_str(), prefix.c_str(),
                static_cast<long long>(n), static_cast<long long>(l), err);
    EXPECT_LT(err, 1e-5) << prefix;
    // The single-image, single-thread path computes the same numbers.
    std::vector<float> single(l);
    RunCnn(**weights, images[0], single.data());
    for (int64_t c = 0; c < l; ++c) ASSERT_EQ(single[c], got[c]) << prefix << " column " << c;
    ++cases;
  }
  EXPECT_GT(cases, 0);
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, CnnReferenceTest, ::testing::Values("llama3.1", "longchat"));

}  // namespace
}  // namespace foresight::predictor
