// CapacityPlan: how many nodes a fleet of long-context sequences needs, from a model's KV geometry,
// a workload, a machine profile (what this node's tiers and links measured) and the churn table
// (how many blocks the selection policy changes per step). docs/capacity.md walks through the
// arithmetic with a real plan; in short:
//
//   kv_bytes_per_token       = 2 (K, V) x layers x KV heads x head size x dtype bytes
//   stored per sequence      = full 16-token blocks x (layers x RAM slot of a block + a manifest)
//   ram_sequences_per_node   = floor(node RAM x high watermark (0.95) / stored per sequence)
//   fetch_bytes_per_token    = layers x KV heads x blocks fetched per KV head and step x per-head
//                              block bytes (blocks: new ones with reuse, the whole union without)
//   nodes_needed             = max(R, capacity: R copies of every sequence over the nodes' tiers,
//                                  bandwidth: the fleet's fetches and writes over what one node's
//                                  path sustains in the profile, at the profile's client count
//                                  nearest the fleet's workers: every worker reaches every node)
//
//   FS_ASSIGN_OR_RETURN(CapacityPlan plan, MakeCapacityPlan(request, profile, churn));
//   std::cout << FormatCapacityPlan(plan);
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "planner/churn_table.h"
#include "planner/kv_geometry.h"
#include "planner/machine_profile.h"

namespace foresight::planner {

struct PlanRequest {
  KvGeometry model;
  KvDtype kv_dtype = KvDtype::kF16;
  int64_t context = 0;    // tokens per sequence
  int64_t budget = 1024;  // tokens per head kept on the worker (sink and local included)
  std::string policy = "ap";
  int64_t sequences = 1;   // concurrent sequences in the fleet
  double decode_tps = 10;  // tokens per second per sequence
  int64_t sequences_per_worker = 1;
  uint64_t node_ram = 0;         // the node's RAM tier (--ram-bytes)
  uint64_t node_nvme = 0;        // the node's NVMe tier (--nvme-bytes); 0: none
  int replication = 1;           // copies of every block, on distinct nodes
  bool reuse = true;             // the worker keeps the previous step's blocks (cross-token offload)
  std::string link = "ram-tcp";  // the profile path workers reach nodes by: ram-tcp or ram-shm
  int block_tokens = 16;
};

// One resource of the fleet at nodes_needed nodes: what the workload asks of it against what it
// has. utilisation = required / available; headroom = available / required.
struct PlanLimit {
  std::string name;  // e.g. "node link (ram-tcp get)", "NVMe capacity", "worker link"
  std::string unit;  // "B/s", "B"
  double required = 0, available = 0;
  double utilisation() const { return available > 0 ? required / available : INFINITY; }
};

struct CapacityPlan {
  PlanRequest request;
  uint64_t kv_bytes_per_token = 0;
  uint64_t kv_bytes_per_sequence = 0;  // context x kv_bytes_per_token
  uint64_t block_bytes = 0;            // one layer's block, every KV head
  uint64_t head_block_bytes = 0;       // one KV head's K and V of a block: the fetch unit
  uint64_t ram_slot_bytes = 0;         // the RAM arena's slot for a block
  uint64_t ram_bytes_per_sequence = 0;
  uint64_t nvme_bytes_per_sequence = 0;
  int64_t ram_sequences_per_node = 0;
  int64_t nvme_sequences_per_node = 0;
  ChurnEstimate churn;
  double fetch_blocks_per_token = 0;  // KV-head blocks
  double fetch_bytes_per_token = 0;
  double fetch_bytes_per_second_per_worker = 0;
  double write_bytes_per_second = 0;  // the fleet's new KV, every copy
  double fetch_bytes_per_second = 0;  // the fleet's fetches
  double ram_hit_rate = 0;            // share of fetches served from RAM (the rest promote from NVMe)
  // What one node holds at nodes_needed nodes, in the bytes of its blocks (what the node reports
  // as used): the arena's slots fill up to the high watermark, and once above it stay midway
  // between the watermarks (the write-down runs from 95% to 85% of the slots); the rest on NVMe.
  // A slot is larger than its block (12,800 B for SmolLM2's 12,288), so block bytes in RAM are
  // the slots' share times nvme_bytes_per_sequence / ram_bytes_per_sequence.
  double ram_used_bytes_per_node = 0, nvme_used_bytes_per_node = 0;
  int64_t workers = 0;                           // ceil(sequences / sequences_per_worker): clients of each node
  PathMeasurement link_get, link_put, nvme_get;  // at the client count nearest `workers`
  PathMeasurement worker_get;                    // one client: what one worker's link sustains
  int64_t nodes_for_capacity = 0, nodes_for_bandwidth = 0, nodes_needed = 0;
  std::vector<PlanLimit> limits;  // at nodes_needed
  PlanLimit bottleneck;           // the most utilised of `limits`
};

// INVALID_ARGUMENT naming the flag for a request that cannot be planned: --context not positive
// or beyond 2^31, --budget larger than --context, --sequences, --decode-tps, --replication,
// --node-ram not positive, --link not a path of the profile, --policy not in the churn table.
StatusOr<CapacityPlan> MakeCapacityPlan(const PlanRequest& request, const MachineProfile& profile,
                                        const ChurnTable& churn);

nlohmann::json CapacityPlanToJson(const CapacityPlan& plan);
std::string FormatCapacityPlan(const CapacityPlan& plan);

}  // namespace foresight::planner
