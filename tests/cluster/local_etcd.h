// LocalEtcd: a real etcd (Debian's etcd-server) on free loopback ports with a temporary data dir,
// for the cluster tests. Stop() and Start() again keep the data dir and ports, as an outage would.
// Always killed and cleaned up on destruction.
//
// Thread-safety: one owner thread.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>

#include "testing/local_node.h"
#include "common/status.h"

namespace foresight {

class LocalEtcd {
 public:
  // The etcd binary: $FORESIGHT_ETCD, else /usr/bin/etcd. Empty when absent (tests then skip).
  static std::string Binary();
  static StatusOr<std::unique_ptr<LocalEtcd>> Start();
  ~LocalEtcd();

  // "http://127.0.0.1:PORT"
  const std::string& url() const { return url_; }
  // SIGTERM and wait.
  void Stop();
  // Starts again on the same ports and data dir; waits until it answers.
  Status Restart();

 private:
  LocalEtcd() = default;
  Status Launch();
  std::unique_ptr<TempDir> dir_;
  int client_port_ = 0, peer_port_ = 0;
  std::string url_;
  pid_t pid_ = -1;
};

// A TCP port that was free on 127.0.0.1 a moment ago.
int FreeLoopbackPort();

}  // namespace foresight
