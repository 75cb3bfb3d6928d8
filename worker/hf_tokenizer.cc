#include "worker/hf_tokenizer.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/json_fields.h"

namespace foresight::worker {
namespace {

using nlohmann::json;

StatusOr<json> ReadJson(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFound("cannot open " + path);
  json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return DataLoss(path + " is not a JSON object");
  return j;
}

// A special token in tokenizer_config.json: "text", {"content": "text", ...} or null.
std::string TokenText(const json& config, const char* key) {
  if (!config.contains(key)) return "";
  const json& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return "";
}

// node[key] when it is a string, else "" (absent, or of another type).
std::string StringOrEmpty(const json& node, const char* key) {
  auto value = JsonField<std::string>(node, key, "");
  return value.ok() ? *value : "";
}

// Flattens a pre-tokenizer (or post-processor) that may be a {"type": "Sequence"} of others.
void Flatten(const json& node, const char* list_key, std::vector<const json*>* out) {
  if (!node.is_object()) return;
  if (StringOrEmpty(node, "type") == "Sequence" && node.contains(list_key) && node[list_key].is_array()) {
    for (const json& child : node[list_key]) Flatten(child, list_key, out);
  } else {
    out->push_back(&node);
  }
}

// The GGUF-style pre-tokeniser name for tokenizer.json's "pre_tokenizer" (see the header).
StatusOr<std::string> PreTokenizerName(const json& tok, const std::string& path) {
  std::vector<const json*> parts;
  if (tok.contains("pre_tokenizer")) Flatten(tok["pre_tokenizer"], "pretokenizers", &parts);
  bool byte_level = false, byte_level_regex = false, individual_digits = false;
  std::string regex;
  for (const json* p : parts) {
    const std::string where = path + ": pre_tokenizer";
    FS_ASSIGN_OR_RETURN(const std::string type, JsonFileField<std::string>(*p, "type", "", where));
    if (type == "ByteLevel") {
      byte_level = true;
      FS_ASSIGN_OR_RETURN(byte_level_regex, JsonFileField(*p, "use_regex", true, where));
    } else if (type == "Digits") {
      FS_ASSIGN_OR_RETURN(individual_digits, JsonFileField(*p, "individual_digits", false, where));
    } else if (type == "Split" && p->contains("pattern") && (*p)["pattern"].is_object() &&
               (*p)["pattern"].contains("Regex") && (*p)["pattern"]["Regex"].is_string()) {
      regex = (*p)["pattern"]["Regex"].get<std::string>();
    } else {
      return Unimplemented(path + ": pre_tokenizer \"" + type +
                           "\" is not supported (byte-level BPE only: ByteLevel, Digits, the Llama 3 and "
                           "Qwen2 Split patterns)");
    }
  }
  if (!byte_level) {
    return Unimplemented(path + ": not a byte-level BPE tokenizer (no ByteLevel pre-tokenizer)");
  }
  if (!regex.empty()) {
    // The Llama 3 and Qwen2 patterns differ only in how many digits make one piece.
    const bool llama3_shape = regex.find("[^\\r\\n\\p{L}\\p{N}]?\\p{L}+") != std::string::npos &&
                              regex.find("\\s*[\\r\\n]+") != std::string::npos;
    if (llama3_shape && regex.find("\\p{N}{1,3}") != std::string::npos) return std::string("llama-bpe");
    if (llama3_shape && regex.find("|\\p{N}|") != std::string::npos) return std::string("qwen2");
    return Unimplemented(path + ": pre_tokenizer Split regex is not one of the known ones (Llama 3, Qwen2): " + regex);
  }
  if (!byte_level_regex) return Unimplemented(path + ": ByteLevel pre-tokenizer without its regex and no Split");
  return std::string(individual_digits ? "smollm" : "gpt2");
}

}  // namespace

StatusOr<std::unique_ptr<Tokenizer>> LoadHfTokenizer(const std::string& dir) {
  const std::string path = dir + "/tokenizer.json";
  if (!std::filesystem::exists(path)) return NotFound("Hugging Face folder " + dir + " has no tokenizer.json");
  FS_ASSIGN_OR_RETURN(json tok, ReadJson(path));

  if (!tok.contains("model") || !tok["model"].is_object()) return DataLoss(path + ": no \"model\" object");
  const json& model = tok["model"];
  // Older files leave out the type of BPE models.
  FS_ASSIGN_OR_RETURN(const std::string type, JsonFileField<std::string>(model, "type", "BPE", path + ": model"));
  if (type != "BPE") return Unimplemented(path + ": model type \"" + type + "\" is not supported (BPE only)");
  FS_ASSIGN_OR_RETURN(const bool byte_fallback, JsonFileField(model, "byte_fallback", false, path + ": model"));
  if (byte_fallback) {
    return Unimplemented(path +
                         ": BPE with byte_fallback (SentencePiece-style) is not supported (byte-level BPE only)");
  }
  if (!model.contains("vocab") || !model["vocab"].is_object())
    return DataLoss(path + ": model has no \"vocab\" object");
  if (!model.contains("merges") || !model["merges"].is_array())
    return DataLoss(path + ": model has no \"merges\" array");

  TokenizerSpec spec;
  FS_ASSIGN_OR_RETURN(spec.pre, PreTokenizerName(tok, path));

  // Ids: the vocabulary plus added tokens, which may extend it. Gaps become unused tokens.
  std::vector<std::pair<std::string, int64_t>> entries;
  int64_t max_id = -1;
  for (const auto& [text, id] : model["vocab"].items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0)
      return DataLoss(path + ": vocab entry \"" + text + "\" has no valid id");
    entries.emplace_back(text, id.get<int64_t>());
    max_id = std::max(max_id, id.get<int64_t>());
  }
  struct Added {
    std::string text;
    int64_t id;
    bool special;
  };
  std::vector<Added> added;
  if (tok.contains("added_tokens") && tok["added_tokens"].is_array()) {
    for (const json& a : tok["added_tokens"]) {
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || !a.contains("content") ||
          !a["content"].is_string()) {
        return DataLoss(path + ": an added_tokens entry lacks an integer \"id\" or a string \"content\"");
      }
      FS_ASSIGN_OR_RETURN(const bool special, JsonFileField(a, "special", false, path + ": added_tokens"));
      added.push_back({a["content"].get<std::string>(), a["id"].get<int64_t>(), special});
      max_id = std::max(max_id, added.back().id);
    }
  }
  if (max_id < 0) return DataLoss(path + ": empty vocabulary");
  if (max_id > (1 << 24)) return DataLoss(path + ": token id " + std::to_string(max_id) + " is implausibly large");
  spec.tokens.assign(static_cast<size_t>(max_id + 1), "");
  spec.kinds.assign(static_cast<size_t>(max_id + 1), TokenKind::kUnused);
  for (const auto& [text, id] : entries) {
    spec.tokens[id] = text;
    spec.kinds[id] = TokenKind::kNormal;
  }
  for (const Added& a : added) {
    spec.tokens[a.id] = a.text;
    spec.kinds[a.id] = a.special ? TokenKind::kControl : TokenKind::kUserDefined;
  }
  for (size_t id = 0; id < spec.tokens.size(); ++id) {
    if (spec.kinds[id] == TokenKind::kUnused) spec.tokens[id] = "<unused" + std::to_string(id) + ">";
  }

  for (const json& m : model["merges"]) {
    if (m.is_string()) {
      spec.merges.push_back(m.get<std::string>());
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      spec.merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
    } else {
      return DataLoss(path + ": merge #" + std::to_string(spec.merges.size()) + " is neither \"a b\" nor [a, b]");
    }
  }

  auto find = [&](const std::string& text) -> TokenId {
    for (size_t id = 0; id < spec.tokens.size(); ++id) {
      if (spec.tokens[id] == text && spec.kinds[id] != TokenKind::kUnused) return static_cast<TokenId>(id);
    }
    return -1;
  };

  // BOS via the post-processor's template (Llama 3 prepends <|begin_of_text|> this way).
  std::vector<const json*> post;
  if (tok.contains("post_processor")) Flatten(tok["post_processor"], "processors", &post);
  for (const json* p : post) {
    if (StringOrEmpty(*p, "type") != "TemplateProcessing" || !p->contains("single") || !(*p)["single"].is_array() ||
        (*p)["single"].empty()) {
      continue;
    }
    const json& first = (*p)["single"][0];
    if (first.contains("SpecialToken") && first["SpecialToken"].contains("id") &&
        first["SpecialToken"]["id"].is_string()) {
      spec.bos = find(first["SpecialToken"]["id"].get<std::string>());
      spec.add_bos = spec.bos >= 0;
    }
  }

  const std::string config_path = dir + "/tokenizer_config.json";
  if (std::filesystem::exists(config_path)) {
    FS_ASSIGN_OR_RETURN(json config, ReadJson(config_path));
    if (std::string bos = TokenText(config, "bos_token"); !bos.empty()) {
      spec.bos = find(bos);
      if (spec.bos < 0) return DataLoss(config_path + ": bos_token \"" + bos + "\" is not in the vocabulary");
    }
    if (std::string eos = TokenText(config, "eos_token"); !eos.empty()) {
      spec.eos = find(eos);
      if (spec.eos < 0) return DataLoss(config_path + ": eos_token \"" + eos + "\" is not in the vocabulary");
    }
    if (config.contains("add_bos_token") && config["add_bos_token"].is_boolean()) {
      spec.add_bos = config["add_bos_token"].get<bool>() && spec.bos >= 0;
    }
    if (config.contains("chat_template")) {
      const json& t = config["chat_template"];
      if (t.is_string()) {
        spec.chat_template = t.get<std::string>();
      } else if (t.is_array()) {  // [{"name": "default", "template": "..."}, ...]
        for (const json& named : t) {
          if (named.is_object() && StringOrEmpty(named, "name") == "default" && named.contains("template") &&
              named["template"].is_string()) {
            spec.chat_template = named["template"].get<std::string>();
          }
        }
      }
    }
  }
  for (const char* end_of_turn : {"<|im_end|>", "<|eot_id|>"}) {
    if (spec.chat_template.find(end_of_turn) != std::string::npos) {
      if (TokenId id = find(end_of_turn); id >= 0 && id != spec.eos) spec.eot = id;
    }
  }

  auto out = Tokenizer::FromSpec(std::move(spec));
  if (!out.ok()) return out.status().WithContext(path);
  return out;
}

}  // namespace foresight::worker
