#include "worker/gguf_model_loader.h"

#include <cstring>

#include "worker/layer_loading.h"
#include "worker/quantized_kernels.h"

namespace foresight::worker {
namespace {

class Loader {
 public:
  explicit Loader(const GgufFile& f) : f_(f) {}

  Status Error(const std::string& tensor, const std::string& problem) const {
    return DataLoss("GGUF file " + f_.path() + ": tensor " + tensor + " " + problem);
  }

  StatusOr<WeightMatrix> Matrix(const std::string& name, int64_t rows, int64_t cols) const {
    FS_ASSIGN_OR_RETURN(const GgufTensor* t, f_.GetTensor(name));
    if (t->dims.size() != 2 || t->dims[0] != cols || t->dims[1] != rows) {
      return Error(name, "has shape " + Shape(t->dims) + ", expected [" + std::to_string(cols) + ", " +
                             std::to_string(rows) + "]");
    }
    if (!KernelSupports(t->type)) {
      return Unimplemented("GGUF file " + f_.path() + ": tensor " + name + " has type " + TensorTypeName(t->type) +
                           ", which the engine cannot compute with yet");
    }
    return WeightMatrix(t->type, rows, cols, t->data);
  }

  StatusOr<std::vector<float>> Vector(const std::string& name, int64_t n) const {
    FS_ASSIGN_OR_RETURN(const GgufTensor* t, f_.GetTensor(name));
    if (t->numel() != n)
      return Error(name, "has " + std::to_string(t->numel()) + " values, expected " + std::to_string(n));
    if (!KernelSupports(t->type)) return Error(name, std::string("has unsupported type ") + TensorTypeName(t->type));
    std::vector<float> out(n);
    DequantizeRow(t->type, t->data, n, out.data());
    return out;
  }

  static std::string Shape(const std::vector<int64_t>& dims) {
    std::string s = "[";
    for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
    return s + "]";
  }

 private:
  const GgufFile& f_;
};

}  // namespace

StatusOr<ModelWeights> LoadGgufWeights(std::shared_ptr<const GgufFile> file) {
  const GgufFile& f = *file;
  FS_ASSIGN_OR_RETURN(std::string arch, f.GetString("general.architecture"));
  if (arch != "llama" && arch != "mistral" && arch != "qwen2") {
    return Unimplemented("GGUF file " + f.path() + ": architecture \"" + arch +
                         "\" is not supported (llama, mistral, qwen2)");
  }
  ModelWeights w;
  ModelConfig& c = w.config;
  c.architecture = arch;
  const std::string p = arch + ".";
  FS_ASSIGN_OR_RETURN(int64_t n_layers, f.GetInt(p + "block_count"));
  FS_ASSIGN_OR_RETURN(int64_t d_model, f.GetInt(p + "embedding_length"));
  FS_ASSIGN_OR_RETURN(int64_t ffn, f.GetInt(p + "feed_forward_length"));
  FS_ASSIGN_OR_RETURN(int64_t n_heads, f.GetInt(p + "attention.head_count"));
  FS_ASSIGN_OR_RETURN(int64_t n_kv, f.GetIntOr(p + "attention.head_count_kv", n_heads));
  FS_ASSIGN_OR_RETURN(int64_t ctx, f.GetIntOr(p + "context_length", 4096));
  FS_ASSIGN_OR_RETURN(double eps, f.GetFloatOr(p + "attention.layer_norm_rms_epsilon", 1e-5));
  FS_ASSIGN_OR_RETURN(double theta, f.GetFloatOr(p + "rope.freq_base", 10000.0));
  // Without a key length, a head is d_model / n_heads wide.
  const bool even_split = n_heads > 0 && d_model > 0 && d_model % n_heads == 0;
  if (!f.Has(p + "attention.key_length") && !even_split) {
    return DataLoss("GGUF file " + f.path() + ": inconsistent geometry (d_model " + std::to_string(d_model) + ", " +
                    std::to_string(n_heads) + " heads, no " + p + "attention.key_length)");
  }
  FS_ASSIGN_OR_RETURN(int64_t head_dim, f.GetIntOr(p + "attention.key_length", even_split ? d_model / n_heads : 0));
  Loader l(f);
  FS_ASSIGN_OR_RETURN(const GgufTensor* embd, f.GetTensor("token_embd.weight"));
  if (embd->dims.size() != 2 || embd->dims[0] != d_model) {
    return l.Error("token_embd.weight",
                   "has shape " + Loader::Shape(embd->dims) + ", expected [" + std::to_string(d_model) + ", vocab]");
  }
  FS_RETURN_IF_ERROR(
      CheckModelGeometry("GGUF file " + f.path(), n_layers, d_model, n_heads, n_kv, head_dim, ffn, embd->dims[1], ctx));
  c.n_layers = static_cast<int32_t>(n_layers);
  c.d_model = static_cast<int32_t>(d_model);
  c.ffn_dim = static_cast<int32_t>(ffn);
  c.n_heads = static_cast<int32_t>(n_heads);
  c.n_kv_heads = static_cast<int32_t>(n_kv);
  c.head_dim = static_cast<int32_t>(head_dim);
  c.max_context = static_cast<int32_t>(ctx);
  c.rms_eps = static_cast<float>(eps);
  c.rope_theta = static_cast<float>(theta);
  c.rope_style = arch == "qwen2" ? RopeStyle::kHalves : RopeStyle::kInterleaved;

  c.vocab_size = static_cast<int32_t>(embd->dims[1]);
  FS_ASSIGN_OR_RETURN(w.token_embedding, l.Matrix("token_embd.weight", c.vocab_size, d_model));
  FS_ASSIGN_OR_RETURN(w.output_norm, l.Vector("output_norm.weight", d_model));
  if (f.FindTensor("output.weight") != nullptr) {
    FS_ASSIGN_OR_RETURN(w.output, l.Matrix("output.weight", c.vocab_size, d_model));
  } else {
    c.tied_embeddings = true;
    w.output = w.token_embedding;
  }
  if (f.FindTensor("rope_freqs.weight") != nullptr) {
    FS_ASSIGN_OR_RETURN(c.rope_freq_factors, l.Vector("rope_freqs.weight", head_dim / 2));
  }
  const int64_t q_out = n_heads * head_dim, kv_out = n_kv * head_dim;
  c.qkv_bias = f.FindTensor("blk.0.attn_q.bias") != nullptr;
  for (int64_t i = 0; i < n_layers; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    const LayerTensorNames names{b + "attn_norm.weight", b + "ffn_norm.weight", b + "attn_q.weight",
                                 b + "attn_k.weight",    b + "attn_v.weight",   b + "attn_output.weight",
                                 b + "attn_q.bias",      b + "attn_k.bias",     b + "attn_v.bias",
                                 b + "ffn_gate.weight",  b + "ffn_up.weight",   b + "ffn_down.weight"};
    FS_ASSIGN_OR_RETURN(LayerWeights L, LoadLayerWeights(l, names, d_model, q_out, kv_out, ffn, c.qkv_bias));
    w.layers.push_back(std::move(L));
  }
  w.storage.push_back(std::move(file));
  return w;
}

}  // namespace foresight::worker
