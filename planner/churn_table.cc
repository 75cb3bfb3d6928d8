#include "planner/churn_table.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "common/file_io.h"
#include "common/json_fields.h"
#include "predictor/recovery_eval.h"
#include "predictor/shipped_weights.h"
#include "predictor/trace.h"
#include "worker/offload/offloaded_sequence.h"

namespace foresight::planner {

namespace internal {
extern const unsigned char kShippedChurnTable[];
extern const size_t kShippedChurnTable_size;
}  // namespace internal

namespace {

StatusOr<predictor::PolicyVariant> MakeVariant(const std::string& name,
                                               std::shared_ptr<const predictor::CnnWeights> weights) {
  predictor::PolicyVariant v;
  v.label = name;
  v.spec.weights = std::move(weights);
  if (name == "ap") {
    v.spec.kind = predictor::PolicyKind::kAttentionPredictor;
    v.spec.predict_per_kv_head = true;
    v.spec.reuse_steps = predictor::PolicySpec::kServingUpdatePeriod;
    v.spec.query_refine = predictor::PolicySpec::kServingQueryRefine;
    v.spec.refine_scorer = predictor::PolicySpec::RefineScorer::kQuestBound;
    return v;
  }
  const auto policies = ChurnPolicies();
  if (std::find(policies.begin(), policies.end(), name) == policies.end()) {
    std::string known;
    for (const auto& p : policies) known += (known.empty() ? "" : ", ") + p;
    return InvalidArgument("--policies: \"" + name + "\" is not one of " + known);
  }
  FS_ASSIGN_OR_RETURN(v.spec.kind, predictor::ParsePolicyKind(name));
  return v;
}

}  // namespace

std::vector<std::string> ChurnPolicies() {
  return {"ap", "attention_predictor", "quest", "h2o", "snapkv", "streaming_llm"};
}

double RamHitRateAt(const RamHitRateCurve& curve, double ram_share) {
  ram_share = std::max(0.0, ram_share);
  const auto& p = curve.points;
  if (p.empty()) return std::min(1.0, ram_share);
  if (ram_share >= p.back().ram_share) return p.back().hit_rate;
  if (ram_share <= p.front().ram_share) return p.front().hit_rate * ram_share / p.front().ram_share;
  for (size_t i = 1; i < p.size(); ++i) {
    if (ram_share <= p[i].ram_share) {
      const double t = (ram_share - p[i - 1].ram_share) / (p[i].ram_share - p[i - 1].ram_share);
      return p[i - 1].hit_rate + t * (p[i].hit_rate - p[i - 1].hit_rate);
    }
  }
  return p.back().hit_rate;
}

std::string ChurnTableToJson(const ChurnTable& table) {
  nlohmann::json j;
  j["format"] = kChurnTableFormat;
  j["version"] = kChurnTableVersion;
  j["block_tokens"] = table.block_tokens;
  j["command"] = table.command;
  j["pool_warmup_steps"] = table.pool_warmup_steps;
  j["traces"] = nlohmann::json::array();
  for (const ChurnTraceSource& t : table.traces) {
    j["traces"].push_back({{"file", t.file}, {"prompt_tokens", t.prompt_tokens}, {"decode_steps", t.decode_steps}});
  }
  j["served_decodes"] = nlohmann::json::array();
  for (const ServedDecode& d : table.served_decodes) {
    j["served_decodes"].push_back({{"file", d.file},
                                   {"policy", d.policy},
                                   {"budget", d.budget},
                                   {"context", d.context},
                                   {"from_step", d.from_step},
                                   {"steps", d.steps}});
  }
  j["rows"] = nlohmann::json::array();
  for (const ChurnRow& r : table.rows) {
    // Four decimals: the table is read by people and diffed when re-derived.
    auto round4 = [](double x) { return std::round(x * 1e4) / 1e4; };
    nlohmann::json row = {{"policy", r.policy},
                          {"budget", r.budget},
                          {"context", r.context},
                          {"source", r.source},
                          {"kv_union_blocks", round4(r.kv_union_blocks)},
                          {"pool_blocks", r.pool_blocks},
                          {"kv_pool_misses", round4(r.kv_pool_misses)}};
    if (r.source != "served") {
      row["kv_new_blocks"] = round4(r.kv_new_blocks);
      row["kv_pool_misses_warmup"] = round4(r.kv_pool_misses_warmup);
      row["recovery"] = round4(r.recovery);
    }
    j["rows"].push_back(std::move(row));
  }
  if (!table.ram_hit_rates.points.empty()) {
    const RamHitRateCurve& c = table.ram_hit_rates;
    nlohmann::json points = nlohmann::json::array();
    for (const RamHitRatePoint& pt : c.points) {
      points.push_back(
          {{"ram_share", std::round(pt.ram_share * 1e4) / 1e4}, {"hit_rate", std::round(pt.hit_rate * 1e4) / 1e4}});
    }
    j["ram_hit_rates"] = {
        {"policy", c.policy}, {"budget", c.budget}, {"sequences", c.sequences}, {"points", std::move(points)}};
  }
  return j.dump(1) + "\n";
}

StatusOr<ChurnTable> ParseChurnTable(const std::string& text, const std::string& source) {
  const std::string where = "churn table " + source;
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument(where + " is not a JSON object");
  auto format = JsonField<std::string>(j, "format", "");
  if (!format.ok() || *format != kChurnTableFormat) {
    return InvalidArgument(where + ": field \"format\" is not \"" + kChurnTableFormat + "\"");
  }
  auto version = JsonField<int>(j, "version", 0);
  if (!version.ok()) return version.status().WithContext(where);
  if (*version != 1 && *version != kChurnTableVersion) {
    return InvalidArgument(where + ": field \"version\" is " + std::to_string(*version) +
                           ", this planner reads 1 and " + std::to_string(kChurnTableVersion) +
                           " (re-derive it: tools/planner/derive-churn.sh)");
  }
  ChurnTable t;
  auto block_tokens = JsonField<int>(j, "block_tokens", 0);
  if (!block_tokens.ok()) return block_tokens.status().WithContext(where);
  if (*block_tokens <= 0) return InvalidArgument(where + ": field \"block_tokens\" must be positive");
  t.block_tokens = *block_tokens;
  auto command = JsonField<std::string>(j, "command", "");
  if (!command.ok()) return command.status().WithContext(where);
  t.command = *command;
  auto warmup = JsonField<int64_t>(j, "pool_warmup_steps", 1);
  if (!warmup.ok()) return warmup.status().WithContext(where);
  if (*warmup < 1) return InvalidArgument(where + ": field \"pool_warmup_steps\" must be at least 1");
  t.pool_warmup_steps = *warmup;
  if (j.contains("traces") && j["traces"].is_array()) {
    for (const auto& e : j["traces"]) {
      ChurnTraceSource s;
      FS_ASSIGN_OR_RETURN(s.file, JsonField<std::string>(e, "file", ""));
      FS_ASSIGN_OR_RETURN(s.prompt_tokens, JsonField<int64_t>(e, "prompt_tokens", 0));
      FS_ASSIGN_OR_RETURN(s.decode_steps, JsonField<int64_t>(e, "decode_steps", 0));
      t.traces.push_back(std::move(s));
    }
  }
  if (j.contains("served_decodes") && j["served_decodes"].is_array()) {
    for (const auto& e : j["served_decodes"]) {
      ServedDecode d;
      FS_ASSIGN_OR_RETURN(d.file, JsonField<std::string>(e, "file", ""));
      FS_ASSIGN_OR_RETURN(d.policy, JsonField<std::string>(e, "policy", ""));
      FS_ASSIGN_OR_RETURN(d.budget, JsonField<int64_t>(e, "budget", 0));
      FS_ASSIGN_OR_RETURN(d.context, JsonField<int64_t>(e, "context", 0));
      FS_ASSIGN_OR_RETURN(d.from_step, JsonField<int64_t>(e, "from_step", 0));
      FS_ASSIGN_OR_RETURN(d.steps, JsonField<int64_t>(e, "steps", 0));
      t.served_decodes.push_back(std::move(d));
    }
  }
  if (j.contains("ram_hit_rates")) {
    const auto& c = j["ram_hit_rates"];
    const std::string curve_where = where + ": ram_hit_rates";
    RamHitRateCurve& curve = t.ram_hit_rates;
    auto policy = JsonField<std::string>(c, "policy", "");
    auto budget = JsonField<int64_t>(c, "budget", 0);
    auto sequences = JsonField<int>(c, "sequences", 0);
    if (!policy.ok() || !budget.ok() || !sequences.ok() || !c.contains("points") || !c["points"].is_array()) {
      return InvalidArgument(curve_where + ": needs policy, budget, sequences and points");
    }
    curve.policy = *policy;
    curve.budget = *budget;
    curve.sequences = *sequences;
    for (const auto& e : c["points"]) {
      auto share = JsonField<double>(e, "ram_share", -1.0);
      auto hit = JsonField<double>(e, "hit_rate", -1.0);
      if (!share.ok() || !hit.ok() || !(*share > 0) || *hit < 0 || *hit > 1 ||
          (!curve.points.empty() && *share <= curve.points.back().ram_share)) {
        return InvalidArgument(curve_where + ": points need ram_share > 0, ascending, and hit_rate from 0 to 1");
      }
      curve.points.push_back({*share, *hit});
    }
  }
  const auto rows = j.find("rows");
  if (rows == j.end() || !rows->is_array() || rows->empty()) {
    return InvalidArgument(where + ": field \"rows\" is missing or empty");
  }
  for (size_t i = 0; i < rows->size(); ++i) {
    const auto& e = (*rows)[i];
    const std::string row_where = where + ": rows[" + std::to_string(i) + "]";
    ChurnRow r;
    auto get = [&]<typename T>(const char* key, T* out) -> Status {
      auto v = JsonField<T>(e, key, T{});
      if (!v.ok()) return v.status().WithContext(row_where);
      *out = *v;
      return Status::OK();
    };
    FS_RETURN_IF_ERROR(get("policy", &r.policy));
    FS_RETURN_IF_ERROR(get("budget", &r.budget));
    FS_RETURN_IF_ERROR(get("context", &r.context));
    if (e.contains("source")) FS_RETURN_IF_ERROR(get("source", &r.source));
    if (r.source != "served" && r.source != "replay") {
      return InvalidArgument(row_where + ": field \"source\" is \"" + r.source + "\" (served, replay)");
    }
    FS_RETURN_IF_ERROR(get("kv_union_blocks", &r.kv_union_blocks));
    FS_RETURN_IF_ERROR(get("pool_blocks", &r.pool_blocks));
    FS_RETURN_IF_ERROR(get("kv_pool_misses", &r.kv_pool_misses));
    if (r.source == "replay") {  // what only a replay gives
      FS_RETURN_IF_ERROR(get("kv_new_blocks", &r.kv_new_blocks));
      if (e.contains("kv_pool_misses_warmup"))
        FS_RETURN_IF_ERROR(get("kv_pool_misses_warmup", &r.kv_pool_misses_warmup));
      FS_RETURN_IF_ERROR(get("recovery", &r.recovery));
    }
    if (r.policy.empty() || r.budget <= 0 || r.context <= 0 || !(r.kv_union_blocks > 0) || r.kv_new_blocks < 0 ||
        r.kv_new_blocks > r.kv_union_blocks || r.pool_blocks <= 0 || r.kv_pool_misses < 0 ||
        r.kv_pool_misses > r.kv_union_blocks) {
      return InvalidArgument(row_where +
                             ": needs a policy, a positive budget, context and pool_blocks, kv_union_blocks > 0, and "
                             "kv_new_blocks and kv_pool_misses from 0 to kv_union_blocks");
    }
    t.rows.push_back(std::move(r));
  }
  return t;
}

StatusOr<ChurnTable> LoadChurnTable(const std::string& file) {
  FS_ASSIGN_OR_RETURN(std::string text, ReadWholeFile(file, "--churn " + file));
  return ParseChurnTable(text, file);
}

StatusOr<ServedDecode> LoadServedDecode(const std::string& file) {
  const std::string where = "--served " + file;
  FS_ASSIGN_OR_RETURN(std::string text, ReadWholeFile(file, where));
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_array() || j.empty()) {
    return InvalidArgument(where +
                           " is not the JSON rows of `foresight-bench decode --modes cross-token --no-reuse "
                           "--greedy --json`");
  }
  ServedDecode d;
  d.file = file;
  bool reuse_seen = false, no_reuse_seen = false;
  for (size_t i = 0; i < j.size(); ++i) {
    const auto& row = j[i];
    const std::string row_where = where + ": row " + std::to_string(i);
    FS_ASSIGN_OR_RETURN(const std::string mode, JsonField<std::string>(row, "mode", ""));
    FS_ASSIGN_OR_RETURN(const bool greedy, JsonField<bool>(row, "greedy", false));
    if (mode != "cross-token" || !greedy) {
      return InvalidArgument(row_where + ": mode \"" + mode + "\"" + (greedy ? "" : ", not greedy") +
                             " (run the bench with --modes cross-token --greedy --text FILE)");
    }
    FS_ASSIGN_OR_RETURN(const std::string policy, JsonField<std::string>(row, "policy", ""));
    FS_ASSIGN_OR_RETURN(const int64_t budget, JsonField<int64_t>(row, "budget", 0));
    FS_ASSIGN_OR_RETURN(const int64_t context, JsonField<int64_t>(row, "context", 0));
    FS_ASSIGN_OR_RETURN(const int64_t warmup, JsonField<int64_t>(row, "warmup", -1));
    FS_ASSIGN_OR_RETURN(const int64_t steps, JsonField<int64_t>(row, "steps", 0));
    FS_ASSIGN_OR_RETURN(const bool reuse, JsonField<bool>(row, "reuse", false));
    FS_ASSIGN_OR_RETURN(const double units, JsonField<double>(row, "heads_fetched_per_token", -1.0));
    if (policy.empty() || budget <= 0 || context <= 0 || warmup < 0 || steps <= 0 || units < 0) {
      return InvalidArgument(row_where +
                             ": needs a policy, positive budget, context and steps, a warmup and "
                             "heads_fetched_per_token");
    }
    if (i > 0 && (policy != d.policy || budget != d.budget || context != d.context)) {
      return InvalidArgument(row_where + ": another policy, budget or context than row 0 (one decode per file)");
    }
    d.policy = policy;
    d.budget = budget;
    d.context = context;
    // The bench decodes `warmup` steps, then one untimed step per turn: measured steps begin at warmup + 1.
    d.from_step = warmup + 1;
    d.steps = steps;
    (reuse ? d.units_per_token_reuse : d.units_per_token_no_reuse) = units;
    (reuse ? reuse_seen : no_reuse_seen) = true;
  }
  if (!reuse_seen || !no_reuse_seen) {
    return InvalidArgument(where + ": needs a row with reuse and one without (run the bench with --no-reuse)");
  }
  return d;
}

