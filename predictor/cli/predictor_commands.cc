// `foresight predictor cnn|eval`: run the published CNN over tensors, and evaluate selection
// policies on recorded traces.
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "common/safetensors.h"
#include "common/units.h"
#include "predictor/cli/predictor_commands.h"
#include "predictor/cnn_cpu.h"
#include "predictor/cnn_weights.h"
#include "predictor/recovery_eval.h"
#include "predictor/shipped_weights.h"
#include "predictor/trace.h"

namespace foresight::cli {
namespace {

using namespace foresight::predictor;

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::vector<std::string> SplitCommas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

struct CnnArgs {
  std::string weights, input, output, expect_suffix;
  double tolerance = 1e-5;
  int threads = 0;
};

int RunCnnCommand(const CnnArgs& a) {
  auto weights = LoadCnnWeightsOrShipped(a.weights);
  if (!weights.ok()) {
    std::fprintf(stderr, "predictor cnn: %s\n", weights.status().ToString().c_str());
    return 1;
  }
  auto input = SafetensorsFile::Open(a.input);
  if (!input.ok()) {
    std::fprintf(stderr, "predictor cnn: %s\n", input.status().ToString().c_str());
    return 1;
  }
  const int threads = a.threads > 0 ? a.threads : omp_get_max_threads();
  std::vector<std::vector<float>> outputs_data;
  std::vector<TensorToWrite> outputs;
  int failures = 0, ran = 0;
  for (const auto& [name, tensor] : (*input)->tensors()) {
    if (!EndsWith(name, ".input")) continue;
    if (tensor.shape.size() != 3 || tensor.shape[1] != kCnnRows) {
      std::fprintf(stderr, "predictor cnn: %s in %s has shape of rank %zu; expected float [N, 64, L]\n", name.c_str(),
                   a.input.c_str(), tensor.shape.size());
      return 1;
    }
    const int64_t n = tensor.shape[0], l = tensor.shape[2];
    const std::string prefix = name.substr(0, name.size() - 6);
    const std::vector<float> x = tensor.ToFloat32();
    std::vector<float> y(n * l);
    std::vector<HistoryImage> images;
    std::vector<float*> outs;
    for (int64_t i = 0; i < n; ++i) {
      images.push_back(HistoryImage::Contiguous(&x[i * kCnnRows * l], l, l));
      outs.push_back(&y[i * l]);
    }
    const auto t0 = std::chrono::steady_clock::now();
    RunCnnBatch(**weights, images, outs, threads);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%s: [%lld, 64, %lld] -> %s.output [%lld, %lld] in %.2f ms", name.c_str(), static_cast<long long>(n),
                static_cast<long long>(l), prefix.c_str(), static_cast<long long>(n), static_cast<long long>(l), ms);
    if (!a.expect_suffix.empty()) {
      auto expected = (*input)->Get(prefix + "." + a.expect_suffix);
      if (!expected.ok()) {
        std::printf("\n");
        std::fprintf(stderr, "predictor cnn: %s\n", expected.status().ToString().c_str());
        return 1;
      }
      // Relative error: max |y - expected| over the tensor / max |expected|.
      const std::vector<double> want = (*expected)->ToFloat64();
      double diff = 0.0, ref = 0.0;
      for (size_t i = 0; i < want.size() && i < y.size(); ++i) {
        diff = std::max(diff, std::abs(y[i] - want[i]));
        ref = std::max(ref, std::abs(want[i]));
      }
      const double rel = ref > 0 ? diff / ref : diff;
      const bool ok = want.size() == y.size() && rel < a.tolerance;
      failures += ok ? 0 : 1;
      std::printf(", relative error vs %s.%s: %.3g (%s)", prefix.c_str(), a.expect_suffix.c_str(), rel,
                  ok ? "ok" : "FAIL");
    }
    std::printf("\n");
    outputs.push_back(TensorToWrite::F32(prefix + ".output", {n, l}, y.data()));
    ++ran;
  }
  if (ran == 0) {
    std::fprintf(stderr, "predictor cnn: %s holds no tensor named *.input\n", a.input.c_str());
    return 1;
  }
  std::printf("weights: %s\n", CnnWeightsName(a.weights).c_str());
  Status s = WriteSafetensors(a.output, outputs, {{"weights", CnnWeightsName(a.weights)}, {"input", a.input}});
  if (!s.ok()) {
    std::fprintf(stderr, "predictor cnn: writing %s: %s\n", a.output.c_str(), s.ToString().c_str());
    return 1;
  }
  if (failures > 0) {
    std::fprintf(stderr, "predictor cnn: %d tensor(s) exceed relative error %.3g\n", failures, a.tolerance);
    return 2;
  }
  return 0;
}

struct EvalArgs {
  std::string traces, policies = "all", budgets = "256,512,1024,2048", weights;
  int64_t sink = 64, local = 64;
  int calibration = 5, dense_layers = 0, snapkv_window = 32, threads = 0;
  float prune_threshold = 1e-3f;
  bool json = false, attend_union = false, per_layer = false;
};

// Policy names: the seven kinds, plus AttentionPredictor's cost-reduction variants
// ap_per_kv_head, ap_reuseK (K = steps a prediction is reused), ap_prune, and ap_served_cnn (the
// served predictor's CNN: per KV head, updated every PolicySpec::kServingUpdatePeriod steps; its
// query share needs keys, which traces do not hold: `foresight eval quality` measures that).
StatusOr<PolicyVariant> ParseVariant(const std::string& name, const PolicySpec& base) {
  PolicyVariant v{name, base};
  v.spec.prune_threshold = 0.0f;  // only ap_prune prunes
  if (name == "ap_served_cnn") {  // the served predictor's CNN settings (traces hold no keys for its query share)
    v.spec.kind = PolicyKind::kAttentionPredictor;
    v.spec.predict_per_kv_head = true;
    v.spec.reuse_steps = PolicySpec::kServingUpdatePeriod;
    return v;
  }
  if (name == "ap_per_kv_head") {
    v.spec.kind = PolicyKind::kAttentionPredictor;
    v.spec.predict_per_kv_head = true;
    return v;
  }
  if (name.rfind("ap_reuse", 0) == 0) {
    v.spec.kind = PolicyKind::kAttentionPredictor;
    try {
      v.spec.reuse_steps = std::stoi(name.substr(8));
    } catch (...) {
      return InvalidArgument("policy " + name + ": expected ap_reuseK with K an integer >= 2");
    }
    return v;
  }
  if (name == "ap_prune") {
    v.spec.kind = PolicyKind::kAttentionPredictor;
    v.spec.prune_threshold = base.prune_threshold;
    return v;
  }
  FS_ASSIGN_OR_RETURN(v.spec.kind, ParsePolicyKind(name));
  v.label = std::string(PolicyKindName(v.spec.kind));
  return v;
}

int RunEvalCommand(const EvalArgs& a) {
  PolicySpec base;
  base.budget.sink_tokens = a.sink;
  base.budget.local_tokens = a.local;
  base.calibration_period = a.calibration;
  base.dense_first_layers = a.dense_layers;
  base.snapkv_window = a.snapkv_window;
  base.prune_threshold = a.prune_threshold;
  RecoveryOptions options;
  options.attend_kv_union = a.attend_union;
  options.threads = a.threads > 0 ? a.threads : omp_get_max_threads();
  std::vector<std::string> names;
  for (const std::string& name : SplitCommas(a.policies)) {
    if (name != "all") {
      names.push_back(name);
      continue;
    }
    for (PolicyKind k : AllPolicyKinds()) names.emplace_back(PolicyKindName(k));
  }
  bool needs_weights = false;
  for (const std::string& name : names) {
    auto v = ParseVariant(name, base);
    if (!v.ok()) {
      std::fprintf(stderr, "predictor eval: %s\n", v.status().ToString().c_str());
      return 1;
    }
    needs_weights |= v->spec.kind == PolicyKind::kAttentionPredictor;
    options.variants.push_back(std::move(*v));
  }
  if (needs_weights) {
    auto w = LoadCnnWeightsOrShipped(a.weights);
    if (!w.ok()) {
      std::fprintf(stderr, "predictor eval: %s\n", w.status().ToString().c_str());
      return 1;
    }
    for (auto& v : options.variants) v.spec.weights = *w;
  }
  auto budgets = ParseIntList(a.budgets, "--budget", 1, std::numeric_limits<int32_t>::max());
  if (!budgets.ok()) {
    std::fprintf(stderr, "predictor eval: %s\n", budgets.status().message().c_str());
    return 1;
  }
  options.budgets = *budgets;
  std::vector<Trace> traces;
  for (const std::string& path : SplitCommas(a.traces)) {
    auto t = Trace::Load(path);
    if (!t.ok()) {
      std::fprintf(stderr, "predictor eval: %s\n", t.status().ToString().c_str());
      return 1;
    }
    traces.push_back(std::move(*t));
  }
  std::vector<const Trace*> trace_ptrs;
  for (const Trace& t : traces) trace_ptrs.push_back(&t);
  const auto t0 = std::chrono::steady_clock::now();
  auto results = EvaluateRecovery(trace_ptrs, options);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!results.ok()) {
    std::fprintf(stderr, "predictor eval: %s\n", results.status().ToString().c_str());
    return 1;
  }
  const TraceGeometry& g = traces[0].geometry();
  if (a.json) {
    nlohmann::json rows = nlohmann::json::array();
    for (const auto& r : *results) {
      rows.push_back({{"policy", r.label},
                      {"budget", r.budget},
                      {"recovery", r.recovery},
                      {"kv_union_recovery", r.kv_union_recovery},
                      {"per_layer", r.per_layer},
                      {"samples", r.samples},
                      {"mean_selected_blocks", r.mean_selected_blocks},
                      {"policy_seconds", r.select_seconds}});
    }
    nlohmann::json doc = {{"traces", SplitCommas(a.traces)},
                          {"layers", g.layers},
                          {"q_heads", g.q_heads},
                          {"kv_heads", g.kv_heads},
                          {"weights", needs_weights ? CnnWeightsName(a.weights) : ""},
                          {"calibration_period", a.calibration},
                          {"sink", a.sink},
                          {"local", a.local},
                          {"results", rows}};
    std::printf("%s\n", doc.dump(2).c_str());
    return 0;
  }
  std::printf(
      "%zu trace(s), %d layers, %d query heads / %d KV heads; recovery = share of dense "
      "attention mass on the selected blocks (mean over layers, heads, steps)\n",
      traces.size(), g.layers, g.q_heads, g.kv_heads);
  if (needs_weights) std::printf("AttentionPredictor weights: %s\n", CnnWeightsName(a.weights).c_str());
  std::printf("%-22s %7s %9s %10s %8s %10s\n", "policy", "budget", "recovery", "kv_union", "blocks", "policy_s");
  for (const auto& r : *results) {
    std::printf("%-22s %7lld %9.4f %10.4f %8.1f %10.3f\n", r.label.c_str(), static_cast<long long>(r.budget),
                r.recovery, r.kv_union_recovery, r.mean_selected_blocks, r.select_seconds);
  }
  if (a.per_layer) {
    std::printf("\nper-layer recovery\n%-22s %7s", "policy", "budget");
    for (int l = 0; l < g.layers; ++l) std::printf(" %6d", l);
    std::printf("\n");
    for (const auto& r : *results) {
      std::printf("%-22s %7lld", r.label.c_str(), static_cast<long long>(r.budget));
      for (double v : r.per_layer) std::printf(" %6.3f", v);
      std::printf("\n");
    }
  }
  std::printf("(%.1f s)\n", seconds);
  return 0;
}

}  // namespace

