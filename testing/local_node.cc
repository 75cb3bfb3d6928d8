#include "testing/local_node.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace foresight {

std::string ExecutableDir() {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : exe.parent_path().string();
}

StatusOr<std::unique_ptr<LocalNode>> LocalNode::Start(std::vector<std::string> args, std::string binary) {
  std::unique_ptr<LocalNode> node(new LocalNode());
  static int counter = 0;
  node->log_path_ = std::filesystem::temp_directory_path().string() + "/foresight-node-" + std::to_string(getpid()) +
                    "-" + std::to_string(counter++) + ".log";
  int out[2];
  if (pipe(out) != 0) return Internal("pipe failed");
  if (binary.empty()) binary = ExecutableDir() + "/foresight-cached";
  if (access(binary.c_str(), X_OK) != 0) return NotFound("cannot run " + binary + " (build foresight-cached first)");
  std::vector<std::string> argv_s = {binary};
  // A caller may pin the address (e.g. to restart a node where its clients expect it).
  if (std::find(args.begin(), args.end(), "--listen") == args.end()) {
    argv_s.insert(argv_s.end(), {"--listen", "127.0.0.1:0"});
  }
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  pid_t pid = fork();
  if (pid < 0) return Internal("fork failed");
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    int log = open(node->log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (log >= 0) dup2(log, STDERR_FILENO);
    close(out[0]);
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(out[1]);
  node->pid_ = pid;
  // Wait for "READY grpc=HOST:PORT ucx=PORT".
  std::string buffer;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{out[0], POLLIN, 0};
    if (poll(&p, 1, 100) > 0) {
      char chunk[512];
      ssize_t n = read(out[0], chunk, sizeof(chunk));
      if (n <= 0) break;
      buffer.append(chunk, static_cast<size_t>(n));
      auto pos = buffer.find("READY grpc=");
      if (pos != std::string::npos && buffer.find('\n', pos) != std::string::npos) {
        std::istringstream line(buffer.substr(pos));
        std::string ready, grpc, ucx, metrics;
        line >> ready >> grpc >> ucx >> metrics;
        node->address_ = grpc.substr(5);
        node->ucx_port_ = std::stoi(ucx.substr(4));
        if (metrics.rfind("metrics=", 0) == 0) node->metrics_port_ = std::stoi(metrics.substr(8));
        close(out[0]);
        return node;
      }
    }
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      node->pid_ = -1;
      close(out[0]);
      return Internal("foresight-cached exited before it was ready: " + node->Log());
    }
  }
  close(out[0]);
  return DeadlineExceeded("foresight-cached did not become ready within 30 s: " + node->Log());
}

namespace {

// Forks `argv` with stdout on a pipe and stderr into `log_path`, and waits until stdout shows a
// line starting with `ready` (returned, without the newline). On failure the child is reaped.
StatusOr<std::string> SpawnUntilReady(const std::vector<std::string>& argv_s, const std::string& log_path,
                                      const std::string& ready, int timeout_s, pid_t* pid_out) {
  *pid_out = -1;
  if (access(argv_s[0].c_str(), X_OK) != 0) return NotFound("cannot run " + argv_s[0] + " (build it first)");
  int out[2];
  if (pipe(out) != 0) return Internal("pipe failed");
  pid_t pid = fork();
  if (pid < 0) return Internal("fork failed");
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (log >= 0) dup2(log, STDERR_FILENO);
    close(out[0]);
    std::vector<std::string> copy = argv_s;
    std::vector<char*> argv;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(out[1]);
  std::string buffer;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{out[0], POLLIN, 0};
    if (poll(&p, 1, 100) > 0) {
      char chunk[512];
      ssize_t n = read(out[0], chunk, sizeof(chunk));
      if (n <= 0) break;
      buffer.append(chunk, static_cast<size_t>(n));
      auto pos = buffer.find(ready);
      auto end = pos == std::string::npos ? pos : buffer.find('\n', pos);
      if (end != std::string::npos) {
        close(out[0]);
        *pid_out = pid;
        return buffer.substr(pos, end - pos);
      }
    }
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      close(out[0]);
      return Internal(argv_s[0] + " exited before it was ready");
    }
  }
  close(out[0]);
  kill(pid, SIGKILL);
  int status;
  waitpid(pid, &status, 0);
  return DeadlineExceeded(argv_s[0] + " did not become ready within " + std::to_string(timeout_s) + " s");
}

