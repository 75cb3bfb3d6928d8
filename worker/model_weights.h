// ModelWeights: every tensor a Llama-family decoder layer stack needs, as views into the loaded
// file (or owned converted bytes), plus the config they were loaded with.
//
// Thread-safety: immutable after loading.
#pragma once

#include <memory>
#include <vector>

#include "worker/model_config.h"
#include "worker/weight_matrix.h"

namespace foresight::worker {

struct LayerWeights {
  std::vector<float> attn_norm, ffn_norm;  // [d_model]
  WeightMatrix wq, wk, wv, wo;             // [out x in]
  std::vector<float> bq, bk, bv;           // empty without qkv bias
  WeightMatrix w_gate, w_up, w_down;
};

struct ModelWeights {
  ModelConfig config;
  WeightMatrix token_embedding;  // [vocab x d_model]
  std::vector<LayerWeights> layers;
  std::vector<float> output_norm;
  WeightMatrix output;  // [vocab x d_model]; the embedding when tied
  // Keeps memory maps / converted buffers alive as long as the views above.
  std::vector<std::shared_ptr<const void>> storage;
};

}  // namespace foresight::worker
