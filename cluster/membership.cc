#include "cluster/membership.h"

#include <ctime>
#include <random>

#include <spdlog/spdlog.h>

namespace foresight {

StatusOr<std::unique_ptr<NodeMembership>> NodeMembership::Start(const MembershipOptions& options) {
  if (options.node_id.empty()) return InvalidArgument("--node-id is required with --etcd");
  if (options.node_id.find('/') != std::string::npos)
    return InvalidArgument("--node-id '" + options.node_id + "' must not contain '/'");
  if (options.advertise.empty() || options.advertise.find(':') == std::string::npos)
    return InvalidArgument("--advertise '" + options.advertise + "' must be HOST:PORT that clients can reach");
  const std::string host = options.advertise.substr(0, options.advertise.rfind(':'));
  if (host == "0.0.0.0" || host == "::" || host == "[::]" || host.empty())
    return InvalidArgument("--advertise '" + options.advertise +
                           "' is not an address clients can dial; give --advertise HOST:PORT when listening on all "
                           "interfaces");
  if (options.ttl_seconds < 2) return InvalidArgument("--etcd-ttl must be at least 2 seconds");
  std::unique_ptr<NodeMembership> m(new NodeMembership(options));
  FS_ASSIGN_OR_RETURN(m->etcd_, EtcdClient::Create(options.etcd));
  Status first = m->Register();
  if (!first.ok())
    spdlog::warn("membership: cannot register {} in etcd yet ({}); serving anyway, retrying", m->key_,
                 first.ToString());
  m->refresher_ = std::thread([raw = m.get()] { raw->Refresh(); });
  return m;
}

NodeMembership::NodeMembership(MembershipOptions options) : options_(std::move(options)) {
  key_ = options_.prefix + options_.node_id;
  std::random_device rd;
  const uint64_t incarnation = (uint64_t(rd()) << 32) | rd();
  ClusterMember record;
  record.node_id = options_.node_id;
  record.grpc = options_.advertise;
  record.ucx_port = options_.ucx_port;
  record.nvme = options_.nvme;
  record.incarnation = std::to_string(incarnation);
  record.started_at = static_cast<int64_t>(std::time(nullptr));
  value_ = EncodeClusterMember(record);
}

NodeMembership::~NodeMembership() { (void)Stop(); }

Status NodeMembership::Register() {
  FS_ASSIGN_OR_RETURN(int64_t lease, etcd_->GrantLease(options_.ttl_seconds));
  FS_RETURN_IF_ERROR(etcd_->Put(key_, value_, lease));
  lease_ = lease;
  registered_ = true;
  spdlog::info("membership: registered {} -> {} (lease {:x}, ttl {} s)", key_, options_.advertise, lease,
               options_.ttl_seconds);
  return Status::OK();
}

void NodeMembership::Refresh() {
  const auto period = std::chrono::milliseconds(options_.ttl_seconds * 1000 / 3);
  bool warned = false;
  mu_.Lock();
  while (!stopping_) {
    // After a failure, retry sooner so that a short etcd outage costs little.
    cv_.WaitFor(mu_, registered_ ? period : std::chrono::milliseconds(500),
                [&]() FS_REQUIRES(mu_) { return stopping_; });
    if (stopping_) break;
    mu_.Unlock();
    Status s;
    if (lease_ != 0) {
      auto ttl = etcd_->KeepAliveOnce(lease_);
      if (ttl.ok()) {
        s = Status::OK();
      } else if (ttl.status().code() == StatusCode::kNotFound) {
        spdlog::warn("membership: lease of {} expired (etcd unreachable for longer than its TTL?); registering again",
                     key_);
        registered_ = false;
        lease_ = 0;
        s = Register();
      } else {
        s = ttl.status();
      }
    } else {
      s = Register();
    }
    if (!s.ok() && !warned) {
      spdlog::warn("membership: etcd unreachable ({}); still serving, retrying", s.ToString());
      warned = true;
    } else if (s.ok() && warned) {
      spdlog::info("membership: etcd reachable again; {} registered", key_);
      warned = false;
    }
    mu_.Lock();
  }
  mu_.Unlock();
}

Status NodeMembership::Stop() {
  {
    MutexLock lock(mu_);
    if (stopping_) return Status::OK();
    stopping_ = true;
  }
  cv_.SignalAll();
  if (refresher_.joinable()) refresher_.join();
  if (lease_ == 0) return Status::OK();
  Status s = etcd_->RevokeLease(lease_);
  registered_ = false;
  if (s.ok())
    spdlog::info("membership: deregistered {}", key_);
  else
    spdlog::warn("membership: could not deregister {} ({}); etcd drops it when the lease expires", key_, s.ToString());
  return s;
}

}  // namespace foresight
