#include "worker/hf_model_loader.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include <spdlog/spdlog.h>

#include "common/json_fields.h"
#include "common/safetensors.h"
#include "worker/hf_tokenizer.h"
#include "worker/layer_loading.h"

namespace foresight::worker {
namespace {

class HfTensors {
 public:
  Status Open(const std::string& dir) {
    dir_ = dir;
    std::vector<std::string> paths;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
      if (entry.path().extension() == ".safetensors") paths.push_back(entry.path().string());
    }
    if (ec) return Unavailable("cannot list " + dir + ": " + ec.message());
    if (paths.empty()) return NotFound("no *.safetensors files in " + dir);
    std::sort(paths.begin(), paths.end());
    for (const std::string& p : paths) {
      FS_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> f, SafetensorsFile::Open(p));
      std::shared_ptr<const SafetensorsFile> shared(std::move(f));
      for (const auto& [name, view] : shared->tensors()) index_[name] = {&view, shared};
      files_.push_back(shared);
    }
    return Status::OK();
  }

  bool Has(const std::string& name) const { return index_.count(name) != 0; }

  StatusOr<const TensorView*> Get(const std::string& name) const {
    auto it = index_.find(name);
    if (it == index_.end()) return NotFound("Hugging Face folder " + dir_ + ": no tensor " + name + " in any shard");
    return it->second.view;
  }

  StatusOr<WeightMatrix> Matrix(const std::string& name, int64_t rows, int64_t cols) const {
    FS_ASSIGN_OR_RETURN(const TensorView* t, Get(name));
    if (t->shape != std::vector<int64_t>{rows, cols}) {
      return DataLoss("Hugging Face folder " + dir_ + ": tensor " + name + " has shape " + Shape(t->shape) +
                      ", expected [" + std::to_string(rows) + ", " + std::to_string(cols) + "]");
    }
    TensorType type;
    switch (t->dtype) {
      case DType::kF32:
        type = TensorType::kF32;
        break;
      case DType::kF16:
        type = TensorType::kF16;
        break;
      case DType::kBF16:
        type = TensorType::kBF16;
        break;
      default:
        return Unimplemented("Hugging Face folder " + dir_ + ": tensor " + name + " has dtype " + DTypeName(t->dtype) +
                             " (F32, F16 and BF16 are supported)");
    }
    return WeightMatrix(type, rows, cols, t->data);
  }

  StatusOr<std::vector<float>> Vector(const std::string& name, int64_t n) const {
    FS_ASSIGN_OR_RETURN(const TensorView* t, Get(name));
    if (t->numel() != n) {
      return DataLoss("Hugging Face folder " + dir_ + ": tensor " + name + " has " + std::to_string(t->numel()) +
                      " values, expected " + std::to_string(n));
    }
    return t->ToFloat32();
  }

  std::vector<std::shared_ptr<const SafetensorsFile>> files_;

 private:
  static std::string Shape(const std::vector<int64_t>& s) {
    std::string out = "[";
    for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + "]";
  }
  struct Entry {
    const TensorView* view;
    std::shared_ptr<const SafetensorsFile> file;
  };
  std::string dir_;
  std::map<std::string, Entry> index_;
};

}  // namespace

