// Internal base for policies that rank candidate blocks by a per-query-head score: Select builds
// the candidate window, asks the subclass for scores, keeps the best and forms the GQA union.
//
// Thread-safety: as SelectionPolicy (one object, one thread at a time).
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include "predictor/block_ranking.h"
#include "predictor/selection_policy.h"

namespace foresight::predictor {

class BlockScoringPolicy : public SelectionPolicy {
 public:
  BlockScoringPolicy(const PolicySpec& spec, const LayerGeometry& geometry)
      : budget_(spec.budget), geometry_(geometry) {}

  Status Select(const StepInputs& in, BlockSelection* out) override {
    if (in.key_tokens <= 0) return InvalidArgument(std::string(name()) + ": key_tokens must be positive");
    CandidateWindow window = CandidateWindow::For(in.key_tokens, budget_);
    FS_RETURN_IF_ERROR(PrepareScores(in, window));
    window.keep_blocks = std::min(window.keep_blocks, KeepBlocks(in, window));
    out->per_query_head.resize(geometry_.q_heads);
    const int group = geometry_.group_size();
    for (int h = 0; h < geometry_.q_heads; ++h) {
      if (h % group != 0 && SelectsPerKvHead()) {
        out->per_query_head[h] = out->per_query_head[h - h % group];
        continue;
      }
      if (!window.KeepsAllCandidates()) {
        scores_.resize(window.num_candidates());
        ScoreCandidates(in, window, h, scores_.data());
      }
      SelectTopBlocks(scores_, window, &out->per_query_head[h]);
    }
    UnionPerKvHead(geometry_, out);
    return Status::OK();
  }

  Status ObservePrefill(const PrefillObservation& prefill) override {
    step_ = 0;
    return Status::OK();
  }
  Status Observe(const AttentionObservation& observation) override {
    ++step_;
    return Status::OK();
  }
  int64_t step() const override { return step_; }

 protected:
  // Checks StepInputs once per Select (before any ScoreCandidates call).
  virtual Status PrepareScores(const StepInputs& in, const CandidateWindow& window) { return Status::OK(); }
  // How many candidates this Select keeps (at most window.keep_blocks, which is the default).
  virtual int64_t KeepBlocks(const StepInputs& in, const CandidateWindow& window) { return window.keep_blocks; }
  // True when every query head of a KV head selects the same blocks (then ScoreCandidates is asked
  // for the group's first query head only, and the KV head's union is the budget).
  virtual bool SelectsPerKvHead() const { return false; }
  // scores[i] for block window.candidate_begin() + i of query head `q_head`; higher is kept.
  virtual void ScoreCandidates(const StepInputs& in, const CandidateWindow& window, int q_head, float* scores) = 0;

  SelectionBudget budget_;
  LayerGeometry geometry_;
  int64_t step_ = 0;

 private:
  std::vector<float> scores_;
};

}  // namespace foresight::predictor
