#include "tests/cluster/local_etcd.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <thread>
#include <vector>

#include "cluster/etcd_client.h"

namespace foresight {

int FreeLoopbackPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

std::string LocalEtcd::Binary() {
  const char* env = std::getenv("FORESIGHT_ETCD");
  std::string path = env != nullptr ? env : "/usr/bin/etcd";
  return access(path.c_str(), X_OK) == 0 ? path : "";
}

StatusOr<std::unique_ptr<LocalEtcd>> LocalEtcd::Start() {
  if (Binary().empty()) return NotFound("etcd is not installed (apt-get install etcd-server, or set FORESIGHT_ETCD)");
  static std::atomic<int> counter{0};
  Status last;
  for (int attempt = 0; attempt < 5; ++attempt) {
    std::unique_ptr<LocalEtcd> etcd(new LocalEtcd());
    etcd->dir_ = std::make_unique<TempDir>("etcd-" + std::to_string(counter++));
    etcd->client_port_ = FreeLoopbackPort();
    etcd->peer_port_ = FreeLoopbackPort();
    etcd->url_ = "http://127.0.0.1:" + std::to_string(etcd->client_port_);
    last = etcd->Launch();
    if (last.ok()) return etcd;
    if (last.code() != StatusCode::kInternal) break;  // it ran but did not answer: not a port clash
  }
  return last;
}

RefusingLoopbackPort::RefusingLoopbackPort() {
  fd_ = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return;
  socklen_t len = sizeof(addr);
  getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
}

RefusingLoopbackPort::~RefusingLoopbackPort() {
  if (fd_ >= 0) close(fd_);
}

Status LocalEtcd::Launch() {
  const std::string client = url_;
  const std::string peer = "http://127.0.0.1:" + std::to_string(peer_port_);
  std::vector<std::string> args = {Binary(),
                                   "--name",
                                   "test",
                                   "--data-dir",
                                   dir_->path() + "/data",
                                   "--listen-client-urls",
                                   client,
                                   "--advertise-client-urls",
                                   client,
                                   "--listen-peer-urls",
                                   peer,
                                   "--initial-advertise-peer-urls",
                                   peer,
                                   "--initial-cluster",
                                   "test=" + peer,
                                   "--log-level",
                                   "error"};
  const std::string log = dir_->path() + "/etcd.log";
  pid_ = fork();
  if (pid_ < 0) return Internal("fork failed");
  if (pid_ == 0) {
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  auto etcd = EtcdClient::Create(url_, std::chrono::milliseconds(500));
  if (!etcd.ok()) return etcd.status();
  for (int i = 0; i < 150; ++i) {
    if ((*etcd)->RangePrefix("/").ok()) return Status::OK();
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return Internal("etcd exited at start; see " + log);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return DeadlineExceeded("etcd on " + url_ + " did not answer within 15 s; see " + log);
}

void LocalEtcd::Stop() {
  if (pid_ <= 0) return;
  kill(pid_, SIGTERM);
  int status;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

Status LocalEtcd::Restart() {
  Stop();
  return Launch();
}

LocalEtcd::~LocalEtcd() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    int status;
    waitpid(pid_, &status, 0);
  }
}

}  // namespace foresight
