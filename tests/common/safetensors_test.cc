#include "common/safetensors.h"

#include <cstdio>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

namespace foresight {
namespace {

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/" + name + "_" + std::to_string(::getpid());
}

TEST(SafetensorsTest, WriteThenReadRoundTrips) {
  const std::string path = TempPath("rt.safetensors");
  std::vector<float> a = {1.f, -2.5f, 3.25f, 4.f, 5.f, 6.f};
  std::vector<float> b = {42.f};
  ASSERT_TRUE(WriteSafetensors(path,
                               {TensorToWrite::F32("a", {2, 3}, a.data()), TensorToWrite::F32("b", {1}, b.data())},
                               {{"note", "hi"}})
                  .ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  auto t = (*file)->Get("a");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ((*t)->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ((*t)->ToFloat32(), a);
  EXPECT_EQ((*(*file)->Get("b"))->ToFloat64(), std::vector<double>{42.0});
  EXPECT_EQ((*file)->metadata().at("note"), "hi");
  EXPECT_FALSE((*file)->Get("missing").ok());
  std::remove(path.c_str());
}

TEST(SafetensorsTest, TruncatedFileIsRefusedWithItsName) {
  const std::string path = TempPath("trunc.safetensors");
  std::vector<float> a(100, 1.f);
  ASSERT_TRUE(WriteSafetensors(path, {TensorToWrite::F32("a", {100}, a.data())}).ok());
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size() - 40));
  }
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_NE(file.status().message().find(path), std::string::npos);
  EXPECT_NE(file.status().message().find("'a'"), std::string::npos);
  std::remove(path.c_str());
}

// A shape whose element count overflows 64 bits is refused, not multiplied out (safetensors_fuzz).
TEST(SafetensorsTest, ShapesTooLargeToCountAreRefused) {
  const std::string path = TempPath("huge.safetensors");
  const std::string header =
      R"({"t": {"dtype": "F32", "shape": [1099511627776, 1099511627776, 16], "data_offsets": [0, 0]}})";
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    const uint64_t len = header.size();
    out.write(reinterpret_cast<const char*>(&len), 8);
    out << header;
  }
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_NE(file.status().message().find("'t' has a bad shape (too many elements)"), std::string::npos)
      << file.status().ToString();
  std::remove(path.c_str());
}

TEST(SafetensorsTest, ReadsPublishedPredictorWeights) {
  const std::string path =
      std::string(FORESIGHT_SOURCE_DIR) + "/../shared/reference/attention_predictor/cnn_llama3.1.safetensors";
  if (!std::ifstream(path)) GTEST_SKIP() << "reference data not beside the checkout: " << path;
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  int64_t params = 0;
  for (const auto& [name, t] : (*file)->tensors()) params += t.numel();
  EXPECT_EQ(params, 4833);
}

}  // namespace
}  // namespace foresight
