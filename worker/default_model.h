// Where the default model (SmolLM2-135M-Instruct, Q4_1 GGUF) lives: the models cache that
// deploy/fetch-model.sh fills, $FORESIGHT_MODELS or ~/.cache/foresight/models. The engine never
// downloads; it only looks there.
//
// Thread-safety: pure functions (read the environment).
#pragma once

#include <string>

#include "common/status.h"

namespace foresight::worker {

inline constexpr const char kDefaultModelFile[] = "SmolLM2-135M-Instruct.Q4_1.gguf";

std::string ModelsCacheDir();
std::string DefaultModelPath();
// The default model's path if the file exists; NOT_FOUND says how to fetch it.
StatusOr<std::string> FindDefaultModel();

}  // namespace foresight::worker
