// Fuzz target: a Hugging Face model folder as `foresight-worker --model DIR` opens it. The input is
// the folder's config.json; the folder holds a small synthetic model's safetensors beside it, so a
// config that parses goes on to have its geometry checked against real tensors. A malformed or
// inconsistent config must be refused with an error, never crash (a zero head count once divided
// by zero here).
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tests/fuzz/fuzz_target.h"
#include "tests/fuzz/tiny_model.h"
#include "worker/hf_model_loader.h"
#include "worker/synthetic_model.h"

namespace foresight::fuzz {
namespace {

// The model folder (made once per process, removed at exit).
const std::string& Folder() {
  // Never destroyed: the exit handler that removes the folder runs after static destructors.
  static const std::string* dir = new std::string([] {
    const std::string d =
        (std::filesystem::temp_directory_path() / ("foresight-fuzz-hf-" + std::to_string(getpid()))).string();
    const Status st = worker::WriteSyntheticHfFolder(TinyModelSpec(), d, 1);
    FUZZ_CHECK(st.ok(), st.message().c_str());
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(Folder(), ec);
    });
    return d;
  }());
  return *dir;
}

}  // namespace

std::vector<std::string> Seeds() {
  const std::string config = ReadFileBytes(Folder() + "/config.json");
  std::string llama3 = config;
  llama3.insert(llama3.rfind('}'), R"(, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
    "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})");
  return {config, llama3};
}

}  // namespace foresight::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace foresight;
  const std::string& dir = fuzz::Folder();
  {
    std::ofstream out(dir + "/config.json", std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  auto model = worker::LoadHfModel(dir);
  if (!model.ok()) {
    FUZZ_CHECK(!model.status().message().empty(), "a refused folder gets a reason");
    return 0;
  }
  const worker::ModelConfig& c = model->weights.config;
  FUZZ_CHECK(c.n_layers > 0 && c.d_model > 0 && c.n_heads > 0 && c.n_kv_heads > 0 && c.head_dim > 0 &&
                 c.n_heads % c.n_kv_heads == 0,
             "an accepted config has a sound geometry");
  FUZZ_CHECK(static_cast<int32_t>(model->weights.layers.size()) == c.n_layers, "one set of weights per layer");
  return 0;
}