StatusOr<ChurnTable> ShippedChurnTable() {
  const std::string text(reinterpret_cast<const char*>(internal::kShippedChurnTable),
                         internal::kShippedChurnTable_size);
  return ParseChurnTable(text, "planner/data/churn-smollm2.json (shipped)");
}

StatusOr<ChurnEstimate> EstimateChurn(const ChurnTable& table, const std::string& policy, int64_t budget_tokens,
                                      int64_t context_tokens) {
  const ChurnRow* nearest = nullptr;
  double nearest_distance = INFINITY;
  std::string known;
  for (const ChurnRow& r : table.rows) {
    if (known.find(r.policy) == std::string::npos) known += (known.empty() ? "" : ", ") + r.policy;
    if (r.policy != policy) continue;
    const double distance = std::fabs(std::log(static_cast<double>(r.budget) / static_cast<double>(budget_tokens)));
    if (distance < nearest_distance) {
      nearest_distance = distance;
      nearest = &r;
    }
  }
  if (nearest == nullptr) {
    return InvalidArgument("--policy \"" + policy + "\" has no row in the churn table (it has: " + known + ")");
  }
  const double scale = static_cast<double>(budget_tokens) / static_cast<double>(nearest->budget);
  const double context_blocks = std::ceil(static_cast<double>(context_tokens) / table.block_tokens);
  ChurnEstimate e;
  e.measured_budget = nearest->budget;
  e.source = nearest->source;
  e.union_blocks = std::min(nearest->kv_union_blocks * scale, context_blocks);
  e.new_blocks = nearest->kv_pool_misses * scale;
  if (e.union_blocks >= context_blocks) {
    // Everything is selected: only the block that the step's token opens is new, once in
    // block_tokens steps (and the worker wrote it itself).
    e.new_blocks = 1.0 / table.block_tokens;
  }
  e.new_blocks = std::min(e.new_blocks, e.union_blocks);
  return e;
}

