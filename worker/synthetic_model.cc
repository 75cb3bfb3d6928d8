#include "worker/synthetic_model.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "common/safetensors.h"
#include "worker/gguf_writer.h"
#include "worker/quantized_kernels.h"
#include "worker/unicode_text.h"

namespace foresight::worker {
namespace {

// One tensor's values in Hugging Face orientation ([out][in] row-major; vectors plain).
struct NamedValues {
  std::string hf_name, gguf_name;
  std::vector<int64_t> hf_shape;  // [out, in] or [n]
  std::vector<float> values;
};

std::vector<NamedValues> RandomTensors(const SyntheticModelSpec& s) {
  std::mt19937 rng(s.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto matrix = [&](int64_t out, int64_t in) {
    std::vector<float> v(out * in);
    const float scale = 1.0f / std::sqrt(static_cast<float>(in));
    for (float& x : v) x = normal(rng) * scale;
    return v;
  };
  auto vec = [&](int64_t n, float base, float jitter) {
    std::vector<float> v(n);
    for (float& x : v) x = base + jitter * normal(rng);
    return v;
  };
  const int64_t d = s.d_model, qo = int64_t{s.n_heads} * s.head_dim, kvo = int64_t{s.n_kv_heads} * s.head_dim;
  std::vector<NamedValues> t;
  t.push_back({"model.embed_tokens.weight", "token_embd.weight", {s.vocab_size, d}, vec(s.vocab_size * d, 0.0f, 1.0f)});
  t.push_back({"model.norm.weight", "output_norm.weight", {d}, vec(d, 1.0f, 0.1f)});
  if (!s.tied_embeddings) t.push_back({"lm_head.weight", "output.weight", {s.vocab_size, d}, matrix(s.vocab_size, d)});
  for (int32_t l = 0; l < s.n_layers; ++l) {
    const std::string h = "model.layers." + std::to_string(l) + ".", g = "blk." + std::to_string(l) + ".";
    t.push_back({h + "input_layernorm.weight", g + "attn_norm.weight", {d}, vec(d, 1.0f, 0.1f)});
    t.push_back({h + "post_attention_layernorm.weight", g + "ffn_norm.weight", {d}, vec(d, 1.0f, 0.1f)});
    t.push_back({h + "self_attn.q_proj.weight", g + "attn_q.weight", {qo, d}, matrix(qo, d)});
    t.push_back({h + "self_attn.k_proj.weight", g + "attn_k.weight", {kvo, d}, matrix(kvo, d)});
    t.push_back({h + "self_attn.v_proj.weight", g + "attn_v.weight", {kvo, d}, matrix(kvo, d)});
    t.push_back({h + "self_attn.o_proj.weight", g + "attn_output.weight", {d, qo}, matrix(d, qo)});
    if (s.qkv_bias) {
      t.push_back({h + "self_attn.q_proj.bias", g + "attn_q.bias", {qo}, vec(qo, 0.0f, 0.1f)});
      t.push_back({h + "self_attn.k_proj.bias", g + "attn_k.bias", {kvo}, vec(kvo, 0.0f, 0.1f)});
      t.push_back({h + "self_attn.v_proj.bias", g + "attn_v.bias", {kvo}, vec(kvo, 0.0f, 0.1f)});
    }
    t.push_back({h + "mlp.gate_proj.weight", g + "ffn_gate.weight", {s.ffn_dim, d}, matrix(s.ffn_dim, d)});
    t.push_back({h + "mlp.up_proj.weight", g + "ffn_up.weight", {s.ffn_dim, d}, matrix(s.ffn_dim, d)});
    t.push_back({h + "mlp.down_proj.weight", g + "ffn_down.weight", {d, s.ffn_dim}, matrix(d, s.ffn_dim)});
  }
  return t;
}

bool IsQk(const std::string& gguf_name) {
  return gguf_name.find("attn_q.") != std::string::npos || gguf_name.find("attn_k.") != std::string::npos;
}

// llama.cpp's converter reorders Q/K rows of Llama checkpoints so RoPE rotates adjacent pairs:
// within each head, row i of the first half goes to 2i and of the second half to 2i+1.
std::vector<float> PermuteForInterleavedRope(const std::vector<float>& v, int64_t rows, int64_t cols,
                                             int32_t head_dim) {
  std::vector<float> out(v.size());
  const int64_t half = head_dim / 2;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t head = r / head_dim, i = r % head_dim;
    const int64_t dst = head * head_dim + (i < half ? 2 * i : 2 * (i - half) + 1);
    std::copy_n(v.data() + r * cols, cols, out.data() + dst * cols);
  }
  return out;
}

DType ToDType(TensorType t) {
  switch (t) {
    case TensorType::kF16:
      return DType::kF16;
    case TensorType::kBF16:
      return DType::kBF16;
    default:
      return DType::kF32;
  }
}

}  // namespace

SyntheticModelSpec SyntheticModelSpec::Llama31_8BGeometry(int32_t layers, int32_t context) {
  SyntheticModelSpec s;
  s.n_layers = layers;
  s.d_model = 4096;
  s.n_heads = 32;
  s.n_kv_heads = 8;
  s.head_dim = 128;
  s.ffn_dim = 14336;
  s.vocab_size = 1024;
  s.max_context = context;
  s.rope_theta = 500000.0f;
  s.type = TensorType::kF16;
  return s;
}

StatusOr<std::unique_ptr<Model>> MakeSyntheticModel(const SyntheticModelSpec& s) {
  if (s.type != TensorType::kF32 && s.type != TensorType::kF16 && s.type != TensorType::kQ8_0 &&
      s.type != TensorType::kQ4_1) {
    return InvalidArgument(std::string("in-memory synthetic models are F32, F16, Q8_0 or Q4_1, not ") +
                           TensorTypeName(s.type));
  }
  ModelWeights w;
  ModelConfig& c = w.config;
  c.architecture = s.architecture;
  c.n_layers = s.n_layers;
  c.d_model = s.d_model;
  c.n_heads = s.n_heads;
  c.n_kv_heads = s.n_kv_heads;
  c.head_dim = s.head_dim;
  c.ffn_dim = s.ffn_dim;
  c.vocab_size = s.vocab_size;
  c.max_context = s.max_context;
  c.rope_theta = s.rope_theta;
  c.rope_style = RopeStyle::kHalves;
  c.qkv_bias = s.qkv_bias;
  c.tied_embeddings = s.tied_embeddings;
  w.layers.resize(s.n_layers);
  for (NamedValues& t : RandomTensors(s)) {
    if (t.hf_shape.size() == 1) {
      std::vector<float>* dst = nullptr;
      const std::string& n = t.gguf_name;
      const int l = n.rfind("blk.", 0) == 0 ? std::stoi(n.substr(4)) : -1;
      if (n == "output_norm.weight")
        dst = &w.output_norm;
      else if (n.find("attn_norm") != std::string::npos)
        dst = &w.layers[l].attn_norm;
      else if (n.find("ffn_norm") != std::string::npos)
        dst = &w.layers[l].ffn_norm;
      else if (n.find("attn_q.bias") != std::string::npos)
        dst = &w.layers[l].bq;
      else if (n.find("attn_k.bias") != std::string::npos)
        dst = &w.layers[l].bk;
      else if (n.find("attn_v.bias") != std::string::npos)
        dst = &w.layers[l].bv;
      if (dst != nullptr) *dst = std::move(t.values);
      continue;
    }
    const int64_t rows = t.hf_shape[0], cols = t.hf_shape[1];
    auto bytes = std::make_shared<std::vector<uint8_t>>();
    bytes->reserve(TensorTypeBytes(s.type, rows * cols));
    for (int64_t r = 0; r < rows; ++r) {
      FS_ASSIGN_OR_RETURN(std::vector<uint8_t> row, QuantizeRow(s.type, t.values.data() + r * cols, cols));
      bytes->insert(bytes->end(), row.begin(), row.end());
    }
    WeightMatrix m(s.type, rows, cols, bytes->data(), bytes);
    const std::string& n = t.gguf_name;
    if (n == "token_embd.weight") {
      w.token_embedding = m;
      if (s.tied_embeddings) w.output = m;
      continue;
    }
    if (n == "output.weight") {
      w.output = m;
      continue;
    }
    LayerWeights& L = w.layers[std::stoi(n.substr(4))];
    if (n.find("attn_q.") != std::string::npos)
      L.wq = m;
    else if (n.find("attn_k.") != std::string::npos)
      L.wk = m;
    else if (n.find("attn_v.") != std::string::npos)
      L.wv = m;
    else if (n.find("attn_output") != std::string::npos)
      L.wo = m;
    else if (n.find("ffn_gate") != std::string::npos)
      L.w_gate = m;
    else if (n.find("ffn_up") != std::string::npos)
      L.w_up = m;
    else if (n.find("ffn_down") != std::string::npos)
      L.w_down = m;
  }
  return Model::FromWeights(std::move(w), nullptr, "synthetic");
}

Status WriteSyntheticGguf(const SyntheticModelSpec& s, const std::string& path) {
  if (s.vocab_size != 257) return InvalidArgument("synthetic GGUF models have the 257-token byte vocabulary");
  GgufWriter w;
  const std::string a = s.architecture;
  w.SetString("general.architecture", a);
  w.SetU32(a + ".block_count", s.n_layers);
  w.SetU32(a + ".embedding_length", s.d_model);
  w.SetU32(a + ".feed_forward_length", s.ffn_dim);
  w.SetU32(a + ".attention.head_count", s.n_heads);
  w.SetU32(a + ".attention.head_count_kv", s.n_kv_heads);
  w.SetU32(a + ".context_length", s.max_context);
  w.SetF32(a + ".attention.layer_norm_rms_epsilon", 1e-5f);
  w.SetF32(a + ".rope.freq_base", s.rope_theta);
  // Byte-level vocabulary: the 256 GPT-2 byte characters, then one control token.
  std::vector<std::string> tokens;
  uint32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    std::string ch;
    AppendUtf8(printable ? static_cast<uint32_t>(b) : next++, &ch);
    tokens.push_back(ch);
  }
  tokens.push_back("<|end|>");
  std::vector<int32_t> types(257, 1);
  types[256] = 3;
  w.SetString("tokenizer.ggml.model", "gpt2");
  w.SetString("tokenizer.ggml.pre", "gpt2");
  w.SetStringArray("tokenizer.ggml.tokens", tokens);
  w.SetI32Array("tokenizer.ggml.token_type", types);
  w.SetStringArray("tokenizer.ggml.merges", {});
  w.SetU32("tokenizer.ggml.eos_token_id", 256);
  const bool interleaved = a != "qwen2";
  for (NamedValues& t : RandomTensors(s)) {
    std::vector<int64_t> dims(t.hf_shape.rbegin(), t.hf_shape.rend());
    if (t.hf_shape.size() == 1) {
      FS_RETURN_IF_ERROR(w.AddFloatTensor(t.gguf_name, TensorType::kF32, dims, t.values));
      continue;
    }
    if (interleaved && IsQk(t.gguf_name))
      t.values = PermuteForInterleavedRope(t.values, t.hf_shape[0], t.hf_shape[1], s.head_dim);
    FS_RETURN_IF_ERROR(w.AddFloatTensor(t.gguf_name, s.type, dims, t.values));
  }
  return w.Write(path);
}

