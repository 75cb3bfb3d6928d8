// Tokenizer: byte-level BPE from a model's own vocabulary (GGUF `tokenizer.ggml.*`: tokens, token
// types, merges, pre-tokeniser, special token ids). Text in gives token ids out and back.
//
// Encoding: the text is first split around special tokens (control tokens when `parse_special`,
// user-defined tokens always; longer tokens first), then each remaining span is pre-tokenised
// (see PreTokenizer), its bytes mapped to GPT-2's printable byte alphabet, and merged pair by pair,
// lowest merge rank first (leftmost on ties), as llama.cpp does.
//
// Thread-safety: immutable after construction; Encode/Decode may run on many threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "worker/gguf_file.h"
#include "worker/pre_tokenizer.h"

namespace foresight::worker {

using TokenId = int32_t;

enum class TokenKind : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// What a tokenizer is built from (GGUF metadata, tokenizer.json, or a test).
struct TokenizerSpec {
  std::vector<std::string> tokens;
  std::vector<TokenKind> kinds;     // empty: all normal
  std::vector<std::string> merges;  // "left right", rank = index
  std::string pre = "gpt2";
  TokenId bos = -1, eos = -1, eot = -1;
  bool add_bos = false;
  std::string chat_template;
};

// One turn of a chat conversation (Tokenizer::FormatChat).
struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

// GPT-2's byte alphabet, which byte-level BPE vocabularies are written in: the printable bytes
// stand for themselves, the others for U+0100 onwards in byte order.
uint32_t ByteLevelCodepoint(uint8_t byte);

class Tokenizer {
 public:
  // Reads tokenizer.ggml.{model,tokens,token_type,merges,pre,bos_token_id,eos_token_id,
  // add_bos_token} and tokenizer.chat_template. Only model "gpt2" (byte-level BPE) is supported.
  static StatusOr<std::unique_ptr<Tokenizer>> FromGguf(const GgufFile& gguf);
  static StatusOr<std::unique_ptr<Tokenizer>> FromSpec(TokenizerSpec spec);

  // add_bos: prepend BOS when the model asks for it (tokenizer.ggml.add_bos_token).
  std::vector<TokenId> Encode(std::string_view text, bool add_bos, bool parse_special) const;
  // Bytes of one token; control tokens render their text only when `render_special`.
  std::string TokenPiece(TokenId id, bool render_special) const;
  std::string Decode(const std::vector<TokenId>& ids, bool render_special = false) const;

  // The chat prompt for one user message in the model's template, ready to Encode with
  // parse_special (ChatML "<|im_start|>" templates, with the template's default system message if
  // it has one). UNIMPLEMENTED for other templates.
  StatusOr<std::string> FormatChat(const std::string& user_message) const;
  // The same for a conversation (roles "system", "user", "assistant"), ending with the assistant's
  // turn opened. The template's default system message comes first unless the conversation starts
  // with its own. INVALID_ARGUMENT for an empty conversation or another role (naming its index).
  StatusOr<std::string> FormatChat(const std::vector<ChatMessage>& messages) const;

  int32_t vocab_size() const { return static_cast<int32_t>(tokens_.size()); }
  TokenId bos() const { return bos_; }
  TokenId eos() const { return eos_; }
  // Tokens that end generation (eos, and the template's end-of-turn token where there is one).
  bool IsEndOfGeneration(TokenId id) const;
  TokenId Find(const std::string& text) const;  // -1 when absent
  const std::string& pre() const { return pre_tokenizer_.name(); }

 private:
  Tokenizer(TokenizerSpec spec, PreTokenizer pre);
  void EncodeSpan(std::string_view text, std::vector<TokenId>* out) const;
  void EncodePiece(const std::string& piece, std::vector<TokenId>* out) const;

  std::vector<std::string> tokens_;
  std::vector<TokenKind> kinds_;
  std::unordered_map<std::string, TokenId> token_ids_;
  std::unordered_map<std::string, int32_t> merge_ranks_;  // key "left right"
  std::vector<TokenId> special_by_length_;                // partition order
  PreTokenizer pre_tokenizer_;
  TokenId bos_, eos_, eot_;
  bool add_bos_;
  std::string chat_template_;
  std::string byte_to_char_[256];  // GPT-2 byte alphabet, UTF-8
  std::unordered_map<uint32_t, uint8_t> char_to_byte_;
};

}  // namespace foresight::worker
