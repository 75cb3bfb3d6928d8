// AttentionPredictor (Li et al., arXiv 2502.04077): per query head, the CNN reads the last 64
// pooled attention rows and predicts the next step's block scores; the top blocks plus sink and
// local are attended. Every M-th decode step asks for a dense row (calibration); other steps push
// the sparse row the model observed.
//
// The prediction for step t+1 is computed right after step t's row is pushed (Observe), so the
// incremental CNN sees exactly one shift per call and Select can be asked ahead (prefetch).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "predictor/attention_history.h"
#include "predictor/block_ranking.h"
#include "predictor/cnn_cpu.h"
#include "predictor/incremental_cnn.h"
#include "predictor/policies/block_scoring_policy.h"
#include "predictor/policies/policy_factories.h"

namespace foresight::predictor {
namespace {

// One predicted head: a query head, or a KV head with predict_per_kv_head.
struct PredictedHead {
  PredictedHead(std::shared_ptr<const CnnWeights> w, int period) : cnn(std::move(w), period) {}
  AttentionHistory history;
  IncrementalCnn cnn;
  std::vector<float> scores;  // CNN output over history columns [window_begin, window_begin + size)
  HistoryImage image;         // the CNN's input at the last update
};

class AttentionPredictorPolicy final : public BlockScoringPolicy {
 public:
  AttentionPredictorPolicy(const PolicySpec& spec, const LayerGeometry& g) : BlockScoringPolicy(spec, g), spec_(spec) {
    const int n = spec.predict_per_kv_head ? g.kv_heads : g.q_heads;
    for (int i = 0; i < n; ++i) heads_.emplace_back(spec.weights, spec.reuse_steps);
    zero_field_score_ = ZeroFieldScore(*spec.weights);
  }

  std::string_view name() const override { return "attention_predictor"; }
  PolicyNeeds needs() const override {
    if (spec_.query_refine <= 0.0f) return {};
    if (spec_.refine_scorer == PolicySpec::RefineScorer::kQueryBlockScores) return {.query_block_scores = true};
    return {.query = true, .key_digests = true};
  }

  bool WantsDenseRow() const override {
    return spec_.calibration_period > 0 && (step_ + 1) % spec_.calibration_period == 0;
  }

  Status ObservePrefill(const PrefillObservation& prefill) override {
    const int64_t nb = (prefill.prompt_tokens + budget_.block_tokens - 1) / budget_.block_tokens;
    const size_t rows = prefill.rows, q = geometry_.q_heads;
    if (rows > static_cast<size_t>(kCnnRows) || prefill.block_max.size() != q * rows * nb) {
      return InvalidArgument(
          "attention_predictor: prefill block_max must hold q_heads x rows x "
          "prompt blocks with rows <= 64");
    }
    std::vector<float> merged;
    for (size_t i = 0; i < heads_.size(); ++i) {
      std::span<const float> rows_of_head;
      if (spec_.predict_per_kv_head) {
        MaxOverGroup(prefill.block_max, static_cast<int>(i), rows * nb, &merged);
        rows_of_head = merged;
      } else {
        rows_of_head = prefill.block_max.subspan(i * rows * nb, rows * nb);
      }
      heads_[i].history.Reset(rows_of_head, static_cast<int64_t>(rows), nb);
    }
    step_ = 0;
    Predict(prefill.prompt_tokens + 1, /*after_push=*/false);
    return Status::OK();
  }

