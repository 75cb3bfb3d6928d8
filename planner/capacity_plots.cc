#include "planner/capacity_plots.h"

#include <algorithm>
#include <cmath>

#include "planner/svg_chart.h"

namespace foresight::planner {

StatusOr<std::vector<PlotFile>> MakeCapacityPlots(const PlanRequest& request, const MachineProfile& profile,
                                                  const ChurnTable& churn) {
  FS_ASSIGN_OR_RETURN(CapacityPlan base, MakeCapacityPlan(request, profile, churn));
  std::vector<PlotFile> files;
  const std::string model = request.model.name;

  SvgChart tiers("Sequences per node by context (" + model + ", KV " + KvDtypeName(request.kv_dtype) + ")",
                 "context (tokens)", "sequences per node");
  tiers.set_log_x(true);
  tiers.set_log_y(true);
  std::vector<std::pair<double, double>> ram, nvme;
  for (int64_t context = 1024; context <= (int64_t{1} << 20); context *= 2) {
    PlanRequest r = request;
    r.context = context;
    r.budget = std::min(request.budget, context);
    auto p = MakeCapacityPlan(r, profile, churn);
    if (!p.ok()) continue;
    ram.push_back({static_cast<double>(context), static_cast<double>(p->ram_sequences_per_node)});
    if (request.node_nvme > 0) {
      nvme.push_back({static_cast<double>(context), static_cast<double>(p->nvme_sequences_per_node)});
    }
  }
  tiers.AddSeries("RAM tier", ram);
  if (!nvme.empty()) tiers.AddSeries("NVMe tier", nvme);
  files.push_back({"sequences-per-node.svg", tiers.Render()});

  // Bandwidth at the plan's node count, across decode rates.
  SvgChart bandwidth("Fetch bandwidth by decode rate (" + model + ", " + std::to_string(request.context) + " tokens, " +
                         request.policy + " budget " + std::to_string(request.budget) + ", " +
                         std::to_string(base.nodes_needed) + " nodes)",
                     "decode rate per sequence (tokens/s)", "bandwidth (GB/s)");
  bandwidth.set_log_x(true);
  bandwidth.set_log_y(true);
  std::vector<std::pair<double, double>> per_node, per_worker, node_link, worker_link;
  const double nodes = static_cast<double>(base.nodes_needed);
  for (double tps : {1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0}) {
    PlanRequest r = request;
    r.decode_tps = tps;
    auto p = MakeCapacityPlan(r, profile, churn);
    if (!p.ok()) continue;
    per_node.push_back({tps, (p->fetch_bytes_per_second + p->write_bytes_per_second) / nodes / 1e9});
    per_worker.push_back({tps, p->fetch_bytes_per_second_per_worker / 1e9});
    node_link.push_back({tps, base.link_get.gbps});
  }
  bandwidth.AddSeries("required per node", per_node);
  bandwidth.AddSeries("required per worker", per_worker);
  bandwidth.AddSeries(request.link + " get, measured", node_link, /*dashed=*/true);
  files.push_back({"bandwidth.svg", bandwidth.Render()});

  SvgChart fleet("Nodes needed by concurrent sequences (R=" + std::to_string(request.replication) + ")",
                 "concurrent sequences", "nodes");
  fleet.set_log_x(true);
  std::vector<std::pair<double, double>> total, capacity, bw;
  for (int64_t n = 1; n <= std::max<int64_t>(1024, request.sequences * 4); n *= 2) {
    PlanRequest r = request;
    r.sequences = n;
    auto p = MakeCapacityPlan(r, profile, churn);
    if (!p.ok()) continue;
    total.push_back({static_cast<double>(n), static_cast<double>(p->nodes_needed)});
    capacity.push_back({static_cast<double>(n), static_cast<double>(p->nodes_for_capacity)});
    bw.push_back({static_cast<double>(n), static_cast<double>(p->nodes_for_bandwidth)});
  }
  fleet.AddSeries("nodes needed", total);
  fleet.AddSeries("for capacity", capacity, /*dashed=*/true);
  fleet.AddSeries("for bandwidth", bw, /*dashed=*/true);
  files.push_back({"nodes-needed.svg", fleet.Render()});
  return files;
}

}  // namespace foresight::planner
