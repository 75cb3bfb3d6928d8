// `foresight plan` and `foresight plan-churn`.
#include "planner/cli/plan_commands.h"

#include <omp.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cli/cli_util.h"
#include "common/file_io.h"
#include "common/units.h"
#include "planner/capacity_plan.h"
#include "planner/capacity_plots.h"
#include "planner/churn_table.h"
#include "planner/kv_geometry.h"
#include "planner/machine_profile.h"
#include "planner/ram_lru_simulation.h"

namespace foresight::cli {
namespace {

using namespace foresight::planner;

struct PlanFlags {
  std::string profile, model, context, budget = "1024", policy = "ap", node_ram, node_nvme = "0", kv_dtype = "f16";
  std::string link = "ram-tcp", churn, plot_dir;
  int64_t sequences = 1, sequences_per_worker = 1;
  double decode_tps = 10;
  int replication = 1;
  bool json = false, no_reuse = false;
};

// A token count ("8192", "128K" = 131072); errors name the flag.
StatusOr<int64_t> ParseTokens(const std::string& text, const std::string& flag) {
  auto v = ParseByteSize(text);
  if (!v.ok() || *v == 0 || *v > (uint64_t{1} << 31)) {
    return InvalidArgument(flag + " \"" + text + "\" is not a token count from 1 to 2^31 (e.g. 8192 or 128K)");
  }
  return static_cast<int64_t>(*v);
}

StatusOr<uint64_t> ParseSize(const std::string& text, const std::string& flag) {
  auto v = ParseByteSize(text);
  if (!v.ok()) return InvalidArgument(flag + " \"" + text + "\" is not a size (e.g. 64GiB, 3.84TB, 0)");
  return *v;
}

StatusOr<PlanRequest> MakeRequest(const PlanFlags& f) {
  PlanRequest r;
  FS_ASSIGN_OR_RETURN(r.model, ResolveKvGeometry(f.model));
  FS_ASSIGN_OR_RETURN(r.kv_dtype, ParseKvDtype(f.kv_dtype));
  FS_ASSIGN_OR_RETURN(r.context, ParseTokens(f.context, "--context"));
  FS_ASSIGN_OR_RETURN(r.budget, ParseTokens(f.budget, "--budget"));
  FS_ASSIGN_OR_RETURN(r.node_ram, ParseSize(f.node_ram, "--node-ram"));
  FS_ASSIGN_OR_RETURN(r.node_nvme, ParseSize(f.node_nvme, "--node-nvme"));
  r.policy = f.policy;
  r.sequences = f.sequences;
  r.sequences_per_worker = f.sequences_per_worker;
  r.decode_tps = f.decode_tps;
  r.replication = f.replication;
  r.reuse = !f.no_reuse;
  r.link = f.link;
  return r;
}

int RunPlan(const PlanFlags& f) {
  auto request = MakeRequest(f);
  if (!request.ok()) return Fail(request.status());
  auto profile = LoadMachineProfile(f.profile);
  if (!profile.ok()) return Fail(profile.status());
  auto churn = f.churn.empty() ? ShippedChurnTable() : LoadChurnTable(f.churn);
  if (!churn.ok()) return Fail(churn.status());
  auto plan = MakeCapacityPlan(*request, *profile, *churn);
  if (!plan.ok()) return Fail(plan.status());
  if (f.json) {
    std::cout << CapacityPlanToJson(*plan).dump(1) << "\n";
  } else {
    std::cout << FormatCapacityPlan(*plan);
  }
  if (!f.plot_dir.empty()) {
    auto plots = MakeCapacityPlots(*request, *profile, *churn);
    if (!plots.ok()) return Fail(plots.status());
    std::error_code ec;
    std::filesystem::create_directories(f.plot_dir, ec);
    if (ec) return Fail(InvalidArgument("--plot " + f.plot_dir + ": " + ec.message()));
    for (const PlotFile& plot : *plots) {
      const std::string path = (std::filesystem::path(f.plot_dir) / plot.name).string();
      Status written = WriteWholeFile(path, plot.svg);
      if (!written.ok()) return Fail(written);
      std::cerr << "plan: wrote " << path << "\n";
    }
  }
  return 0;
}

struct ChurnFlags {
  std::string traces, policies = "ap,attention_predictor,quest,h2o,snapkv,streaming_llm", budgets = "256,512,1024,2048";
  std::string served;  // served decodes (foresight-bench decode --json): their policies' rows
  std::string out = "-";
  int threads = 0;
  int64_t pool_warmup = 32;
  // The node's RAM tier, simulated (--lru-sizes): hit rate against RAM size.
  std::string lru_sizes;
  int lru_sequences = 4;
  bool json = false;
};

std::vector<std::string> SplitCommas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

// `plan-churn --lru-sizes`: for each policy and budget, the node RAM tier's hit rate at each size,
// over the fetches that --lru-sequences sequences' workers make after the pool's warm-up.
int RunRamSweep(const ChurnFlags& f, const std::vector<int64_t>& budgets, int threads) {
  std::vector<uint64_t> sizes;
  for (const std::string& item : SplitCommas(f.lru_sizes)) {
    auto size = ParseSize(item, "--lru-sizes");
    if (!size.ok()) return Fail(size.status());
    sizes.push_back(*size);
  }
  if (sizes.empty()) return Fail(InvalidArgument("--lru-sizes: no sizes (e.g. 64MiB,128MiB,256MiB)"));
  if (f.lru_sequences < 1) return Fail(InvalidArgument("--lru-sequences must be at least 1"));
  nlohmann::json rows = nlohmann::json::array();
  std::ostringstream table;
  char line[256];
  std::snprintf(line, sizeof line, "%-20s %6s %9s %10s %12s %12s %10s %9s\n", "policy", "budget", "sequences", "RAM",
                "RAM blocks", "gets", "hits", "hit rate");
  table << line;
  for (const std::string& policy : SplitCommas(f.policies)) {
    for (int64_t budget : budgets) {
      auto replay = ReplayPoolMisses(SplitCommas(f.traces), policy, budget, threads);
      if (!replay.ok()) return Fail(replay.status());
      const NodeAccessTrace trace = NodeAccessesFrom(*replay, f.lru_sequences, f.pool_warmup);
      auto sweep = SweepRamSizes(trace, replay->block_bytes, sizes);
      if (!sweep.ok()) return Fail(sweep.status());
      for (const RamHitRateRow& r : *sweep) {
        rows.push_back({{"policy", policy},
                        {"budget", budget},
                        {"sequences", f.lru_sequences},
                        {"from_step", f.pool_warmup},
                        {"ram_bytes", r.ram_bytes},
                        {"ram_blocks", r.result.capacity_blocks},
                        {"block_bytes", replay->block_bytes},
                        {"gets", r.result.gets},
                        {"hits", r.result.hits},
                        {"puts", r.result.puts},
                        {"evictions", r.result.evictions},
                        {"hit_rate", r.result.hit_rate()}});
        std::snprintf(line, sizeof line, "%-20s %6lld %9d %10s %12lld %12lld %10lld %8.1f%%\n", policy.c_str(),
                      static_cast<long long>(budget), f.lru_sequences, FormatByteSize(r.ram_bytes).c_str(),
                      static_cast<long long>(r.result.capacity_blocks), static_cast<long long>(r.result.gets),
                      static_cast<long long>(r.result.hits), 100 * r.result.hit_rate());
        table << line;
      }
    }
  }
  const std::string text =
      f.json ? nlohmann::json{{"traces", SplitCommas(f.traces)}, {"rows", rows}}.dump(1) + "\n" : table.str();
  Status written = WriteOutput(f.out, text);
  return written.ok() ? 0 : Fail(written);
}

int RunPlanChurn(const ChurnFlags& f, const std::string& command) {
  auto budgets = ParseIntList(f.budgets, "--budgets", 16, int64_t{1} << 31);
  if (!budgets.ok()) return Fail(budgets.status());
  const int threads = f.threads > 0 ? f.threads : omp_get_max_threads();
  if (!f.lru_sizes.empty()) return RunRamSweep(f, *budgets, threads);
  auto table = DeriveChurnTable(SplitCommas(f.traces), SplitCommas(f.policies), *budgets, f.pool_warmup, threads,
                                command, SplitCommas(f.served));
  if (!table.ok()) return Fail(table.status());
  // The node's RAM hit rate against its share of the stored KV, for the plan: `ap` at 1024 (the
  // planner's default point), the replayed pool misses of --lru-sequences sequences.
  auto replay = ReplayPoolMisses(SplitCommas(f.traces), "ap", 1024, threads);
  if (!replay.ok()) return Fail(replay.status());
  table->ram_hit_rates = {"ap", 1024, f.lru_sequences,
                          HitRateByRamShare(NodeAccessesFrom(*replay, f.lru_sequences, f.pool_warmup),
                                            {0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0})};
  Status written = WriteOutput(f.out, ChurnTableToJson(*table));
  return written.ok() ? 0 : Fail(written);
}

}  // namespace

void AddPlanCommands(CLI::App& app, int* exit_code) {
  auto plan_flags = std::make_shared<PlanFlags>();
  CLI::App* plan = app.add_subcommand(
      "plan",
      "Capacity plan: sequences per node and tier, fetch bandwidth, bottleneck, nodes needed (docs/capacity.md)");
  PlanFlags& p = *plan_flags;
  plan->add_option("--profile", p.profile, "Machine profile (foresight-bench tiers --profile FILE)")->required();
  plan->add_option("--model", p.model,
                   "A GGUF file, a Hugging Face folder, or llama-3.1-8b, llama-3.1-70b, qwen2.5-7b, mistral-7b, "
                   "smollm2-135m")
      ->required();
  plan->add_option("--context", p.context, "Tokens per sequence (8192, 128K)")->required();
  plan->add_option("--budget", p.budget, "Tokens per head kept on the worker (default 1024)");
  plan->add_option("--policy", p.policy, "Selection policy of the churn table (default ap)");
  plan->add_option("--sequences", p.sequences, "Concurrent sequences in the fleet (default 1)");
  plan->add_option("--decode-tps", p.decode_tps, "Decode tokens per second per sequence (default 10)");
  plan->add_option("--sequences-per-worker", p.sequences_per_worker, "Sequences one worker decodes (default 1)");
  plan->add_option("--node-ram", p.node_ram, "A node's RAM tier (e.g. 256GiB)")->required();
  plan->add_option("--node-nvme", p.node_nvme, "A node's NVMe tier (e.g. 3.84TB; default 0: none)");
  plan->add_option("--replication", p.replication, "Copies of every block, on distinct nodes (default 1)");
  plan->add_option("--kv-dtype", p.kv_dtype, "KV element type: f16 (default), bf16, f32, fp8");
  plan->add_option("--link", p.link, "How workers reach nodes, a path of the profile: ram-tcp (default), ram-shm");
  plan->add_flag("--no-reuse", p.no_reuse, "Workers fetch the whole selection every step (no cross-token reuse)");
  plan->add_option("--churn", p.churn, "Churn table (default: the shipped one; foresight plan-churn makes one)");
  plan->add_flag("--json", p.json, "Print the plan as JSON");
  plan->add_option("--plot", p.plot_dir, "Also draw the plan's plots (SVG) into this folder");
  plan->callback([plan_flags, exit_code] { *exit_code = RunPlan(*plan_flags); });

  auto churn_flags = std::make_shared<ChurnFlags>();
  CLI::App* churn = app.add_subcommand(
      "plan-churn", "Derive the planner's churn table (blocks fetched per step, per policy and budget) from traces");
  ChurnFlags& c = *churn_flags;
  churn->add_option("--traces", c.traces, "Comma-separated trace files (foresight trace)")->required();
  churn->add_option("--policies", c.policies,
                    "Policies (default ap,attention_predictor,quest,h2o,snapkv,streaming_llm)");
  churn->add_option("--budgets", c.budgets, "Budgets in tokens (default 256,512,1024,2048)");
  churn->add_option("--threads", c.threads, "Threads (default: all)");
  churn->add_option("--out", c.out, "Output file (default -: stdout)");
  churn->add_option("--served", c.served,
                    "Comma-separated served decodes (foresight-bench decode --modes cross-token --no-reuse --greedy "
                    "--json, one policy and budget each): their policies' rows are measured there instead of "
                    "replayed (tools/planner/derive-churn.sh)");
  churn->add_option("--pool-warmup", c.pool_warmup,
                    "Decode steps that fill the worker's pool before its misses count (default 32)");
  churn->add_option("--lru-sizes", c.lru_sizes,
                    "Instead of the table: simulate the node's RAM tier (LRU) at these sizes (e.g. 64MiB,256MiB) over "
                    "the fetches of --lru-sequences sequences after the warm-up, and print its hit rate");
  churn->add_option("--lru-sequences", c.lru_sequences, "Sequences on the simulated node (default 4)");
  churn->add_flag("--json", c.json, "With --lru-sizes: JSON rows instead of a table");
  churn->callback([churn_flags, churn, exit_code] {
    std::string command = "foresight plan-churn --traces " + churn_flags->traces + " --policies " +
                          churn_flags->policies + " --budgets " + churn_flags->budgets + " --pool-warmup " +
                          std::to_string(churn_flags->pool_warmup) +
                          (churn_flags->served.empty() ? "" : " --served " + churn_flags->served);
    *exit_code = RunPlanChurn(*churn_flags, command);
  });
}

}  // namespace foresight::cli
