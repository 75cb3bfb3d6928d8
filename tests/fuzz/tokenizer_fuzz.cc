// Fuzz target: prompt text through the byte-level BPE tokenizer (what `foresight generate` and the
// worker service do with a user's prompt). Any bytes must encode to ids inside the vocabulary and
// decode back to the same text, with and without special-token parsing. "The same" as llama.cpp
// defines it: each byte that is not valid UTF-8 comes back as U+FFFD (worker/unicode_text.h), and
// a byte the vocabulary has no token for is dropped (SmolLM2 lacks 21 of the 256, such as 0x13).
//
// Which tokenizer: FORESIGHT_FUZZ_MODEL names it.
//   unset      SmolLM2's when the default model is fetched (worker/default_model.h), else the
//              synthetic test model's byte tokenizer (a run by hand)
//   default    SmolLM2's from the default model; exits 77 (a skip, which CI refuses) when it is
//              not fetched (deploy/fetch-model.sh): CTest's fuzz.tokenizer_fuzz.smollm2
//   synthetic  the synthetic test model's byte tokenizer: CTest's fuzz.tokenizer_fuzz
//   a path     that GGUF file
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>

#include "tests/fuzz/fuzz_target.h"
#include "worker/default_model.h"
#include "worker/gguf_file.h"
#include "worker/synthetic_model.h"
#include "worker/tokenizer.h"
#include "worker/unicode_text.h"

namespace foresight::fuzz {
namespace {

// The GGUF to take the tokenizer from; empty for the synthetic one.
std::string ModelPath() {
  const char* env = std::getenv("FORESIGHT_FUZZ_MODEL");
  const std::string choice = env != nullptr ? env : "";
  if (choice == "synthetic") return "";
  if (choice.empty() || choice == "default") {
    auto found = worker::FindDefaultModel();
    if (found.ok()) return *found;
    if (choice.empty()) return "";
    std::fprintf(stderr, "tokenizer_fuzz: skipped, FORESIGHT_FUZZ_MODEL=default: %s\n",
                 found.status().message().c_str());
    std::exit(77);
  }
  return choice;
}

const worker::Tokenizer& TheTokenizer() {
  static const std::unique_ptr<worker::Tokenizer> tokenizer = [] {
    std::string path = ModelPath();
    const bool synthetic = path.empty();
    if (synthetic) {
      path = WriteScratchFile("", ".tokenizer.gguf");
      const Status st = worker::WriteSyntheticGguf(worker::SyntheticModelSpec{}, path);
      FUZZ_CHECK(st.ok(), st.message().c_str());
    }
    auto gguf = worker::GgufFile::Open(path);
    FUZZ_CHECK(gguf.ok(), gguf.status().message().c_str());
    auto tok = worker::Tokenizer::FromGguf(**gguf);
    FUZZ_CHECK(tok.ok(), tok.status().message().c_str());
    if (synthetic) std::filesystem::remove(path);
    std::fprintf(stderr, "tokenizer_fuzz: the tokenizer of %s (%d tokens)\n",
                 synthetic ? "the synthetic test model" : path.c_str(), (*tok)->vocab_size());
    return std::move(tok).value();
  }();
  return *tokenizer;
}

// Bytes that have a token of their own in the vocabulary.
const std::vector<bool>& BytesWithTokens() {
  static const std::vector<bool> has = [] {
    std::vector<bool> h(256);
    for (int b = 0; b < 256; ++b) {
      std::string piece;
      worker::AppendUtf8(worker::ByteLevelCodepoint(static_cast<uint8_t>(b)), &piece);
      h[b] = TheTokenizer().Find(piece) >= 0;
    }
    return h;
  }();
  return has;
}

}  // namespace

std::vector<std::string> Seeds() {
  return {
      "Hello, world! How are you today?",
      "int main(int argc, char** argv) {\n\treturn 0;\n}\n",
      "  leading spaces, trailing spaces   \n\n\r\n",
      "caf\xc3\xa9 na\xc3\xafve \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x98\x80 "
      "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82",
      "<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n",
      "<|endoftext|><|im_start|><|im_end|><|im_start",
      "1234567890 3.14159 0xdeadbeef 1,000,000",
      std::string("\x00\x01\xff\xfe\x80\xc0\xe0\xf0 invalid utf-8 \xed\xa0\x80", 30),
      "I'm can't won't they'll we've you'd",
  };
}

}  // namespace foresight::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace foresight::worker;
  const Tokenizer& tok = foresight::fuzz::TheTokenizer();
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::string sanitized, expected;
  for (uint32_t cp : DecodeUtf8(text)) AppendUtf8(cp, &sanitized);
  for (char c : sanitized) {
    if (foresight::fuzz::BytesWithTokens()[static_cast<uint8_t>(c)]) expected.push_back(c);
  }
  for (bool parse_special : {false, true}) {
    const std::vector<TokenId> ids = tok.Encode(text, false, parse_special);
    for (TokenId id : ids) FUZZ_CHECK(id >= 0 && id < tok.vocab_size(), "token ids lie in the vocabulary");
    const std::string back = tok.Decode(ids, true);
    FUZZ_CHECK(back == expected,
               parse_special ? "decode(encode(text)) == text, special tokens parsed" : "decode(encode(text)) == text");
  }
  return 0;
}
