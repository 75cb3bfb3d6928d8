// `foresight generate` (and, as they land, `trace` and `eval quality`): the worker engine from the
// command line.
#include <omp.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/file_io.h"
#include "common/units.h"
#include "worker/cli/worker_commands.h"
#include "worker/default_model.h"
#include "worker/generator.h"
#if FORESIGHT_WORKER_HAVE_CUDA
#include "worker/cuda/cuda_backend.h"
#endif
#include "predictor/cnn_weights.h"
#include "predictor/selection_policy.h"
#include "predictor/shipped_weights.h"
#include "worker/model.h"
#include "worker/policy_attention.h"
#include "worker/quality_eval.h"
#include "worker/sampler.h"
#include "worker/service/worker_client.h"
#include "worker/serving_flags.h"
#include "worker/trace_recorder.h"

namespace foresight::cli {
namespace {

// Integer checks whose errors read "Value 0 not in range 1 to 2147483647" (CLI11's PositiveNumber
// prints its range as doubles up to 1.8e308).
const CLI::Range kPositive(1, std::numeric_limits<int>::max());
const CLI::Range kNonNegative(0, std::numeric_limits<int>::max());

using worker::Model;
using worker::TokenId;

struct GenerateFlags {
  std::string model;
  std::string prompt_file;
  std::string prompt;
  std::string prompt_tokens;
  int max_tokens = 128;
  bool chat = false;
  bool json = false;
  bool print_tokens = false;
  bool ignore_eos = false;
  // --policy, --budget, --sink, --local, --dense-layers, --query-refine, --weights
  // (worker/serving_flags.h) and --prefill-chunk: ap at 1024 here; with --worker, the policy and
  // budget given (the worker's defaults when not) and nothing else.
  worker::ServingOptions serving;
  worker::ServingFlags serving_flags;
  int threads = 0;
  std::string worker;      // HOST:PORT of a foresight-worker: generate there
  std::string token_file;  // the worker's token
  bool no_prefix_reuse = false;
  std::string backend = "cpu";      // cpu | cuda
  worker::SamplingParams sampling;  // default: greedy
  std::vector<std::string> stop;
};

StatusOr<std::string> ResolveModel(const std::string& flag) {
  if (!flag.empty()) return flag;
  return worker::FindDefaultModel();
}

StatusOr<std::vector<TokenId>> ParseTokenList(const std::string& text) {
  FS_ASSIGN_OR_RETURN(std::vector<int64_t> ids,
                      ParseIntList(text, "--prompt-tokens", 0, std::numeric_limits<TokenId>::max()));
  return std::vector<TokenId>(ids.begin(), ids.end());
}

// generate's prompt text: --prompt-file, else --prompt; an error when neither gives any.
StatusOr<std::string> PromptText(const GenerateFlags& f) {
  std::string text = f.prompt;
  if (!f.prompt_file.empty()) {
    FS_ASSIGN_OR_RETURN(text, ReadWholeFile(f.prompt_file, "--prompt-file " + f.prompt_file));
  }
  if (text.empty()) return InvalidArgument("give a prompt: --prompt-file F, --prompt TEXT or --prompt-tokens IDS");
  return text;
}

// `generate --worker`: the request goes to a foresight-worker, tokens stream back as they come.
Status RunRemoteGenerate(const GenerateFlags& f) {
  const worker::ServingFlags& sf = f.serving_flags;
  if (!f.model.empty() || f.threads > 0 || sf.weights->count() > 0 || sf.dense_layers->count() > 0 ||
      sf.sink->count() > 0 || sf.local->count() > 0 || sf.query_refine->count() > 0) {
    return InvalidArgument(
        "--model, --weights, --threads, --dense-layers, --sink, --local and --query-refine are the worker's "
        "settings (foresight-worker flags), not a request's; drop them with --worker");
  }
  worker::WorkerClientOptions o;
  o.address = f.worker;
  if (!f.token_file.empty()) {
    FS_ASSIGN_OR_RETURN(o.token, ReadSecretFile(f.token_file, "--token-file"));
  }
  worker::v1::GenerateRequest r;
  if (!f.prompt_tokens.empty()) {
    FS_ASSIGN_OR_RETURN(std::vector<TokenId> ids, ParseTokenList(f.prompt_tokens));
    for (TokenId id : ids) r.add_prompt_tokens(id);
  } else {
    FS_ASSIGN_OR_RETURN(std::string text, PromptText(f));
    r.set_prompt_text(text);
  }
  r.set_chat(f.chat);
  r.set_max_tokens(f.max_tokens);
  // Not given: the worker's defaults.
  r.set_policy(sf.policy->count() > 0 ? f.serving.default_policy : "");
  r.set_budget(sf.budget->count() > 0 ? f.serving.default_budget : 0);
  r.set_greedy(f.sampling.temperature == 0);
  r.set_temperature(f.sampling.temperature);
  r.set_top_k(f.sampling.top_k);
  r.set_top_p(f.sampling.top_p);
  r.set_seed(f.sampling.seed);
  for (const std::string& stop : f.stop) r.add_stop(stop);
  r.set_no_prefix_reuse(f.no_prefix_reuse);
  r.set_ignore_eos(f.ignore_eos);
  FS_ASSIGN_OR_RETURN(std::unique_ptr<worker::WorkerClient> client, worker::WorkerClient::Connect(o));
  std::string text;
  std::vector<int32_t> ids;
  auto on_token = [&](const worker::v1::Token& t) {
    ids.push_back(t.id());
    if (f.json) {
      text += t.piece();
    } else {
      std::fwrite(t.piece().data(), 1, t.piece().size(), stdout);
      std::fflush(stdout);
    }
  };
  int64_t received = 0;
  StatusOr<worker::v1::GenerateStats> stats = client->Generate(r, on_token, &received);
  if (!stats.ok()) {
    if (!f.json && received > 0) std::printf("\n");
    if (received == 0) return stats.status();
    return stats.status().WithContext("generation ended after " + std::to_string(received) + " tokens");
  }
  const worker::v1::GenerateStats& s = *stats;
  // What the stream held back to the end (a stop string's beginning that did not complete).
  if (f.json) {
    text += s.final_text();
  } else {
    std::fwrite(s.final_text().data(), 1, s.final_text().size(), stdout);
  }
  if (f.json) {
    nlohmann::json j;
    j["worker"] = f.worker;
    j["text"] = text;
    if (f.print_tokens) j["tokens"] = ids;
    j["prompt_tokens"] = s.prompt_tokens();
    j["generated_tokens"] = s.generated_tokens();
    j["finish_reason"] = s.finish_reason();
    j["prefix_hit_tokens"] = s.prefix_hit_tokens();
    j["seed_hit_tokens"] = s.seed_hit_tokens();
    j["prefill_tokens"] = s.prefill_tokens();
    j["prefill_tokens_per_second"] = s.prefill_tokens_per_second();
    j["decode_tokens_per_second"] = s.decode_tokens_per_second();
    j["time_to_first_token_seconds"] = s.time_to_first_token_seconds();
    j["prefix_import_seconds"] = s.prefix_import_seconds();
    j["prefill_seconds"] = s.prefill_seconds();
    j["decode_seconds"] = s.decode_seconds();
    j["blocks_fetched"] = s.blocks_fetched();
    j["bytes_fetched"] = s.bytes_fetched();
    j["blocks_published"] = s.blocks_published();
    j["bytes_published"] = s.bytes_published();
    j["stalls"] = s.stalls();
    j["stall_seconds"] = s.stall_seconds();
    j["blocks_attended_per_step"] = s.blocks_attended_per_step();
    j["blocks_total_per_step"] = s.blocks_total_per_step();
    j["policy"] = s.policy();
    if (!s.weights().empty()) j["weights"] = s.weights();
    j["budget"] = s.budget();
    j["kv_mode"] = s.kv_mode();
    j["cache"] = s.cache();
    std::cout << j.dump(2) << std::endl;
  } else {
    std::printf("\n");
    if (f.print_tokens) {
      for (int32_t id : ids) std::printf("%d ", id);
      std::printf("\n");
    }
    std::fprintf(stderr,
                 "-- worker %s (cache %s): prompt %lld tokens, prefix hit %lld, generated %lld (%s); TTFT %.3f s; "
                 "prefill %.1f tok/s, decode %.1f tok/s; fetched %lld blocks (%.1f MiB), published %lld blocks "
                 "(%.1f MiB); stalls %lld (%.3f s); policy %s budget %d%s; KV %s\n",
                 f.worker.c_str(), s.cache().c_str(), static_cast<long long>(s.prompt_tokens()),
                 static_cast<long long>(s.prefix_hit_tokens()), static_cast<long long>(s.generated_tokens()),
                 s.finish_reason().c_str(), s.time_to_first_token_seconds(), s.prefill_tokens_per_second(),
                 s.decode_tokens_per_second(), static_cast<long long>(s.blocks_fetched()),
                 s.bytes_fetched() / 1048576.0, static_cast<long long>(s.blocks_published()),
                 s.bytes_published() / 1048576.0, static_cast<long long>(s.stalls()), s.stall_seconds(),
                 s.policy().c_str(), s.budget(), s.weights().empty() ? "" : (", weights " + s.weights()).c_str(),
                 s.kv_mode().c_str());
  }
  return Status::OK();
}

Status RunGenerate(GenerateFlags f) {
  if (!f.worker.empty() && f.backend != "cpu") {
    return InvalidArgument("--backend applies to local generation; a foresight-worker (--worker) runs its own");
  }
  if (!f.worker.empty()) return RunRemoteGenerate(f);
  FS_RETURN_IF_ERROR(worker::Sampler::Create(f.sampling).status());  // before the model loads: fail fast
  if (f.no_prefix_reuse || !f.token_file.empty()) {
    return InvalidArgument("--no-prefix-reuse and --token-file apply to --worker only");
  }
  // AttentionPredictor as served by default, on either backend; the policy and the weights are
  // checked before the model loads.
  {
    StatusOr<predictor::PolicyKind> kind = worker::ParseServingPolicy(f.serving.default_policy);
    if (kind.ok() && *kind != predictor::PolicyKind::kAttentionPredictor && f.serving_flags.weights->count() > 0) {
      return InvalidArgument("--weights is AttentionPredictor's; --policy " + f.serving.default_policy +
                             " does not use it");
    }
  }
  FS_RETURN_IF_ERROR(worker::FinishServingFlags(&f.serving));
  if (f.threads > 0) omp_set_num_threads(f.threads);
  if (f.backend == "cuda") {
#if FORESIGHT_WORKER_HAVE_CUDA
    FS_RETURN_IF_ERROR(worker::CudaDeviceStatus());  // before the model loads: fail fast
#else
    return Unavailable("cuda backend: this build has no CUDA support (nvcc was not found when it was configured)");
#endif
  }
  FS_ASSIGN_OR_RETURN(std::string model_path, ResolveModel(f.model));
  const auto t0 = std::chrono::steady_clock::now();
  FS_ASSIGN_OR_RETURN(std::unique_ptr<Model> model, Model::Open(model_path));
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const worker::Tokenizer* tok = model->tokenizer();

  std::vector<TokenId> prompt;
  if (!f.prompt_tokens.empty()) {
    FS_ASSIGN_OR_RETURN(prompt, ParseTokenList(f.prompt_tokens));
  } else {
    FS_ASSIGN_OR_RETURN(std::string text, PromptText(f));
    if (tok == nullptr) return FailedPrecondition("model " + model_path + " has no tokenizer; use --prompt-tokens");
    if (f.chat) {
      FS_ASSIGN_OR_RETURN(text, tok->FormatChat(text));
    }
    prompt = tok->Encode(text, /*add_bos=*/true, /*parse_special=*/f.chat);
  }

  // What runs, as foresight-worker would run this request (worker/serving_options.h): an
  // AttentionPredictor request whose prompt and --max-tokens fit its budget runs dense.
  FS_ASSIGN_OR_RETURN(worker::ServingPlan plan,
                      worker::ResolveServing(f.serving, "", 0, static_cast<int64_t>(prompt.size()), f.max_tokens,
                                             model->config(), /*kv_offloaded=*/false));
  worker::GenerateOptions options;
  std::unique_ptr<worker::PolicyDecodeAttention> policy;
  if (plan.spec) {
    FS_ASSIGN_OR_RETURN(policy, worker::PolicyDecodeAttention::Create(
                                    model->config(), *plan.spec, static_cast<int64_t>(prompt.size()), plan.attention));
    options.hook = policy.get();
    options.prefill_observer = policy.get();
    options.after_prefill = [&] { return policy->FinishPrefill(); };
    options.after_step = [&] { return policy->status(); };
  }
  options.max_tokens = f.max_tokens;
  options.ignore_eos = f.ignore_eos;
  options.prefill_chunk = f.serving.prefill_chunk;
#if FORESIGHT_WORKER_HAVE_CUDA
  std::unique_ptr<worker::Backend> cuda_backend;
  if (f.backend == "cuda") {
    FS_ASSIGN_OR_RETURN(cuda_backend, worker::NewCudaBackend(*model));
    options.backend = cuda_backend.get();
  }
#endif
  options.sampling = f.sampling;
  options.stop = f.stop;
  if (!f.json) {
    options.on_text = [](const std::string& text) {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    };
  }
  FS_ASSIGN_OR_RETURN(worker::GenerateResult result, worker::Generate(*model, prompt, options));
  const worker::SequenceStats& s = result.stats;
  const double prefill_tps = s.prefill_seconds > 0 ? s.prefill_tokens / s.prefill_seconds : 0;
  const double decode_tps = s.decode_seconds > 0 ? s.decode_tokens / s.decode_seconds : 0;
  const double blocks_per_step = s.decode_tokens > 0 ? static_cast<double>(s.blocks_attended) / s.decode_tokens : 0;
  const double predictor_ms =
      policy != nullptr && s.decode_tokens > 0 ? 1e3 * policy->predictor_seconds() / s.decode_tokens : 0.0;
  if (f.json) {
    nlohmann::json j;
    j["model"] = model_path;
    j["policy"] = plan.policy;
    if (!plan.weights.empty()) j["weights"] = plan.weights;
    j["budget"] = plan.budget;
    j["backend"] = f.backend;
    j["prompt_tokens"] = prompt.size();
    j["generated_tokens"] = result.tokens.size();
    j["finish_reason"] = result.finish_reason;
    j["text"] = result.text;
    if (f.sampling.temperature > 0) {
      j["sampling"] = {{"temperature", f.sampling.temperature},
                       {"top_k", f.sampling.top_k},
                       {"top_p", f.sampling.top_p},
                       {"seed", f.sampling.seed}};
    }
    if (!f.stop.empty()) j["stop"] = f.stop;
    if (f.print_tokens) j["tokens"] = result.tokens;
    j["load_seconds"] = load_s;
    j["prefill_tokens_per_second"] = prefill_tps;
    j["decode_tokens_per_second"] = decode_tps;
    j["decode_attention_seconds"] = s.attention_seconds;
    j["blocks_attended_per_step"] = blocks_per_step;
    j["blocks_total_per_step"] = s.decode_tokens > 0 ? static_cast<double>(s.blocks_total) / s.decode_tokens : 0;
    j["predictor_ms_per_step"] = predictor_ms;
    std::cout << j.dump(2) << std::endl;
  } else {
    std::string policy_details;
    if (plan.spec) policy_details = " budget " + std::to_string(plan.budget);
    if (!plan.weights.empty()) policy_details += ", weights " + plan.weights;
    if (plan.fits_budget) {
      policy_details += " (asked for " + f.serving.default_policy + ": the prompt and --max-tokens fit its budget of " +
                        std::to_string(f.serving.default_budget) + ")";
    }
    std::printf("\n");
    if (f.print_tokens) {
      for (TokenId id : result.tokens) std::printf("%d ", id);
      std::printf("\n");
    }
    std::fprintf(
        stderr,
        "-- %s: prompt %zu tokens, generated %zu (%s); prefill %.1f tok/s, decode %.1f tok/s; "
        "blocks attended %.1f of %.1f per step (all layers and KV heads); policy %s%s; predictor %.2f ms/step\n",
        model_path.c_str(), prompt.size(), result.tokens.size(), result.finish_reason.c_str(), prefill_tps, decode_tps,
        blocks_per_step, s.decode_tokens > 0 ? static_cast<double>(s.blocks_total) / s.decode_tokens : 0.0,
        plan.policy.c_str(), policy_details.c_str(), predictor_ms);
  }
  return Status::OK();
}

struct TraceFlags {
  std::string model;
  std::string prompt_file;
  std::string prompt_tokens;
  int decode = 64;
  std::string out;
  bool chat = false;
};

Status RunTrace(const TraceFlags& f) {
  FS_ASSIGN_OR_RETURN(std::string model_path, ResolveModel(f.model));
  FS_ASSIGN_OR_RETURN(std::unique_ptr<Model> model, Model::Open(model_path));
  std::vector<TokenId> prompt;
  if (!f.prompt_tokens.empty()) {
    FS_ASSIGN_OR_RETURN(prompt, ParseTokenList(f.prompt_tokens));
  } else {
    if (f.prompt_file.empty()) return InvalidArgument("give --prompt-file F or --prompt-tokens IDS");
    FS_ASSIGN_OR_RETURN(std::string text, ReadWholeFile(f.prompt_file, "--prompt-file " + f.prompt_file));
    if (model->tokenizer() == nullptr)
      return FailedPrecondition("model " + model_path + " has no tokenizer; use --prompt-tokens");
    if (f.chat) {
      FS_ASSIGN_OR_RETURN(text, model->tokenizer()->FormatChat(text));
    }
    prompt = model->tokenizer()->Encode(text, true, f.chat);
  }
  FS_ASSIGN_OR_RETURN(worker::TraceSummary s,
                      worker::RecordTrace(*model, prompt, f.decode, f.out, {{"prompt_file", f.prompt_file}}));
  std::printf("wrote %s: %lld prompt tokens, %lld dense decode steps, %d layers, %.1f s\n", f.out.c_str(),
              static_cast<long long>(s.prompt_tokens), static_cast<long long>(s.decode_steps), model->config().n_layers,
              s.seconds);
  return Status::OK();
}

struct QualityFlags {
  std::string model;
  std::string text;
  int64_t context = 4096;
  int64_t predict = 64;
  std::string policy = "all";
  std::string budgets = "256,512,1024,2048";
  std::string weights;
  int dense_layers = 0;
  int sink = 64;
  int local = 64;
  int calibration_period = 5;
  std::string query_refine = "0";
  std::string refine_scorer = "compact";
  std::string calibration_source = "exact";
  std::string update_periods;  // empty: the served one
  bool json = false;
};

Status RunQuality(const QualityFlags& f) {
  FS_ASSIGN_OR_RETURN(std::string model_path, ResolveModel(f.model));
  FS_ASSIGN_OR_RETURN(std::unique_ptr<Model> model, Model::Open(model_path));
  if (model->tokenizer() == nullptr) return FailedPrecondition("model " + model_path + " has no tokenizer");
  FS_ASSIGN_OR_RETURN(std::string text, ReadWholeFile(f.text, "--text " + f.text));
  const std::vector<TokenId> tokens = model->tokenizer()->Encode(text, true, false);
  worker::QualitySpec spec;
  spec.dense_first_layers = f.dense_layers;
  spec.sink_tokens = f.sink;
  spec.local_tokens = f.local;
  spec.calibration_period = f.calibration_period;
  FS_ASSIGN_OR_RETURN(spec.budgets, ParseIntList(f.budgets, "--budget", 1, std::numeric_limits<int32_t>::max()));
  std::string item;
  spec.query_refine.clear();
  std::stringstream refines(f.query_refine);
  while (std::getline(refines, item, ',')) {
    char* end = nullptr;
    const float v = std::strtof(item.c_str(), &end);
    if (item.empty() || *end != '\0' || !(v >= 0.0f && v <= 1.0f)) {
      return InvalidArgument("--query-refine takes shares between 0 and 1 (comma-separated), got '" + item + "'");
    }
    spec.query_refine.push_back(v);
  }
  if (!f.update_periods.empty()) {
    FS_ASSIGN_OR_RETURN(std::vector<int64_t> periods, ParseIntList(f.update_periods, "--update-period", 1, 64));
    spec.update_periods.assign(periods.begin(), periods.end());
  }
  if (f.refine_scorer == "compact" || f.refine_scorer == "lookahead") {
    spec.refine_scorer = predictor::PolicySpec::RefineScorer::kQueryBlockScores;
    spec.lookahead_query = f.refine_scorer == "lookahead";
  } else if (f.refine_scorer == "quest") {
    spec.refine_scorer = predictor::PolicySpec::RefineScorer::kQuestBound;
  } else {
    return InvalidArgument("--refine-scorer is compact, lookahead or quest, got '" + f.refine_scorer + "'");
  }
  if (f.calibration_source == "compact") {
    spec.calibration_source = worker::CalibrationSource::kCompactKeys;
  } else if (f.calibration_source != "exact") {
    return InvalidArgument("--calibration-source is exact or compact, got '" + f.calibration_source + "'");
  }
  if (f.policy == "all") {
    for (predictor::PolicyKind k : predictor::AllPolicyKinds()) {
      spec.policies.push_back(k);
    }
  } else {
    std::stringstream ss(f.policy);
    while (std::getline(ss, item, ',')) {
      std::replace(item.begin(), item.end(), '-', '_');
      FS_ASSIGN_OR_RETURN(predictor::PolicyKind k, predictor::ParsePolicyKind(item));
      spec.policies.push_back(k);
    }
  }
  if (std::find(spec.policies.begin(), spec.policies.end(), predictor::PolicyKind::kAttentionPredictor) !=
      spec.policies.end()) {
    StatusOr<std::shared_ptr<const predictor::CnnWeights>> w = predictor::LoadCnnWeightsOrShipped(f.weights);
    if (!w.ok()) return w.status().WithContext("--weights");
    spec.weights = *w;
    if (!f.json) std::printf("AttentionPredictor weights: %s\n", predictor::CnnWeightsName(f.weights).c_str());
  }
  FS_ASSIGN_OR_RETURN(std::vector<worker::QualityRow> rows,
                      worker::EvaluateQuality(*model, tokens, f.context, f.predict, spec));
  if (f.json) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& r : rows) {
      j.push_back({{"policy", r.policy},
                   {"budget", r.budget},
                   {"context", r.context},
                   {"perplexity", r.perplexity},
                   {"top1_agreement", r.top1_agreement},
                   {"recovery", r.recovery},
                   {"sparse_recovery", r.sparse_recovery},
                   {"blocks_fraction", r.blocks_fraction},
                   {"query_refine", r.query_refine},
                   {"update_period", r.update_period}});
    }
    std::cout << j.dump(2) << std::endl;
  } else {
    std::printf("%-22s %7s %8s %11s %9s %9s %9s %8s %7s %7s\n", "policy", "budget", "context", "perplexity", "top1_agr",
                "recovery", "sparse", "blocks", "refine", "period");
    for (const auto& r : rows) {
      std::printf("%-22s %7lld %8lld %11.3f %9.3f %9.4f %9.4f %8.3f %7.2f %7d\n", r.policy.c_str(),
                  static_cast<long long>(r.budget), static_cast<long long>(r.context), r.perplexity, r.top1_agreement,
                  r.recovery, r.sparse_recovery, r.blocks_fraction, r.query_refine, r.update_period);
    }
  }
  return Status::OK();
}