  Status Observe(const AttentionObservation& obs) override {
    const int64_t nb = (obs.key_tokens + budget_.block_tokens - 1) / budget_.block_tokens;
    const size_t q = geometry_.q_heads;
    if (obs.block_max.size() != q * nb) {
      return InvalidArgument("attention_predictor: observation block_max has " + std::to_string(obs.block_max.size()) +
                             " values, expected q_heads x " + std::to_string(nb));
    }
    std::vector<float> merged;
    for (size_t i = 0; i < heads_.size(); ++i) {
      if (spec_.predict_per_kv_head) {
        MaxOverGroup(obs.block_max, static_cast<int>(i), nb, &merged);
        heads_[i].history.Push(merged);
      } else {
        heads_[i].history.Push(obs.block_max.subspan(i * nb, nb));
      }
    }
    ++step_;
    Predict(obs.key_tokens + 1, /*after_push=*/true);
    return Status::OK();
  }

 protected:
  Status PrepareScores(const StepInputs& in, const CandidateWindow& window) override {
    if (heads_.empty() || !initialized_) {
      return FailedPrecondition("attention_predictor: Select before ObservePrefill");
    }
    if (spec_.query_refine > 0.0f && !window.KeepsAllCandidates() &&
        spec_.refine_scorer == PolicySpec::RefineScorer::kQueryBlockScores) {
      if (!in.query_block_scores.empty() &&
          in.query_block_scores.size() != static_cast<size_t>(geometry_.q_heads) * window.num_blocks) {
        return InvalidArgument("attention_predictor: query refinement needs query_block_scores of q_heads x " +
                               std::to_string(window.num_blocks) + " blocks, got " +
                               std::to_string(in.query_block_scores.size()) + " values");
      }
    } else if (spec_.query_refine > 0.0f && !window.KeepsAllCandidates()) {
      const KeyDigests* d = in.key_digests;
      if (in.query.size() != static_cast<size_t>(geometry_.q_heads) * geometry_.head_dim || d == nullptr ||
          d->kv_heads() != geometry_.kv_heads || d->head_dim() != geometry_.head_dim ||
          d->complete_blocks() < window.candidate_end()) {
        return InvalidArgument(
            "attention_predictor: query refinement needs the step's query (q_heads x "
            "head_dim values) and key digests covering every candidate block");
      }
    }
    return Status::OK();
  }

  // One CNN per KV head gives its query heads the same scores; the query's share (query_refine)
  // is each query head's own, so the group's union holds every head's best blocks.
  bool SelectsPerKvHead() const override { return spec_.predict_per_kv_head && spec_.query_refine <= 0.0f; }

  // Asked ahead (no query scores yet): only the CNN's share, which the full Select keeps too.
  int64_t KeepBlocks(const StepInputs& in, const CandidateWindow& window) override {
    return AskedAhead(in) ? window.keep_blocks - RefinedBlocks(window.keep_blocks) : window.keep_blocks;
  }

  void ScoreCandidates(const StepInputs& in, const CandidateWindow& window, int q_head, float* scores) override {
    const PredictedHead& head = heads_[spec_.predict_per_kv_head ? q_head / geometry_.group_size() : q_head];
    for (int64_t i = 0; i < window.num_candidates(); ++i) {
      const int64_t c = window.candidate_begin() + i - window_begin_;
      // A column the prediction does not cover (asked further ahead than one step, or a column
      // that joined while a prediction was reused) is a block that just left the local window:
      // rank it first, as recent blocks usually matter.
      scores[i] =
          (c >= 0 && c < static_cast<int64_t>(head.scores.size())) ? head.scores[c] : std::numeric_limits<float>::max();
    }
    if (spec_.query_refine > 0.0f && !AskedAhead(in)) RefineWithQuery(in, window, q_head, scores);
  }

  bool AskedAhead(const StepInputs& in) const {
    return spec_.query_refine > 0.0f && spec_.refine_scorer == PolicySpec::RefineScorer::kQueryBlockScores &&
           in.query_block_scores.empty();
  }
  // How many of `keep` blocks the query chooses.
  int64_t RefinedBlocks(int64_t keep) const { return std::min<int64_t>(keep, std::llround(spec_.query_refine * keep)); }