// True while *pid runs; reaps it (and sets *pid to -1) once it has exited.
bool StillRunning(pid_t* pid) {
  if (*pid <= 0) return false;
  int status;
  if (waitpid(*pid, &status, WNOHANG) == *pid) {
    *pid = -1;
    return false;
  }
  return true;
}

int StopPid(pid_t* pid) {
  if (*pid <= 0) return -1;
  kill(*pid, SIGTERM);
  int status = 0;
  for (int i = 0; i < 200; ++i) {
    if (waitpid(*pid, &status, WNOHANG) == *pid) {
      *pid = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  kill(*pid, SIGKILL);
  waitpid(*pid, &status, 0);
  *pid = -1;
  return -2;
}

std::string ReadWhole(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

StatusOr<std::unique_ptr<LocalWorker>> LocalWorker::Start(std::vector<std::string> args, std::string binary,
                                                          int ready_timeout_s) {
  std::unique_ptr<LocalWorker> w(new LocalWorker());
  static int counter = 0;
  w->log_path_ = std::filesystem::temp_directory_path().string() + "/foresight-worker-" + std::to_string(getpid()) +
                 "-" + std::to_string(counter++) + ".log";
  if (binary.empty()) binary = ExecutableDir() + "/foresight-worker";
  std::vector<std::string> argv = {binary, "--listen", "127.0.0.1:0"};
  argv.insert(argv.end(), args.begin(), args.end());
  auto line = SpawnUntilReady(argv, w->log_path_, "READY grpc=", ready_timeout_s, &w->pid_);
  if (!line.ok()) return Status(line.status().code(), line.status().message() + ": " + w->Log());
  // "READY grpc=HOST:PORT fingerprint=HEX [http=HOST:PORT]"
  std::istringstream in(*line);
  std::string field;
  in >> field;
  while (in >> field) {
    if (field.rfind("grpc=", 0) == 0) w->address_ = field.substr(5);
    if (field.rfind("fingerprint=", 0) == 0) w->fingerprint_ = field.substr(12);
    if (field.rfind("http=", 0) == 0) w->http_address_ = field.substr(5);
  }
  return w;
}

bool LocalWorker::running() { return StillRunning(&pid_); }

int LocalWorker::Stop() { return StopPid(&pid_); }

std::string LocalWorker::Log() { return ReadWhole(log_path_); }

LocalWorker::~LocalWorker() {
  if (pid_ > 0) Stop();
  std::filesystem::remove(log_path_);
}

bool LocalNode::running() { return StillRunning(&pid_); }

int LocalNode::Stop() {
  if (pid_ <= 0) return -1;
  kill(pid_, SIGTERM);
  int status = 0;
  for (int i = 0; i < 200; ++i) {
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  Kill9();
  return -2;
}

void LocalNode::Kill9() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

std::string LocalNode::Log() { return ReadWhole(log_path_); }

LocalNode::~LocalNode() {
  if (pid_ > 0) Stop();
  std::filesystem::remove(log_path_);
}

TempDir::TempDir(const std::string& name) {
  path_ = std::filesystem::temp_directory_path().string() + "/foresight-" + name + "-" + std::to_string(getpid());
  std::filesystem::remove_all(path_);
  std::filesystem::create_directories(path_);
}

TempDir::~TempDir() { std::filesystem::remove_all(path_); }

}  // namespace foresight
