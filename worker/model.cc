#include "worker/model.h"

#include <filesystem>

#include "worker/gguf_model_loader.h"
#include "worker/hf_model_loader.h"

namespace foresight::worker {

StatusOr<std::unique_ptr<Model>> Model::Open(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    FS_ASSIGN_OR_RETURN(HfModel hf, LoadHfModel(path));
    return std::unique_ptr<Model>(new Model(std::move(hf.weights), std::move(hf.tokenizer), path));
  }
  FS_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> file, GgufFile::Open(path));
  std::shared_ptr<const GgufFile> shared(std::move(file));
  FS_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, Tokenizer::FromGguf(*shared));
  FS_ASSIGN_OR_RETURN(ModelWeights weights, LoadGgufWeights(shared));
  return std::unique_ptr<Model>(new Model(std::move(weights), std::move(tokenizer), path));
}

std::unique_ptr<Model> Model::FromWeights(ModelWeights weights, std::unique_ptr<Tokenizer> tokenizer,
                                          std::string source) {
  return std::unique_ptr<Model>(new Model(std::move(weights), std::move(tokenizer), std::move(source)));
}

}  // namespace foresight::worker