Status WriteSyntheticHfFolder(const SyntheticModelSpec& s, const std::string& dir, int shards) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Unavailable("cannot create " + dir + ": " + ec.message());
  nlohmann::json config;
  const std::map<std::string, std::string> arch_names = {
      {"llama", "LlamaForCausalLM"}, {"mistral", "MistralForCausalLM"}, {"qwen2", "Qwen2ForCausalLM"}};
  config["architectures"] = {arch_names.at(s.architecture)};
  config["model_type"] = s.architecture;
  config["hidden_size"] = s.d_model;
  config["intermediate_size"] = s.ffn_dim;
  config["num_hidden_layers"] = s.n_layers;
  config["num_attention_heads"] = s.n_heads;
  config["num_key_value_heads"] = s.n_kv_heads;
  config["head_dim"] = s.head_dim;
  config["vocab_size"] = s.vocab_size;
  config["max_position_embeddings"] = s.max_context;
  config["rms_norm_eps"] = 1e-5;
  config["rope_theta"] = s.rope_theta;
  config["tie_word_embeddings"] = s.tied_embeddings;
  std::ofstream(dir + "/config.json") << config.dump(2);
  std::vector<std::vector<TensorToWrite>> parts(std::max(1, shards));
  int i = 0;
  for (NamedValues& t : RandomTensors(s)) {
    TensorToWrite tw = TensorToWrite::F32(t.hf_name, t.hf_shape, t.values.data());
    const TensorType type = t.hf_shape.size() == 1 ? TensorType::kF32 : s.type;
    if (type != TensorType::kF32) {
      FS_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes,
                          QuantizeRow(type, t.values.data(), static_cast<int64_t>(t.values.size())));
      tw.dtype = ToDType(type);
      tw.data = std::move(bytes);
    }
    parts[i++ % parts.size()].push_back(std::move(tw));
  }
  for (size_t p = 0; p < parts.size(); ++p) {
    char name[96];
    std::snprintf(name, sizeof(name), "/model-%05zu-of-%05zu.safetensors", p + 1, parts.size());
    FS_RETURN_IF_ERROR(WriteSafetensors(dir + name, parts[p]));
  }
  return Status::OK();
}

}  // namespace foresight::worker
