// ClusterClient: the client of a Foresight cluster (many cache nodes whose member list is in
// etcd; see cluster/membership.h). Same data calls as CacheClient, routed per key.
//
// Routing is rendezvous (highest-random-weight) hashing: every node id gets a weight per key,
// XXH3(key, seed = XXH3(node id)), and the key's owners are the R heaviest nodes. Adding or
// removing one of N nodes moves only the keys it wins or held, about 1/N of them.
//
// Replication: a put is acknowledged when R nodes committed it. When an owner fails (error or
// timeout) the put goes on to the next node in the key's order, so that it still lands R times
// (the repairer moves it home later). A get tries the nodes in the key's order, skipping nodes
// that failed recently, and fails over on NOT_FOUND, DATA_LOSS, errors and timeouts; it probes
// at most R + `extra_probes` nodes, so a true miss costs a bounded number of calls.
//
// Membership is re-read from etcd every `refresh_interval`. When etcd is unreachable the last
// known member list stays in force: reads and writes go on; membership changes wait.
//
// Repair and rebalancing (`background_repair`): after every membership change (a node joined,
// left, or restarted with a new incarnation), a background thread lists every node's blocks and
// copies each block to those of its current owners that lack it; it also runs every
// `repair_interval` (blocks written to a fallback node while an owner was failing go home).
// Traffic never waits for it.
// A restarted node serves what its NVMe tier kept; what it missed is copied back by the repairer,
// and repair_stats() says how far that got. Copies on nodes that no longer own a key are left in
// place (they are extra replicas until evicted). One repairer per cluster is enough: enable it on
// one client (or run `foresight cluster repair`).
//
//   ClusterClientOptions o;
//   o.etcd = "http://127.0.0.1:2379";
//   o.replication = 2;
//   auto cluster = ClusterClient::Connect(o);
//   (*cluster)->Put(key, data, size);
//
// Thread-safety: all methods may be called concurrently.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "client/cache_client.h"
#include "cluster/member_record.h"
#include "common/block_key.h"
#include "common/status.h"

namespace foresight {

struct ClusterClientOptions {
  std::string etcd;  // "http://HOST:PORT[,...]"
  std::string prefix = kDefaultMembersPrefix;
  int replication = 1;      // R
  int extra_probes = 2;     // a get tries at most R + extra_probes nodes
  CacheClientOptions node;  // per-node options (address is ignored)
  std::chrono::milliseconds refresh_interval{500};
  std::chrono::milliseconds suspect_for{2000};  // a node that failed is tried last for this long
  bool background_repair = false;
  // The repairer also runs a pass this often without a membership change (0: only on changes), so
  // that blocks written to a fallback node during a brief node failure go home.
  std::chrono::milliseconds repair_interval{60000};
};

struct ClusterStats {
  uint64_t puts = 0, gets = 0;
  uint64_t put_failovers = 0, get_failovers = 0;  // items that went past their first choice
  uint64_t failed_puts = 0, failed_gets = 0;
  uint64_t membership_changes = 0, etcd_errors = 0;
  size_t members = 0;
  bool etcd_reachable = true;
};

struct RepairStats {
  uint64_t passes = 0;          // completed passes over every node's blocks
  uint64_t blocks_scanned = 0;  // in the last pass
  uint64_t blocks_copied = 0;   // over all passes
  uint64_t copy_errors = 0;     // over all passes
  bool pending = false;         // a membership change is waiting for (or in) a pass
  std::string last_error;
};

// The rendezvous weight of `node_id` for `key` (exposed for tests and tools).
uint64_t RendezvousWeight(const BlockKey& key, const std::string& node_id);
// Indices into `node_ids`, heaviest first.
std::vector<size_t> RendezvousOrder(const BlockKey& key, const std::vector<std::string>& node_ids);

class ClusterClient {
 public:
  // Reads the member list once (it must be reachable now and list at least one node), then keeps
  // it fresh in the background.
  static StatusOr<std::unique_ptr<ClusterClient>> Connect(const ClusterClientOptions& options);
  ~ClusterClient();
  ClusterClient(const ClusterClient&) = delete;
  ClusterClient& operator=(const ClusterClient&) = delete;

  // Each item gets its own status; the call's status is the first failure.
  Status PutBatch(std::span<BlockPut> items);
  Status GetBatch(std::span<BlockGet> items);
  Status Put(const BlockKey& key, const void* data, uint64_t size);
  StatusOr<uint64_t> Get(const BlockKey& key, void* dest, uint64_t capacity, std::vector<ByteRange> ranges = {});

  // The current member list, by node id.
  std::vector<ClusterMember> members() const;
  // The node ids that own `key` (the R heaviest), heaviest first.
  std::vector<std::string> Owners(const BlockKey& key) const;
  // A client of one member (for per-node calls such as NodeStats).
  StatusOr<std::shared_ptr<CacheClient>> NodeClient(const std::string& node_id);

  // Registers a buffer for transfers with every node client, present and future (see
  // CacheClient::RegisterBuffer). The buffer must outlive this client.
  Status RegisterBuffer(void* data, uint64_t size);

  // Re-reads the member list now. Errors when etcd is unreachable (the old list stays).
  Status RefreshMembership();
  // Runs one repair pass now, in the caller's thread (also what the background repairer runs).
  Status RepairOnce();
  // Waits until no repair is pending (background_repair), or the timeout passes.
  bool WaitForRepair(std::chrono::milliseconds timeout);

  ClusterStats stats() const;
  RepairStats repair_stats() const;

 private:
  class Impl;
  explicit ClusterClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// A CacheClient over the whole cluster, for code written against one node (the worker): data
// calls are routed and replicated as above; Stat and Evict go to the key's owners (Evict to every
// member that holds it), LongestPrefix asks each key's owners in turn; List, Flush and Health
// cover every member, NodeStats is their sum, Info describes the cluster ("cluster:<etcd>").
StatusOr<std::unique_ptr<CacheClient>> ConnectClusterAsCacheClient(const ClusterClientOptions& options);

}  // namespace foresight
