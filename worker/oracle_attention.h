// OracleDecodeAttention: the upper bound for sparse decode, run inside the engine. Before each
// layer attends, it scores the step's queries against EVERY key (the dense softmax row, pooled per
// block of 16 keys) and keeps, per query head, the blocks with the most attention mass within the
// same budget, sink and local rules as every policy (predictor/ Oracle; union per KV head). It then
// attends only those blocks, so its quality is what a perfect predictor at that budget would give.
//
// It needs every key on the worker and costs a dense score pass per step, so it is a yardstick for
// `foresight eval quality`, never a serving policy.
//
// Thread-safety: one per Sequence, driven by that Sequence's thread.
#pragma once

#include <memory>
#include <vector>

#include "common/status.h"
#include "predictor/selection_policy.h"
#include "worker/sequence.h"

namespace foresight::worker {

// The dense softmax row of every query head of `layer` at `position` over all position + 1 keys,
// pooled per block (probability mass per block): `block_sum` [n_heads x n_blocks]. `scores` is
// scratch. Returns n_blocks.
int64_t DenseBlockMass(const ModelConfig& config, int32_t layer, int64_t position, const float* queries,
                       const KvCache& kv, std::vector<float>* scores, std::vector<float>* block_sum);

class OracleDecodeAttention : public DecodeAttentionHook {
 public:
  // `spec.kind` must be kOracle; its budget and dense_first_layers apply.
  static StatusOr<std::unique_ptr<OracleDecodeAttention>> Create(const ModelConfig& config,
                                                                 const predictor::PolicySpec& spec);

  bool SelectBlocks(int32_t layer, int64_t position, const float* queries, const KvCache& kv,
                    std::vector<std::vector<int32_t>>* blocks) override;
  void OnAttention(int32_t layer, int64_t position, const float* queries, bool dense, const float* block_max,
                   const float* block_sum, int64_t n_blocks) override;

  // The first error a policy returned (decode then continues densely); OK otherwise.
  const Status& status() const { return status_; }

 private:
  OracleDecodeAttention(const ModelConfig& config, int dense_first_layers)
      : config_(config), dense_first_layers_(dense_first_layers) {}

  const ModelConfig& config_;
  const int dense_first_layers_;
  std::vector<std::unique_ptr<predictor::SelectionPolicy>> policies_;
  std::vector<float> scores_, block_sum_;
  Status status_;
};

// RecoveryMeter: wraps any hook and measures its recovery rate: at every sparse step, the share of
// each query head's dense attention mass that falls in the blocks attended for its KV head,
// averaged over steps, layers and query heads (dense layers and steps count as 1). Costs a dense
// score pass per layer and step: evaluation only.
class RecoveryMeter : public DecodeAttentionHook {
 public:
  RecoveryMeter(const ModelConfig& config, DecodeAttentionHook* inner) : config_(config), inner_(inner) {}

  bool SelectBlocks(int32_t layer, int64_t position, const float* queries, const KvCache& kv,
                    std::vector<std::vector<int32_t>>* blocks) override;
  void OnAttention(int32_t layer, int64_t position, const float* queries, bool dense, const float* block_max,
                   const float* block_sum, int64_t n_blocks) override {
    inner_->OnAttention(layer, position, queries, dense, block_max, block_sum, n_blocks);
  }
  bool WantsLookaheadQueries() const override { return inner_->WantsLookaheadQueries(); }
  void OnLookaheadQuery(int32_t layer, int64_t position, const float* queries) override {
    inner_->OnLookaheadQuery(layer, position, queries);
  }
  // Over every step and layer (one the policy attends densely counts as 1).
  double recovery() const { return count_ > 0 ? sum_ / count_ : 1.0; }
  // Over the steps and layers the policy attended sparsely only (a policy that sometimes attends
  // densely, as AttentionPredictor's calibration steps, compared on equal terms); 1 if none.
  double sparse_recovery() const { return sparse_count_ > 0 ? sparse_sum_ / sparse_count_ : 1.0; }

 private:
  const ModelConfig& config_;
  DecodeAttentionHook* inner_;
  std::vector<float> scores_, mass_;
  double sum_ = 0, sparse_sum_ = 0;
  int64_t count_ = 0, sparse_count_ = 0;
};

}  // namespace foresight::worker
