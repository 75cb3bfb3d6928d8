// KvGeometry: what the capacity planner needs to know of a model, its KV cache's shape, and where
// it comes from: a built-in name (the models operators ask about), a GGUF file, or a Hugging Face
// folder (config.json; no weights are read).
//
//   FS_ASSIGN_OR_RETURN(KvGeometry g, ResolveKvGeometry("llama-3.1-8b"));
//   FS_ASSIGN_OR_RETURN(KvDtype dtype, ParseKvDtype("f16"));
//   KvBytesPerToken(g, dtype);   // 2 (K and V) x 32 layers x 8 KV heads x 128 x 2 bytes = 131,072
//
// Thread-safety: value types and pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "common/status.h"

namespace foresight::planner {

struct KvGeometry {
  std::string name;  // the built-in name, or the file or folder it was read from
  int layers = 0;
  int q_heads = 0;
  int kv_heads = 0;
  int head_dim = 0;
  int64_t max_context = 0;  // the model's own limit (0: unknown)
};

// The element type the KV cache is stored in.
enum class KvDtype { kF16, kBf16, kF32, kFp8 };

// "f16", "bf16", "f32", "fp8"; INVALID_ARGUMENT naming --kv-dtype otherwise.
StatusOr<KvDtype> ParseKvDtype(const std::string& text);
const char* KvDtypeName(KvDtype dtype);
int KvDtypeBytes(KvDtype dtype);

// llama-3.1-8b, llama-3.1-70b, qwen2.5-7b, mistral-7b, smollm2-135m (their published configs).
std::span<const KvGeometry> BuiltinKvGeometries();

// A built-in name, a .gguf file or a Hugging Face folder. INVALID_ARGUMENT naming --model and
// listing the built-in names when `spec` is none of them; the loader's error for a file that is.
StatusOr<KvGeometry> ResolveKvGeometry(const std::string& spec);

// K and V of every layer and KV head for one token.
uint64_t KvBytesPerToken(const KvGeometry& g, KvDtype dtype);

}  // namespace foresight::planner
