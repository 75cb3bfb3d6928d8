// The smallest synthetic model the loaders accept in every encoding (d_model and ffn_dim multiples
// of 32 for the quantised ones): seeds for the model-file fuzz targets.
#pragma once

#include "worker/synthetic_model.h"

namespace foresight::fuzz {

inline worker::SyntheticModelSpec TinyModelSpec(worker::TensorType type = worker::TensorType::kF32) {
  worker::SyntheticModelSpec spec;
  spec.n_layers = 1;
  spec.d_model = 32;
  spec.n_heads = 2;
  spec.n_kv_heads = 1;
  spec.head_dim = 16;
  spec.ffn_dim = 32;
  spec.type = type;
  return spec;
}

}  // namespace foresight::fuzz
