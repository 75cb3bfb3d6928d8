#include "worker/service/cache_connection.h"

#include "cluster/cluster_client.h"

namespace foresight::worker {

StatusOr<std::shared_ptr<CacheClient>> CacheConnection::Get() {
  MutexLock lock(mu_);
  if (client_ != nullptr) return client_;
  CacheClientOptions node;
  node.address = options_.cache;
  node.token = options_.token;
  node.ucx_transports = options_.ucx_transports;
  node.ucx_tuning = options_.ucx_tuning;
  node.timeout = options_.timeout;
  std::unique_ptr<CacheClient> client;
  if (!options_.etcd.empty()) {
    ClusterClientOptions co;
    co.etcd = options_.etcd;
    co.replication = options_.replication;
    co.node = node;
    auto c = ConnectClusterAsCacheClient(co);
    if (!c.ok()) return c.status().WithContext("connecting to the cache cluster at " + options_.etcd);
    client = std::move(*c);
  } else {
    if (options_.cache.empty()) return FailedPrecondition("no cache service configured (--cache or --etcd)");
    auto c = CacheClient::Connect(node);
    if (!c.ok()) return c.status().WithContext("connecting to the cache node " + options_.cache);
    client = std::move(*c);
  }
  client_ = std::shared_ptr<CacheClient>(std::move(client));
  ++connects_;
  return client_;
}

void CacheConnection::MarkBroken(const std::shared_ptr<CacheClient>& client) {
  MutexLock lock(mu_);
  if (client_ == client) client_.reset();
}

Status CacheConnection::Check() {
  auto c = Get();
  if (!c.ok()) return c.status();
  Status s = (*c)->Health();
  if (!s.ok()) MarkBroken(*c);
  return s;
}

std::string CacheConnection::Describe() const {
  return options_.etcd.empty() ? options_.cache : "etcd:" + options_.etcd;
}

int64_t CacheConnection::connects() const {
  MutexLock lock(mu_);
  return connects_;
}

uint64_t CacheConnection::transfer_buffer_bytes() const {
  MutexLock lock(mu_);
  return client_ != nullptr ? client_->buffer_usage().held_bytes : 0;
}

}  // namespace foresight::worker
