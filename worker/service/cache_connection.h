// CacheConnection: the worker's link to the cache service, one node (--cache HOST:PORT) or a
// cluster (--etcd URL, through ConnectClusterAsCacheClient). It connects lazily and reconnects
// after a failure: a request that saw the cache fail calls MarkBroken, and the next Get makes a
// fresh client (a restarted node may listen for UCX on a new port, so the old client's data path
// cannot simply be reused).
//
// Thread-safety: all methods may be called concurrently; a client handed out stays valid (shared)
// while a caller holds it, even after MarkBroken.
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "client/cache_client.h"
#include "common/mutex.h"
#include "common/status.h"

namespace foresight::worker {

struct CacheConnectionOptions {
  std::string cache;    // a node's gRPC HOST:PORT, or empty with etcd
  std::string etcd;     // etcd endpoints http://HOST:PORT[,...]: use the cluster
  int replication = 1;  // cluster only
  std::string token;    // the cache service's token (empty: none)
  std::string ucx_transports = "auto";
  UcxTuning ucx_tuning;
  std::chrono::milliseconds timeout{10000};
};

class CacheConnection {
 public:
  explicit CacheConnection(CacheConnectionOptions options) : options_(std::move(options)) {}

  // The current client, connecting first if there is none. Errors name the node or etcd URL.
  StatusOr<std::shared_ptr<CacheClient>> Get();
  // `client` failed: drop it (if it is still the current one) so the next Get reconnects.
  void MarkBroken(const std::shared_ptr<CacheClient>& client);
  // Reachable now (Health on the current client; connects if needed).
  Status Check();

  // "HOST:PORT" or "etcd:URL".
  std::string Describe() const;
  int64_t connects() const;
  // Bytes of transfer buffers the current client holds (CacheClient::buffer_usage); 0 with none.
  uint64_t transfer_buffer_bytes() const;

 private:
  const CacheConnectionOptions options_;
  mutable Mutex mu_;
  std::shared_ptr<CacheClient> client_ FS_GUARDED_BY(mu_);
  int64_t connects_ FS_GUARDED_BY(mu_) = 0;
};

}  // namespace foresight::worker
