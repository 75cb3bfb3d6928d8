// PolicyDecodeAttention: sparse decode driven by predictor/ selection policies (AttentionPredictor,
// Quest, H2O, SnapKV, StreamingLLM, Dense), one policy per layer. It hears the dense prefill (to
// seed the policies), chooses each decode step's blocks per KV head (the union of its query
// heads' choices: the fetch unit), attends densely when a policy asks for a calibration row, and
// reports what attention produced back to the policy.
//
// Oracle needs the dense row of the very step it selects for, so it is offline-only (predictor
// eval over traces) and refused here.
//
// Calibration (AttentionPredictor's dense row every M steps) has two sources:
//   kExact: that step attends every block densely (every block must be on the worker);
//   kCompactKeys: attention stays over the selected blocks, and the dense row handed to the policy
//     is scored against a compact copy of every key kept here (int8 per element with one float
//     scale per token and KV head: (head_dim + 4) bytes per token and head, about a quarter of the
//     K+V bytes), so calibration never moves the history. The output differs from kExact (sparse
//     attention on that step too); the row is an estimate (docs/offload-design.md measures it).
//
// Prefetch: PeekSelection asks a layer's policy for a later step's blocks before that step runs
// (policies that need no query), and SelectBlocks then reuses the answer. AttentionPredictor
// refined by the query (PolicySpec::query_refine with the compact key copy as scorer) cannot know
// its query's share ahead: its peek is the CNN's share plus a guess at the query's, the blocks the
// layer's previous query scored best (consecutive queries of a layer mostly want the same blocks),
// to `speculative_blocks` per KV head beyond the guessed share (without lookahead queries, below).
// The guess only steers prefetch: SelectBlocks always selects with the step's own query, and what
// the guess missed is fetched on demand.
//
// Thread-safety: one per Sequence, driven by that Sequence's thread.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "common/status.h"
#include "predictor/key_digests.h"
#include "predictor/prefill_recorder.h"
#include "predictor/selection_policy.h"
#include "worker/compact_keys.h"
#include "worker/sequence.h"

namespace foresight::worker {

enum class CalibrationSource { kExact, kCompactKeys };

struct PolicyAttentionOptions {
  CalibrationSource calibration = CalibrationSource::kExact;
  // Query-refined AttentionPredictor: extra blocks per KV head a peek adds beyond the guessed query
  // share, the next best by the previous query's scores (more bytes prefetched, fewer stalls);
  // -1: no guess, the peek is the CNN's share alone.
  int64_t speculative_blocks = 0;
  // Query-refined AttentionPredictor: layers after the first score the query's share with their
  // query estimated one layer early (DecodeAttentionHook::WantsLookaheadQueries), so the whole
  // selection of layer l + 1 is known while layer l computes and can be fetched then; the first
  // layer, with no layer before it, is not refined (the CNN chooses its whole budget).
  bool lookahead_query = false;
};

// AttentionPredictor as served (foresight generate, foresight-worker, bench's ap_refined): a share
// `query_refine` of the kept blocks chosen by the step's query against the compact key copy and,
// since that copy then scores every step anyway, every step's history row taken from it
// (calibration period 1, compact source: attention never goes dense), with layers after the first
// scoring a query estimated one layer early when the KV is offloaded (lookahead_query: their whole
// selection is known, and fetched, a layer ahead). The CNN runs once per KV head over the max of its query heads'
// histories and is updated every PolicySpec::kServingUpdatePeriod steps (its scores reused in
// between), which makes it several times cheaper than the exact method for a fraction of a point of
// recovery (docs/predictor.md). query_refine 0 leaves the published method (one CNN per query head
// every step, dense calibration every spec->calibration_period steps). docs/worker.md measures both.
//
// kv_offloaded: the KV lives in the cache service (OffloadedSequence), so layers after the first
// score their query share with the lookahead query and the whole selection is fetched a layer
// ahead. With the KV resident there is nothing to fetch, so every layer scores its own query: one
// pass over the compact key copy per layer and step instead of two (the same pass gives the
// history row), and the better estimate.
void ApplyQueryRefinement(float query_refine, predictor::PolicySpec* spec, PolicyAttentionOptions* options,
                          bool kv_offloaded = true);

class PolicyDecodeAttention : public DecodeAttentionHook, public PrefillAttentionObserver {
 public:
  static StatusOr<std::unique_ptr<PolicyDecodeAttention>> Create(const ModelConfig& config,
                                                                 const predictor::PolicySpec& spec,
                                                                 int64_t prompt_tokens,
                                                                 PolicyAttentionOptions options = {});

