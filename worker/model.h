// Model: a loaded Llama-family decoder (weights, config, tokenizer), from a GGUF file or a Hugging
// Face folder (config.json + *.safetensors). Immutable once open; any number of backends and
// their sequences (worker/backend.h) run on it.
//
//   auto model = Model::Open(path);           // or Model::Open(FindDefaultModel())
//   std::unique_ptr<Backend> cpu = NewCpuBackend(**model);
//   FS_ASSIGN_OR_RETURN(std::unique_ptr<BackendSequence> seq, cpu->NewSequence());
//   std::vector<float> logits;
//   FS_RETURN_IF_ERROR(seq->Prefill(tokens, &logits));
//
// Thread-safety: immutable after Open; safe to share across threads.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "worker/model_weights.h"
#include "worker/tokenizer.h"

namespace foresight::worker {

class Model {
 public:
  // A GGUF file, or a folder with config.json and *.safetensors (sharded or not).
  static StatusOr<std::unique_ptr<Model>> Open(const std::string& path);
  // From weights built elsewhere (synthetic models); `tokenizer` may be null (token ids only).
  static std::unique_ptr<Model> FromWeights(ModelWeights weights, std::unique_ptr<Tokenizer> tokenizer,
                                            std::string source);

  const ModelConfig& config() const { return weights_.config; }
  const ModelWeights& weights() const { return weights_; }
  // Null for models without a vocabulary (synthetic ones).
  const Tokenizer* tokenizer() const { return tokenizer_.get(); }
  const std::string& source() const { return source_; }

 private:
  Model(ModelWeights weights, std::unique_ptr<Tokenizer> tokenizer, std::string source)
      : weights_(std::move(weights)), tokenizer_(std::move(tokenizer)), source_(std::move(source)) {}
  ModelWeights weights_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::string source_;
};

}  // namespace foresight::worker