namespace {

struct LoadedTraces {
  std::vector<predictor::Trace> traces;
  std::vector<ChurnTraceSource> sources;
  double key_tokens = 0, steps = 0;
  int64_t shortest = 0;  // decode steps of the shortest trace
};

StatusOr<LoadedTraces> LoadTraces(const std::vector<std::string>& trace_files) {
  if (trace_files.empty()) return InvalidArgument("--traces: no trace files");
  LoadedTraces out;
  for (const std::string& file : trace_files) {
    FS_ASSIGN_OR_RETURN(predictor::Trace t, predictor::Trace::Load(file));
    const auto& g = t.geometry();
    for (int64_t s = 0; s < t.decode_steps(); ++s) out.key_tokens += static_cast<double>(g.key_tokens(s));
    out.steps += static_cast<double>(t.decode_steps());
    out.shortest = out.traces.empty() ? t.decode_steps() : std::min(out.shortest, t.decode_steps());
    out.sources.push_back({file, g.prompt_tokens, t.decode_steps()});
    out.traces.push_back(std::move(t));
  }
  return out;
}

int64_t PoolBlocks(const predictor::TraceGeometry& g, int64_t budget) {
  return worker::ResidentPoolBlocksPerHead(budget, g.q_heads / g.kv_heads, worker::OffloadOptions{}.margin_blocks);
}

}  // namespace

