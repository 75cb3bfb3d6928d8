// Loading Llama-family weights from the Hugging Face layout: config.json plus one or more
// *.safetensors shards (model.safetensors.index.json is not needed: every shard in the folder is
// read). Naming: model.embed_tokens, model.layers.N.{self_attn.{q,k,v,o}_proj,mlp.{gate,up,down}_proj,
// input_layernorm,post_attention_layernorm}, model.norm, lm_head (absent when tied). Architectures
// LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM (q/k/v biases). RoPE pairs halves.
// The tokenizer (tokenizer.json, worker/hf_tokenizer.h) is optional: without it, or when it is of a kind
// not supported, the model takes token ids only.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "worker/model_weights.h"
#include "worker/tokenizer.h"

namespace foresight::worker {

struct HfModel {
  ModelWeights weights;
  std::unique_ptr<Tokenizer> tokenizer;  // null without tokenizer.json
};

StatusOr<HfModel> LoadHfModel(const std::string& dir);

}  // namespace foresight::worker