  // Keeps the CNN's best (1 - query_refine) share of window.keep_blocks (scored +inf so they stay
  // first) and scores every other candidate by the Quest bound of the step's query, so that
  // SelectTopBlocks fills the rest with the blocks this very query may need.
  void RefineWithQuery(const StepInputs& in, const CandidateWindow& window, int q_head, float* scores) {
    const int64_t n = window.num_candidates();
    const int64_t by_cnn = window.keep_blocks - RefinedBlocks(window.keep_blocks);
    // Same ranking as SelectTopBlocks: higher score first, ties to the lower index.
    TopIndices(std::span<const float>(scores, n), by_cnn, &order_);
    kept_.assign(n, 0);
    for (int32_t i : order_) kept_[i] = 1;
    if (spec_.refine_scorer == PolicySpec::RefineScorer::kQueryBlockScores) {
      const float* est = in.query_block_scores.data() + q_head * window.num_blocks + window.candidate_begin();
      for (int64_t i = 0; i < n; ++i) scores[i] = kept_[i] ? std::numeric_limits<float>::infinity() : est[i];
      return;
    }
    const int kv_head = q_head / geometry_.group_size();
    const float* q = in.query.data() + static_cast<size_t>(q_head) * geometry_.head_dim;
    for (int64_t i = 0; i < n; ++i) {
      scores[i] = kept_[i] ? std::numeric_limits<float>::infinity()
                           : in.key_digests->UpperBound(kv_head, window.candidate_begin() + i, q);
    }
  }

 private:
  // Element-wise max over the query heads of KV head `kv`: [group][n] -> [n].
  void MaxOverGroup(std::span<const float> all, int kv, size_t n, std::vector<float>* out) const {
    const int group = geometry_.group_size();
    out->assign(all.begin() + kv * group * n, all.begin() + (kv * group + 1) * n);
    for (int j = 1; j < group; ++j) {
      const float* src = all.data() + (kv * group + j) * n;
      for (size_t c = 0; c < n; ++c) (*out)[c] = std::max((*out)[c], src[c]);
    }
  }

  // The CNN's score for a column whose whole receptive field is zero (interior column).
  static float ZeroFieldScore(const CnnWeights& w) {
    std::vector<float> zeros(kCnnRows * 5, 0.0f), out(5);
    RunCnn(w, HistoryImage::Contiguous(zeros.data(), 5, 5), out.data());
    return out[2];
  }

  // Predicts every head's scores for the step with `key_tokens` keys.
  void Predict(int64_t key_tokens, bool after_push) {
    const CandidateWindow window = CandidateWindow::For(key_tokens, budget_);
    const int64_t begin = window.candidate_begin();
    const int64_t end = std::min<int64_t>(window.candidate_end(), heads_[0].history.columns());
    const bool reuse = spec_.reuse_steps > 1 && initialized_ && step_ % spec_.reuse_steps != 0;
    initialized_ = true;
    if (reuse) return;  // keep the previous scores (window_begin_ unchanged)
    // Incremental updates see exactly reuse_steps new rows each (updates at steps 0, k, 2k, ...).
    const bool incremental =
        !spec_.full_cnn && spec_.prune_threshold <= 0.0f && spec_.reuse_steps <= IncrementalCnn::kMaxPeriod;
    const bool restart = begin != window_begin_ || !after_push;
    window_begin_ = begin;
    const int n = static_cast<int>(heads_.size());
    if (incremental) {
      // Every head's tiles in one thread team: per-KV-head prediction has few heads (3 on SmolLM2),
      // too few to keep the threads busy one head each.
      work_.clear();
      for (int i = 0; i < n; ++i) {
        PredictedHead& head = heads_[i];
        head.image = head.history.Image(begin, std::max(begin, end));
        head.scores.resize(head.image.columns);
        pieces_.clear();
        head.cnn.Plan(head.image, restart, &pieces_);
        for (const IncrementalCnn::Piece& piece : pieces_) work_.push_back({i, piece});
      }
      const int64_t items = static_cast<int64_t>(work_.size());
#pragma omp parallel for schedule(dynamic, 1) num_threads(spec_.threads) if (spec_.threads > 1 && items > 1)
      for (int64_t w = 0; w < items; ++w) {
        PredictedHead& head = heads_[work_[w].head];
        head.cnn.RunPiece(head.image, work_[w].piece, head.scores.data());
      }
      return;
    }
#pragma omp parallel for schedule(dynamic, 1) num_threads(spec_.threads) if (spec_.threads > 1)
    for (int i = 0; i < n; ++i) {
      PredictedHead& head = heads_[i];
      const HistoryImage image = head.history.Image(begin, std::max(begin, end));
      head.scores.resize(image.columns);
      if (image.columns == 0) continue;
      if (spec_.prune_threshold > 0.0f) {
        PrunedCnn(image, head.scores.data());
      } else {
        RunCnn(*spec_.weights, image, head.scores.data());
      }
    }
  }