  // PrefillAttentionObserver: every prompt row of the dense prefill.
  void OnRow(int32_t layer, int32_t q_head, int64_t query, const float* probs) override;
  // A prompt row heard before, already pooled (predictor::PrefillRecorder::AddPooledRow): `width`
  // block maxima and sums, width = the blocks query `query` sees. Before FinishPrefill, and before
  // this head's later rows (rows of one head in query order, as OnRow).
  void OnPooledRow(int32_t layer, int32_t q_head, int64_t query, const float* block_max, const float* block_sum,
                   int64_t width);
  // After the prefill: seeds every layer's policy.
  Status FinishPrefill();
  // Tests: `tap` hears each layer's prefill observation (on FinishPrefill's thread, layers in order)
  // before its policy does.
  using ObservationTap = std::function<void(int32_t layer, const predictor::PrefillObservation&)>;
  void TEST_SetObservationTap(ObservationTap tap) { observation_tap_ = std::move(tap); }
  // Reads every key of `kv` not yet seen into the key digests (Quest) and the compact key copy
  // (kCompactKeys): call it after the prefill while the whole KV is still on the worker. Later keys
  // are read as decode produces them (the most recent block is always on the worker). Layers are
  // read on the OpenMP threads.
  void PrepareKeys(const KvCache& kv);

  // Would this layer's policy select without the step's query? Then PeekSelection works.
  bool CanSelectAhead(int32_t layer) const;
  // The blocks per KV head that layer `layer` will attend at the step with `key_tokens` keys
  // (the next step of that layer: called after its OnAttention for the current step). False when
  // the policy cannot tell ahead, or the step will attend densely.
  bool PeekSelection(int32_t layer, int64_t key_tokens, std::vector<std::vector<int32_t>>* blocks);
  const PolicyAttentionOptions& options() const { return options_; }
  // Whether any layer's policy asks for dense calibration rows.
  bool Calibrates() const;

  bool SelectBlocks(int32_t layer, int64_t position, const float* queries, const KvCache& kv,
                    std::vector<std::vector<int32_t>>* blocks) override;
  void OnAttention(int32_t layer, int64_t position, const float* queries, bool dense, const float* block_max,
                   const float* block_sum, int64_t n_blocks) override;
  bool WantsLookaheadQueries() const override;
  void OnLookaheadQuery(int32_t layer, int64_t position, const float* queries) override;
  // Whether layer `layer`'s step with `key_tokens` keys has its lookahead scores: its whole
  // selection is then known (PeekSelection) before the layer computes.
  bool HasLookahead(int32_t layer, int64_t key_tokens) const { return look_tokens_[layer] == key_tokens; }

  // The first error a policy returned (decode then continues densely); OK otherwise.
  const Status& status() const { return status_; }
  // Time spent inside the policies (Select + Observe) and scoring lookahead queries, all layers
  // and steps.
  double predictor_seconds() const { return predictor_seconds_; }
  // The part of predictor_seconds() spent before the layer's attention call (lookahead queries).
  double lookahead_seconds() const { return lookahead_seconds_; }

 private:
  PolicyDecodeAttention(const ModelConfig& config, int64_t prompt_tokens, PolicyAttentionOptions options);
  void AppendKeys(int32_t layer, const KvCache& kv, int64_t upto);

  void Fail(const Status& s) {
    if (status_.ok()) status_ = s;
  }

  const ModelConfig& config_;
  std::vector<std::unique_ptr<predictor::SelectionPolicy>> policies_;
  std::vector<std::unique_ptr<predictor::PrefillRecorder>> recorders_;
  std::vector<predictor::KeyDigests> digests_;
  std::vector<std::vector<float>> key_rows_;  // per layer: AppendKeys' scratch (layers run concurrently)
  std::vector<bool> dense_step_;              // per layer: this step attends densely
  std::vector<bool> calib_step_;              // per layer: this step's observation is a compact dense row
  PolicyAttentionOptions options_;
  std::vector<CompactKeyCopy> compact_;  // per layer (kCompactKeys with a calibrating policy)
  std::vector<float> calib_max_, calib_sum_;
  int32_t compact_row_layer_ = -1;  // calib_max_/calib_sum_ hold this layer's compact row of this step
  // Per layer: a selection asked ahead (PeekSelection) for step `peek_step_` with `peek_tokens_` keys.
  std::vector<int64_t> peek_tokens_, peek_step_;
  std::vector<std::vector<std::vector<int32_t>>> peek_;
  // Per layer: the previous step's query_block_scores [n_heads x blocks] (the peek's guess).
  std::vector<std::vector<float>> last_scores_;
  std::vector<int64_t> last_blocks_;
  // Per layer: the lookahead query's scores [n_heads x blocks] for the step with look_tokens_ keys.
  std::vector<std::vector<float>> look_scores_;
  std::vector<int64_t> look_tokens_, look_blocks_;
  std::vector<float> look_sum_;
  std::vector<float> guess_, kv_best_;
  // `scores` [n_heads x have] as [n_heads x n_blocks], blocks beyond `have` scored 0 (they started
  // after the scores were taken and lie in the local window).
  std::span<const float> Padded(const std::vector<float>& scores, int64_t have, int64_t n_blocks);
  std::vector<int32_t> order_;
  // Adds to `blocks` the `speculative_blocks` next best blocks per KV head by `scores`.
  void AddSpeculativeBlocks(std::span<const float> scores, int64_t n_blocks, std::vector<std::vector<int32_t>>* blocks);
  ObservationTap observation_tap_;
  Status status_;
  double predictor_seconds_ = 0;
  double lookahead_seconds_ = 0;
};

}  // namespace foresight::worker
