#include "planner/kv_geometry.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/json_fields.h"
#include "worker/gguf_file.h"

namespace foresight::planner {
namespace {

// From each model's published config.json (num_hidden_layers, num_attention_heads,
// num_key_value_heads, head_dim or hidden_size / heads, max_position_embeddings).
const KvGeometry kBuiltins[] = {
    {"llama-3.1-8b", 32, 32, 8, 128, 131072}, {"llama-3.1-70b", 80, 64, 8, 128, 131072},
    {"qwen2.5-7b", 28, 28, 4, 128, 32768},    {"mistral-7b", 32, 32, 8, 128, 32768},
    {"smollm2-135m", 30, 9, 3, 64, 8192},
};

std::string BuiltinNames() {
  std::string names;
  for (const KvGeometry& g : kBuiltins) names += (names.empty() ? "" : ", ") + g.name;
  return names;
}

Status CheckGeometry(const KvGeometry& g) {
  if (g.layers <= 0 || g.q_heads <= 0 || g.kv_heads <= 0 || g.head_dim <= 0 || g.q_heads % g.kv_heads != 0) {
    return InvalidArgument("--model " + g.name + ": unusable geometry (" + std::to_string(g.layers) + " layers, " +
                           std::to_string(g.q_heads) + " query heads, " + std::to_string(g.kv_heads) +
                           " KV heads, head size " + std::to_string(g.head_dim) + ")");
  }
  return Status::OK();
}

StatusOr<KvGeometry> FromGguf(const std::string& path) {
  FS_ASSIGN_OR_RETURN(auto file, worker::GgufFile::Open(path));
  FS_ASSIGN_OR_RETURN(std::string arch, file->GetString("general.architecture"));
  const std::string p = arch + ".";
  KvGeometry g;
  g.name = path;
  FS_ASSIGN_OR_RETURN(int64_t layers, file->GetInt(p + "block_count"));
  FS_ASSIGN_OR_RETURN(int64_t d_model, file->GetInt(p + "embedding_length"));
  FS_ASSIGN_OR_RETURN(int64_t heads, file->GetInt(p + "attention.head_count"));
  FS_ASSIGN_OR_RETURN(int64_t kv_heads, file->GetIntOr(p + "attention.head_count_kv", heads));
  FS_ASSIGN_OR_RETURN(int64_t head_dim, file->GetIntOr(p + "attention.key_length", heads > 0 ? d_model / heads : 0));
  FS_ASSIGN_OR_RETURN(g.max_context, file->GetIntOr(p + "context_length", 0));
  if (layers > 100000 || heads > 100000 || kv_heads > 100000 || head_dim > 100000) {
    return InvalidArgument("--model " + path + ": geometry out of range");
  }
  g.layers = static_cast<int>(layers);
  g.q_heads = static_cast<int>(heads);
  g.kv_heads = static_cast<int>(kv_heads);
  g.head_dim = static_cast<int>(head_dim);
  FS_RETURN_IF_ERROR(CheckGeometry(g));
  return g;
}

StatusOr<KvGeometry> FromHfFolder(const std::string& dir) {
  const std::string path = dir + "/config.json";
  std::ifstream in(path);
  if (!in) return NotFound("--model " + dir + ": a folder without config.json");
  const nlohmann::json cfg = nlohmann::json::parse(in, nullptr, false);
  if (cfg.is_discarded() || !cfg.is_object()) return InvalidArgument("--model " + path + " is not a JSON object");
  KvGeometry g;
  g.name = dir;
  auto field = [&](const char* key, int64_t fallback) -> StatusOr<int> {
    auto v = JsonField<int>(cfg, key, static_cast<int>(fallback));
    if (!v.ok()) return v.status().WithContext(path);
    return *v;
  };
  FS_ASSIGN_OR_RETURN(g.layers, field("num_hidden_layers", 0));
  FS_ASSIGN_OR_RETURN(g.q_heads, field("num_attention_heads", 0));
  FS_ASSIGN_OR_RETURN(g.kv_heads, field("num_key_value_heads", g.q_heads));
  FS_ASSIGN_OR_RETURN(int hidden, field("hidden_size", 0));
  FS_ASSIGN_OR_RETURN(g.head_dim, field("head_dim", g.q_heads > 0 ? hidden / g.q_heads : 0));
  FS_ASSIGN_OR_RETURN(int context, field("max_position_embeddings", 0));
  g.max_context = context;
  FS_RETURN_IF_ERROR(CheckGeometry(g));
  return g;
}

}  // namespace

StatusOr<KvDtype> ParseKvDtype(const std::string& text) {
  if (text == "f16" || text == "fp16") return KvDtype::kF16;
  if (text == "bf16") return KvDtype::kBf16;
  if (text == "f32" || text == "fp32") return KvDtype::kF32;
  if (text == "fp8" || text == "f8") return KvDtype::kFp8;
  return InvalidArgument("--kv-dtype \"" + text + "\" is not one of f16, bf16, f32, fp8");
}

const char* KvDtypeName(KvDtype dtype) {
  switch (dtype) {
    case KvDtype::kF16:
      return "f16";
    case KvDtype::kBf16:
      return "bf16";
    case KvDtype::kF32:
      return "f32";
    case KvDtype::kFp8:
      return "fp8";
  }
  return "?";
}

int KvDtypeBytes(KvDtype dtype) {
  switch (dtype) {
    case KvDtype::kF32:
      return 4;
    case KvDtype::kFp8:
      return 1;
    default:
      return 2;
  }
}

std::span<const KvGeometry> BuiltinKvGeometries() { return kBuiltins; }

StatusOr<KvGeometry> ResolveKvGeometry(const std::string& spec) {
  for (const KvGeometry& g : kBuiltins) {
    if (g.name == spec) return g;
  }
  std::error_code ec;
  if (std::filesystem::is_directory(spec, ec)) return FromHfFolder(spec);
  if (std::filesystem::is_regular_file(spec, ec)) return FromGguf(spec);
  return InvalidArgument("--model \"" + spec + "\" is neither a built-in model (" + BuiltinNames() +
                         ") nor a GGUF file or Hugging Face folder");
}

uint64_t KvBytesPerToken(const KvGeometry& g, KvDtype dtype) {
  return 2ull * static_cast<uint64_t>(g.layers) * static_cast<uint64_t>(g.kv_heads) *
         static_cast<uint64_t>(g.head_dim) * static_cast<uint64_t>(KvDtypeBytes(dtype));
}

}  // namespace foresight::planner
