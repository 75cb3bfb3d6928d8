#include "worker/default_model.h"

#include <cstdlib>
#include <filesystem>

namespace foresight::worker {

std::string ModelsCacheDir() {
  if (const char* dir = std::getenv("FORESIGHT_MODELS"); dir != nullptr && *dir != '\0') return dir;
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr ? home : ".") + "/.cache/foresight/models";
}

std::string DefaultModelPath() { return ModelsCacheDir() + "/" + kDefaultModelFile; }

StatusOr<std::string> FindDefaultModel() {
  std::string path = DefaultModelPath();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return NotFound("the default model is not at " + path +
                    "; run deploy/fetch-model.sh (it honours FORESIGHT_MODELS) or pass --model");
  }
  return path;
}

}  // namespace foresight::worker
