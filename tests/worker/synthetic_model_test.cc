// Synthetic checkpoints in every supported format and naming load and run, and the engine's
// logits agree with a plain float64 reference forward pass written here from the equations.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <random>

#include <nlohmann/json.hpp>

#include "common/safetensors.h"
#include "tests/worker/reference_env.h"
#include "tests/worker/test_tokens.h"
#include "worker/backend.h"
#include "worker/gguf_file.h"
#include "worker/quantized_kernels.h"
#include "worker/synthetic_model.h"

namespace foresight::worker {
namespace {

// Tensor values by GGUF name, [out][in] row-major.
using TensorSource = std::function<std::vector<double>(const std::string&)>;

std::vector<double> ReferenceLogits(const SyntheticModelSpec& s, const TensorSource& get, bool interleaved,
                                    const std::vector<TokenId>& tokens) {
  const int64_t d = s.d_model, hd = s.head_dim, nh = s.n_heads, nkv = s.n_kv_heads, V = s.vocab_size;
  auto matvec = [](const std::vector<double>& w, const std::vector<double>& x, int64_t rows) {
    const int64_t cols = static_cast<int64_t>(x.size());
    std::vector<double> y(rows, 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) y[r] += w[r * cols + c] * x[c];
    return y;
  };
  auto rms = [&](const std::vector<double>& x, const std::vector<double>& w) {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double k = 1.0 / std::sqrt(ss / x.size() + 1e-5);
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * k * w[i];
    return y;
  };
  auto rope = [&](std::vector<double>& v, int64_t heads, int64_t pos) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < hd / 2; ++i) {
        const double angle = pos * std::pow(static_cast<double>(s.rope_theta), -2.0 * i / hd);
        const int64_t a = h * hd + (interleaved ? 2 * i : i), b = h * hd + (interleaved ? 2 * i + 1 : i + hd / 2);
        const double x0 = v[a], x1 = v[b];
        v[a] = x0 * std::cos(angle) - x1 * std::sin(angle);
        v[b] = x0 * std::sin(angle) + x1 * std::cos(angle);
      }
    }
  };
  const std::vector<double> emb = get("token_embd.weight");
  const std::vector<double> out_w = s.tied_embeddings ? emb : get("output.weight");
  std::vector<std::vector<std::vector<double>>> keys(s.n_layers), values(s.n_layers);
  std::vector<double> logits;
  for (size_t pos = 0; pos < tokens.size(); ++pos) {
    std::vector<double> x(emb.begin() + tokens[pos] * d, emb.begin() + (tokens[pos] + 1) * d);
    for (int32_t l = 0; l < s.n_layers; ++l) {
      const std::string b = "blk." + std::to_string(l) + ".";
      std::vector<double> h = rms(x, get(b + "attn_norm.weight"));
      std::vector<double> q = matvec(get(b + "attn_q.weight"), h, nh * hd);
      std::vector<double> k = matvec(get(b + "attn_k.weight"), h, nkv * hd);
      std::vector<double> v = matvec(get(b + "attn_v.weight"), h, nkv * hd);
      if (s.qkv_bias) {
        auto bq = get(b + "attn_q.bias"), bk = get(b + "attn_k.bias"), bv = get(b + "attn_v.bias");
        for (size_t i = 0; i < q.size(); ++i) q[i] += bq[i];
        for (size_t i = 0; i < k.size(); ++i) {
          k[i] += bk[i];
          v[i] += bv[i];
        }
      }
      rope(q, nh, pos);
      rope(k, nkv, pos);
      keys[l].push_back(k);
      values[l].push_back(v);
      std::vector<double> att(nh * hd, 0.0);
      for (int64_t head = 0; head < nh; ++head) {
        const int64_t kvh = head / (nh / nkv);
        std::vector<double> sc(pos + 1);
        double mx = -1e300;
        for (size_t p = 0; p <= pos; ++p) {
          double dot = 0;
          for (int64_t i = 0; i < hd; ++i) dot += q[head * hd + i] * keys[l][p][kvh * hd + i];
          sc[p] = dot / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, sc[p]);
        }
        double sum = 0;
        for (double& e : sc) {
          e = std::exp(e - mx);
          sum += e;
        }
        for (size_t p = 0; p <= pos; ++p)
          for (int64_t i = 0; i < hd; ++i) att[head * hd + i] += sc[p] / sum * values[l][p][kvh * hd + i];
      }
      std::vector<double> o = matvec(get(b + "attn_output.weight"), att, d);
      for (int64_t i = 0; i < d; ++i) x[i] += o[i];
      h = rms(x, get(b + "ffn_norm.weight"));
      std::vector<double> g = matvec(get(b + "ffn_gate.weight"), h, s.ffn_dim);
      std::vector<double> u = matvec(get(b + "ffn_up.weight"), h, s.ffn_dim);
      for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
      std::vector<double> dn = matvec(get(b + "ffn_down.weight"), g, d);
      for (int64_t i = 0; i < d; ++i) x[i] += dn[i];
    }
    std::vector<double> lg = matvec(out_w, rms(x, get("output_norm.weight")), V);
    logits.insert(logits.end(), lg.begin(), lg.end());
  }
  return logits;
}

