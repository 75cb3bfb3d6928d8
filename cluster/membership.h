// NodeMembership: a cache node's entry in the cluster's member list in etcd.
//
// The node writes `<prefix><node_id>` -> its ClusterMember record (cluster/member_record.h) under
// an etcd lease of `ttl` seconds and refreshes the lease every
// ttl/3. If the node dies, etcd drops the entry when the lease runs out; Stop() (SIGTERM) revokes
// the lease at once. Clients (cluster/cluster_client.h) read the list to route keys.
//
// etcd being unreachable never stops the node serving: the refresher keeps retrying, and when the
// lease expired meanwhile it grants a new one and writes the entry again. `incarnation` is new
// on every process start, so that clients can tell a restarted node (whose RAM tier is empty and
// which missed writes while it was down) from one that never left, and repair it.
//
// Thread-safety: Start and Stop from one thread; state() from any.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "cluster/etcd_client.h"
#include "cluster/member_record.h"
#include "common/mutex.h"
#include "common/status.h"

namespace foresight {

struct MembershipOptions {
  std::string etcd;  // endpoints, "http://HOST:PORT[,...]"
  std::string prefix = kDefaultMembersPrefix;
  std::string node_id;    // stable across restarts (it decides which keys the node owns)
  std::string advertise;  // gRPC HOST:PORT that clients should dial
  uint32_t ucx_port = 0;
  bool nvme = false;
  int64_t ttl_seconds = 10;
};

class NodeMembership {
 public:
  // Validates the options and starts the refresher; the first registration is attempted before
  // returning, and its failure (etcd down) is logged, not returned: the refresher retries.
  static StatusOr<std::unique_ptr<NodeMembership>> Start(const MembershipOptions& options);
  ~NodeMembership();
  NodeMembership(const NodeMembership&) = delete;
  NodeMembership& operator=(const NodeMembership&) = delete;

  // Revokes the lease (the entry disappears at once) and stops the refresher.
  Status Stop();

  bool registered() const { return registered_; }
  const std::string& key() const { return key_; }
  // The JSON value written to etcd.
  const std::string& value() const { return value_; }

 private:
  explicit NodeMembership(MembershipOptions options);
  // Grants a lease and writes the entry; sets lease_.
  Status Register();
  void Refresh();

  MembershipOptions options_;
  std::unique_ptr<EtcdClient> etcd_;
  std::string key_, value_;
  int64_t lease_ = 0;  // refresher thread only (and Stop after it joined)
  std::atomic<bool> registered_{false};
  Mutex mu_;
  CondVar cv_;
  bool stopping_ FS_GUARDED_BY(mu_) = false;
  std::thread refresher_;
};

}  // namespace foresight
