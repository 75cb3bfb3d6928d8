#include "worker/oracle_attention.h"

#include <algorithm>
#include <cmath>

#include "worker/transformer_kernels.h"

namespace foresight::worker {

int64_t DenseBlockMass(const ModelConfig& config, int32_t layer, int64_t position, const float* queries,
                       const KvCache& kv, std::vector<float>* scores, std::vector<float>* block_sum) {
  const int64_t keys = position + 1;
  const int64_t bt = kv.block_tokens();
  const int64_t n_blocks = (keys + bt - 1) / bt;
  const int32_t d = config.head_dim, group = config.n_heads / config.n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  block_sum->assign(static_cast<size_t>(config.n_heads) * n_blocks, 0.0f);
  scores->resize(keys);
  float* sc = scores->data();
  for (int32_t h = 0; h < config.n_heads; ++h) {
    const float* q = queries + static_cast<int64_t>(h) * d;
    const int32_t g = h / group;
    // A block's keys of one KV head are consecutive rows (common/block_layout.h).
    for (int64_t b = 0; b < n_blocks; ++b) {
      const int64_t first = b * bt;
      DotHalfRows(kv.key(layer, g, first), std::min(bt, keys - first), d, q, scale, sc + first);
    }
    Softmax(sc, keys);
    float* row = block_sum->data() + static_cast<int64_t>(h) * n_blocks;
    for (int64_t t = 0; t < keys; ++t) row[t / bt] += sc[t];
  }
  return n_blocks;
}

StatusOr<std::unique_ptr<OracleDecodeAttention>> OracleDecodeAttention::Create(const ModelConfig& config,
                                                                               const predictor::PolicySpec& spec) {
  if (spec.kind != predictor::PolicyKind::kOracle)
    return InvalidArgument("OracleDecodeAttention needs the oracle policy");
  std::unique_ptr<OracleDecodeAttention> out(new OracleDecodeAttention(config, spec.dense_first_layers));
  const predictor::LayerGeometry geometry{config.n_heads, config.n_kv_heads, config.head_dim};
  for (int32_t l = 0; l < config.n_layers; ++l) {
    FS_ASSIGN_OR_RETURN(std::unique_ptr<predictor::SelectionPolicy> p,
                        predictor::MakeSelectionPolicy(spec, geometry, l));
    FS_RETURN_IF_ERROR(p->ObservePrefill({}));
    out->policies_.push_back(std::move(p));
  }
  return out;
}

bool OracleDecodeAttention::SelectBlocks(int32_t layer, int64_t position, const float* queries, const KvCache& kv,
                                         std::vector<std::vector<int32_t>>* blocks) {
  if (layer < dense_first_layers_ || !status_.ok()) return false;
  const int64_t keys = position + 1;
  DenseBlockMass(config_, layer, position, queries, kv, &scores_, &block_sum_);
  predictor::StepInputs in;
  in.key_tokens = keys;
  in.dense_block_sum = block_sum_;
  predictor::BlockSelection sel;
  if (Status s = policies_[layer]->Select(in, &sel); !s.ok()) {
    status_ = s;
    return false;
  }
  *blocks = std::move(sel.per_kv_head);
  return true;
}

void OracleDecodeAttention::OnAttention(int32_t layer, int64_t position, const float* queries, bool dense,
                                        const float* block_max, const float* block_sum, int64_t n_blocks) {
  if (layer < dense_first_layers_ || !status_.ok()) return;
  const size_t n = static_cast<size_t>(config_.n_heads) * n_blocks;
  predictor::AttentionObservation obs{position + 1, dense, {block_max, n}, {block_sum, n}};
  if (Status s = policies_[layer]->Observe(obs); !s.ok()) status_ = s;
}

bool RecoveryMeter::SelectBlocks(int32_t layer, int64_t position, const float* queries, const KvCache& kv,
                                 std::vector<std::vector<int32_t>>* blocks) {
  const bool sparse = inner_->SelectBlocks(layer, position, queries, kv, blocks);
  if (!sparse) {
    sum_ += config_.n_heads;
    count_ += config_.n_heads;
    return false;
  }
  const int64_t n_blocks = DenseBlockMass(config_, layer, position, queries, kv, &scores_, &mass_);
  const int32_t group = config_.n_heads / config_.n_kv_heads;
  for (int32_t h = 0; h < config_.n_heads; ++h) {
    const float* row = mass_.data() + static_cast<int64_t>(h) * n_blocks;
    double got = 0;
    for (int32_t b : (*blocks)[h / group]) got += row[b];
    sum_ += got;
    ++count_;
    sparse_sum_ += got;
    ++sparse_count_;
  }
  return true;
}

}  // namespace foresight::worker
