// Loading Llama-family weights (architectures "llama", "mistral", "qwen2") from a GGUF file.
// Tensors stay in the memory map in their encoding. Errors name the file and the missing or
// malformed tensor or key.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "worker/gguf_file.h"
#include "worker/model_weights.h"

namespace foresight::worker {

// `file` is kept alive by the returned weights.
StatusOr<ModelWeights> LoadGgufWeights(std::shared_ptr<const GgufFile> file);

}  // namespace foresight::worker