  // Runs the CNN only over columns whose receptive field holds a value >= prune_threshold.
  void PrunedCnn(const HistoryImage& image, float* out) const {
    const int64_t L = image.columns;
    std::vector<float> column_max(L, 0.0f);
    for (int h = 0; h < kCnnRows; ++h) {
      const float* r = image.rows[h];
      for (int64_t c = 0; c < L; ++c) column_max[c] = std::max(column_max[c], r[c]);
    }
    std::vector<char> active(L, 0);
    for (int64_t c = 0; c < L; ++c) {
      if (column_max[c] < spec_.prune_threshold) continue;
      for (int64_t d = std::max<int64_t>(0, c - 2); d <= std::min(L - 1, c + 2); ++d) active[d] = 1;
    }
    std::vector<float> run_out;
    for (int64_t c = 0; c < L;) {
      if (!active[c]) {
        out[c++] = zero_field_score_;
        continue;
      }
      int64_t e = c;
      while (e < L && active[e]) ++e;
      // Outputs in [c, e) read input columns c-2 .. e+1 only.
      const int64_t lo = std::max<int64_t>(0, c - 2), hi = std::min(L, e + 2);
      HistoryImage sub = image;
      sub.columns = hi - lo;
      for (int h = 0; h < kCnnRows; ++h) sub.rows[h] = image.rows[h] + lo;
      run_out.resize(sub.columns);
      RunCnn(*spec_.weights, sub, run_out.data());
      std::copy(run_out.begin() + (c - lo), run_out.begin() + (e - lo), out + c);
      c = e;
    }
  }

  PolicySpec spec_;
  std::vector<PredictedHead> heads_;
  struct WorkItem {
    int head;
    IncrementalCnn::Piece piece;
  };
  std::vector<WorkItem> work_;  // Predict's scratch: every head's CNN pieces
  std::vector<IncrementalCnn::Piece> pieces_;
  std::vector<int32_t> order_;  // RefineWithQuery scratch
  std::vector<char> kept_;
  int64_t window_begin_ = -1;
  bool initialized_ = false;
  float zero_field_score_ = 0.0f;
};

}  // namespace

StatusOr<std::unique_ptr<SelectionPolicy>> MakeAttentionPredictorPolicy(const PolicySpec& spec,
                                                                        const LayerGeometry& g) {
  if (!spec.weights) {
    return InvalidArgument(
        "attention_predictor: no CNN weights (load them with CnnWeights::Load, "
        "e.g. the published cnn_llama3.1.safetensors)");
  }
  if (spec.calibration_period < 0 || spec.reuse_steps < 1 || spec.threads < 1) {
    return InvalidArgument(
        "attention_predictor: calibration_period >= 0, reuse_steps >= 1 and "
        "threads >= 1 required");
  }
  return std::unique_ptr<SelectionPolicy>(new AttentionPredictorPolicy(spec, g));
}

}  // namespace foresight::predictor
