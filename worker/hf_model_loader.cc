#include "worker/hf_model_loader.h"

namespace foresight::worker {

StatusOr<HfModel> LoadHfModel(const std::string& dir) {
  return Unimplemented("loading Hugging Face folders (" + dir + ") is not implemented yet");
}

}  // namespace foresight::worker