StatusOr<HfModel> LoadHfModel(const std::string& dir) {
  const std::string config_path = dir + "/config.json";
  std::ifstream in(config_path);
  if (!in) return NotFound("Hugging Face folder " + dir + " has no config.json");
  nlohmann::json cfg = nlohmann::json::parse(in, nullptr, false);
  if (cfg.is_discarded() || !cfg.is_object()) return DataLoss(config_path + " is not valid JSON");

  HfModel out;
  ModelConfig& c = out.weights.config;
  auto field = [&]<typename T>(const char* key, T fallback) { return JsonFileField(cfg, key, fallback, config_path); };
  auto need = [&](const char* key) -> StatusOr<int64_t> {
    if (!cfg.contains(key) || !cfg[key].is_number_integer())
      return DataLoss(config_path + ": missing integer \"" + key + "\"");
    return field(key, int64_t{0});
  };
  FS_ASSIGN_OR_RETURN(std::string arch, field("model_type", std::string()));
  if (arch != "llama" && arch != "mistral" && arch != "qwen2") {
    return Unimplemented(config_path + ": model_type \"" + arch + "\" is not supported (llama, mistral, qwen2)");
  }
  c.architecture = arch;
  FS_ASSIGN_OR_RETURN(int64_t d, need("hidden_size"));
  FS_ASSIGN_OR_RETURN(int64_t ffn, need("intermediate_size"));
  FS_ASSIGN_OR_RETURN(int64_t layers, need("num_hidden_layers"));
  FS_ASSIGN_OR_RETURN(int64_t heads, need("num_attention_heads"));
  FS_ASSIGN_OR_RETURN(int64_t vocab, need("vocab_size"));
  FS_ASSIGN_OR_RETURN(int64_t kv, field("num_key_value_heads", heads));
  // Without head_dim, a head is hidden_size / num_attention_heads wide.
  const bool even_split = heads > 0 && d % heads == 0;
  if (!cfg.contains("head_dim") && !even_split) {
    return DataLoss(config_path + ": hidden_size " + std::to_string(d) + " does not split into num_attention_heads " +
                    std::to_string(heads) + ", and there is no head_dim");
  }
  FS_ASSIGN_OR_RETURN(int64_t head_dim, field("head_dim", even_split ? d / heads : int64_t{0}));
  FS_ASSIGN_OR_RETURN(int64_t max_context, field("max_position_embeddings", int64_t{4096}));
  FS_RETURN_IF_ERROR(CheckModelGeometry(config_path, layers, d, heads, kv, head_dim, ffn, vocab, max_context));
  c.d_model = static_cast<int32_t>(d);
  c.ffn_dim = static_cast<int32_t>(ffn);
  c.n_layers = static_cast<int32_t>(layers);
  c.n_heads = static_cast<int32_t>(heads);
  c.n_kv_heads = static_cast<int32_t>(kv);
  c.head_dim = static_cast<int32_t>(head_dim);
  c.vocab_size = static_cast<int32_t>(vocab);
  c.max_context = static_cast<int32_t>(max_context);
  FS_ASSIGN_OR_RETURN(c.rms_eps, field("rms_norm_eps", 1e-5f));
  FS_ASSIGN_OR_RETURN(c.rope_theta, field("rope_theta", 10000.0f));
  if (!(c.rms_eps > 0) || !(c.rope_theta > 0) || !std::isfinite(c.rms_eps) || !std::isfinite(c.rope_theta)) {
    return DataLoss(config_path + ": rms_norm_eps and rope_theta must be positive");
  }
  c.rope_style = RopeStyle::kHalves;
  c.qkv_bias = arch == "qwen2";
  FS_ASSIGN_OR_RETURN(c.tied_embeddings, field("tie_word_embeddings", false));
  if (cfg.contains("rope_scaling") && cfg["rope_scaling"].is_object()) {
    const auto& rs = cfg["rope_scaling"];
    auto scaling = [&]<typename T>(const char* key, T fallback) {
      return JsonFileField(rs, key, fallback, config_path + ": rope_scaling");
    };
    FS_ASSIGN_OR_RETURN(std::string old_type, scaling("type", std::string()));
    FS_ASSIGN_OR_RETURN(std::string type, scaling("rope_type", old_type));
    if (type == "llama3") {
      FS_ASSIGN_OR_RETURN(float factor, scaling("factor", 8.0f));
      FS_ASSIGN_OR_RETURN(float low, scaling("low_freq_factor", 1.0f));
      FS_ASSIGN_OR_RETURN(float high, scaling("high_freq_factor", 4.0f));
      FS_ASSIGN_OR_RETURN(float original, scaling("original_max_position_embeddings", 8192.0f));
      if (!(factor > 0) || !(low > 0) || !(high > low) || !(original > 0)) {
        return DataLoss(config_path +
                        ": rope_scaling llama3 needs factor > 0, 0 < low_freq_factor < high_freq_factor "
                        "and original_max_position_embeddings > 0");
      }
      c.rope_freq_factors = Llama3RopeFreqFactors(c.head_dim, c.rope_theta, factor, low, high, original);
    } else if (!type.empty() && type != "default") {
      return Unimplemented(config_path + ": rope_scaling type \"" + type + "\" is not supported (llama3)");
    }
  }

  HfTensors t;
  FS_RETURN_IF_ERROR(t.Open(dir));
  ModelWeights& w = out.weights;
  const int64_t qo = heads * head_dim, kvo = kv * head_dim;
  FS_ASSIGN_OR_RETURN(w.token_embedding, t.Matrix("model.embed_tokens.weight", vocab, d));
  FS_ASSIGN_OR_RETURN(w.output_norm, t.Vector("model.norm.weight", d));
  if (t.Has("lm_head.weight")) {
    FS_ASSIGN_OR_RETURN(w.output, t.Matrix("lm_head.weight", vocab, d));
    c.tied_embeddings = false;
  } else {
    w.output = w.token_embedding;
    c.tied_embeddings = true;
  }
  c.qkv_bias = t.Has("model.layers.0.self_attn.q_proj.bias");
  for (int64_t l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const LayerTensorNames names{p + "input_layernorm.weight",  p + "post_attention_layernorm.weight",
                                 p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight",
                                 p + "self_attn.v_proj.weight", p + "self_attn.o_proj.weight",
                                 p + "self_attn.q_proj.bias",   p + "self_attn.k_proj.bias",
                                 p + "self_attn.v_proj.bias",   p + "mlp.gate_proj.weight",
                                 p + "mlp.up_proj.weight",      p + "mlp.down_proj.weight"};
    FS_ASSIGN_OR_RETURN(LayerWeights L, LoadLayerWeights(t, names, d, qo, kvo, ffn, c.qkv_bias));
    w.layers.push_back(std::move(L));
  }
  for (auto& f : t.files_) w.storage.push_back(f);

  // The tokenizer: optional (token ids only without one); a broken one is an error, an unsupported
  // kind (e.g. SentencePiece-style) leaves the model usable with token ids.
  auto tokenizer = LoadHfTokenizer(dir);
  if (tokenizer.ok()) {
    out.tokenizer = std::move(*tokenizer);
  } else if (tokenizer.status().code() == StatusCode::kUnimplemented) {
    spdlog::warn("{}; the model takes token ids only", tokenizer.status().message());
  } else if (tokenizer.status().code() != StatusCode::kNotFound) {
    return tokenizer.status();
  }
  return out;
}

}  // namespace foresight::worker
