#include "worker/tokenizer.h"

#include <algorithm>
#include <array>
#include <climits>

#include "worker/unicode_text.h"

namespace foresight::worker {

uint32_t ByteLevelCodepoint(uint8_t byte) {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      t[b] = printable ? static_cast<uint32_t>(b) : next++;
    }
    return t;
  }();
  return table[byte];
}

Tokenizer::Tokenizer(TokenizerSpec spec, PreTokenizer pre)
    : tokens_(std::move(spec.tokens)),
      kinds_(std::move(spec.kinds)),
      pre_tokenizer_(std::move(pre)),
      bos_(spec.bos),
      eos_(spec.eos),
      eot_(spec.eot),
      add_bos_(spec.add_bos),
      chat_template_(std::move(spec.chat_template)) {
  if (kinds_.size() != tokens_.size()) kinds_.assign(tokens_.size(), TokenKind::kNormal);
  token_ids_.reserve(tokens_.size());
  for (size_t i = 0; i < tokens_.size(); ++i) token_ids_.emplace(tokens_[i], static_cast<TokenId>(i));
  merge_ranks_.reserve(spec.merges.size());
  for (size_t i = 0; i < spec.merges.size(); ++i) merge_ranks_.emplace(spec.merges[i], static_cast<int32_t>(i));
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const TokenKind k = kinds_[i];
    if ((k == TokenKind::kControl || k == TokenKind::kUserDefined || k == TokenKind::kUnknown) && !tokens_[i].empty()) {
      special_by_length_.push_back(static_cast<TokenId>(i));
    }
  }
  std::stable_sort(special_by_length_.begin(), special_by_length_.end(),
                   [&](TokenId a, TokenId b) { return tokens_[a].size() > tokens_[b].size(); });
  for (int b = 0; b < 256; ++b) {
    const uint32_t cp = ByteLevelCodepoint(static_cast<uint8_t>(b));
    AppendUtf8(cp, &byte_to_char_[b]);
    char_to_byte_[cp] = static_cast<uint8_t>(b);
  }
  if (eot_ < 0) {
    for (const char* name : {"<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>"}) {
      TokenId id = Find(name);
      if (id >= 0) {
        eot_ = id;
        break;
      }
    }
  }
}

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromSpec(TokenizerSpec spec) {
  if (spec.tokens.empty()) return InvalidArgument("tokenizer has an empty vocabulary");
  if (!spec.kinds.empty() && spec.kinds.size() != spec.tokens.size()) {
    return InvalidArgument("tokenizer has " + std::to_string(spec.tokens.size()) + " tokens but " +
                           std::to_string(spec.kinds.size()) + " token types");
  }
  FS_ASSIGN_OR_RETURN(PreTokenizer pre, PreTokenizer::Create(spec.pre));
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(spec), std::move(pre)));
}

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromGguf(const GgufFile& gguf) {
  FS_ASSIGN_OR_RETURN(std::string model, gguf.GetString("tokenizer.ggml.model"));
  if (model != "gpt2") {
    return Unimplemented("GGUF file " + gguf.path() + ": tokenizer model \"" + model +
                         "\" is not supported (only byte-level BPE, \"gpt2\")");
  }
  TokenizerSpec spec;
  FS_ASSIGN_OR_RETURN(const std::vector<std::string>* tokens, gguf.GetStringArray("tokenizer.ggml.tokens"));
  spec.tokens = *tokens;
  if (gguf.Has("tokenizer.ggml.token_type")) {
    FS_ASSIGN_OR_RETURN(const std::vector<int64_t>* types, gguf.GetIntArray("tokenizer.ggml.token_type"));
    if (types->size() != tokens->size()) {
      return DataLoss("GGUF file " + gguf.path() + ": tokenizer.ggml.token_type has " + std::to_string(types->size()) +
                      " entries for " + std::to_string(tokens->size()) + " tokens");
    }
    for (int64_t t : *types) spec.kinds.push_back(static_cast<TokenKind>(t));
  }
  FS_ASSIGN_OR_RETURN(const std::vector<std::string>* merges, gguf.GetStringArray("tokenizer.ggml.merges"));
  spec.merges = *merges;
  if (gguf.Has("tokenizer.ggml.pre")) {
    FS_ASSIGN_OR_RETURN(spec.pre, gguf.GetString("tokenizer.ggml.pre"));
  }
  FS_ASSIGN_OR_RETURN(int64_t bos, gguf.GetIntOr("tokenizer.ggml.bos_token_id", -1));
  FS_ASSIGN_OR_RETURN(int64_t eos, gguf.GetIntOr("tokenizer.ggml.eos_token_id", -1));
  FS_ASSIGN_OR_RETURN(int64_t eot, gguf.GetIntOr("tokenizer.ggml.eot_token_id", -1));
  FS_ASSIGN_OR_RETURN(int64_t add_bos, gguf.GetIntOr("tokenizer.ggml.add_bos_token", 0));
  spec.bos = static_cast<TokenId>(bos);
  spec.eos = static_cast<TokenId>(eos);
  spec.eot = static_cast<TokenId>(eot);
  spec.add_bos = add_bos != 0;
  if (gguf.Has("tokenizer.chat_template")) {
    FS_ASSIGN_OR_RETURN(spec.chat_template, gguf.GetString("tokenizer.chat_template"));
  }
  auto tok = FromSpec(std::move(spec));
  if (!tok.ok()) return tok.status().WithContext("GGUF file " + gguf.path());
  return tok;
}

TokenId Tokenizer::Find(const std::string& text) const {
  auto it = token_ids_.find(text);
  return it == token_ids_.end() ? -1 : it->second;
}