void Report(const Status& s, int* exit_code) {
  if (s.ok()) {
    *exit_code = 0;
    return;
  }
  std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
  *exit_code = 1;
}

}  // namespace

void AddWorkerCommands(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<GenerateFlags>();
  CLI::App* gen = app.add_subcommand(
      "generate", "Generate text with the worker engine (greedy decoding, or sampled with --temperature)");
  gen->add_option("--model", flags->model,
                  "GGUF file or Hugging Face folder (default: SmolLM2-135M-Instruct in $FORESIGHT_MODELS or "
                  "~/.cache/foresight/models)");
  gen->add_option("--prompt-file", flags->prompt_file, "File holding the prompt text");
  gen->add_option("--prompt", flags->prompt, "Prompt text");
  gen->add_option("--prompt-tokens", flags->prompt_tokens, "Prompt as comma-separated token ids");
  gen->add_option("--max-tokens", flags->max_tokens, "Most tokens to generate")->check(kPositive);
  gen->add_option("--temperature", flags->sampling.temperature,
                  "Sample from softmax(logits / T) (default 0: greedy, the most likely token)");
  gen->add_option("--top-k", flags->sampling.top_k,
                  "With --temperature: sample among the K most likely tokens (0: all)")
      ->check(kNonNegative);
  gen->add_option("--top-p", flags->sampling.top_p,
                  "With --temperature: sample among the fewest most likely tokens whose probability reaches P "
                  "(nucleus; default 1: all)");
  gen->add_option("--seed", flags->sampling.seed,
                  "With --temperature: the random stream (the same seed gives the same tokens; default 0)");
  gen->add_option("--stop", flags->stop,
                  "End generation at this text, which is not printed (repeat for several; finish reason \"stop\")")
      ->allow_extra_args(false);
  gen->add_flag("--ignore-eos", flags->ignore_eos,
                "Keep generating past the model's end-of-generation tokens, to --max-tokens (vLLM's ignore_eos)");
  gen->add_flag("--chat", flags->chat, "Wrap the prompt in the model's chat template (instruct models)");
  flags->serving_flags = worker::AddServingFlags(gen, &flags->serving);
  flags->serving_flags.policy->description(
      "Decode attention: ap (AttentionPredictor as served: query-refined, see --query-refine), attention_predictor "
      "(the same), dense, quest, h2o, snapkv, streaming_llm (default: ap; with --worker, the worker's default); ap "
      "runs dense when the prompt and --max-tokens fit its budget");
  flags->serving_flags.budget->description(
      "Tokens attended per KV head by sparse policies, sink and local included (default 1024; with --worker, the "
      "worker's default)");
  gen->add_option("--threads", flags->threads, "OpenMP threads (default: all cores)")->check(kPositive);
  gen->add_option("--prefill-chunk", flags->serving.prefill_chunk, "Tokens per prefill chunk")->check(kPositive);
  gen->add_flag("--json", flags->json, "Print one JSON object (text and statistics)");
  gen->add_option("--backend", flags->backend, "Where the forward pass runs: cpu, or cuda (GPU; every --policy)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  gen->add_flag("--print-tokens", flags->print_tokens, "Also print the generated token ids");
  gen->add_option("--worker", flags->worker,
                  "Generate on a foresight-worker at HOST:PORT (its model, KV shared through its cache service)");
  gen->add_option("--token-file", flags->token_file, "With --worker: the worker's token");
  gen->add_flag("--no-prefix-reuse", flags->no_prefix_reuse,
                "With --worker: prefill the whole prompt even if a prefix of it is published (cold start)");
  gen->callback([flags, exit_code] { Report(RunGenerate(*flags), exit_code); });

  auto tflags = std::make_shared<TraceFlags>();
  CLI::App* trace =
      app.add_subcommand("trace", "Record an attention trace (dense prefill + N dense decode steps) for the predictor");
  trace->add_option("--model", tflags->model, "GGUF file or Hugging Face folder (default: SmolLM2)");
  trace->add_option("--prompt-file", tflags->prompt_file, "File holding the prompt text");
  trace->add_option("--prompt-tokens", tflags->prompt_tokens, "Prompt as comma-separated token ids");
  trace->add_option("--decode", tflags->decode, "Dense decode steps to record")->check(kNonNegative);
  trace->add_option("--out", tflags->out, "Trace file to write (safetensors, docs/trace-format.md)")->required();
  trace->add_flag("--chat", tflags->chat, "Wrap the prompt in the model's chat template");
  trace->callback([tflags, exit_code] { Report(RunTrace(*tflags), exit_code); });

  CLI::App* eval = app.add_subcommand("eval", "Evaluate the engine");
  auto qflags = std::make_shared<QualityFlags>();
  CLI::App* quality = eval->add_subcommand(
      "quality", "Teacher-forced perplexity and top-1 agreement with dense decoding, per policy and budget");
  quality->add_option("--model", qflags->model, "GGUF file or Hugging Face folder (default: SmolLM2)");
  quality->add_option("--text", qflags->text, "Long text file (held-out document)")->required();
  quality->add_option("--context", qflags->context, "Tokens prefilled densely")->check(kPositive);
  quality->add_option("--predict", qflags->predict, "Tokens predicted after the context")->check(kPositive);
  quality->add_option("--policy", qflags->policy, "all, or a comma list of policies");
  quality->add_option("--budget", qflags->budgets, "Comma-separated token budgets");
  quality->add_option("--weights", qflags->weights,
                      "AttentionPredictor CNN weights, a safetensors file (default: the shipped foresight-smollm2 "
                      "weights)");
  quality->add_option("--sink", qflags->sink, "Sink tokens always attended (part of the budget)")->check(kNonNegative);
  quality->add_option("--local", qflags->local, "Most recent tokens always attended (part of the budget)")
      ->check(kNonNegative);
  quality
      ->add_option("--calibration-period", qflags->calibration_period,
                   "AttentionPredictor: a dense calibration step every M decode steps (0: never)")
      ->check(kNonNegative);
  quality->add_option("--query-refine", qflags->query_refine,
                      "AttentionPredictor: share of the kept blocks chosen by the step's query (Quest bound) "
                      "instead of the CNN; a comma list gives one row each (0: the published method)");
  quality->add_option("--calibration-source", qflags->calibration_source,
                      "AttentionPredictor's calibration rows: exact (that step attends densely) or compact (scored "
                      "against the worker's int8 key copy; attention stays sparse)");
  quality->add_option("--refine-scorer", qflags->refine_scorer,
                      "How --query-refine scores the query: compact (int8 key copy on the worker, default), lookahead "
                      "(the same, with each layer's query estimated one layer early, so that its blocks can be fetched "
                      "a layer ahead) or quest (key min/max bound)");
  quality->add_option("--update-period", qflags->update_periods,
                      "AttentionPredictor as served (--query-refine above 0): the CNN is updated every K steps, its "
                      "scores reused in between; a comma list gives one row each (default: the served period)");
  quality->add_option("--dense-layers", qflags->dense_layers, "First layers kept dense")->check(kNonNegative);
  quality->add_flag("--json", qflags->json, "JSON rows");
  quality->callback([qflags, exit_code] { Report(RunQuality(*qflags), exit_code); });
  eval->require_subcommand(1);
}

}  // namespace foresight::cli
