#include "worker/policy_attention.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "predictor/attention_pooling.h"
#include "worker/quantized_kernels.h"
#include "worker/transformer_kernels.h"

namespace foresight::worker {
namespace {

double Now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

}  // namespace

void ApplyQueryRefinement(float query_refine, predictor::PolicySpec* spec, PolicyAttentionOptions* options,
                          bool kv_offloaded) {
  spec->query_refine = query_refine;
  spec->refine_scorer = predictor::PolicySpec::RefineScorer::kQueryBlockScores;
  if (query_refine > 0.0f && spec->kind == predictor::PolicyKind::kAttentionPredictor) {
    spec->calibration_period = 1;
    spec->predict_per_kv_head = true;
    spec->reuse_steps = predictor::PolicySpec::kServingUpdatePeriod;
    options->calibration = CalibrationSource::kCompactKeys;
    options->lookahead_query = kv_offloaded;
  }
}

PolicyDecodeAttention::PolicyDecodeAttention(const ModelConfig& config, int64_t prompt_tokens,
                                             PolicyAttentionOptions options)
    : config_(config),
      dense_step_(config.n_layers, false),
      calib_step_(config.n_layers, false),
      options_(options),
      compact_(config.n_layers, CompactKeyCopy(config.n_heads, config.n_kv_heads, config.head_dim)),
      peek_tokens_(config.n_layers, -1),
      peek_step_(config.n_layers, -1),
      peek_(config.n_layers),
      last_scores_(config.n_layers),
      last_blocks_(config.n_layers, 0),
      look_scores_(config.n_layers),
      look_tokens_(config.n_layers, -1),
      look_blocks_(config.n_layers, 0) {
  for (int l = 0; l < config.n_layers; ++l) {
    recorders_.push_back(std::make_unique<predictor::PrefillRecorder>(config.n_heads, prompt_tokens));
    digests_.emplace_back(config.n_kv_heads, config.head_dim, 16);
  }
  key_rows_.assign(config.n_layers, std::vector<float>(static_cast<size_t>(config.n_kv_heads) * config.head_dim));
}

StatusOr<std::unique_ptr<PolicyDecodeAttention>> PolicyDecodeAttention::Create(const ModelConfig& config,
                                                                               const predictor::PolicySpec& spec,
                                                                               int64_t prompt_tokens,
                                                                               PolicyAttentionOptions options) {
  if (spec.kind == predictor::PolicyKind::kOracle) {
    return InvalidArgument(
        "policy oracle needs each step's dense attention and is offline-only; "
        "use `foresight predictor eval` on a trace");
  }
  std::unique_ptr<PolicyDecodeAttention> p(new PolicyDecodeAttention(config, prompt_tokens, options));
  const predictor::LayerGeometry geometry{config.n_heads, config.n_kv_heads, config.head_dim};
  for (int l = 0; l < config.n_layers; ++l) {
    predictor::PolicySpec layer_spec = spec;
    // A policy runs inside a decode step whose other work uses every OpenMP thread, and so may it:
    // AttentionPredictor's CNN over the heads is most of a sparse step on a CPU.
    layer_spec.threads = std::max(layer_spec.threads, omp_get_max_threads());
    // With lookahead queries, layer 0 (no layer before it to estimate its query from) keeps the
    // CNN's choice for its whole budget: its query arrives too late to fetch what it would pick.
    if (l == 0 && options.lookahead_query && config.n_layers > 1) layer_spec.query_refine = 0.0f;
    FS_ASSIGN_OR_RETURN(std::unique_ptr<predictor::SelectionPolicy> policy,
                        predictor::MakeSelectionPolicy(layer_spec, geometry, l));
    p->policies_.push_back(std::move(policy));
  }
  return p;
}

void PolicyDecodeAttention::OnRow(int32_t layer, int32_t q_head, int64_t query, const float* probs) {
  recorders_[layer]->AddRow(q_head, query, std::span<const float>(probs, static_cast<size_t>(query + 1)));
}

void PolicyDecodeAttention::OnPooledRow(int32_t layer, int32_t q_head, int64_t query, const float* block_max,
                                        const float* block_sum, int64_t width) {
  recorders_[layer]->AddPooledRow(q_head, query, std::span<const float>(block_max, static_cast<size_t>(width)),
                                  std::span<const float>(block_sum, static_cast<size_t>(width)));
}

Status PolicyDecodeAttention::FinishPrefill() {
  // Layers seed independently (each has its own policy and recorder; CNN weights are shared
  // read-only), so they are spread over the OpenMP threads. For AttentionPredictor a seed is a full
  // CNN pass over every head's history, most of the time to first token after a prefix import.
  if (observation_tap_) {
    for (int l = 0; l < config_.n_layers; ++l) observation_tap_(l, recorders_[l]->Observation());
  }
  std::vector<Status> seeded(static_cast<size_t>(config_.n_layers));
#pragma omp parallel for schedule(dynamic, 1)
  for (int l = 0; l < config_.n_layers; ++l) seeded[l] = policies_[l]->ObservePrefill(recorders_[l]->Observation());
  for (const Status& s : seeded) FS_RETURN_IF_ERROR(s);
  recorders_.clear();
  return Status::OK();
}

bool PolicyDecodeAttention::Calibrates() const {
  for (const auto& p : policies_) {
    if (p->name() == "attention_predictor") return true;
  }
  return false;
}

void PolicyDecodeAttention::AppendKeys(int32_t layer, const KvCache& kv, int64_t upto) {
  const int32_t hd = config_.head_dim, heads = config_.n_kv_heads;
  predictor::KeyDigests& digests = digests_[layer];
  std::vector<float>& key_row = key_rows_[layer];
  if (policies_[layer]->needs().key_digests) {
    for (int64_t p = digests.tokens(); p < upto; ++p) {
      for (int h = 0; h < heads; ++h) HalfToFloatRow(kv.key(layer, h, p), hd, key_row.data() + h * hd);
      digests.AppendToken(key_row);
    }
  }
  if ((options_.calibration == CalibrationSource::kCompactKeys && Calibrates()) ||
      policies_[layer]->needs().query_block_scores) {
    compact_[layer].Append(kv, layer, upto);
  }
}

void PolicyDecodeAttention::PrepareKeys(const KvCache& kv) {
  // After a prefix import this reads the whole imported context (7K keys x 30 layers for SmolLM2
  // at 7K: ~50 ms on one thread, on the way to the first token). Layers are independent (each has
  // its own digests, compact copy and key scratch), so they are spread over the OpenMP threads;
  // each layer's values are the same as in order.
#pragma omp parallel for schedule(dynamic, 1)
  for (int32_t l = 0; l < config_.n_layers; ++l) AppendKeys(l, kv, kv.tokens());
}

bool PolicyDecodeAttention::CanSelectAhead(int32_t layer) const {
  const predictor::PolicyNeeds n = policies_[layer]->needs();
  return !n.query && !n.key_digests && !n.dense_row;  // query_block_scores: the CNN's share ahead
}

bool PolicyDecodeAttention::PeekSelection(int32_t layer, int64_t key_tokens,
                                          std::vector<std::vector<int32_t>>* blocks) {
  if (!status_.ok() || !CanSelectAhead(layer)) return false;
  predictor::SelectionPolicy& policy = *policies_[layer];
  if (policy.WantsDenseRow() && options_.calibration == CalibrationSource::kExact) return false;
  if (peek_tokens_[layer] != key_tokens || peek_step_[layer] != policy.step()) {
    const double t0 = Now();
    predictor::StepInputs in;
    in.key_tokens = key_tokens;
    const int64_t n_blocks = (key_tokens + 15) / 16;
    const bool scored = policy.needs().query_block_scores;
    const bool lookahead = scored && HasLookahead(layer, key_tokens);
    // Without this step's lookahead, the previous query's scores stand in for this step's.
    // (With lookahead queries there is no guessing: the lookahead fetches the share in time.)
    const bool guess = scored && !lookahead && !options_.lookahead_query && last_blocks_[layer] > 0 &&
                       options_.speculative_blocks >= 0;
    if (lookahead) in.query_block_scores = Padded(look_scores_[layer], look_blocks_[layer], n_blocks);
    if (guess) in.query_block_scores = Padded(last_scores_[layer], last_blocks_[layer], n_blocks);
    predictor::BlockSelection selection;
    Status s = policy.Select(in, &selection);
    if (s.ok() && guess && options_.speculative_blocks > 0) {
      AddSpeculativeBlocks(in.query_block_scores, n_blocks, &selection.per_kv_head);
    }
    predictor_seconds_ += Now() - t0;
    if (!s.ok()) {
      Fail(s);
      return false;
    }
    peek_[layer] = std::move(selection.per_kv_head);
    peek_tokens_[layer] = key_tokens;
    peek_step_[layer] = policy.step();
  }
  *blocks = peek_[layer];
  return true;
}

std::span<const float> PolicyDecodeAttention::Padded(const std::vector<float>& scores, int64_t have, int64_t n_blocks) {
  if (have == n_blocks) return scores;
  have = std::min(have, n_blocks);
  guess_.assign(static_cast<size_t>(config_.n_heads) * n_blocks, 0.0f);
  const int64_t stride = static_cast<int64_t>(scores.size()) / config_.n_heads;
  for (int32_t h = 0; h < config_.n_heads; ++h) {
    std::copy_n(scores.data() + h * stride, have, guess_.data() + h * n_blocks);
  }
  return guess_;
}

bool PolicyDecodeAttention::WantsLookaheadQueries() const {
  if (!options_.lookahead_query) return false;
  for (const auto& p : policies_) {
    if (p->needs().query_block_scores) return true;
  }
  return false;
}

void PolicyDecodeAttention::OnLookaheadQuery(int32_t layer, int64_t position, const float* queries) {
  if (!status_.ok() || !policies_[layer]->needs().query_block_scores) return;
  // The keys before this token (the token's own key of this layer does not exist yet; its block
  // is the local window's).
  const int64_t ctx = std::min(position, compact_[layer].tokens());
  if (ctx <= 0) return;
  const double t0 = Now();
  compact_[layer].DenseRow(queries, ctx, &look_scores_[layer], &look_sum_);
  look_tokens_[layer] = position + 1;
  look_blocks_[layer] = (ctx + 15) / 16;
  peek_tokens_[layer] = -1;  // a peek of this step now knows the query's share
  predictor_seconds_ += Now() - t0;
  lookahead_seconds_ += Now() - t0;
}

void PolicyDecodeAttention::AddSpeculativeBlocks(std::span<const float> scores, int64_t n_blocks,
                                                 std::vector<std::vector<int32_t>>* blocks) {
  const int32_t group = config_.n_heads / config_.n_kv_heads;
  for (int32_t kvh = 0; kvh < config_.n_kv_heads && kvh < static_cast<int32_t>(blocks->size()); ++kvh) {
    std::vector<int32_t>& chosen = (*blocks)[kvh];
    // The KV head's score of a block: the best of its query heads'; chosen blocks drop out.
    kv_best_.assign(n_blocks, 0.0f);
    for (int32_t j = 0; j < group; ++j) {
      const float* row = scores.data() + static_cast<int64_t>(kvh * group + j) * n_blocks;
      for (int64_t b = 0; b < n_blocks; ++b) kv_best_[b] = std::max(kv_best_[b], row[b]);
    }
    for (int32_t b : chosen) kv_best_[b] = -1.0f;
    order_.clear();
    for (int32_t b = 0; b < n_blocks; ++b) {
      if (kv_best_[b] > 0.0f) order_.push_back(b);
    }
    const int64_t k = std::min<int64_t>(options_.speculative_blocks, static_cast<int64_t>(order_.size()));
    std::partial_sort(order_.begin(), order_.begin() + k, order_.end(), [&](int32_t a, int32_t b) {
      return kv_best_[a] > kv_best_[b] || (kv_best_[a] == kv_best_[b] && a < b);
    });
    chosen.insert(chosen.end(), order_.begin(), order_.begin() + k);
    std::sort(chosen.begin(), chosen.end());
  }
}

bool PolicyDecodeAttention::SelectBlocks(int32_t layer, int64_t position, const float* queries, const KvCache& kv,
                                         std::vector<std::vector<int32_t>>* blocks) {
  const double t0 = Now();
  predictor::SelectionPolicy& policy = *policies_[layer];
  AppendKeys(layer, kv, position + 1);
  const bool calibrate = policy.WantsDenseRow();
  const bool exact_dense = calibrate && options_.calibration == CalibrationSource::kExact;
  calib_step_[layer] = calibrate && !exact_dense;
  Status s = status_;
  if (s.ok() && !exact_dense) {
    // A peek of this very step is the selection (Select is pure) unless the query's share was
    // only guessed then; a peek after this step's lookahead query (which voids earlier ones) used it.
    const bool scored = policy.needs().query_block_scores;
    if (peek_tokens_[layer] == position + 1 && peek_step_[layer] == policy.step() &&
        (!scored || HasLookahead(layer, position + 1))) {
      *blocks = peek_[layer];
    } else {
      predictor::StepInputs in;
      in.key_tokens = position + 1;
      in.query = std::span<const float>(queries, static_cast<size_t>(config_.n_heads) * config_.head_dim);
      in.key_digests = &digests_[layer];
      if (scored && HasLookahead(layer, position + 1)) {
        // Scored with the query estimated one layer early (no peek asked for it: resident).
        in.query_block_scores = Padded(look_scores_[layer], look_blocks_[layer], (position + 16) / 16);
      } else if (scored) {
        // This step's attention estimated from the compact key copy (its block max per query head);
        // a compact calibration row of this step (OnAttention) reuses it.
        compact_[layer].DenseRow(queries, position + 1, &calib_max_, &calib_sum_);
        compact_row_layer_ = layer;
        in.query_block_scores = calib_max_;
      }
      predictor::BlockSelection selection;
      s = policy.Select(in, &selection);
      if (s.ok()) *blocks = std::move(selection.per_kv_head);
    }
  }
  dense_step_[layer] = !s.ok() || exact_dense;
  if (!s.ok()) {
    Fail(s);
    calib_step_[layer] = false;
  }
  predictor_seconds_ += Now() - t0;
  return !dense_step_[layer];
}

void PolicyDecodeAttention::OnAttention(int32_t layer, int64_t position, const float* queries, bool dense,
                                        const float* block_max, const float* block_sum, int64_t n_blocks) {
  if (!status_.ok()) return;
  const double t0 = Now();
  predictor::AttentionObservation obs;
  obs.key_tokens = position + 1;
  obs.dense = dense;
  const size_t rows = static_cast<size_t>(config_.n_heads) * n_blocks;
  bool from_lookahead = false;
  if (calib_step_[layer]) {
    // The history row: this step's compact row of the exact query when the selection computed
    // one; else, with a lookahead query, the lookahead row of this step (one pass over the
    // compact copy per layer and step instead of two; it lacks only the step's own key, in the
    // local window); else a pass for the exact query.
    from_lookahead =
        compact_row_layer_ != layer && HasLookahead(layer, position + 1) && !policies_[layer]->needs().block_sum;
    if (from_lookahead) {
      block_max = Padded(look_scores_[layer], look_blocks_[layer], n_blocks).data();
    } else {
      if (compact_row_layer_ != layer) compact_[layer].DenseRow(queries, position + 1, &calib_max_, &calib_sum_);
      block_max = calib_max_.data();
      block_sum = calib_sum_.data();
    }
    obs.dense = true;
  }
  obs.block_max = std::span<const float>(block_max, rows);
  if (!from_lookahead) obs.block_sum = std::span<const float>(block_sum, rows);
  // This step's compact row of the exact query becomes the next peek's guess.
  const bool keep_scores = calib_step_[layer] && !from_lookahead && policies_[layer]->needs().query_block_scores;
  compact_row_layer_ = -1;
  Status s = policies_[layer]->Observe(obs);
  if (!s.ok()) Fail(s);
  if (keep_scores && calib_max_.size() == rows) {
    std::swap(calib_max_, last_scores_[layer]);
    last_blocks_[layer] = n_blocks;
  }
  predictor_seconds_ += Now() - t0;
}

}  // namespace foresight::worker
