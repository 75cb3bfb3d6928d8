#include "planner/capacity_plan.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "cache_service/arena_allocator.h"
#include "cache_service/block_store.h"
#include "common/block_layout.h"
#include "common/units.h"
#include "worker/offload/kv_publisher.h"

namespace foresight::planner {
namespace {

// The bytes of RAM arena one block of `bytes` takes: its size class's slot, plus the share of the
// page that the class's slots leave unused (a page is cut into equal slots).
StatusOr<uint64_t> ArenaBytesFor(uint64_t bytes) {
  const uint64_t page = BlockStoreOptions{}.max_block_bytes;
  const ArenaSizeClasses classes(page);
  const int cls = classes.ClassFor(bytes);
  if (cls < 0) {
    return InvalidArgument("--model: a block of " + FormatByteSize(bytes) +
                           " is larger than the node's largest block (" + FormatByteSize(page) + ")");
  }
  const uint64_t slots_per_page = page / classes.SlotBytes(cls);
  return (page + slots_per_page - 1) / slots_per_page;
}

Status CheckRequest(const PlanRequest& r) {
  if (r.context <= 0 || r.context > (int64_t{1} << 31)) {
    return InvalidArgument("--context " + std::to_string(r.context) + " must be a token count from 1 to 2^31");
  }
  if (r.budget <= 0) return InvalidArgument("--budget " + std::to_string(r.budget) + " must be positive");
  if (r.budget > r.context) {
    return InvalidArgument("--budget " + std::to_string(r.budget) + " is larger than --context " +
                           std::to_string(r.context));
  }
  if (r.sequences <= 0) return InvalidArgument("--sequences must be at least 1");
  if (r.sequences_per_worker <= 0) return InvalidArgument("--sequences-per-worker must be at least 1");
  if (!(r.decode_tps > 0) || !std::isfinite(r.decode_tps)) {
    return InvalidArgument("--decode-tps must be a positive number of tokens per second");
  }
  if (r.replication < 1) return InvalidArgument("--replication must be at least 1");
  if (r.node_ram == 0) return InvalidArgument("--node-ram must be a positive size");
  if (r.link != "ram-tcp" && r.link != "ram-shm" && r.link != "ram-grpc") {
    return InvalidArgument("--link \"" + r.link + "\" is not one of ram-tcp, ram-shm, ram-grpc");
  }
  if (r.block_tokens <= 0) return InvalidArgument("block_tokens must be positive");
  return Status::OK();
}

// Seconds of one node's data path per second of fleet work, for `nodes` nodes: fetches served from
// RAM over the link, misses promoted from NVMe, and puts of new KV (each over that path's measured
// bandwidth). Sizes the fleet for bandwidth: it fits when this is at most 1.
struct NodeLoad {
  double ram_hit_rate = 1;
  double get_seconds = 0, promote_seconds = 0, put_seconds = 0;  // per node, per second
  double total() const { return get_seconds + promote_seconds + put_seconds; }
};

NodeLoad LoadAt(const CapacityPlan& p, const RamHitRateCurve& curve, int64_t nodes) {
  const PlanRequest& r = p.request;
  NodeLoad load;
  const double stored = static_cast<double>(r.replication) * static_cast<double>(r.sequences) *
                        static_cast<double>(p.ram_bytes_per_sequence);
  const double ram = static_cast<double>(nodes) * static_cast<double>(r.node_ram);
  // The simulated LRU's hit rate at RAM's share of the stored KV (the churn table's curve; without
  // one, that share up to the high watermark: fetches spread evenly over the stored KV).
  const double usable = ram * BlockStoreOptions{}.high_watermark;
  load.ram_hit_rate = r.node_nvme == 0 || stored <= usable ? 1.0
                      : curve.points.empty()               ? usable / stored
                                                           : RamHitRateAt(curve, ram / stored);
  const double n = static_cast<double>(nodes);
  load.get_seconds = p.fetch_bytes_per_second * load.ram_hit_rate / (p.link_get.gbps * 1e9) / n;
  if (load.ram_hit_rate < 1) {
    load.promote_seconds = p.fetch_bytes_per_second * (1 - load.ram_hit_rate) / (p.nvme_get.gbps * 1e9) / n;
  }
  load.put_seconds = p.write_bytes_per_second / (p.link_put.gbps * 1e9) / n;
  return load;
}

std::string Bytes(double b) { return FormatByteSize(static_cast<uint64_t>(std::llround(std::max(0.0, b)))); }

std::string Rate(double bytes_per_second) {
  char buf[64];
  if (bytes_per_second >= 1e9) {
    std::snprintf(buf, sizeof buf, "%.2f GB/s", bytes_per_second / 1e9);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f MB/s", bytes_per_second / 1e6);
  }
  return buf;
}

}  // namespace

StatusOr<CapacityPlan> MakeCapacityPlan(const PlanRequest& request, const MachineProfile& profile,
                                        const ChurnTable& churn) {
  FS_RETURN_IF_ERROR(CheckRequest(request));
  const PlanRequest& r = request;
  CapacityPlan p;
  p.request = r;
  const KvGeometry& g = r.model;
  const BlockLayout layout(r.block_tokens, g.kv_heads, g.head_dim, KvDtypeBytes(r.kv_dtype));
  p.kv_bytes_per_token = KvBytesPerToken(g, r.kv_dtype);
  p.kv_bytes_per_sequence = p.kv_bytes_per_token * static_cast<uint64_t>(r.context);
  p.block_bytes = layout.block_bytes();
  p.head_block_bytes = layout.head_bytes();

  // Storage: only full blocks are published (worker/offload/kv_publisher.h), each layer's block in
  // its own arena slot, plus one manifest per sequence block.
  const uint64_t blocks = static_cast<uint64_t>(r.context / r.block_tokens);
  const uint64_t manifest = worker::KvManifestBytes(g.layers, g.kv_heads);
  FS_ASSIGN_OR_RETURN(p.ram_slot_bytes, ArenaBytesFor(p.block_bytes));
  FS_ASSIGN_OR_RETURN(uint64_t manifest_slot, ArenaBytesFor(manifest));
  p.ram_bytes_per_sequence = blocks * (g.layers * p.ram_slot_bytes + manifest_slot);
  p.nvme_bytes_per_sequence = blocks * (g.layers * p.block_bytes + manifest);
  const double ram_usable = static_cast<double>(r.node_ram) * BlockStoreOptions{}.high_watermark;
  if (p.ram_bytes_per_sequence > 0) {
    p.ram_sequences_per_node = static_cast<int64_t>(ram_usable / static_cast<double>(p.ram_bytes_per_sequence));
    p.nvme_sequences_per_node = static_cast<int64_t>(r.node_nvme / p.nvme_bytes_per_sequence);
  }

  // Fetches: per layer and KV head, the blocks its selection changes (with reuse) or holds.
  FS_ASSIGN_OR_RETURN(p.churn, EstimateChurn(churn, r.policy, r.budget, r.context));
  const double per_head = r.reuse ? p.churn.new_blocks : p.churn.union_blocks;
  p.fetch_blocks_per_token = per_head * g.layers * g.kv_heads;
  p.fetch_bytes_per_token = p.fetch_blocks_per_token * static_cast<double>(p.head_block_bytes);
  p.fetch_bytes_per_second_per_worker =
      p.fetch_bytes_per_token * r.decode_tps * static_cast<double>(r.sequences_per_worker);
  const double tokens_per_second = r.decode_tps * static_cast<double>(r.sequences);
  p.fetch_bytes_per_second = p.fetch_bytes_per_token * tokens_per_second;
  p.write_bytes_per_second =
      tokens_per_second * r.replication *
      (static_cast<double>(p.kv_bytes_per_token) + static_cast<double>(manifest) / static_cast<double>(r.block_tokens));

  // Every worker reaches every node, so a node serves as many clients as there are workers.
  p.workers = (r.sequences + r.sequences_per_worker - 1) / r.sequences_per_worker;
  const int clients = static_cast<int>(std::min<int64_t>(p.workers, 1 << 30));
  FS_ASSIGN_OR_RETURN(p.link_get, FastestNear(profile, r.link, "get", p.head_block_bytes, clients));
  FS_ASSIGN_OR_RETURN(p.link_put, FastestNear(profile, r.link, "put", p.block_bytes, clients));
  FS_ASSIGN_OR_RETURN(p.worker_get, FastestNear(profile, r.link, "get", p.head_block_bytes, 1));
  if (r.node_nvme > 0) {
    FS_ASSIGN_OR_RETURN(p.nvme_get, FastestNear(profile, "nvme", "get", p.head_block_bytes, clients));
  }

  // Capacity: R copies of every sequence. With an NVMe tier, RAM is a cache over it (a promoted
  // block keeps its NVMe copy), so a node holds what the larger tier holds.
  const double copies = static_cast<double>(r.replication) * static_cast<double>(r.sequences);
  const double per_node = std::max(
      ram_usable / static_cast<double>(std::max<uint64_t>(p.ram_bytes_per_sequence, 1)),
      static_cast<double>(r.node_nvme) / static_cast<double>(std::max<uint64_t>(p.nvme_bytes_per_sequence, 1)));
  p.nodes_for_capacity = static_cast<int64_t>(std::ceil(copies / per_node - 1e-9));
  // Bandwidth: the fewest nodes whose data paths keep up (more nodes also hold more in RAM).
  int64_t n = 1;
  while (LoadAt(p, churn.ram_hit_rates, n).total() > 1.0 && n < (int64_t{1} << 40))
    n = LoadAt(p, churn.ram_hit_rates, n).total() > 2 ? n * 2 : n + 1;
  while (n > 1 && LoadAt(p, churn.ram_hit_rates, n - 1).total() <= 1.0) --n;
  p.nodes_for_bandwidth = n;
  p.nodes_needed = std::max<int64_t>({r.replication, p.nodes_for_capacity, p.nodes_for_bandwidth});

  const int64_t N = p.nodes_needed;
  const NodeLoad load = LoadAt(p, churn.ram_hit_rates, N);
  p.ram_hit_rate = load.ram_hit_rate;
  const double nodes = static_cast<double>(N);
  const BlockStoreOptions store_defaults;
  // In arena slots, as the evictor counts; reported in block bytes, as the node does.
  const double ram_stored = copies * static_cast<double>(p.ram_bytes_per_sequence) / nodes;
  const double block_share_of_slots = static_cast<double>(p.nvme_bytes_per_sequence) /
                                      static_cast<double>(std::max<uint64_t>(p.ram_bytes_per_sequence, 1));
  if (r.node_nvme == 0 || ram_stored <= ram_usable) {
    p.ram_used_bytes_per_node = std::min(ram_stored, ram_usable) * block_share_of_slots;
  } else {
    const double slots =
        static_cast<double>(r.node_ram) * (store_defaults.high_watermark + store_defaults.low_watermark) / 2;
    p.ram_used_bytes_per_node = slots * block_share_of_slots;
    p.nvme_used_bytes_per_node =
        copies * static_cast<double>(p.nvme_bytes_per_sequence) / nodes * (1 - slots / ram_stored);
  }
  if (r.node_nvme == 0) {
    p.limits.push_back(
        {"RAM capacity", "B", copies * static_cast<double>(p.ram_bytes_per_sequence), nodes * ram_usable});
  } else {
    p.limits.push_back({"NVMe capacity", "B", copies * static_cast<double>(p.nvme_bytes_per_sequence),
                        nodes * static_cast<double>(r.node_nvme)});
  }
  const PlanLimit gets{"node link (" + r.link + " get)", "B/s", p.fetch_bytes_per_second * load.ram_hit_rate,
                       nodes * p.link_get.gbps * 1e9};
  const PlanLimit puts{"node link (" + r.link + " put)", "B/s", p.write_bytes_per_second,
                       nodes * p.link_put.gbps * 1e9};
  p.limits.push_back(gets);
  p.limits.push_back(puts);
  if (r.node_nvme > 0) {
    p.limits.push_back({"NVMe promotions (nvme get)", "B/s", p.fetch_bytes_per_second * (1 - load.ram_hit_rate),
                        nodes * p.nvme_get.gbps * 1e9});
  }
  // The node's data path is shared by its gets, promotions and puts: their time shares add up.
  std::string dominant = gets.name;
  if (load.put_seconds > load.get_seconds && load.put_seconds >= load.promote_seconds) dominant = puts.name;
  if (load.promote_seconds > load.get_seconds && load.promote_seconds > load.put_seconds) dominant = "NVMe promotions";
  p.limits.push_back(
      {"node data path, all together (mostly " + dominant + ")", "node-s/s", load.total() * nodes, nodes});
  p.limits.push_back(
      {"worker link (" + r.link + " get)", "B/s", p.fetch_bytes_per_second_per_worker, p.worker_get.gbps * 1e9});
  p.bottleneck = p.limits.front();
  for (const PlanLimit& l : p.limits) {
    if (l.name.rfind("node link", 0) == 0 || l.name.rfind("NVMe promotions", 0) == 0) continue;  // parts of the path
    if (l.utilisation() > p.bottleneck.utilisation()) p.bottleneck = l;
  }
  return p;
}

nlohmann::json CapacityPlanToJson(const CapacityPlan& p) {
  const PlanRequest& r = p.request;
  nlohmann::json j;
  j["model"] = {{"name", r.model.name},         {"layers", r.model.layers},     {"q_heads", r.model.q_heads},
                {"kv_heads", r.model.kv_heads}, {"head_dim", r.model.head_dim}, {"kv_dtype", KvDtypeName(r.kv_dtype)}};
  j["workload"] = {{"context", r.context},
                   {"budget", r.budget},
                   {"policy", r.policy},
                   {"reuse", r.reuse},
                   {"sequences", r.sequences},
                   {"decode_tps", r.decode_tps},
                   {"sequences_per_worker", r.sequences_per_worker},
                   {"node_ram", r.node_ram},
                   {"node_nvme", r.node_nvme},
                   {"replication", r.replication},
                   {"link", r.link}};
  j["kv_bytes_per_token"] = p.kv_bytes_per_token;
  j["kv_bytes_per_sequence"] = p.kv_bytes_per_sequence;
  j["block_bytes"] = p.block_bytes;
  j["head_block_bytes"] = p.head_block_bytes;
  j["ram_bytes_per_sequence"] = p.ram_bytes_per_sequence;
  j["nvme_bytes_per_sequence"] = p.nvme_bytes_per_sequence;
  j["ram_sequences_per_node"] = p.ram_sequences_per_node;
  j["nvme_sequences_per_node"] = p.nvme_sequences_per_node;
  j["churn"] = {{"union_blocks_per_kv_head", p.churn.union_blocks},
                {"new_blocks_per_kv_head", p.churn.new_blocks},
                {"measured_budget", p.churn.measured_budget},
                {"source", p.churn.source}};
  j["fetch_blocks_per_token"] = p.fetch_blocks_per_token;
  j["fetch_bytes_per_token"] = p.fetch_bytes_per_token;
  j["fetch_bytes_per_second_per_worker"] = p.fetch_bytes_per_second_per_worker;
  j["fetch_bytes_per_second"] = p.fetch_bytes_per_second;
  j["write_bytes_per_second"] = p.write_bytes_per_second;
  j["ram_hit_rate"] = p.ram_hit_rate;
  j["ram_used_bytes_per_node"] = p.ram_used_bytes_per_node;
  j["nvme_used_bytes_per_node"] = p.nvme_used_bytes_per_node;
  j["workers"] = p.workers;
  auto path = [](const PathMeasurement& m, const char* use) {
    return nlohmann::json{
        {"use", use},           {"path", m.path},         {"op", m.op},    {"block_bytes", m.block_bytes},
        {"clients", m.clients}, {"inflight", m.inflight}, {"gbps", m.gbps}};
  };
  j["profile_paths"] = {path(p.link_get, "node get"), path(p.link_put, "node put")};
  if (r.node_nvme > 0) j["profile_paths"].push_back(path(p.nvme_get, "node promotion"));
  j["profile_paths"].push_back(path(p.worker_get, "worker get"));
  j["limits"] = nlohmann::json::array();
  for (const PlanLimit& l : p.limits) {
    j["limits"].push_back({{"name", l.name},
                           {"unit", l.unit},
                           {"required", l.required},
                           {"available", l.available},
                           {"utilisation", l.utilisation()}});
  }
  j["bottleneck"] = {
      {"name", p.bottleneck.name},
      {"utilisation", p.bottleneck.utilisation()},
      {"headroom", p.bottleneck.required > 0 ? p.bottleneck.available / p.bottleneck.required : INFINITY}};
  j["nodes_needed"] = p.nodes_needed;
  j["nodes_needed_by"] = {
      {"capacity", p.nodes_for_capacity}, {"bandwidth", p.nodes_for_bandwidth}, {"replication", r.replication}};
  return j;
}

std::string FormatCapacityPlan(const CapacityPlan& p) {
  const PlanRequest& r = p.request;
  std::ostringstream o;
  char line[256];
  auto row = [&](const char* what, const std::string& value) {
    std::snprintf(line, sizeof line, "  %-36s %s\n", what, value.c_str());
    o << line;
  };
  o << "model " << r.model.name << ": " << r.model.layers << " layers, " << r.model.kv_heads << " KV heads x "
    << r.model.head_dim << ", KV " << KvDtypeName(r.kv_dtype) << "\n";
  o << "workload: " << r.sequences << " sequences of " << r.context << " tokens, " << r.decode_tps
    << " tokens/s each, policy " << r.policy << " budget " << r.budget << (r.reuse ? ", reuse" : ", no reuse")
    << ", R=" << r.replication << "\n";
  o << "node: RAM " << FormatByteSize(r.node_ram) << ", NVMe " << FormatByteSize(r.node_nvme) << "\n\n";
  row("kv_bytes_per_token", std::to_string(p.kv_bytes_per_token) + " B");
  row("kv_bytes_per_sequence", Bytes(static_cast<double>(p.kv_bytes_per_sequence)));
  row("stored per sequence (RAM / NVMe)", Bytes(static_cast<double>(p.ram_bytes_per_sequence)) + " / " +
                                              Bytes(static_cast<double>(p.nvme_bytes_per_sequence)));
  row("ram_sequences_per_node", std::to_string(p.ram_sequences_per_node));
  row("nvme_sequences_per_node", std::to_string(p.nvme_sequences_per_node));
  char buf[128];
  std::snprintf(buf, sizeof buf, "%.2f of %.2f blocks (table: budget %lld, %s)", p.churn.new_blocks,
                p.churn.union_blocks, static_cast<long long>(p.churn.measured_budget), p.churn.source.c_str());
  row("fetched per KV head and step", buf);
  row("fetch_bytes_per_token", Bytes(p.fetch_bytes_per_token));
  row("fetch_bytes_per_second_per_worker", Rate(p.fetch_bytes_per_second_per_worker));
  row("fleet fetches / writes", Rate(p.fetch_bytes_per_second) + " / " + Rate(p.write_bytes_per_second));
  std::snprintf(buf, sizeof buf, "%.3f", p.ram_hit_rate);
  row("RAM hit rate", buf);
  row("per node: RAM / NVMe used", Bytes(p.ram_used_bytes_per_node) + " / " + Bytes(p.nvme_used_bytes_per_node));
  std::snprintf(buf, sizeof buf, "%lld (profile: %s get at %d client(s) x %d in flight)",
                static_cast<long long>(p.workers), p.link_get.path.c_str(), p.link_get.clients, p.link_get.inflight);
  row("workers, each a client of every node", buf);
  o << "\n  limits at " << p.nodes_needed << " node(s):\n";
  for (const PlanLimit& l : p.limits) {
    std::string req = l.unit == "B" ? Bytes(l.required) : l.unit == "B/s" ? Rate(l.required) : "";
    std::string avail = l.unit == "B" ? Bytes(l.available) : l.unit == "B/s" ? Rate(l.available) : "";
    if (req.empty()) {
      std::snprintf(buf, sizeof buf, "%.3f", l.required);
      req = buf;
      std::snprintf(buf, sizeof buf, "%.0f", l.available);
      avail = buf;
    }
    std::snprintf(line, sizeof line, "    %-58s %14s of %14s  %5.1f%%\n", l.name.c_str(), req.c_str(), avail.c_str(),
                  100 * l.utilisation());
    o << line;
  }
  std::snprintf(buf, sizeof buf, "%s (%.1f%% used, headroom %.2fx)", p.bottleneck.name.c_str(),
                100 * p.bottleneck.utilisation(), 1 / p.bottleneck.utilisation());
  o << "\n";
  row("bottleneck", buf);
  row("nodes_needed", std::to_string(p.nodes_needed) + " (capacity " + std::to_string(p.nodes_for_capacity) +
                          ", bandwidth " + std::to_string(p.nodes_for_bandwidth) + ", replication " +
                          std::to_string(r.replication) + ")");
  return o.str();
}

}  // namespace foresight::planner
