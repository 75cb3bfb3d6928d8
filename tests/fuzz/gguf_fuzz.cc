// Fuzz target: a GGUF model file, as `foresight-worker --model` would open it. GgufFile::Open, every
// metadata accessor, the tokenizer built from the file's vocabulary (encode and decode), and the
// Llama-family weight loader. A malformed file must be refused with an error, never crash or read
// outside the file.
#include "tests/fuzz/fuzz_target.h"
#include "tests/fuzz/tiny_model.h"
#include "worker/gguf_file.h"
#include "worker/gguf_model_loader.h"
#include "worker/synthetic_model.h"
#include "worker/tokenizer.h"

namespace foresight::fuzz {

using worker::GgufFile;

std::vector<std::string> Seeds() {
  std::vector<std::string> seeds;
  const worker::TensorType types[] = {worker::TensorType::kF32, worker::TensorType::kF16, worker::TensorType::kQ8_0,
                                      worker::TensorType::kQ4_1};
  for (worker::TensorType type : types) {
    const std::string path = WriteScratchFile("", ".seed.gguf");
    const Status st = worker::WriteSyntheticGguf(TinyModelSpec(type), path);
    FUZZ_CHECK(st.ok(), st.message().c_str());
    seeds.push_back(ReadFileBytes(path));
  }
  return seeds;
}

}  // namespace foresight::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace foresight;
  using namespace foresight::worker;
  const std::string path = fuzz::WriteScratchFile(std::string(reinterpret_cast<const char*>(data), size), ".gguf");
  auto opened = GgufFile::Open(path);
  if (!opened.ok()) {
    FUZZ_CHECK(!opened.status().message().empty(), "a refused file gets a reason");
    return 0;
  }
  std::shared_ptr<const GgufFile> file = std::move(opened).value();

  for (const auto& [key, value] : file->metadata()) {
    (void)file->GetString(key);
    (void)file->GetInt(key);
    (void)file->GetFloat(key);
    (void)file->GetStringArray(key);
    (void)file->GetIntArray(key);
    (void)file->GetFloatArray(key);
  }
  // Every tensor's bytes must lie inside the file: read them all (ASan / a fault otherwise).
  uint64_t sum = 0;
  for (const GgufTensor& t : file->tensors()) {
    FUZZ_CHECK(t.nbytes <= size, "a tensor is no larger than the file");
    for (uint64_t i = 0; i < t.nbytes; ++i) sum += t.data[i];
    (void)t.numel();
    (void)file->GetTensor(t.name);
  }
  (void)sum;

  auto tokenizer = Tokenizer::FromGguf(*file);
  if (tokenizer.ok()) {
    const Tokenizer& tok = **tokenizer;
    for (const char* text : {"Hello, world!", "<|im_start|>user\n\xc3\xa9\xff\x00x<|im_end|>", ""}) {
      const std::vector<TokenId> ids = tok.Encode(text, true, true);
      for (TokenId id : ids) FUZZ_CHECK(id >= 0 && id < tok.vocab_size(), "token ids lie in the vocabulary");
      (void)tok.Decode(ids, true);
    }
    (void)tok.Decode({0, tok.vocab_size() - 1, tok.vocab_size(), -1}, true);
    (void)tok.FormatChat("hi");
  }
  (void)LoadGgufWeights(file);
  return 0;
}
