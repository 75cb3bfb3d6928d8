// Fuzz target: a Hugging Face tokenizer.json (and tokenizer_config.json), as LoadHfTokenizer reads
// them from a model folder. The input is tokenizer.json, or tokenizer.json, a line
// "@@tokenizer_config.json@@", and tokenizer_config.json. A tokenizer that loads must encode text to
// ids inside its vocabulary and decode them without crashing.
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "tests/fuzz/fuzz_target.h"
#include "worker/hf_tokenizer.h"
#include "worker/tokenizer.h"

namespace foresight::fuzz {
namespace {

constexpr const char* kSplit = "\n@@tokenizer_config.json@@\n";

const std::string& Folder() {
  // Never destroyed: the exit handler that removes the folder runs after static destructors.
  static const std::string* dir = new std::string([] {
    const std::string d =
        (std::filesystem::temp_directory_path() / ("foresight-fuzz-hftok-" + std::to_string(getpid()))).string();
    std::filesystem::create_directories(d);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(Folder(), ec);
    });
    return d;
  }());
  return *dir;
}

// GPT-2's byte alphabet as JSON-escaped vocabulary entries, ids 0..255.
std::string ByteVocab() {
  std::string out;
  for (int b = 0; b < 256; ++b) {
    char entry[32];
    std::snprintf(entry, sizeof(entry), "%s\"\\u%04x\": %d", b == 0 ? "" : ", ",
                  worker::ByteLevelCodepoint(static_cast<uint8_t>(b)), b);
    out += entry;
  }
  return out;
}

}  // namespace

std::vector<std::string> Seeds() {
  const std::string vocab = ByteVocab();
  const std::string gpt2 =
      R"({"version": "1.0", "added_tokens": [{"id": 259, "content": "<|im_start|>", "special": true},
      {"id": 260, "content": "<|im_end|>", "special": true}],
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true},
      {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]},
    "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|im_start|>", "type_id": 0}},
      {"Sequence": {"id": "A", "type_id": 0}}]},
    "model": {"type": "BPE", "byte_fallback": false, "vocab": {)" +
      vocab + R"(, "he": 256, "ll": 257, "hell": 258}, "merges": ["h e", ["l", "l"], "he ll"]}})";
  const std::string config =
      R"({"bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>"}, "add_bos_token": false,
    "chat_template": "{% for m in messages %}<|im_start|>{{ m.content }}<|im_end|>{% endfor %}"})";
  return {gpt2, gpt2 + kSplit + config};
}

}  // namespace foresight::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace foresight;
  const std::string& dir = fuzz::Folder();
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t split = input.find(fuzz::kSplit);
  std::ofstream(dir + "/tokenizer.json", std::ios::binary | std::ios::trunc) << input.substr(0, split);
  if (split == std::string::npos) {
    std::filesystem::remove(dir + "/tokenizer_config.json");
  } else {
    std::ofstream(dir + "/tokenizer_config.json", std::ios::binary | std::ios::trunc)
        << input.substr(split + std::strlen(fuzz::kSplit));
  }
  auto tokenizer = worker::LoadHfTokenizer(dir);
  if (!tokenizer.ok()) {
    FUZZ_CHECK(!tokenizer.status().message().empty(), "a refused tokenizer gets a reason");
    return 0;
  }
  const worker::Tokenizer& tok = **tokenizer;
  for (const char* text : {"hello 123 <|im_start|>x<|im_end|>", "caf\xc3\xa9 \xff", ""}) {
    for (bool special : {false, true}) {
      const std::vector<worker::TokenId> ids = tok.Encode(text, true, special);
      for (worker::TokenId id : ids) FUZZ_CHECK(id >= 0 && id < tok.vocab_size(), "token ids lie in the vocabulary");
      (void)tok.Decode(ids, true);
    }
  }
  (void)tok.FormatChat("hi");
  return 0;
}
