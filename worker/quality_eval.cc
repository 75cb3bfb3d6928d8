#include "worker/quality_eval.h"

#include <algorithm>
#include <cmath>

#include "worker/backend.h"
#include "worker/oracle_attention.h"
#include "worker/policy_attention.h"
#include "worker/sampler.h"

namespace foresight::worker {
namespace {

// Forwards every prefill row to several observers (one per policy run).
class FanOutObserver : public PrefillAttentionObserver {
 public:
  void OnRow(int32_t layer, int32_t q_head, int64_t query, const float* probs) override {
    for (PrefillAttentionObserver* o : targets) o->OnRow(layer, q_head, query, probs);
  }
  std::vector<PrefillAttentionObserver*> targets;
};

double LogProb(const std::vector<float>& logits, TokenId token) {
  const float mx = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float v : logits) sum += std::exp(static_cast<double>(v) - mx);
  return static_cast<double>(logits[token]) - mx - std::log(sum);
}

std::string RowName(predictor::PolicyKind kind) {
  std::string n(predictor::PolicyKindName(kind));
  std::replace(n.begin(), n.end(), '_', '-');
  return n;
}

}  // namespace

StatusOr<std::vector<QualityRow>> EvaluateQuality(const Model& model, const std::vector<TokenId>& tokens,
                                                  int64_t context, int64_t predict, const QualitySpec& spec) {
  const int64_t max_context = model.config().max_context;
  // Teacher forcing feeds all but the last predicted token after the context: check before the
  // (long) prefill rather than fail after it.
  if (max_context > 0 && context + predict - 1 > max_context) {
    return InvalidArgument("--context " + std::to_string(context) + " plus --predict " + std::to_string(predict) +
                           " needs " + std::to_string(context + predict - 1) +
                           " positions, more than the model's context of " + std::to_string(max_context) +
                           "; lower --context to at most " + std::to_string(max_context - predict + 1));
  }
  if (context <= 0 || predict <= 0 || static_cast<int64_t>(tokens.size()) < context + predict) {
    return InvalidArgument("eval quality needs " + std::to_string(context + predict) + " tokens of text, got " +
                           std::to_string(tokens.size()));
  }
  // One run per (policy, budget). Oracle scores every key at every step inside the engine
  // (OracleDecodeAttention); the others are the serving policies (PolicyDecodeAttention).
  struct Run {
    predictor::PolicyKind kind;
    int64_t budget;
    float query_refine;
    int update_period;
    std::unique_ptr<PolicyDecodeAttention> policy;
    std::unique_ptr<OracleDecodeAttention> oracle;
    DecodeAttentionHook* hook() const {
      return policy ? static_cast<DecodeAttentionHook*>(policy.get()) : oracle.get();
    }
    Status status() const { return policy ? policy->status() : oracle->status(); }
  };
  std::vector<Run> runs;
  const std::vector<float> published = {0.0f};  // every policy but AttentionPredictor runs once per budget
  const std::vector<int> every_step = {1};
  for (predictor::PolicyKind kind : spec.policies) {
    if (kind == predictor::PolicyKind::kDense) continue;
    const std::vector<float>& refines =
        kind == predictor::PolicyKind::kAttentionPredictor ? spec.query_refine : published;
    for (int64_t budget : spec.budgets) {
      for (float refine : refines) {
        const bool served = kind == predictor::PolicyKind::kAttentionPredictor && refine > 0.0f &&
                            spec.refine_scorer == predictor::PolicySpec::RefineScorer::kQueryBlockScores;
        for (int period : served ? spec.update_periods : every_step) {
          predictor::PolicySpec ps;
          ps.kind = kind;
          ps.budget.budget_tokens = budget;
          ps.budget.sink_tokens = spec.sink_tokens;
          ps.budget.local_tokens = spec.local_tokens;
          ps.calibration_period = spec.calibration_period;
          ps.weights = spec.weights;
          ps.dense_first_layers = spec.dense_first_layers;
          ps.query_refine = refine;
          ps.refine_scorer = spec.refine_scorer;
          Run run{kind, budget, refine, period, nullptr, nullptr};
          if (kind == predictor::PolicyKind::kOracle) {
            FS_ASSIGN_OR_RETURN(run.oracle, OracleDecodeAttention::Create(model.config(), ps));
          } else {
            PolicyAttentionOptions po;
            po.calibration = spec.calibration_source;
            if (served) {
              ApplyQueryRefinement(refine, &ps, &po, /*kv_offloaded=*/spec.lookahead_query);
              ps.reuse_steps = period;
            }
            po.lookahead_query = spec.lookahead_query;
            FS_ASSIGN_OR_RETURN(run.policy, PolicyDecodeAttention::Create(model.config(), ps, context, po));
          }
          runs.push_back(std::move(run));
        }
      }
    }
  }
  FanOutObserver fan;
  for (Run& r : runs) {
    if (r.policy) fan.targets.push_back(r.policy.get());
  }

  std::unique_ptr<Backend> cpu = NewCpuBackend(model);
  FS_ASSIGN_OR_RETURN(std::unique_ptr<BackendSequence> seq, cpu->NewSequence());
  std::vector<float> prefill_logits;
  std::vector<TokenId> head(tokens.begin(), tokens.begin() + context);
  FS_RETURN_IF_ERROR(seq->Prefill(head, &prefill_logits, false, &fan));
  for (Run& r : runs) {
    if (r.policy) FS_RETURN_IF_ERROR(r.policy->FinishPrefill());
  }

  std::vector<TokenId> dense_top1;
  auto evaluate = [&](const Run* run, QualityRow* row) -> Status {
    std::unique_ptr<RecoveryMeter> meter;
    if (run != nullptr) meter = std::make_unique<RecoveryMeter>(model.config(), run->hook());
    DecodeAttentionHook* hook = meter.get();
    seq->Rewind(context);
    seq->ResetStats();
    std::vector<float> logits = prefill_logits;
    double nll = 0;
    int64_t agree = 0;
    for (int64_t i = 0; i < predict; ++i) {
      const TokenId target = tokens[context + i];
      nll -= LogProb(logits, target);
      const TokenId top = Argmax(logits.data(), static_cast<int64_t>(logits.size()));
      if (hook == nullptr) dense_top1.push_back(top);
      agree += top == dense_top1[i];
      if (i + 1 < predict) {
        FS_RETURN_IF_ERROR(seq->Decode(target, &logits, hook));
        if (run != nullptr) FS_RETURN_IF_ERROR(run->status());
      }
    }
    row->context = context;
    row->recovery = meter ? meter->recovery() : 1.0;
    row->sparse_recovery = meter ? meter->sparse_recovery() : 1.0;
    row->perplexity = std::exp(nll / predict);
    row->top1_agreement = static_cast<double>(agree) / predict;
    const SequenceStats& st = seq->stats();
    row->blocks_fraction = st.blocks_total > 0 ? static_cast<double>(st.blocks_attended) / st.blocks_total : 1.0;
    return Status::OK();
  };
  std::vector<QualityRow> rows;
  QualityRow dense{"dense", 0};
  FS_RETURN_IF_ERROR(evaluate(nullptr, &dense));
  rows.push_back(dense);
  for (Run& r : runs) {
    QualityRow row{RowName(r.kind), r.budget};
    row.query_refine = r.query_refine;
    row.update_period = r.update_period;
    FS_RETURN_IF_ERROR(evaluate(&r, &row));
    rows.push_back(row);
    r.policy.reset();  // frees its prefill history
    r.oracle.reset();
  }
  return rows;
}

}  // namespace foresight::worker
