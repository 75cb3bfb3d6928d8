#include "worker/model_config.h"

#include <cmath>

namespace foresight::worker {

Status CheckModelGeometry(const std::string& where, int64_t n_layers, int64_t d_model, int64_t n_heads,
                          int64_t n_kv_heads, int64_t head_dim, int64_t ffn_dim, int64_t vocab_size,
                          int64_t max_context) {
  struct Count {
    const char* name;
    int64_t value, max;
  };
  const Count counts[] = {{"layer count", n_layers, 4096},
                          {"model width", d_model, 1 << 17},
                          {"attention head count", n_heads, 4096},
                          {"KV head count", n_kv_heads, 4096},
                          {"head size", head_dim, 4096},
                          {"feed-forward width", ffn_dim, 1 << 20},
                          {"vocabulary size", vocab_size, 1 << 24},
                          {"context length", max_context, 1 << 24}};
  for (const Count& c : counts) {
    if (c.value <= 0 || c.value > c.max) {
      return DataLoss(where + ": " + c.name + " " + std::to_string(c.value) + " is outside 1.." +
                      std::to_string(c.max));
    }
  }
  if (n_heads % n_kv_heads != 0) {
    return DataLoss(where + ": " + std::to_string(n_heads) + " attention heads are not a multiple of " +
                    std::to_string(n_kv_heads) + " KV heads");
  }
  if (head_dim % 2 != 0)
    return DataLoss(where + ": head size " + std::to_string(head_dim) + " is odd (RoPE rotates pairs)");
  if (n_heads * head_dim > (1 << 20)) {
    return DataLoss(where + ": " + std::to_string(n_heads) + " heads of " + std::to_string(head_dim) + " are too wide");
  }
  return Status::OK();
}

std::vector<float> Llama3RopeFreqFactors(int head_dim, float theta, float factor, float low_freq_factor,
                                         float high_freq_factor, float original_context) {
  std::vector<float> out(head_dim / 2);
  const double low_wavelen = original_context / low_freq_factor;
  const double high_wavelen = original_context / high_freq_factor;
  for (int i = 0; i < head_dim / 2; ++i) {
    const double freq = std::pow(static_cast<double>(theta), -2.0 * i / head_dim);
    const double wavelen = 2 * M_PI / freq;
    double scaled;
    if (wavelen < high_wavelen) {
      scaled = freq;
    } else if (wavelen > low_wavelen) {
      scaled = freq / factor;
    } else {
      const double smooth = (original_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
      scaled = (1 - smooth) * freq / factor + smooth * freq;
    }
    out[i] = static_cast<float>(freq / scaled);
  }
  return out;
}

}  // namespace foresight::worker
