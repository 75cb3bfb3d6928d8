#include "client/local_node.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

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
  std::vector<std::string> argv_s = {binary, "--listen", "127.0.0.1:0"};
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

bool LocalNode::running() {
  if (pid_ <= 0) return false;
  int status;
  if (waitpid(pid_, &status, WNOHANG) == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

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

std::string LocalNode::Log() {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

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
