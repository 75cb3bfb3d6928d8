// KV geometry: bytes per token by hand, the built-in names, and a Hugging Face folder's config.
#include "planner/kv_geometry.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace foresight::planner {
namespace {

TEST(KvGeometryTest, BytesPerTokenMatchHandComputation) {
  auto smollm2 = ResolveKvGeometry("smollm2-135m");
  ASSERT_TRUE(smollm2.ok()) << smollm2.status().ToString();
  // 2 (K, V) x 30 layers x 3 KV heads x 64 x 2 bytes.
  EXPECT_EQ(KvBytesPerToken(*smollm2, KvDtype::kF16), 23040u);
  EXPECT_EQ(KvBytesPerToken(*smollm2, KvDtype::kF32), 46080u);
  auto llama = ResolveKvGeometry("llama-3.1-8b");
  ASSERT_TRUE(llama.ok());
  // 2 x 32 layers x 8 KV heads x 128 x 2 bytes.
  EXPECT_EQ(KvBytesPerToken(*llama, KvDtype::kF16), 131072u);
  EXPECT_EQ(KvBytesPerToken(*llama, KvDtype::kFp8), 65536u);
  auto llama70 = ResolveKvGeometry("llama-3.1-70b");
  ASSERT_TRUE(llama70.ok());
  EXPECT_EQ(KvBytesPerToken(*llama70, KvDtype::kBf16), 2u * 80 * 8 * 128 * 2);
  EXPECT_EQ(BuiltinKvGeometries().size(), 5u);
}

TEST(KvGeometryTest, UnknownModelAndDtypeAreRefusedByName) {
  auto g = ResolveKvGeometry("llama-9");
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(g.status().message().find("--model"), std::string::npos) << g.status().message();
  EXPECT_NE(g.status().message().find("llama-3.1-8b"), std::string::npos) << g.status().message();
  auto d = ParseKvDtype("int3");
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("--kv-dtype"), std::string::npos);
}

TEST(KvGeometryTest, ReadsAHuggingFaceConfig) {
  const auto dir = std::filesystem::temp_directory_path() / ("kv-geometry-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  // Qwen2.5-7B's config: no head_dim, so 3584 / 28 = 128.
  std::ofstream(dir / "config.json") << R"({"model_type": "qwen2", "num_hidden_layers": 28, "hidden_size": 3584,
      "num_attention_heads": 28, "num_key_value_heads": 4, "max_position_embeddings": 32768})";
  auto g = ResolveKvGeometry(dir.string());
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(g->layers, 28);
  EXPECT_EQ(g->kv_heads, 4);
  EXPECT_EQ(g->head_dim, 128);
  EXPECT_EQ(KvBytesPerToken(*g, KvDtype::kF16), KvBytesPerToken(*ResolveKvGeometry("qwen2.5-7b"), KvDtype::kF16));
  std::ofstream(dir / "config.json") << R"({"num_hidden_layers": 28, "num_attention_heads": "many"})";
  auto bad = ResolveKvGeometry(dir.string());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("num_attention_heads"), std::string::npos) << bad.status().message();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace foresight::planner
