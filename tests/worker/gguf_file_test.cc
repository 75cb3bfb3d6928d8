#include "worker/gguf_file.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "worker/gguf_writer.h"
#include "worker/quantized_kernels.h"

namespace foresight::worker {
namespace {

std::string TempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("foresight_gguf_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

std::vector<float> RandomValues(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

TEST(GgufFileTest, RoundTripsMetadataAndTensors) {
  GgufWriter w;
  w.SetString("general.architecture", "llama");
  w.SetU32("llama.block_count", 3);
  w.SetF32("llama.rope.freq_base", 10000.0f);
  w.SetBool("tokenizer.ggml.add_bos_token", true);
  w.SetStringArray("tokenizer.ggml.tokens", {"a", "b", "c d"});
  w.SetI32Array("tokenizer.ggml.token_type", {1, 1, 3});
  w.SetF32Array("scores", {0.5f, -1.0f});
  const std::vector<float> values = RandomValues(64 * 3, 1);
  for (TensorType t : {TensorType::kF32, TensorType::kF16, TensorType::kBF16, TensorType::kQ8_0, TensorType::kQ4_0,
                       TensorType::kQ4_1}) {
    ASSERT_TRUE(w.AddFloatTensor(std::string("t.") + TensorTypeName(t), t, {64, 3}, values).ok());
  }
  const std::string path = TempPath("roundtrip.gguf");
  ASSERT_TRUE(w.Write(path).ok());

  auto file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  const GgufFile& g = **file;
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(*g.GetString("general.architecture"), "llama");
  EXPECT_EQ(*g.GetInt("llama.block_count"), 3);
  EXPECT_DOUBLE_EQ(*g.GetFloat("llama.rope.freq_base"), 10000.0);
  EXPECT_EQ(*g.GetInt("tokenizer.ggml.add_bos_token"), 1);
  EXPECT_EQ((**g.GetStringArray("tokenizer.ggml.tokens"))[2], "c d");
  EXPECT_EQ((**g.GetIntArray("tokenizer.ggml.token_type"))[2], 3);
  EXPECT_DOUBLE_EQ((**g.GetFloatArray("scores"))[1], -1.0);
  EXPECT_EQ(*g.GetIntOr("absent", 7), 7);
  EXPECT_FALSE(g.GetInt("general.architecture").ok());  // wrong type
  auto missing = g.GetString("absent");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find(path), std::string::npos);
  EXPECT_NE(missing.status().message().find("absent"), std::string::npos);

  const struct {
    TensorType type;
    float tolerance;
  } cases[] = {{TensorType::kF32, 0.0f},   {TensorType::kF16, 2e-3f},  {TensorType::kBF16, 2e-2f},
               {TensorType::kQ8_0, 2e-2f}, {TensorType::kQ4_0, 0.35f}, {TensorType::kQ4_1, 0.35f}};
  for (const auto& c : cases) {
    auto t = g.GetTensor(std::string("t.") + TensorTypeName(c.type));
    ASSERT_TRUE(t.ok());
    EXPECT_EQ((*t)->dims, (std::vector<int64_t>{64, 3}));
    EXPECT_EQ((*t)->rows(), 3);
    std::vector<float> back(64 * 3);
    for (int r = 0; r < 3; ++r) {
      DequantizeRow(c.type, (*t)->data + r * TensorTypeBytes(c.type, 64), 64, back.data() + r * 64);
    }
    float max_err = 0;
    for (size_t i = 0; i < values.size(); ++i) max_err = std::max(max_err, std::fabs(back[i] - values[i]));
    EXPECT_LE(max_err, c.tolerance) << TensorTypeName(c.type);
  }
  std::filesystem::remove(path);
}

TEST(GgufFileTest, RefusesTruncatedFileNamingFileAndTensor) {
  GgufWriter w;
  w.SetString("general.architecture", "llama");
  ASSERT_TRUE(w.AddFloatTensor("big.weight", TensorType::kF32, {256, 4}, RandomValues(1024, 2)).ok());
  const std::string path = TempPath("truncated.gguf");
  ASSERT_TRUE(w.Write(path).ok());
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 100);
  auto file = GgufFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_NE(file.status().message().find(path), std::string::npos) << file.status().ToString();
  EXPECT_NE(file.status().message().find("big.weight"), std::string::npos) << file.status().ToString();
  EXPECT_NE(file.status().message().find("truncated"), std::string::npos) << file.status().ToString();

  // Cut inside the metadata.
  std::filesystem::resize_file(path, 30);
  file = GgufFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_NE(file.status().message().find("truncated"), std::string::npos) << file.status().ToString();
  std::filesystem::remove(path);
}

TEST(GgufFileTest, RefusesNonGgufAndUnknownTypes) {
  const std::string path = TempPath("notgguf.bin");
  {
    std::ofstream f(path, std::ios::binary);
    f << "this is not a model file at all";
  }
  auto file = GgufFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_NE(file.status().message().find("not a GGUF file"), std::string::npos);
  EXPECT_NE(file.status().message().find(path), std::string::npos);

  GgufWriter w;
  w.AddTensor("odd.weight", static_cast<TensorType>(77), {32}, std::vector<uint8_t>(64));
  ASSERT_TRUE(w.Write(path).ok());
  file = GgufFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_NE(file.status().message().find("odd.weight"), std::string::npos) << file.status().ToString();
  std::filesystem::remove(path);
}

// Hand-made headers with counts and offsets that the file cannot back (found by gguf_fuzz): each
// is refused by name, without reserving gigabytes, overflowing a count, or wrapping an offset back
// into the file.
TEST(GgufFileTest, RefusesCountsAndOffsetsTheFileCannotHold) {
  auto le = [](std::string* out, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
  };
  auto header = [&](uint64_t tensors, uint64_t keys) {
    std::string h = "GGUF";
    le(&h, 3, 4);
    le(&h, tensors, 8);
    le(&h, keys, 8);
    return h;
  };
  auto tensor_info = [&](std::string* out, const std::vector<uint64_t>& dims, uint64_t offset) {
    le(out, 1, 8);
    out->push_back('t');
    le(out, dims.size(), 4);
    for (uint64_t d : dims) le(out, d, 8);
    le(out, 0, 4);  // F32
    le(out, offset, 8);
  };
  std::string array = header(0, 1);  // one key: an array of 2^31 strings in a 60-byte file
  le(&array, 1, 8);
  array += "k";
  le(&array, 9, 4);  // array
  le(&array, 8, 4);  // of strings
  le(&array, 1ull << 31, 8);
  std::string many_tensors = header(1u << 24, 0);
  std::string huge_dims = header(1, 0);
  tensor_info(&huge_dims, {1ull << 40, 1ull << 40, 1ull << 40, 1ull << 40}, 0);
  std::string wrapped = header(1, 0);
  tensor_info(&wrapped, {4}, 0 - 64ull);  // data_start (64) + offset wraps to 0
  wrapped.resize(256, '\0');
  const std::pair<std::string, std::string> cases[] = {
      {array, "metadata array k runs past the end"},
      {many_tensors, "the tensor directory (16777216 tensors) runs past the end"},
      {huge_dims, "too many elements"},
      {wrapped, "is truncated: tensor t needs bytes"},
  };
  const std::string path = TempPath("hostile.gguf");
  for (const auto& [bytes, expect] : cases) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
    auto file = GgufFile::Open(path);
    ASSERT_FALSE(file.ok()) << expect;
    EXPECT_EQ(file.status().code(), StatusCode::kDataLoss) << file.status().ToString();
    EXPECT_NE(file.status().message().find(expect), std::string::npos) << file.status().ToString();
  }
  std::filesystem::remove(path);
}

TEST(GgufFileTest, MissingFileIsAnError) {
  auto file = GgufFile::Open("/nonexistent/model.gguf");
  ASSERT_FALSE(file.ok());
  EXPECT_NE(file.status().message().find("/nonexistent/model.gguf"), std::string::npos);
}

}  // namespace
}  // namespace foresight::worker
