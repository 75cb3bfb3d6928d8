// Synthetic Llama-family checkpoints with random weights: for tests (every supported naming and
// file format, written to disk) and for speed benchmarks beyond SmolLM2's 8K context (the attention
// geometry of Llama-3.1-8B: 32 query heads, 8 KV heads, head size 128, a few layers). Their
// numbers are speed, never quality.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"
#include "worker/model.h"
#include "worker/tensor_type.h"

namespace foresight::worker {

struct SyntheticModelSpec {
  std::string architecture = "llama";  // llama, mistral, qwen2
  int32_t n_layers = 2;
  int32_t d_model = 64;
  int32_t n_heads = 4;
  int32_t n_kv_heads = 2;
  int32_t head_dim = 16;
  int32_t ffn_dim = 128;
  int32_t vocab_size = 257;  // 256 byte tokens + "<|end|>" (the test tokenizer)
  int32_t max_context = 4096;
  float rope_theta = 10000.0f;
  bool qkv_bias = false;  // Qwen2 has it
  bool tied_embeddings = true;
  TensorType type = TensorType::kF32;  // encoding of the matrices
  uint32_t seed = 1;

  // Llama-3.1-8B's attention geometry with `layers` random layers and a small vocabulary.
  static SyntheticModelSpec Llama31_8BGeometry(int32_t layers, int32_t context);
};

// In memory (F32, F16, Q8_0 or Q4_1 matrices; quantised ones need d_model and ffn_dim multiples
// of 32), with no tokenizer.
StatusOr<std::unique_ptr<Model>> MakeSyntheticModel(const SyntheticModelSpec& spec);

// As a GGUF file with a byte-level tokenizer (256 byte tokens + "<|end|>"); requires
// vocab_size == 257.
Status WriteSyntheticGguf(const SyntheticModelSpec& spec, const std::string& path);

// As a Hugging Face folder: config.json and the weights split over `shards` safetensors files
// (F32, F16 or BF16). No tokenizer.json: the model takes token ids.
Status WriteSyntheticHfFolder(const SyntheticModelSpec& spec, const std::string& dir, int shards);

}  // namespace foresight::worker