bool Tokenizer::IsEndOfGeneration(TokenId id) const { return id >= 0 && (id == eos_ || id == eot_); }

std::vector<TokenId> Tokenizer::Encode(std::string_view text, bool add_bos, bool parse_special) const {
  std::vector<TokenId> out;
  if (add_bos && add_bos_ && bos_ >= 0) out.push_back(bos_);
  // Fragments: either raw text [begin, end) or a special token (token >= 0).
  struct Fragment {
    TokenId token;
    size_t begin, end;
  };
  std::vector<Fragment> fragments{{-1, 0, text.size()}};
  for (TokenId special : special_by_length_) {
    if (!parse_special && kinds_[special] != TokenKind::kUserDefined) continue;
    const std::string& needle = tokens_[special];
    std::vector<Fragment> next;
    next.reserve(fragments.size());
    for (const Fragment& f : fragments) {
      if (f.token >= 0) {
        next.push_back(f);
        continue;
      }
      size_t at = f.begin;
      while (at < f.end) {
        const size_t hit = text.substr(0, f.end).find(needle, at);
        if (hit == std::string_view::npos) break;
        if (hit > at) next.push_back({-1, at, hit});
        next.push_back({special, hit, hit + needle.size()});
        at = hit + needle.size();
      }
      if (at < f.end) next.push_back({-1, at, f.end});
    }
    fragments.swap(next);
  }
  for (const Fragment& f : fragments) {
    if (f.token >= 0) {
      out.push_back(f.token);
    } else {
      EncodeSpan(text.substr(f.begin, f.end - f.begin), &out);
    }
  }
  return out;
}

void Tokenizer::EncodeSpan(std::string_view text, std::vector<TokenId>* out) const {
  for (const std::string& piece : pre_tokenizer_.Split(text)) EncodePiece(piece, out);
}

void Tokenizer::EncodePiece(const std::string& piece, std::vector<TokenId>* out) const {
  // Symbols: one per byte-alphabet character of the piece's bytes.
  std::vector<std::string> symbols;
  symbols.reserve(piece.size());
  for (unsigned char b : piece) symbols.push_back(byte_to_char_[b]);
  std::string key;
  while (symbols.size() > 1) {
    int32_t best_rank = INT32_MAX;
    size_t best = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      key.assign(symbols[i]).append(" ").append(symbols[i + 1]);
      auto it = merge_ranks_.find(key);
      if (it != merge_ranks_.end() && it->second < best_rank) {
        best_rank = it->second;
        best = i;
      }
    }
    if (best_rank == INT32_MAX) break;
    symbols[best] += symbols[best + 1];
    symbols.erase(symbols.begin() + static_cast<ptrdiff_t>(best) + 1);
  }
  for (const std::string& s : symbols) {
    TokenId id = Find(s);
    if (id >= 0) {
      out->push_back(id);
      continue;
    }
    // No token for the merged symbol: fall back to its characters' tokens.
    for (uint32_t cp : DecodeUtf8(s)) {
      std::string ch;
      AppendUtf8(cp, &ch);
      TokenId cid = Find(ch);
      if (cid >= 0) out->push_back(cid);
    }
  }
}

std::string Tokenizer::TokenPiece(TokenId id, bool render_special) const {
  if (id < 0 || id >= vocab_size()) return {};
  const std::string& text = tokens_[id];
  switch (kinds_[id]) {
    case TokenKind::kControl:
      return render_special ? text : std::string();
    case TokenKind::kUserDefined:
      return text;
    case TokenKind::kUnknown:
    case TokenKind::kUnused:
      return render_special ? text : std::string();
    default:
      break;
  }
  std::string bytes;
  for (uint32_t cp : DecodeUtf8(text)) {
    auto it = char_to_byte_.find(cp);
    if (it != char_to_byte_.end()) {
      bytes.push_back(static_cast<char>(it->second));
    } else {
      AppendUtf8(cp, &bytes);
    }
  }
  return bytes;
}

std::string Tokenizer::Decode(const std::vector<TokenId>& ids, bool render_special) const {
  std::string out;
  for (TokenId id : ids) out += TokenPiece(id, render_special);
  return out;
}

StatusOr<std::string> Tokenizer::FormatChat(const std::string& user_message) const {
  return FormatChat(std::vector<ChatMessage>{{"user", user_message}});
}

StatusOr<std::string> Tokenizer::FormatChat(const std::vector<ChatMessage>& messages) const {
  if (chat_template_.find("<|im_start|>") == std::string::npos) {
    return Unimplemented("the model's chat template is not ChatML (<|im_start|>); pass a raw prompt instead");
  }
  if (messages.empty()) return InvalidArgument("the conversation has no messages");
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    if (role != "system" && role != "user" && role != "assistant") {
      return InvalidArgument("message " + std::to_string(i) + " has role '" + role +
                             "'; the roles are system, user and assistant");
    }
  }
  std::string prompt;
  if (messages.front().role != "system") {
    const std::string marker = "<|im_start|>system\n";
    const size_t at = chat_template_.find(marker);
    if (at != std::string::npos) {
      const size_t end = chat_template_.find("<|im_end|>", at);
      const std::string system =
          end == std::string::npos ? "" : chat_template_.substr(at + marker.size(), end - at - marker.size());
      if (!system.empty()) prompt = marker + system + "<|im_end|>\n";
    }
  }
  for (const ChatMessage& m : messages) prompt += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  prompt += "<|im_start|>assistant\n";
  return prompt;
}

}  // namespace foresight::worker
