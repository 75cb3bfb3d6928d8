// LocalNode: starts a real foresight-cached process on this host (for tests, benchmarks and
// local launchers), with a free port chosen at run time, and always stops it (SIGTERM, then
// SIGKILL) on destruction.
//
// Thread-safety: one owner thread.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace foresight {

class LocalNode {
 public:
  // `args` are extra flags (e.g. {"--ram-bytes", "64MiB", "--nvme-dir", dir}); without "--listen"
  // among them the node listens on 127.0.0.1, a free port. `binary` is the
  // foresight-cached to run; empty: the one beside this executable.
  static StatusOr<std::unique_ptr<LocalNode>> Start(std::vector<std::string> args, std::string binary = "");
  ~LocalNode();

  const std::string& address() const { return address_; }  // gRPC HOST:PORT
  int ucx_port() const { return ucx_port_; }
  int metrics_port() const { return metrics_port_; }  // 0 unless started with --metrics
  pid_t pid() const { return pid_; }
  bool running();

  // SIGTERM and wait; returns the exit status (0 = clean).
  int Stop();
  // SIGKILL and wait (a crash).
  void Kill9();
  // Everything the node wrote to stderr so far (its log).
  std::string Log();

 private:
  LocalNode() = default;
  pid_t pid_ = -1;
  std::string address_;
  int ucx_port_ = 0;
  int metrics_port_ = 0;
  std::string log_path_;
};

// LocalWorker: starts a real foresight-worker process on this host (tests, the demo's launcher),
// on a free port, and stops it (SIGTERM, then SIGKILL) on destruction. `args` are its flags
// besides --listen (e.g. {"--cache", node->address(), "--model", path}).
class LocalWorker {
 public:
  // Waits up to `ready_timeout_s` for "READY grpc=HOST:PORT fingerprint=HEX ..." (loading a model
  // takes a while). `binary` empty: the foresight-worker beside this executable.
  static StatusOr<std::unique_ptr<LocalWorker>> Start(std::vector<std::string> args, std::string binary = "",
                                                      int ready_timeout_s = 60);
  ~LocalWorker();

  const std::string& address() const { return address_; }  // gRPC HOST:PORT
  const std::string& fingerprint() const { return fingerprint_; }
  // The OpenAI-compatible API's HOST:PORT when started with --http; empty otherwise.
  const std::string& http_address() const { return http_address_; }
  pid_t pid() const { return pid_; }
  bool running();
  // SIGTERM and wait; returns the exit status (0 = clean).
  int Stop();
  std::string Log();

 private:
  LocalWorker() = default;
  pid_t pid_ = -1;
  std::string address_, fingerprint_, http_address_, log_path_;
};

// A directory under the test temp dir, removed on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& name);
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The directory of the running executable (where the build puts every binary).
std::string ExecutableDir();

}  // namespace foresight