TensorSource GgufSource(const GgufFile& f) {
  return [&f](const std::string& name) {
    const GgufTensor* t = f.FindTensor(name);
    EXPECT_NE(t, nullptr) << name;
    std::vector<float> v(t->numel());
    const uint64_t row_bytes = TensorTypeBytes(t->type, t->dims[0]);
    for (int64_t r = 0; r < t->rows(); ++r)
      DequantizeRow(t->type, t->data + r * row_bytes, t->dims[0], v.data() + r * t->dims[0]);
    return std::vector<double>(v.begin(), v.end());
  };
}

// GGUF names to Hugging Face names for the reference reading a safetensors folder.
std::string HfName(const std::string& g) {
  if (g == "token_embd.weight") return "model.embed_tokens.weight";
  if (g == "output.weight") return "lm_head.weight";
  if (g == "output_norm.weight") return "model.norm.weight";
  const size_t dot = g.find('.', 4);
  const std::string layer = "model.layers." + g.substr(4, dot - 4) + ".", rest = g.substr(dot + 1);
  static const std::map<std::string, std::string> m = {
      {"attn_norm.weight", "input_layernorm.weight"}, {"ffn_norm.weight", "post_attention_layernorm.weight"},
      {"attn_q.weight", "self_attn.q_proj.weight"},   {"attn_k.weight", "self_attn.k_proj.weight"},
      {"attn_v.weight", "self_attn.v_proj.weight"},   {"attn_output.weight", "self_attn.o_proj.weight"},
      {"attn_q.bias", "self_attn.q_proj.bias"},       {"attn_k.bias", "self_attn.k_proj.bias"},
      {"attn_v.bias", "self_attn.v_proj.bias"},       {"ffn_gate.weight", "mlp.gate_proj.weight"},
      {"ffn_up.weight", "mlp.up_proj.weight"},        {"ffn_down.weight", "mlp.down_proj.weight"}};
  return layer + m.at(rest);
}

using testing::TestTokens;

// Runs the engine: prefill most tokens, decode the last few; all logits.
std::vector<float> EngineLogits(const Model& model, const std::vector<TokenId>& tokens, int decode_steps) {
  std::unique_ptr<Backend> cpu = NewCpuBackend(model);
  std::unique_ptr<BackendSequence> seq = *cpu->NewSequence(7);  // odd chunk: chunk boundaries, partial blocks
  std::vector<float> logits;
  std::vector<TokenId> head(tokens.begin(), tokens.end() - decode_steps);
  EXPECT_TRUE(seq->Prefill(head, &logits, true).ok());
  for (size_t i = tokens.size() - decode_steps; i < tokens.size(); ++i) {
    std::vector<float> step;
    EXPECT_TRUE(seq->Decode(tokens[i], &step).ok());
    logits.insert(logits.end(), step.begin(), step.end());
  }
  return logits;
}

void ExpectClose(const std::vector<float>& got, const std::vector<double>& want, double rel, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double max_ref = 0, max_diff = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    max_ref = std::max(max_ref, std::fabs(want[i]));
    max_diff = std::max(max_diff, std::fabs(got[i] - want[i]));
  }
  EXPECT_LT(max_diff, rel * max_ref) << what << ": max diff " << max_diff << " of max |logit| " << max_ref;
}

struct GgufCase {
  std::string arch;
  TensorType type;
  double rel;
};

class SyntheticGgufTest : public ::testing::TestWithParam<GgufCase> {};

