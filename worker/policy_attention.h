// PolicyDecodeAttention: sparse decode driven by predictor/ selection policies (AttentionPredictor,
// Quest, H2O, SnapKV, StreamingLLM, Dense), one policy per layer. It hears the dense prefill (to
// seed the policies), chooses each decode step's blocks per KV head (the union of its query
// heads' choices: the fetch unit), attends densely when a policy asks for a calibration row, and
// reports what attention produced back to the policy.
//
// Oracle needs the dense row of the very step it selects for, so it is offline-only (predictor
// eval over traces) and refused here.
//
// Thread-safety: one per Sequence, driven by that Sequence's thread.
#pragma once

#include <memory>
#include <vector>

#include "common/status.h"
#include "predictor/key_digests.h"
#include "predictor/prefill_recorder.h"
#include "predictor/selection_policy.h"
#include "worker/sequence.h"

namespace foresight::worker {

class PolicyDecodeAttention : public DecodeAttentionHook, public PrefillAttentionObserver {
 public:
  static StatusOr<std::unique_ptr<PolicyDecodeAttention>> Create(const ModelConfig& config,
                                                                 const predictor::PolicySpec& spec,
                                                                 int64_t prompt_tokens);

  // PrefillAttentionObserver: every prompt row of the dense prefill.
  void OnRow(int32_t layer, int32_t q_head, int64_t query, const float* probs) override;
  // After the prefill: seeds every layer's policy.
  Status FinishPrefill();

  bool SelectBlocks(int32_t layer, int64_t position, const float* queries, const KvCache& kv,
                    std::vector<std::vector<int32_t>>* blocks) override;
  void OnAttention(int32_t layer, int64_t position, const float* queries, bool dense, const float* block_max,
                   const float* block_sum, int64_t n_blocks) override;

  // The first error a policy returned (decode then continues densely); OK otherwise.
  const Status& status() const { return status_; }
  // Time spent inside the policies (Select + Observe), all layers and steps.
  double predictor_seconds() const { return predictor_seconds_; }

 private:
  PolicyDecodeAttention(const ModelConfig& config, int64_t prompt_tokens);
  void Fail(const Status& s) {
    if (status_.ok()) status_ = s;
  }

  const ModelConfig& config_;
  std::vector<std::unique_ptr<predictor::SelectionPolicy>> policies_;
  std::vector<std::unique_ptr<predictor::PrefillRecorder>> recorders_;
  std::vector<predictor::KeyDigests> digests_;
  std::vector<float> key_row_;
  std::vector<bool> dense_step_;  // per layer: this step attends densely
  Status status_;
  double predictor_seconds_ = 0;
};

}  // namespace foresight::worker
