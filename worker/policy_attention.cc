#include "worker/policy_attention.h"

#include <chrono>

namespace foresight::worker {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

PolicyDecodeAttention::PolicyDecodeAttention(const ModelConfig& config, int64_t prompt_tokens)
    : config_(config), dense_step_(config.n_layers, false) {
  for (int l = 0; l < config.n_layers; ++l) {
    recorders_.push_back(std::make_unique<predictor::PrefillRecorder>(config.n_heads, prompt_tokens));
    digests_.emplace_back(config.n_kv_heads, config.head_dim, 16);
  }
  key_row_.resize(static_cast<size_t>(config.n_kv_heads) * config.head_dim);
}

StatusOr<std::unique_ptr<PolicyDecodeAttention>> PolicyDecodeAttention::Create(const ModelConfig& config,
                                                                               const predictor::PolicySpec& spec,
                                                                               int64_t prompt_tokens) {
  if (spec.kind == predictor::PolicyKind::kOracle) {
    return InvalidArgument("policy oracle needs each step's dense attention and is offline-only; "
                           "use `foresight predictor eval` on a trace");
  }
  std::unique_ptr<PolicyDecodeAttention> p(new PolicyDecodeAttention(config, prompt_tokens));
  const predictor::LayerGeometry geometry{config.n_heads, config.n_kv_heads, config.head_dim};
  for (int l = 0; l < config.n_layers; ++l) {
    FS_ASSIGN_OR_RETURN(std::unique_ptr<predictor::SelectionPolicy> policy, predictor::MakeSelectionPolicy(spec, geometry, l));
    p->policies_.push_back(std::move(policy));
  }
  return p;
}

void PolicyDecodeAttention::OnRow(int32_t layer, int32_t q_head, int64_t query, const float* probs) {
  recorders_[layer]->AddRow(q_head, query, std::span<const float>(probs, static_cast<size_t>(query + 1)));
}

Status PolicyDecodeAttention::FinishPrefill() {
  for (int l = 0; l < config_.n_layers; ++l) {
    FS_RETURN_IF_ERROR(policies_[l]->ObservePrefill(recorders_[l]->Observation()));
  }
  recorders_.clear();
  return Status::OK();
}

bool PolicyDecodeAttention::SelectBlocks(int32_t layer, int64_t position, const float* queries, const KvCache& kv,
                                         std::vector<std::vector<int32_t>>* blocks) {
  const double t0 = Now();
  predictor::SelectionPolicy& policy = *policies_[layer];
  predictor::KeyDigests& digests = digests_[layer];
  if (policy.needs().key_digests) {
    for (int64_t p = digests.tokens(); p <= position; ++p) {
      for (int h = 0; h < config_.n_kv_heads; ++h) {
        HalfToFloatRow(kv.key(layer, h, p), config_.head_dim, key_row_.data() + h * config_.head_dim);
      }
      digests.AppendToken(key_row_);
    }
  }
  predictor::StepInputs in;
  in.key_tokens = position + 1;
  in.query = std::span<const float>(queries, static_cast<size_t>(config_.n_heads) * config_.head_dim);
  in.key_digests = &digests;
  predictor::BlockSelection selection;
  Status s = status_.ok() ? policy.Select(in, &selection) : status_;
  dense_step_[layer] = !s.ok() || policy.WantsDenseRow();
  if (!s.ok()) Fail(s);
  if (!dense_step_[layer]) *blocks = std::move(selection.per_kv_head);
  predictor_seconds_ += Now() - t0;
  return !dense_step_[layer];
}

void PolicyDecodeAttention::OnAttention(int32_t layer, int64_t position, const float* queries, bool dense,
                                        const float* block_max, const float* block_sum, int64_t n_blocks) {
  if (!status_.ok()) return;
  const double t0 = Now();
  const size_t rows = static_cast<size_t>(config_.n_heads) * n_blocks;
  predictor::AttentionObservation obs;
  obs.key_tokens = position + 1;
  obs.dense = dense;
  obs.block_max = std::span<const float>(block_max, rows);
  obs.block_sum = std::span<const float>(block_sum, rows);
  Status s = policies_[layer]->Observe(obs);
  if (!s.ok()) Fail(s);
  predictor_seconds_ += Now() - t0;
}

}  // namespace foresight::worker
