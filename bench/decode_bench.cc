// foresight-bench decode: time per decode token, dense vs each selection policy, on SmolLM2 (or any
// model) and on the synthetic Llama-3.1-8B-geometry model at long contexts.
//
// Speed only. Contexts are filled by a real dense prefill (--prefill) or, by default for the
// synthetic model, with random KV (prefilling 128K tokens on a CPU takes hours); policies then get
// no prefill history, which changes what they select but not what selecting and attending cost.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bench/commands.h"
#include "predictor/cnn_weights.h"
#include "predictor/selection_policy.h"
#include "worker/default_model.h"
#include "worker/model.h"
#include "worker/policy_attention.h"
#include "worker/sequence.h"
#include "worker/synthetic_model.h"

namespace foresight::bench {
namespace {

struct DecodeBenchFlags {
  std::string model;
  bool synthetic_8b = false;
  int synthetic_layers = 2;
  std::string contexts = "2048,4096,8192";
  std::string policies = "dense,streaming_llm,quest,h2o,snapkv";
  int budget = 1024;
  int steps = 16;
  std::string weights;
  bool prefill = false;
  bool json = false;
};

std::vector<std::string> SplitList(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) if (!item.empty()) out.push_back(item);
  return out;
}

Status RunDecodeBench(const DecodeBenchFlags& f) {
  std::unique_ptr<worker::Model> model;
  std::vector<int64_t> contexts;
  for (const std::string& c : SplitList(f.contexts)) contexts.push_back(std::stoll(c));
  int64_t max_context = 0;
  for (int64_t c : contexts) max_context = std::max(max_context, c);
  if (f.synthetic_8b) {
    FS_ASSIGN_OR_RETURN(model, worker::MakeSyntheticModel(worker::SyntheticModelSpec::Llama31_8BGeometry(
                                   f.synthetic_layers, static_cast<int32_t>(max_context + f.steps + 1))));
  } else {
    std::string path = f.model;
    if (path.empty()) {
      FS_ASSIGN_OR_RETURN(path, worker::FindDefaultModel());
    }
    FS_ASSIGN_OR_RETURN(model, worker::Model::Open(path));
  }
  const worker::ModelConfig& c = model->config();
  std::shared_ptr<const predictor::CnnWeights> weights;
  if (!f.weights.empty()) {
    FS_ASSIGN_OR_RETURN(weights, predictor::CnnWeights::Load(f.weights));
  }
  nlohmann::json rows = nlohmann::json::array();
  if (!f.json) {
    std::printf("%-20s %8s %8s %10s %10s %10s %10s %12s\n", "policy", "context", "budget", "ms/token", "attn_ms",
                "pred_ms", "pred_share", "blocks/step");
  }
  for (int64_t ctx : contexts) {
    if (c.max_context > 0 && ctx + f.steps > c.max_context) {
      return OutOfRange("context " + std::to_string(ctx) + " + steps exceeds the model's " + std::to_string(c.max_context));
    }
    worker::Sequence seq(*model);
    if (f.prefill) {
      std::vector<worker::TokenId> tokens(ctx);
      for (int64_t i = 0; i < ctx; ++i) tokens[i] = static_cast<worker::TokenId>((i * 7919 + 13) % c.vocab_size);
      FS_RETURN_IF_ERROR(seq.Prefill(tokens, nullptr));
    } else {
      seq.TEST_FillRandomKv(ctx, 17);
    }
    for (const std::string& name : SplitList(f.policies)) {
      seq.Rewind(ctx);
      seq.ResetStats();
      std::unique_ptr<worker::PolicyDecodeAttention> policy;
      if (name != "dense") {
        predictor::PolicySpec spec;
        FS_ASSIGN_OR_RETURN(spec.kind, predictor::ParsePolicyKind(name));
        spec.budget.budget_tokens = f.budget;
        spec.weights = weights;
        if (spec.kind == predictor::PolicyKind::kAttentionPredictor && weights == nullptr) {
          return InvalidArgument("policy " + name + " needs --weights");
        }
        FS_ASSIGN_OR_RETURN(policy, worker::PolicyDecodeAttention::Create(c, spec, ctx));
        FS_RETURN_IF_ERROR(policy->FinishPrefill());
      }
      std::vector<float> logits;
      for (int s = 0; s < f.steps; ++s) {
        FS_RETURN_IF_ERROR(seq.Decode(static_cast<worker::TokenId>((s * 31 + 5) % c.vocab_size), &logits, policy.get()));
        if (policy != nullptr) FS_RETURN_IF_ERROR(policy->status());
      }
      const worker::SequenceStats& st = seq.stats();
      const double ms = 1e3 * st.decode_seconds / st.decode_tokens;
      const double attn = 1e3 * st.attention_seconds / st.decode_tokens;
      const double pred = policy != nullptr ? 1e3 * policy->predictor_seconds() / st.decode_tokens : 0.0;
      const double blocks = static_cast<double>(st.blocks_attended) / st.decode_tokens;
      // The policies run inside the attention call (selection before, observation after).
      const double attn_only = std::max(0.0, attn - pred);
      if (f.json) {
        rows.push_back({{"policy", name}, {"context", ctx}, {"budget", f.budget}, {"ms_per_token", ms},
                        {"attention_ms_per_token", attn_only}, {"predictor_ms_per_token", pred},
                        {"predictor_share", ms > 0 ? pred / ms : 0}, {"blocks_per_step", blocks},
                        {"model", f.synthetic_8b ? "synthetic-llama3.1-8b-geometry" : model->source()}});
      } else {
        std::printf("%-20s %8lld %8d %10.2f %10.2f %10.2f %9.1f%% %12.1f\n", name.c_str(), static_cast<long long>(ctx),
                    f.budget, ms, attn_only, pred, ms > 0 ? 100 * pred / ms : 0.0, blocks);
      }
    }
  }
  if (f.json) std::printf("%s\n", rows.dump(2).c_str());
  return Status::OK();
}

}  // namespace

void AddDecodeBench(CLI::App& app, int* exit_code) {
  auto f = std::make_shared<DecodeBenchFlags>();
  CLI::App* cmd = app.add_subcommand("decode", "Decode time per token: dense vs selection policies");
  cmd->add_option("--model", f->model, "GGUF file or Hugging Face folder (default: SmolLM2)");
  cmd->add_flag("--synthetic-8b", f->synthetic_8b, "Synthetic model with Llama-3.1-8B attention geometry (speed only)");
  cmd->add_option("--synthetic-layers", f->synthetic_layers, "Layers of the synthetic model");
  cmd->add_option("--contexts", f->contexts, "Comma-separated context lengths");
  cmd->add_option("--policies", f->policies, "Comma-separated: dense, attention_predictor, quest, h2o, snapkv, streaming_llm");
  cmd->add_option("--budget", f->budget, "Token budget of sparse policies");
  cmd->add_option("--steps", f->steps, "Decode steps timed per policy");
  cmd->add_option("--weights", f->weights, "AttentionPredictor CNN weights");
  cmd->add_flag("--prefill", f->prefill, "Fill the context by a real dense prefill instead of random KV");
  cmd->add_flag("--json", f->json, "JSON rows");
  cmd->callback([f, exit_code] {
    Status s = RunDecodeBench(*f);
    if (!s.ok()) std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
    *exit_code = s.ok() ? 0 : 1;
  });
}

}  // namespace foresight::bench