TEST_P(SyntheticGgufTest, LoadsAndMatchesReference) {
  const GgufCase& c = GetParam();
  SyntheticModelSpec spec;
  spec.architecture = c.arch;
  spec.type = c.type;
  spec.qkv_bias = c.arch == "qwen2";
  spec.tied_embeddings = c.arch != "mistral";
  const std::string path = testing::TestTempDir() + "/" + c.arch + "_" + TensorTypeName(c.type) + ".gguf";
  ASSERT_TRUE(WriteSyntheticGguf(spec, path).ok());
  auto model = Model::Open(path);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  EXPECT_EQ((*model)->config().qkv_bias, spec.qkv_bias);
  EXPECT_EQ((*model)->config().tied_embeddings, spec.tied_embeddings);
  ASSERT_NE((*model)->tokenizer(), nullptr);
  EXPECT_EQ((*model)->tokenizer()->Decode((*model)->tokenizer()->Encode("héllo", false, false)), "héllo");

  const std::vector<TokenId> tokens = TestTokens(40);  // crosses two 16-token blocks
  auto file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok());
  const std::vector<double> want = ReferenceLogits(spec, GgufSource(**file), c.arch != "qwen2", tokens);
  ExpectClose(EngineLogits(**model, tokens, 5), want, c.rel, path);
}

INSTANTIATE_TEST_SUITE_P(
    Formats, SyntheticGgufTest,
    ::testing::Values(GgufCase{"llama", TensorType::kF32, 0.02}, GgufCase{"llama", TensorType::kF16, 0.02},
                      GgufCase{"llama", TensorType::kBF16, 0.02}, GgufCase{"llama", TensorType::kQ8_0, 0.05},
                      GgufCase{"llama", TensorType::kQ4_0, 0.1}, GgufCase{"llama", TensorType::kQ4_1, 0.1},
                      GgufCase{"mistral", TensorType::kF16, 0.02}, GgufCase{"qwen2", TensorType::kF32, 0.02}),
    [](const auto& info) { return info.param.arch + "_" + TensorTypeName(info.param.type); });

class SyntheticHfTest : public ::testing::TestWithParam<std::string> {};

TEST_P(SyntheticHfTest, ShardedFolderLoadsAndMatchesReference) {
  SyntheticModelSpec spec;
  spec.architecture = GetParam();
  spec.qkv_bias = spec.architecture == "qwen2";
  spec.tied_embeddings = spec.architecture == "qwen2";
  spec.type = spec.architecture == "mistral" ? TensorType::kBF16 : TensorType::kF16;
  const std::string dir = testing::TestTempDir() + "/hf_" + spec.architecture;
  ASSERT_TRUE(WriteSyntheticHfFolder(spec, dir, 3).ok());
  auto model = Model::Open(dir);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  EXPECT_EQ((*model)->config().rope_style, RopeStyle::kHalves);

  std::vector<std::unique_ptr<SafetensorsFile>> shards;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() == ".safetensors") shards.push_back(std::move(*SafetensorsFile::Open(e.path().string())));
  }
  EXPECT_EQ(shards.size(), 3u);
  TensorSource source = [&](const std::string& gguf_name) {
    const std::string name = HfName(gguf_name);
    for (const auto& s : shards) {
      if (s->Has(name)) {
        std::vector<float> v = (*s->Get(name))->ToFloat32();
        return std::vector<double>(v.begin(), v.end());
      }
    }
    ADD_FAILURE() << "no tensor " << name;
    return std::vector<double>();
  };
  const std::vector<TokenId> tokens = TestTokens(24);
  ExpectClose(EngineLogits(**model, tokens, 3), ReferenceLogits(spec, source, false, tokens), 0.02, dir);
}

INSTANTIATE_TEST_SUITE_P(Namings, SyntheticHfTest, ::testing::Values("llama", "mistral", "qwen2"));

// The GGUF converter's Q/K permutation and interleaved RoPE equal the HF layout's rotate-half.
TEST(SyntheticModelTest, GgufAndHfLayoutsGiveTheSameLogits) {
  SyntheticModelSpec spec;
  const std::string dir = testing::TestTempDir() + "/hf_same", path = testing::TestTempDir() + "/same.gguf";
  ASSERT_TRUE(WriteSyntheticHfFolder(spec, dir, 1).ok());
  ASSERT_TRUE(WriteSyntheticGguf(spec, path).ok());
  auto a = Model::Open(dir);
  auto b = Model::Open(path);
  ASSERT_TRUE(a.ok() && b.ok());
  const std::vector<TokenId> tokens = TestTokens(20);
  const std::vector<float> la = EngineLogits(**a, tokens, 2), lb = EngineLogits(**b, tokens, 2);
  ASSERT_EQ(la.size(), lb.size());
  for (size_t i = 0; i < la.size(); ++i) ASSERT_NEAR(la[i], lb[i], 1e-3) << i;
}

