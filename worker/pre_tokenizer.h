// PreTokenizer: splits text into the pieces that byte-level BPE then encodes separately, following
// the model's pre-tokenisation regex (GGUF `tokenizer.ggml.pre`).
//
// Supported:
//   "gpt2" (and "default"): 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   "smollm", "starcoder", "refact", "codeshell": every \p{N} code point is its own piece, then gpt2.
//   "llama-bpe" (Llama 3), "qwen2", "smaug-bpe": the Llama 3 regex (digits in runs of 1-3; qwen2: 1).
// The split is hand-written (no regex engine) with the semantics of the regexes above.
//
// Thread-safety: immutable after Create; safe to use from many threads.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace foresight::worker {

class PreTokenizer {
 public:
  // UNIMPLEMENTED names the unknown pre-tokeniser.
  static StatusOr<PreTokenizer> Create(const std::string& name);

  // Pieces of `text` (UTF-8), in order; their concatenation is `text`.
  std::vector<std::string> Split(std::string_view text) const;
  const std::string& name() const { return name_; }

 private:
  enum class Kind { kGpt2, kDigitsThenGpt2, kLlama3 };
  PreTokenizer(std::string name, Kind kind, int max_digits)
      : name_(std::move(name)), kind_(kind), max_digits_(max_digits) {}

  std::string name_;
  Kind kind_;
  int max_digits_;  // llama3 style: longest run of digits in one piece
};

}  // namespace foresight::worker