std::vector<ChurnRow> ServedChurnRows(const std::vector<ServedDecode>& decodes, int layers, int kv_heads, int q_heads) {
  std::vector<ChurnRow> rows;
  const double units_per_step = static_cast<double>(layers) * static_cast<double>(kv_heads);
  for (const ServedDecode& d : decodes) {
    auto same = [&](const ChurnRow& r) { return r.policy == d.policy && r.budget == d.budget; };
    if (std::find_if(rows.begin(), rows.end(), same) != rows.end()) continue;
    ChurnRow row;
    row.policy = d.policy;
    row.budget = d.budget;
    row.source = "served";
    row.pool_blocks =
        worker::ResidentPoolBlocksPerHead(d.budget, q_heads / kv_heads, worker::OffloadOptions{}.margin_blocks);
    double context = 0, n = 0;
    for (const ServedDecode& e : decodes) {
      if (e.policy != d.policy || e.budget != d.budget) continue;
      // Key tokens at the middle of the measured steps.
      context += static_cast<double>(e.context + e.from_step) + static_cast<double>(e.steps) / 2;
      row.kv_union_blocks += e.units_per_token_no_reuse / units_per_step;
      row.kv_pool_misses += e.units_per_token_reuse / units_per_step;
      n += 1;
    }
    row.context = static_cast<int64_t>(std::llround(context / n));
    row.kv_union_blocks /= n;
    row.kv_pool_misses /= n;
    rows.push_back(std::move(row));
  }
  return rows;
}

