// The tokenizer of a Hugging Face model folder: tokenizer.json (the `tokenizers` library's
// serialisation) plus tokenizer_config.json for the special tokens and the chat template.
//
// Supported: byte-level BPE ("model": {"type": "BPE"} with a ByteLevel pre-tokenizer or decoder),
// merges as "left right" strings or [left, right] pairs, added tokens (special ones become control
// tokens, the others user-defined), and the pre-tokenisers the GGUF path knows, recognised by
// shape: ByteLevel alone (gpt2), Digits(individual) + ByteLevel (SmolLM2, StarCoder), and the
// Llama 3 / Qwen2 Split regexes. Anything else (SentencePiece-style Metaspace models, WordPiece,
// an unknown regex) is refused with an error that names the file and the part not understood.
//
// BOS: tokenizer_config.json's "bos_token"; it is prepended when "add_bos_token" is true or when
// the post-processor's template starts with it (Llama 3). End of generation: "eos_token", and the
// chat template's end-of-turn token (<|im_end|>, <|eot_id|>) when the vocabulary has it.
//
// Thread-safety: a function; the Tokenizer it returns is immutable.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "worker/tokenizer.h"

namespace foresight::worker {

// Loads `dir`/tokenizer.json (and tokenizer_config.json when present). NOT_FOUND when the folder
// has no tokenizer.json; DATA_LOSS or UNIMPLEMENTED, naming the file, when it cannot be used.
StatusOr<std::unique_ptr<Tokenizer>> LoadHfTokenizer(const std::string& dir);

}  // namespace foresight::worker
