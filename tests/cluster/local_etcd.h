// LocalEtcd: a real etcd (Debian's etcd-server) on free loopback ports with a temporary data dir,
// for the cluster tests. Stop() and Start() again keep the data dir and ports, as an outage would.
// Always killed and cleaned up on destruction.
//
// Thread-safety: one owner thread.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>

#include "common/status.h"
#include "testing/local_node.h"

namespace foresight {

class LocalEtcd {
 public:
  // The etcd binary: $FORESIGHT_ETCD, else /usr/bin/etcd. Empty when absent (tests then skip).
  static std::string Binary();
  // On free loopback ports; tries fresh ports a few times when etcd exits at start (a port taken
  // between choosing it and etcd binding it).
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

// A TCP port that was free on 127.0.0.1 a moment ago (another process may take it before it is
// bound again: LocalEtcd::Start retries on fresh ports when etcd cannot bind).
int FreeLoopbackPort();

// A TCP port on 127.0.0.1 that is bound but never listened on, so that connections to it are
// refused for as long as this object lives and no other process can take the port meanwhile. For
// tests of an endpoint that is not there.
class RefusingLoopbackPort {
 public:
  RefusingLoopbackPort();
  ~RefusingLoopbackPort();
  RefusingLoopbackPort(const RefusingLoopbackPort&) = delete;
  RefusingLoopbackPort& operator=(const RefusingLoopbackPort&) = delete;
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

}  // namespace foresight