StatusOr<ChurnTable> DeriveChurnTable(const std::vector<std::string>& trace_files,
                                      const std::vector<std::string>& policies, const std::vector<int64_t>& budgets,
                                      int64_t pool_warmup_steps, int threads, const std::string& command,
                                      const std::vector<std::string>& served_files) {
  std::vector<ServedDecode> served;
  for (const std::string& file : served_files) {
    FS_ASSIGN_OR_RETURN(ServedDecode d, LoadServedDecode(file));
    if (d.from_step != pool_warmup_steps) {
      return InvalidArgument("--served " + file + " measured decode steps from " + std::to_string(d.from_step) +
                             ", the table counts from --pool-warmup " + std::to_string(pool_warmup_steps) +
                             " (run the bench with --warmup " + std::to_string(pool_warmup_steps - 1) + ")");
    }
    served.push_back(std::move(d));
  }
  FS_ASSIGN_OR_RETURN(auto weights, predictor::LoadCnnWeightsOrShipped(""));
  FS_ASSIGN_OR_RETURN(LoadedTraces loaded, LoadTraces(trace_files));
  if (pool_warmup_steps < 1 || pool_warmup_steps >= loaded.shortest) {
    return InvalidArgument("--pool-warmup " + std::to_string(pool_warmup_steps) +
                           " must be at least 1 and below the shortest trace's " + std::to_string(loaded.shortest) +
                           " decode steps (record longer traces: foresight trace --decode N)");
  }
  ChurnTable table;
  table.command = command;
  table.pool_warmup_steps = pool_warmup_steps;
  table.traces = loaded.sources;
  table.served_decodes = served;
  const auto& g = loaded.traces.front().geometry();
  table.block_tokens = static_cast<int>(g.block_tokens);
  table.rows = ServedChurnRows(served, g.layers, g.kv_heads, g.q_heads);
  std::vector<std::string> replayed;
  for (const std::string& p : policies) {
    auto is_p = [&](const ServedDecode& d) { return d.policy == p; };
    if (std::find_if(served.begin(), served.end(), is_p) == served.end()) replayed.push_back(p);
  }
  if (replayed.empty()) return table;
  std::vector<const predictor::Trace*> views;
  for (const auto& t : loaded.traces) views.push_back(&t);
  predictor::RecoveryOptions options;
  options.budgets = budgets;
  options.threads = threads;
  options.pool_warmup_steps = pool_warmup_steps;
  for (int64_t budget : budgets) options.pool_blocks.push_back(PoolBlocks(g, budget));
  for (const std::string& p : replayed) {
    FS_ASSIGN_OR_RETURN(predictor::PolicyVariant v, MakeVariant(p, weights));
    options.variants.push_back(std::move(v));
  }
  FS_ASSIGN_OR_RETURN(auto results, predictor::EvaluateRecovery(views, options));
  const int64_t mean_context =
      loaded.steps > 0 ? static_cast<int64_t>(std::llround(loaded.key_tokens / loaded.steps)) : 0;
  for (const auto& r : results) {
    const size_t b = std::find(budgets.begin(), budgets.end(), r.budget) - budgets.begin();
    // The warm-up's misses per KV head and step, steps 1 to pool_warmup_steps - 1.
    double warmup_misses = 0;
    int64_t warmup_steps = 0;
    for (int64_t s = 1; s < pool_warmup_steps && s < static_cast<int64_t>(r.kv_pool_misses_by_step.size()); ++s) {
      warmup_misses += r.kv_pool_misses_by_step[s];
      ++warmup_steps;
    }
    ChurnRow row{r.label,
                 r.budget,
                 mean_context,
                 r.mean_kv_union_blocks,
                 r.mean_kv_new_blocks,
                 options.pool_blocks[b],
                 r.mean_kv_pool_misses};
    row.kv_pool_misses_warmup = warmup_steps > 0 ? warmup_misses / static_cast<double>(warmup_steps) : 0.0;
    row.recovery = r.kv_union_recovery;
    table.rows.push_back(std::move(row));
  }
  return table;
}

