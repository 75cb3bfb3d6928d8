// ModelConfig: the geometry and numerics of a Llama-family decoder (Llama 2/3/3.1, Mistral, Qwen2,
// SmolLM2), whichever file format it came from.
//
// Thread-safety: value type.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace foresight::worker {

// How RoPE pairs dimensions. GGUF "llama" checkpoints have Q/K rows permuted so that adjacent
// dimensions (2i, 2i+1) rotate together; Hugging Face checkpoints and GGUF "qwen2" pair i with
// i + head_dim/2 ("neox" / rotate_half).
enum class RopeStyle { kInterleaved, kHalves };

struct ModelConfig {
  std::string architecture;  // "llama", "qwen2", "mistral"
  int32_t n_layers = 0;
  int32_t d_model = 0;
  int32_t n_heads = 0;
  int32_t n_kv_heads = 0;
  int32_t head_dim = 0;
  int32_t ffn_dim = 0;
  int32_t vocab_size = 0;
  int32_t max_context = 0;
  float rms_eps = 1e-5f;
  float rope_theta = 10000.0f;
  RopeStyle rope_style = RopeStyle::kInterleaved;
  // Per frequency divisor (head_dim/2 values; empty = none): llama3 RoPE scaling.
  std::vector<float> rope_freq_factors;
  bool qkv_bias = false;
  bool tied_embeddings = false;
};

// Checks the geometry a loader read from a model file before it is narrowed into a ModelConfig:
// every count positive and within a bound that keeps the kernels' int32 arithmetic exact, KV heads
// dividing query heads, and an even head size (RoPE rotates pairs). DATA_LOSS names `where` and
// the offending value.
Status CheckModelGeometry(const std::string& where, int64_t n_layers, int64_t d_model, int64_t n_heads,
                          int64_t n_kv_heads, int64_t head_dim, int64_t ffn_dim, int64_t vocab_size,
                          int64_t max_context);

// Llama 3.1's "llama3" RoPE scaling as per-frequency divisors.
std::vector<float> Llama3RopeFreqFactors(int head_dim, float theta, float factor, float low_freq_factor,
                                         float high_freq_factor, float original_context);

}  // namespace foresight::worker