void AddPredictorCommands(CLI::App& app, int* exit_code) {
  CLI::App* predictor = app.add_subcommand("predictor", "AttentionPredictor tools: run the CNN, evaluate policies");
  predictor->require_subcommand(1);

  auto cnn_args = std::make_shared<CnnArgs>();
  CLI::App* cnn =
      predictor->add_subcommand("cnn", "Run the CNN over every *.input tensor [N, 64, L]; write *.output [N, L]");
  cnn->add_option("--weights", cnn_args->weights,
                  "CNN weights (safetensors, published layout; default: the shipped foresight-smollm2 weights)");
  cnn->add_option("--input", cnn_args->input, "safetensors with tensors named *.input")->required();
  cnn->add_option("--output", cnn_args->output, "safetensors to write *.output tensors to")->required();
  cnn->add_option(
      "--expect-suffix", cnn_args->expect_suffix,
      "compare each output with <prefix>.<suffix> in the input file (e.g. llama3.1) and fail above --tolerance");
  cnn->add_option("--tolerance", cnn_args->tolerance, "relative error bound for --expect-suffix");
  cnn->add_option("--threads", cnn_args->threads, "OpenMP threads (default: all cores)");
  cnn->callback([cnn_args, exit_code] { *exit_code = RunCnnCommand(*cnn_args); });

  auto eval_args = std::make_shared<EvalArgs>();
  CLI::App* eval = predictor->add_subcommand("eval", "Attention recovery rate of selection policies on traces");
  eval->add_option("--trace", eval_args->traces, "trace file(s), comma-separated (docs/trace-format.md)")->required();
  eval->add_option("--policy", eval_args->policies,
                   "all, or a comma list of attention_predictor, quest, h2o, snapkv, streaming_llm, "
                   "oracle, dense, ap_per_kv_head, ap_reuseK, ap_prune, ap_served_cnn");
  eval->add_option("--budget", eval_args->budgets, "token budgets, sink and local included");
  eval->add_option("--weights", eval_args->weights,
                   "CNN weights for attention_predictor (default: the shipped foresight-smollm2 weights)");
  eval->add_option("--sink", eval_args->sink, "sink tokens");
  eval->add_option("--local", eval_args->local, "local tokens");
  eval->add_option("--calibration", eval_args->calibration, "AttentionPredictor: dense row every M steps (0: never)");
  eval->add_option("--dense-layers", eval_args->dense_layers, "first layers kept dense for every policy");
  eval->add_option("--snapkv-window", eval_args->snapkv_window, "SnapKV observation window (queries)");
  eval->add_option("--prune-threshold", eval_args->prune_threshold, "ap_prune: receptive-field threshold");
  eval->add_option("--threads", eval_args->threads, "OpenMP threads (default: all cores)");
  eval->add_flag("--attend-union", eval_args->attend_union,
                 "sparse steps attend the KV head's union (what is fetched) instead of the query head's own blocks");
  eval->add_flag("--per-layer", eval_args->per_layer, "print the per-layer breakdown");
  eval->add_flag("--json", eval_args->json, "JSON output (always includes per-layer values)");
  eval->callback([eval_args, exit_code] { *exit_code = RunEvalCommand(*eval_args); });
}

}  // namespace foresight::cli