StatusOr<PoolMissReplay> ReplayPoolMisses(const std::vector<std::string>& trace_files, const std::string& policy,
                                          int64_t budget, int threads) {
  FS_ASSIGN_OR_RETURN(auto weights, predictor::LoadCnnWeightsOrShipped(""));
  FS_ASSIGN_OR_RETURN(LoadedTraces loaded, LoadTraces(trace_files));
  const auto& g = loaded.traces.front().geometry();
  std::vector<const predictor::Trace*> views;
  for (const auto& t : loaded.traces) views.push_back(&t);
  predictor::RecoveryOptions options;
  options.budgets = {budget};
  options.threads = threads;
  options.pool_blocks = {PoolBlocks(g, budget)};
  options.record_pool_misses = true;
  FS_ASSIGN_OR_RETURN(predictor::PolicyVariant v, MakeVariant(policy, weights));
  options.variants.push_back(std::move(v));
  FS_ASSIGN_OR_RETURN(auto results, predictor::EvaluateRecovery(views, options));
  PoolMissReplay replay;
  replay.policy = policy;
  replay.budget = budget;
  replay.layers = g.layers;
  replay.kv_heads = g.kv_heads;
  replay.block_tokens = static_cast<int>(g.block_tokens);
  // K and V of every KV head for block_tokens tokens, f16: what a layer's block stores.
  replay.block_bytes = uint64_t{2} * g.kv_heads * g.head_dim * g.block_tokens * 2;
  replay.traces = loaded.sources;
  for (const predictor::PoolMiss& m : results.front().pool_misses) {
    replay.fetches.push_back({m.trace, m.step, m.layer, m.kv_head, m.block});
  }
  return replay;
}

}  // namespace foresight::planner
