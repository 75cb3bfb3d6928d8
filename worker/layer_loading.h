// LoadLayerWeights: fills one transformer layer's LayerWeights from any checkpoint reader, given
// that format's tensor names. The GGUF and Hugging Face loaders differ only in names and readers.
#pragma once

#include <string>

#include "common/status.h"
#include "worker/model_weights.h"

namespace foresight::worker {

// Full tensor names of one layer in a checkpoint's naming scheme.
struct LayerTensorNames {
  std::string attn_norm, ffn_norm;
  std::string wq, wk, wv, wo;
  std::string bq, bk, bv;  // read only with qkv_bias
  std::string w_gate, w_up, w_down;
};

// `Reader` provides Vector(name, n) -> StatusOr<std::vector<float>> and
// Matrix(name, rows, cols) -> StatusOr<WeightMatrix>, with errors naming the file and tensor.
template <typename Reader>
StatusOr<LayerWeights> LoadLayerWeights(const Reader& r, const LayerTensorNames& n, int64_t d_model, int64_t q_out,
                                        int64_t kv_out, int64_t ffn, bool qkv_bias) {
  LayerWeights L;
  FS_ASSIGN_OR_RETURN(L.attn_norm, r.Vector(n.attn_norm, d_model));
  FS_ASSIGN_OR_RETURN(L.ffn_norm, r.Vector(n.ffn_norm, d_model));
  FS_ASSIGN_OR_RETURN(L.wq, r.Matrix(n.wq, q_out, d_model));
  FS_ASSIGN_OR_RETURN(L.wk, r.Matrix(n.wk, kv_out, d_model));
  FS_ASSIGN_OR_RETURN(L.wv, r.Matrix(n.wv, kv_out, d_model));
  FS_ASSIGN_OR_RETURN(L.wo, r.Matrix(n.wo, d_model, q_out));
  if (qkv_bias) {
    FS_ASSIGN_OR_RETURN(L.bq, r.Vector(n.bq, q_out));
    FS_ASSIGN_OR_RETURN(L.bk, r.Vector(n.bk, kv_out));
    FS_ASSIGN_OR_RETURN(L.bv, r.Vector(n.bv, kv_out));
  }
  FS_ASSIGN_OR_RETURN(L.w_gate, r.Matrix(n.w_gate, ffn, d_model));
  FS_ASSIGN_OR_RETURN(L.w_up, r.Matrix(n.w_up, ffn, d_model));
  FS_ASSIGN_OR_RETURN(L.w_down, r.Matrix(n.w_down, d_model, ffn));
  return L;
}

}  // namespace foresight::worker