TEST(SyntheticModelTest, TruncatedOrMalformedCheckpointsAreRefused) {
  SyntheticModelSpec spec;
  const std::string path = testing::TestTempDir() + "/cut.gguf";
  ASSERT_TRUE(WriteSyntheticGguf(spec, path).ok());
  std::filesystem::resize_file(path, std::filesystem::file_size(path) / 2);
  auto model = Model::Open(path);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find(path), std::string::npos) << model.status().ToString();
  EXPECT_NE(model.status().message().find("truncated"), std::string::npos) << model.status().ToString();

  const std::string dir = testing::TestTempDir() + "/hf_cut";
  ASSERT_TRUE(WriteSyntheticHfFolder(spec, dir, 2).ok());
  const std::string shard = dir + "/model-00002-of-00002.safetensors";
  std::filesystem::resize_file(shard, std::filesystem::file_size(shard) - 64);
  model = Model::Open(dir);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("model-00002-of-00002.safetensors"), std::string::npos)
      << model.status().ToString();

  std::filesystem::remove(dir + "/config.json");
  model = Model::Open(dir);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("config.json"), std::string::npos) << model.status().ToString();
}

// A config.json whose fields have the wrong type, or whose geometry cannot be right, is refused
// with an error naming the file and the field (these once threw, or divided by zero).
TEST(SyntheticModelTest, ConfigsWithBadFieldsOrGeometryAreRefused) {
  SyntheticModelSpec spec;
  const std::string dir = testing::TestTempDir() + "/hf_bad_config";
  ASSERT_TRUE(WriteSyntheticHfFolder(spec, dir, 1).ok());
  std::ifstream in(dir + "/config.json");
  const nlohmann::json good = nlohmann::json::parse(in);
  struct Case {
    std::function<void(nlohmann::json&)> edit;
    std::string expect;
  };
  const Case cases[] = {
      {[](nlohmann::json& c) {
         c["num_attention_heads"] = 0;
         c.erase("head_dim");
       },
       "num_attention_heads"},
      {[](nlohmann::json& c) { c["num_attention_heads"] = 0; }, "attention head count 0"},
      {[](nlohmann::json& c) { c["num_key_value_heads"] = 0; }, "KV head count 0"},
      {[](nlohmann::json& c) { c["num_key_value_heads"] = "two"; }, "\"num_key_value_heads\" is string"},
      {[](nlohmann::json& c) { c["model_type"] = 7; }, "\"model_type\" is number"},
      {[](nlohmann::json& c) { c["head_dim"] = 15; }, "head size 15 is odd"},
      {[](nlohmann::json& c) { c["hidden_size"] = 4294967296ll + 64; }, "model width 4294967360"},
      {[](nlohmann::json& c) { c["rope_theta"] = -1; }, "rope_theta must be positive"},
      {[](nlohmann::json& c) { c["tie_word_embeddings"] = "yes"; }, "\"tie_word_embeddings\" is string"},
      {[](nlohmann::json& c) {
         c["rope_scaling"] = {{"rope_type", "llama3"}, {"low_freq_factor", 0}};
       },
       "rope_scaling llama3 needs"},
  };
  for (const Case& c : cases) {
    nlohmann::json config = good;
    c.edit(config);
    std::ofstream(dir + "/config.json", std::ios::trunc) << config.dump();
    auto model = Model::Open(dir);
    ASSERT_FALSE(model.ok()) << config.dump();
    EXPECT_NE(model.status().message().find("config.json"), std::string::npos) << model.status().ToString();
    EXPECT_NE(model.status().message().find(c.expect), std::string::npos) << model.status().ToString();
  }
  std::ofstream(dir + "/config.json", std::ios::trunc) << good.dump();
  EXPECT_TRUE(Model::Open(dir).ok()) << "the unedited config still loads";
}

TEST(SyntheticModelTest, Llama8BGeometryRuns) {
  SyntheticModelSpec spec = SyntheticModelSpec::Llama31_8BGeometry(1, 1024);
  spec.ffn_dim = 256;  // keep the test small; attention geometry is what matters
  auto model = MakeSyntheticModel(spec);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  EXPECT_EQ((*model)->config().n_heads, 32);
  EXPECT_EQ((*model)->config().n_kv_heads, 8);
  EXPECT_EQ((*model)->config().head_dim, 128);
  std::unique_ptr<Backend> cpu = NewCpuBackend(**model);
  std::unique_ptr<BackendSequence> seq = *cpu->NewSequence(64);
  std::vector<float> logits;
  ASSERT_TRUE(seq->Prefill(TestTokens(100), &logits).ok());
  ASSERT_TRUE(seq->Decode(5, &logits).ok());
  EXPECT_EQ(seq->host_kv()->blocks(), 7);
  for (float v : logits) ASSERT_TRUE(std::isfinite(v));
}

}  // namespace
}  // namespace foresight::worker
