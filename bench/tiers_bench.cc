// `foresight-bench tiers`: put and get throughput and latency of a cache node per data path, next
// to the ceilings measured in the same run.
//
// Paths (each against a node running in a child process, so shared memory is really cross-process):
//   ram-shm   RAM-resident blocks over UCX shared memory. Gets are one-sided: the client maps the
//             node's arena read-only, leases a block, copies it out with XXH3 fused into the copy,
//             releases (batched). Puts go through buffers from UcxTransport::Allocate, which the
//             node maps (one memcpy on the node).                    ceiling: memcpy
//   ram-tcp   RAM-resident blocks over UCX TCP (active-message rendezvous)
//                                                                      ceiling: ucx_perftest ucp_am_bw, UCX_TLS=tcp,
//                                                                      with as many sends outstanding (-O) as
//                                                                      the row has requests in flight
//   nvme      gets of blocks evicted to the NVMe tier (a node with a small RAM tier), over shared memory;
//             each get promotes a block from RocksDB                  ceiling: none
//   ram-grpc  RAM-resident blocks over the gRPC fallback data path (CacheClient, DataPath::kGrpc)
//                                                                      ceiling: none (memcpy shown)
// With --clients N,... the RAM paths' gets are also measured from N client processes at once (each
// with its own connection and one get in flight, as N workers waiting on their fetches), so that
// a plan can read what a node sustains under many workers rather than one pipelining client.
// With --profile FILE the rows are also written as a machine profile for `foresight plan`
// (planner/machine_profile.h): its own defaults (4 KiB..4 MiB, paths ram-shm, ram-tcp, nvme,
// clients 1, 4, 16, one trial, no ceilings) fit in about 5 minutes.
// The memcpy ceiling copies blocks of the same size out of an arena as large as the node's,
// striding across it so the source is not cache-resident, into a ring of 16 destination slots, as a
// transfer would. Throughput is in GB/s (1e9 bytes per second).
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <ucp/api/ucp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include <grpcpp/grpcpp.h>
#include "bench/commands.h"

#include "cache_service/arena_memory.h"
#include "cache_service/block_store.h"
#include "cache_service/control_service.h"
#include "cache_service/node_metrics.h"
#include "cache_service/ucx_server.h"
#include "client/cache_client.h"
#include "client/ucx_transport.h"
#include "common/checksum.h"
#include "common/file_io.h"
#include "common/units.h"
#include "planner/machine_profile.h"

namespace foresight::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct TiersFlags {
  bool json = false;
  bool quick = false;
  std::string ram = "";                           // node RAM tier; default 1GiB (quick: 512MiB)
  std::string nvme_dir = "";                      // default: a temp dir
  std::string perftest = FORESIGHT_UCX_PERFTEST;  // the linked UCX's (bench/CMakeLists.txt)
  std::string paths;                              // comma-separated subset of ram-shm,ram-tcp,ram-grpc,nvme; empty: all
  std::string sizes;          // comma-separated block sizes (e.g. 1MiB,4MiB); empty: the default list
  std::string inflight;       // comma-separated in-flight counts; empty: the default list
  std::string clients;        // comma-separated concurrent client counts (RAM-path gets); empty: 1
  double client_seconds = 2;  // each row of several clients
  int trials = 3;
  std::string row_bytes;            // bytes moved per RAM row; default 256MiB (quick: 128MiB)
  int keys = 0;                     // distinct keys per RAM-path row; 0: a fifth of the RAM tier
  std::string huge_pages = "auto";  // the node's arena (and the memcpy ceiling's): auto, on, off
  std::string profile;              // write a machine profile here (planner/machine_profile.h)
  bool trials_set = false, row_bytes_set = false;
};

// "a,b,c" -> {"a","b","c"} (empty items dropped).
std::vector<std::string> SplitList(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

struct Row {
  std::string path, op;
  uint64_t block_bytes = 0;
  int clients = 1;  // clients at once, each with `inflight` requests in flight
  int inflight = 0;
  double gbps = 0, p50_us = 0, p99_us = 0;
  std::optional<double> ceiling_gbps;
  std::string ceiling;  // what the ceiling is
  uint64_t errors = 0;
  std::string transport;
  // CPU time per MiB moved (user + system), of this process (client) and of the node's process:
  // on a shared machine a steadier figure than GB/s.
  double client_cpu_us_per_mib = 0, node_cpu_us_per_mib = 0;
};

// CPU seconds a process's threads have run (sum of /proc/<pid>/task/*/schedstat, nanoseconds);
// 0 when unreadable.
double ProcessCpuSeconds(pid_t pid) {
  uint64_t ns = 0;
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    FILE* f = std::fopen((task.path() / "schedstat").c_str(), "r");
    if (f == nullptr) continue;
    unsigned long long run = 0;
    if (std::fscanf(f, "%llu", &run) == 1) ns += run;
    std::fclose(f);
  }
  return ns / 1e9;
}

// --- The node, in a child process. -------------------------------------------------------------

struct ChildNode {
  pid_t pid = -1;
  int control_fd = -1;  // closing it stops the node
  uint16_t port = 0;
  uint16_t grpc_port = 0;
};

// The write ends of the control pipes of nodes forked so far. A node forked later must close
// them: holding one, it would keep an earlier node from seeing EOF, and StopNode would wait 10 s
// and kill that node instead of stopping it.
std::vector<int>& ControlFds() {
  static std::vector<int> fds;
  return fds;
}

// Forks a node (BlockStore::Open + UcxServer). Must run before this process starts threads or UCX.
StatusOr<ChildNode> ForkNode(const BlockStoreOptions& options) {
  int port_pipe[2], control_pipe[2];
  if (pipe(port_pipe) != 0 || pipe(control_pipe) != 0) return Internal("pipe failed");
  pid_t pid = fork();
  if (pid < 0) return Internal("fork failed");
  if (pid == 0) {
    close(port_pipe[0]);
    close(control_pipe[1]);
    for (int fd : ControlFds()) close(fd);
    // The node's logs must not mix with the table or the JSON rows on stdout.
    spdlog::set_default_logger(spdlog::stderr_color_mt("bench-node"));
    uint16_t port = 0;
    int grpc_port = 0;
    std::string error;
    auto store = BlockStore::Open(options);
    std::unique_ptr<UcxServer> server;
    NodeMetrics metrics;
    std::unique_ptr<ControlService> control;
    std::unique_ptr<grpc::Server> grpc_server;
    if (store.ok()) {
      UcxServerOptions uo;
      uo.host = "127.0.0.1";
      auto started = UcxServer::Start(store->get(), uo);
      if (started.ok()) {
        server = std::move(*started);
        port = server->port();
        ControlServiceOptions co;
        co.ucx_port = port;
        co.max_block_bytes = options.max_block_bytes;
        control = std::make_unique<ControlService>(store->get(), &metrics, co);
        grpc::ServerBuilder builder;
        builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &grpc_port);
        builder.RegisterService(control.get());
        builder.SetMaxReceiveMessageSize(512 << 20);
        builder.SetMaxSendMessageSize(512 << 20);
        grpc_server = builder.BuildAndStart();
      } else {
        error = started.status().ToString();
      }
    } else {
      error = store.status().ToString();
    }
    if (write(port_pipe[1], &port, sizeof port) != sizeof port) _exit(2);
    const uint16_t grpc_port16 = static_cast<uint16_t>(grpc_port);
    if (write(port_pipe[1], &grpc_port16, sizeof grpc_port16) != sizeof grpc_port16) _exit(2);
    if (port == 0) {
      ssize_t ignored = write(port_pipe[1], error.data(), error.size());
      (void)ignored;
      _exit(1);
    }
    close(port_pipe[1]);
    char c;
    while (read(control_pipe[0], &c, 1) > 0) {}
    if (grpc_server) grpc_server->Shutdown();
    grpc_server.reset();
    server.reset();
    store->reset();
    _exit(0);
  }
  close(port_pipe[1]);
  close(control_pipe[0]);
  ChildNode node;
  node.pid = pid;
  node.control_fd = control_pipe[1];
  ControlFds().push_back(control_pipe[1]);
  uint16_t port = 0;
  if (read(port_pipe[0], &port, sizeof port) != sizeof port || port == 0) {
    char buf[512] = {};
    ssize_t n = read(port_pipe[0], buf, sizeof buf - 1);
    close(port_pipe[0]);
    waitpid(pid, nullptr, 0);
    return Unavailable("bench node failed to start: " + std::string(buf, n > 0 ? n : 0));
  }
  uint16_t grpc_port = 0;
  if (read(port_pipe[0], &grpc_port, sizeof grpc_port) != sizeof grpc_port) grpc_port = 0;
  close(port_pipe[0]);
  node.port = port;
  node.grpc_port = grpc_port;
  return node;
}

void StopNode(ChildNode& node) {
  if (node.pid <= 0) return;
  close(node.control_fd);
  std::erase(ControlFds(), node.control_fd);
  int status;
  for (int i = 0; i < 100; ++i) {
    if (waitpid(node.pid, &status, WNOHANG) == node.pid) {
      node.pid = -1;
      return;
    }
    usleep(100000);
  }
  kill(node.pid, SIGKILL);
  waitpid(node.pid, &status, 0);
  node.pid = -1;
}

// --- Ceilings. ---------------------------------------------------------------------------------

// The step, in blocks, between consecutive reads of an arena of `blocks` blocks: a prime number of
// blocks, so that consecutive reads are far apart and the source is not cache-resident.
uint64_t ColdStride(uint64_t blocks) { return 7919 % blocks == 0 ? 1 : 7919 % blocks; }

double MemcpyCeilingGbps(uint8_t* arena, uint64_t arena_bytes, uint64_t block, double seconds) {
  std::vector<uint8_t> dest(16 * block);
  std::memset(dest.data(), 1, dest.size());
  const uint64_t blocks = arena_bytes / block;
  const uint64_t stride = ColdStride(blocks);
  uint64_t at = 0, bytes = 0;
  auto start = Clock::now();
  auto deadline = start + std::chrono::duration<double>(seconds);
  uint64_t i = 0;
  while (Clock::now() < deadline) {
    for (int k = 0; k < 16; ++k, ++i) {
      std::memcpy(dest.data() + (i % 16) * block, arena + at * block, block);
      at = (at + stride) % blocks;
      bytes += block;
    }
  }
  double s = std::chrono::duration<double>(Clock::now() - start).count();
  return bytes / s / 1e9;
}

// Plain kernel TCP on loopback, without UCX: what the socket layer itself gives for 1 MiB-class
// transfers on this machine. One thread sends `bytes` in blocks over two connections (UCX's two
// TCP lanes here: lo and the host's address), block k on connection k % 2; another receives each
// block whole into a ring of 16 slots. Both use non-blocking calls and spin, as UCX progress threads
// do. The source is the node-sized arena strided as the memcpy ceiling strides it (cold, the node's
// case), or with kHot one cache-resident block per connection (ucx_perftest's one buffer).
// No request messages: a reference for the ram-tcp rows, not their ceiling. kColdVerified adds the
// one duty the issue puts on every get, the client's XXH3 check of each block as it lands: the least
// work any implementation of a TCP get from this node must do.
enum class StreamSource { kCold, kHot, kColdVerified };

std::optional<double> TcpStreamGbps(const uint8_t* arena, uint64_t arena_bytes, uint64_t block, uint64_t bytes,
                                    StreamSource source, std::string* note) {
  const bool hot = source == StreamSource::kHot;
  const bool verify = source == StreamSource::kColdVerified;
  constexpr int kConns = 2;
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sa;
  int send_fd[kConns] = {-1, -1}, recv_fd[kConns] = {-1, -1};
  auto close_all = [&] {
    for (int k = 0; k < kConns; ++k) {
      if (send_fd[k] >= 0) close(send_fd[k]);
      if (recv_fd[k] >= 0) close(recv_fd[k]);
    }
  };
  bool ok = listener >= 0 && bind(listener, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 &&
            listen(listener, kConns) == 0 && getsockname(listener, reinterpret_cast<sockaddr*>(&sa), &len) == 0;
  for (int k = 0; ok && k < kConns; ++k) {
    send_fd[k] = socket(AF_INET, SOCK_STREAM, 0);
    ok = send_fd[k] >= 0 && connect(send_fd[k], reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 &&
         (recv_fd[k] = accept(listener, nullptr, nullptr)) >= 0;
    int one = 1;
    ok = ok && setsockopt(send_fd[k], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0 &&
         fcntl(send_fd[k], F_SETFL, O_NONBLOCK) == 0 && fcntl(recv_fd[k], F_SETFL, O_NONBLOCK) == 0;
  }
  if (listener >= 0) close(listener);
  if (!ok) {
    *note = std::string("tcp-stream: loopback sockets: ") + std::strerror(errno);
    close_all();
    return std::nullopt;
  }

  const uint64_t blocks = arena_bytes / block;
  const uint64_t stride = ColdStride(blocks);
  std::vector<uint64_t> checksums;  // of each arena block, computed before the clock starts
  if (verify) {
    for (uint64_t b = 0; b < blocks; ++b) checksums.push_back(BlockChecksum(arena + b * block, block));
  }
  const uint64_t count = std::max<uint64_t>(bytes / block, 16);
  uint64_t expect[kConns];
  for (int k = 0; k < kConns; ++k) expect[k] = count / kConns + (static_cast<uint64_t>(k) < count % kConns);
  std::atomic<bool> failed{false};
  bool mismatch = false;
  std::thread receiver([&] {
    std::vector<uint8_t> ring(16 * block, 1);
    uint64_t done[kConns] = {}, off[kConns] = {}, total = 0;
    while (total < count && !failed.load(std::memory_order_relaxed)) {
      for (int k = 0; k < kConns; ++k) {
        if (done[k] == expect[k]) continue;
        uint8_t* slot = ring.data() + ((done[k] * kConns + k) % 16) * block;
        ssize_t n = recv(recv_fd[k], slot + off[k], block - off[k], 0);
        if (n > 0) {
          off[k] += n;
          if (off[k] == block) {
            const uint64_t index = done[k] * kConns + k;
            if (verify && BlockChecksum(slot, block) != checksums[(index * stride) % blocks]) mismatch = true;
            off[k] = 0, ++done[k], ++total;
          }
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
          failed = true;
        }
      }
    }
  });

  uint64_t sent[kConns] = {}, off[kConns] = {};
  auto start = Clock::now();
  for (uint64_t total = 0; total < count && !failed.load(std::memory_order_relaxed);) {
    for (int k = 0; k < kConns; ++k) {
      if (sent[k] == expect[k]) continue;
      const uint64_t index = sent[k] * kConns + k;
      const uint8_t* src = arena + (hot ? k : (index * stride) % blocks) * block;
      ssize_t n = send(send_fd[k], src + off[k], block - off[k], MSG_NOSIGNAL);
      if (n > 0) {
        off[k] += n;
        if (off[k] == block) off[k] = 0, ++sent[k], ++total;
      } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
        failed = true;
      }
    }
  }
  receiver.join();
  double s = std::chrono::duration<double>(Clock::now() - start).count();
  close_all();
  if (failed) {
    *note = "tcp-stream: a loopback connection failed";
    return std::nullopt;
  }
  if (mismatch) {
    *note = "tcp-stream: a block arrived with the wrong checksum";
    return std::nullopt;
  }
  return count * block / s / 1e9;
}

// XXH3 (BlockChecksum) over a cache-resident block: what a client pays to verify a get.
double VerifyGbps(uint64_t block, double seconds) {
  std::vector<uint8_t> data(block, 7);
  uint64_t bytes = 0, sink = 0;
  auto start = Clock::now();
  auto deadline = start + std::chrono::duration<double>(seconds);
  while (Clock::now() < deadline) {
    for (int k = 0; k < 8; ++k) {
      sink += BlockChecksum(data.data(), block);
      bytes += block;
    }
  }
  double s = std::chrono::duration<double>(Clock::now() - start).count();
  return sink == 1 ? 0 : bytes / s / 1e9;
}

uint16_t FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sa;
  bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  close(fd);
  return ntohs(sa.sin_port);
}

// The lib/ beside a UCX install's bin/ucx_perftest, for its loader: a UCX fetched by
// deploy/fetch-ucx.sh has no RPATH in its tools, which would otherwise load the system's UCX.
std::string UcxLibsFor(const std::string& binary) {
  size_t slash = binary.rfind('/');
  if (slash == std::string::npos) return "";
  std::string lib = binary.substr(0, slash) + "/../lib";
  if (access((lib + "/libucp.so.0").c_str(), R_OK) != 0) return "";
  const char* old = std::getenv("LD_LIBRARY_PATH");
  return old != nullptr && *old != '\0' ? lib + ":" + old : lib;
}

pid_t Spawn(const std::vector<std::string>& argv, const std::string& tls, int stdout_fd) {
  const std::string libs = UcxLibsFor(argv[0]);
  pid_t pid = fork();
  if (pid != 0) return pid;
  setenv("UCX_TLS", tls.c_str(), 1);
  if (!libs.empty()) setenv("LD_LIBRARY_PATH", libs.c_str(), 1);
  int devnull = open("/dev/null", O_WRONLY);
  dup2(stdout_fd >= 0 ? stdout_fd : devnull, 1);
  dup2(devnull, 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  execvp(args[0], args.data());
  _exit(127);
}

// ucx_perftest ucp_am_bw between two processes on loopback with UCX_TLS=tls; GB/s or nullopt.
// window: sends outstanding at once (-O), 0 for perftest's default (32 for ucp_am_bw); a path row
// with N requests in flight is compared with window N, like for like.
std::optional<double> PerftestGbps(const std::string& binary, const std::string& tls, uint64_t block, int iters,
                                   int window, std::string* note) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    const std::string port = std::to_string(FreePort());
    pid_t server = Spawn({binary, "-p", port}, tls, -1);
    usleep(300000);
    int out[2];
    if (pipe(out) != 0) return std::nullopt;
    std::vector<std::string> argv = {binary, "127.0.0.1",           "-p", port,
                                     "-t",   "ucp_am_bw",           "-s", std::to_string(block),
                                     "-n",   std::to_string(iters), "-w", std::to_string(std::max(10, iters / 20))};
    if (window > 0) {
      argv.push_back("-O");
      argv.push_back(std::to_string(window));
    }
    pid_t client = Spawn(argv, tls, out[1]);
    close(out[1]);
    std::string text;
    char buf[4096];
    for (ssize_t n; (n = read(out[0], buf, sizeof buf)) > 0;) text.append(buf, n);
    close(out[0]);
    int status = 0;
    waitpid(client, &status, 0);
    for (int i = 0; i < 50 && waitpid(server, nullptr, WNOHANG) == 0; ++i) usleep(100000);
    kill(server, SIGKILL);
    waitpid(server, nullptr, 0);
    // "Final:  <iters> <typ lat> <avg lat> <overall lat> <avg bw> <overall bw> <avg rate> <overall rate>"
    size_t at = text.find("Final:");
    if (at == std::string::npos) {
      *note = "ucx_perftest (" + binary + ") gave no result (" +
              (WIFEXITED(status) ? "exit status " + std::to_string(WEXITSTATUS(status)) +
                                       (WEXITSTATUS(status) == 127 ? ": it could not start" : "")
                                 : "killed by signal " + std::to_string(WTERMSIG(status))) +
              ")";
      continue;
    }
    std::istringstream line(text.substr(at + 6));
    double iters_done, typ, avg_lat, overall_lat, avg_bw, overall_bw;
    if (line >> iters_done >> typ >> avg_lat >> overall_lat >> avg_bw >> overall_bw) {
      return overall_bw * 1048576.0 / 1e9;  // perftest's MB is 2^20 bytes
    }
  }
  return std::nullopt;
}

// --- Paths. ------------------------------------------------------------------------------------

// One way of moving blocks to and from a node. Hook: the gRPC fallback row is another BenchPath
// (wrapping CacheClient with DataPath::kGrpc), added to the list in RunTiers.
class BenchPath {
 public:
  virtual ~BenchPath() = default;
  virtual std::string transport() = 0;
  // Starts one transfer of `bytes` through slot `slot` (0..15) of the path's buffers.
  virtual StatusOr<uint64_t> SubmitPut(const BlockKey& key, int slot, uint64_t bytes) = 0;
  virtual StatusOr<uint64_t> SubmitGet(const BlockKey& key, int slot, uint64_t bytes) = 0;
  virtual Status Wait(uint64_t handle) = 0;
};

class UcxBenchPath : public BenchPath {
 public:
  // `slots` buffer slots of `max_block` bytes each way (at most 16).
  static StatusOr<std::unique_ptr<UcxBenchPath>> Connect(uint16_t port, const std::string& transports,
                                                         uint64_t max_block, int slots = 16) {
    UcxTransportOptions o;
    o.transports = transports;
    o.request_timeout_s = 60;
    auto t = UcxTransport::Connect("127.0.0.1", port, "", o);
    if (!t.ok()) return t.status();
    auto path = std::unique_ptr<UcxBenchPath>(new UcxBenchPath);
    path->t_ = std::move(*t);
    path->max_block_ = max_block;
    path->slots_ = std::clamp(slots, 1, 16);
    auto src = path->t_->Allocate(path->slots_ * max_block);
    if (!src.ok()) return src.status();
    auto dst = path->t_->Allocate(path->slots_ * max_block);
    if (!dst.ok()) return dst.status();
    path->src_ = *src;
    path->dst_ = *dst;
    const UcxTransportStats stats = path->t_->Stats();
    if (transports == "shm" && !stats.arena_mapped) {
      std::cerr << "tiers: gets over shm are not one-sided: " << stats.arena_note << "\n";
    }
    std::mt19937_64 rng(42);
    for (uint64_t i = 0; i < src->size / 8; ++i) reinterpret_cast<uint64_t*>(src->data)[i] = rng();
    std::memset(dst->data, 0, dst->size);
    return path;
  }
  std::string transport() override {
    auto s = t_->Stats();
    return s.transport + (s.arena_mapped ? "+arena" : "") + (src_.fast_path ? "+mapped" : "");
  }
  void PrepareChecksums(uint64_t bytes) {
    if (checksum_bytes_ == bytes) return;
    checksum_bytes_ = bytes;
    for (int i = 0; i < slots_; ++i) checksums_[i] = BlockChecksum(src_.data + i * max_block_, bytes);
  }
  StatusOr<uint64_t> SubmitPut(const BlockKey& key, int slot, uint64_t bytes) override {
    PrepareChecksums(bytes);
    return t_->SubmitPuts({UcxPut{key, src_.data + slot * max_block_, bytes, checksums_[slot]}});
  }
  StatusOr<uint64_t> SubmitGet(const BlockKey& key, int slot, uint64_t bytes) override {
    return t_->SubmitGets({UcxGet{key, {}, dst_.data + slot * max_block_, max_block_}});
  }
  Status Wait(uint64_t handle) override {
    auto results = t_->Wait(handle, 60);
    if (results.size() != 1) return Internal("lost batch");
    return results[0].status;
  }

 private:
  std::unique_ptr<UcxTransport> t_;
  uint64_t max_block_ = 0;
  int slots_ = 16;
  UcxBuffer src_, dst_;
  uint64_t checksum_bytes_ = 0;
  uint64_t checksums_[16] = {};
};

// The gRPC fallback data path, through CacheClient (each transfer is one async Put/Get call).
class GrpcBenchPath : public BenchPath {
 public:
  static StatusOr<std::unique_ptr<GrpcBenchPath>> Connect(uint16_t grpc_port, uint64_t max_block) {
    CacheClientOptions o;
    o.ucx_tuning = UcxTuningFromEnvironment();
    o.address = "127.0.0.1:" + std::to_string(grpc_port);
    o.data_path = DataPath::kGrpc;
    o.timeout = std::chrono::seconds(60);
    auto client = CacheClient::Connect(o);
    if (!client.ok()) return client.status();
    auto path = std::unique_ptr<GrpcBenchPath>(new GrpcBenchPath);
    path->client_ = std::move(*client);
    path->max_block_ = max_block;
    path->src_.resize(16 * max_block);
    path->dst_.resize(16 * max_block);
    std::mt19937_64 rng(43);
    for (auto& b : path->src_) b = static_cast<uint8_t>(rng());
    return path;
  }
  std::string transport() override { return "grpc"; }
  StatusOr<uint64_t> SubmitPut(const BlockKey& key, int slot, uint64_t bytes) override {
    auto op = std::make_unique<Op>();
    op->put = BlockPut{key, src_.data() + slot * max_block_, bytes, {}};
    op->done = client_->PutBatchAsync(std::span<BlockPut>(&op->put, 1));
    return Track(std::move(op));
  }
  StatusOr<uint64_t> SubmitGet(const BlockKey& key, int slot, uint64_t bytes) override {
    auto op = std::make_unique<Op>();
    op->get.key = key;
    op->get.dest = dst_.data() + slot * max_block_;
    op->get.capacity = max_block_;
    op->done = client_->GetBatchAsync(std::span<BlockGet>(&op->get, 1));
    return Track(std::move(op));
  }
  Status Wait(uint64_t handle) override {
    auto it = ops_.find(handle);
    if (it == ops_.end()) return Internal("lost transfer");
    Status s = it->second->done.get();
    ops_.erase(it);
    return s;
  }

 private:
  struct Op {
    BlockPut put;
    BlockGet get;
    std::future<Status> done;
  };
  uint64_t Track(std::unique_ptr<Op> op) {
    ops_[next_] = std::move(op);
    return next_++;
  }
  std::unique_ptr<CacheClient> client_;
  uint64_t max_block_ = 0;
  std::vector<uint8_t> src_, dst_;
  std::map<uint64_t, std::unique_ptr<Op>> ops_;
  uint64_t next_ = 1;
};

BlockKey BenchKey(const std::string& path, uint64_t block, uint64_t i) {
  return PlainKey("bench-tiers", path + "/" + std::to_string(block) + "/" + std::to_string(i));
}

// Keeps `inflight` transfers going over `ops` operations on keys 0..keys-1 (cyclic).
Row Measure(BenchPath& path, const std::string& name, bool put, uint64_t block, int inflight, uint64_t ops,
            uint64_t keys, pid_t node_pid) {
  const double client_cpu0 = ProcessCpuSeconds(getpid()), node_cpu0 = ProcessCpuSeconds(node_pid);
  Row row;
  row.path = name;
  row.op = put ? "put" : "get";
  row.block_bytes = block;
  row.inflight = inflight;
  std::deque<std::pair<uint64_t, Clock::time_point>> window;
  std::vector<double> lat_us;
  lat_us.reserve(ops);
  uint64_t ok_bytes = 0, next = 0;
  auto start = Clock::now();
  auto finish_one = [&] {
    auto [handle, t0] = window.front();
    window.pop_front();
    Status s = path.Wait(handle);
    auto t1 = Clock::now();
    if (s.ok()) {
      ok_bytes += block;
      lat_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    } else {
      if (row.errors++ == 0) std::cerr << "tiers: " << name << " " << row.op << ": " << s.ToString() << "\n";
    }
  };
  while (next < ops || !window.empty()) {
    if (next < ops && window.size() < static_cast<size_t>(inflight)) {
      const int slot = static_cast<int>(next % 16);
      BlockKey key = BenchKey(name, block, next % keys);
      auto t0 = Clock::now();
      auto h = put ? path.SubmitPut(key, slot, block) : path.SubmitGet(key, slot, block);
      ++next;
      if (!h.ok()) {
        if (row.errors++ == 0) std::cerr << "tiers: " << name << ": " << h.status().ToString() << "\n";
        continue;
      }
      window.emplace_back(*h, t0);
      continue;
    }
    finish_one();
  }
  double s = std::chrono::duration<double>(Clock::now() - start).count();
  row.gbps = ok_bytes / s / 1e9;
  if (!lat_us.empty()) {
    std::sort(lat_us.begin(), lat_us.end());
    row.p50_us = lat_us[lat_us.size() / 2];
    row.p99_us = lat_us[std::min(lat_us.size() - 1, lat_us.size() * 99 / 100)];
  }
  row.transport = path.transport();
  const double mib = ok_bytes / 1048576.0;
  if (mib > 0) {
    row.client_cpu_us_per_mib = (ProcessCpuSeconds(getpid()) - client_cpu0) * 1e6 / mib;
    row.node_cpu_us_per_mib = (ProcessCpuSeconds(node_pid) - node_cpu0) * 1e6 / mib;
  }
  return row;
}

// --- Concurrent clients: processes forked before this one has UCX state, driven over pipes. ------

// What one client process is asked to do: gets of keys index, index + stride, ... (mod keys) on a
// path, one after another, until the deadline (steady clock, nanoseconds: system-wide on Linux).
struct ClientCommand {
  uint16_t port = 0;
  char transports[8] = {};
  char name[16] = {};
  uint64_t block = 0, max_block = 0, index = 0, stride = 1, keys = 1;
  int64_t deadline_ns = 0;  // set with the go byte
};

struct ClientReport {
  uint64_t ok = 0, errors = 0;
  int64_t finished_ns = 0;  // steady clock (system-wide on Linux) when its last get completed
  double cpu_s = 0;
  uint32_t latencies = 0;  // floats (microseconds) that follow
  char first_error[160] = {};
};

bool WriteAll(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = write(fd, p, n);
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool ReadAll(int fd, void* data, size_t n) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t r = read(fd, p, n);
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

// Client processes, each with its own connection and one get in flight (as a worker waiting on its
// fetch): what a node serves to many workers, which one pipelining client does not show.
class ClientPool {
 public:
  // Forks `n` clients. Must run before this process starts threads or UCX.
  static StatusOr<std::unique_ptr<ClientPool>> Fork(int n) {
    // A client that died must show as a failed write (EPIPE), not end this process.
    signal(SIGPIPE, SIG_IGN);
    auto pool = std::unique_ptr<ClientPool>(new ClientPool);
    for (int c = 0; c < n; ++c) {
      int command[2], report[2];
      if (pipe(command) != 0 || pipe(report) != 0) return Internal("pipe failed");
      const pid_t pid = fork();
      if (pid < 0) return Internal("fork failed");
      if (pid == 0) {
        close(command[1]);
        close(report[0]);
        for (int fd : ControlFds()) close(fd);
        for (const Client& other : pool->clients_) {
          close(other.command_fd);
          close(other.report_fd);
        }
        spdlog::set_default_logger(spdlog::stderr_color_mt("bench-client"));
        Serve(command[0], report[1]);
        _exit(0);
      }
      close(command[0]);
      close(report[1]);
      pool->clients_.push_back({pid, command[1], report[0]});
    }
    return pool;
  }
  ~ClientPool() {
    for (Client& c : clients_) {
      close(c.command_fd);
      close(c.report_fd);
      waitpid(c.pid, nullptr, 0);
    }
  }
  int size() const { return static_cast<int>(clients_.size()); }

  // The first `n` clients get blocks at once for `seconds`, over keys 0..keys-1 (put beforehand).
  // Every client is busy for the whole time, as workers are; a fixed count of gets each would end
  // on the slowest client, idling the others.
  Row Measure(int n, const std::string& name, uint16_t port, const std::string& transports, uint64_t block,
              uint64_t max_block, double seconds, uint64_t keys, pid_t node_pid) {
    Row row;
    row.path = name;
    row.op = "get";
    row.block_bytes = block;
    row.clients = n;
    row.inflight = 1;
    row.transport = transports;
    if (broken_) return Failed(row, "a client process failed in an earlier row");
    const double node_cpu0 = ProcessCpuSeconds(node_pid);
    for (int c = 0; c < n; ++c) {
      ClientCommand cmd;
      cmd.port = port;
      std::snprintf(cmd.transports, sizeof cmd.transports, "%s", transports.c_str());
      std::snprintf(cmd.name, sizeof cmd.name, "%s", name.c_str());
      cmd.block = block;
      cmd.max_block = max_block;
      cmd.index = static_cast<uint64_t>(c);
      cmd.stride = static_cast<uint64_t>(n);
      cmd.keys = keys;
      if (!WriteAll(clients_[c].command_fd, &cmd, sizeof cmd)) return Failed(row, "a client process is gone");
    }
    for (int c = 0; c < n; ++c) {  // connected and ready
      char ready = 0;
      if (!ReadAll(clients_[c].report_fd, &ready, 1)) return Failed(row, "a client process is gone");
    }
    const auto start = Clock::now();
    const int64_t deadline_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(
            (start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds)))
                .time_since_epoch())
            .count();
    for (int c = 0; c < n; ++c) {
      if (!WriteAll(clients_[c].command_fd, &deadline_ns, sizeof deadline_ns))
        return Failed(row, "a client process is gone");
    }
    int64_t finished_ns = 0;
    uint64_t ok = 0;
    double client_cpu_s = 0;
    std::vector<double> lat_us;
    for (int c = 0; c < n; ++c) {
      ClientReport report;
      if (!ReadAll(clients_[c].report_fd, &report, sizeof report)) return Failed(row, "a client process is gone");
      std::vector<float> lat(report.latencies);
      if (!ReadAll(clients_[c].report_fd, lat.data(), lat.size() * sizeof(float)))
        return Failed(row, "a client process is gone");
      lat_us.insert(lat_us.end(), lat.begin(), lat.end());
      ok += report.ok;
      if (report.errors > 0 && row.errors == 0)
        std::cerr << "tiers: " << name << " get: " << report.first_error << "\n";
      row.errors += report.errors;
      client_cpu_s += report.cpu_s;
      finished_ns = std::max(finished_ns, report.finished_ns);
    }
    // Until the last get done: each client's last get, begun before the deadline, ends after it.
    const double elapsed =
        std::chrono::duration<double>(Clock::time_point(std::chrono::nanoseconds(finished_ns)) - start).count();
    const uint64_t ok_bytes = ok * block;
    row.gbps = elapsed > 0 ? ok_bytes / elapsed / 1e9 : 0;
    if (!lat_us.empty()) {
      std::sort(lat_us.begin(), lat_us.end());
      row.p50_us = lat_us[lat_us.size() / 2];
      row.p99_us = lat_us[std::min(lat_us.size() - 1, lat_us.size() * 99 / 100)];
    }
    const double mib = ok_bytes / 1048576.0;
    if (mib > 0) {
      row.client_cpu_us_per_mib = client_cpu_s * 1e6 / mib;
      row.node_cpu_us_per_mib = (ProcessCpuSeconds(node_pid) - node_cpu0) * 1e6 / mib;
    }
    return row;
  }

 private:
  struct Client {
    pid_t pid;
    int command_fd, report_fd;
  };
  ClientPool() = default;

  // After a failure the pipes may hold replies out of step: no later row is measured.
  Row Failed(Row row, const char* why) {
    broken_ = true;
    std::cerr << "tiers: " << row.path << " get from " << row.clients << " clients: " << why << "\n";
    row.errors++;
    return row;
  }

  // A client process: connects on first use of a path, then runs each command's gets.
  static void Serve(int command_fd, int report_fd) {
    std::map<std::string, std::unique_ptr<UcxBenchPath>> paths;  // by port/transports/max block
    for (ClientCommand cmd; ReadAll(command_fd, &cmd, sizeof cmd);) {
      ClientReport report;
      const std::string id = std::to_string(cmd.port) + "/" + cmd.transports + "/" + std::to_string(cmd.max_block);
      if (paths.find(id) == paths.end()) {
        auto p = UcxBenchPath::Connect(cmd.port, cmd.transports, cmd.max_block, /*slots=*/1);
        if (p.ok()) {
          paths[id] = std::move(*p);
        } else {
          std::snprintf(report.first_error, sizeof report.first_error, "%s", p.status().ToString().c_str());
        }
      }
      auto it = paths.find(id);
      // A few untimed gets first: a new connection's first messages set up its lanes (milliseconds).
      for (uint64_t i = 0; it != paths.end() && i < 16; ++i) {
        auto h =
            it->second->SubmitGet(BenchKey(cmd.name, cmd.block, (cmd.index + i * cmd.stride) % cmd.keys), 0, cmd.block);
        if (h.ok()) (void)it->second->Wait(*h);
      }
      const char ready = 1;
      if (!WriteAll(report_fd, &ready, 1) || !ReadAll(command_fd, &cmd.deadline_ns, sizeof cmd.deadline_ns)) return;
      std::vector<float> lat;
      const double cpu0 = ProcessCpuSeconds(getpid());
      auto now_ns = [] {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
      };
      if (it == paths.end()) report.errors++;
      for (uint64_t i = 0; it != paths.end() && now_ns() < cmd.deadline_ns; ++i) {
        const BlockKey key = BenchKey(cmd.name, cmd.block, (cmd.index + i * cmd.stride) % cmd.keys);
        const auto t0 = Clock::now();
        auto h = it->second->SubmitGet(key, 0, cmd.block);
        Status s = h.ok() ? it->second->Wait(*h) : h.status();
        if (!s.ok()) {
          if (report.errors++ == 0)
            std::snprintf(report.first_error, sizeof report.first_error, "%s", s.ToString().c_str());
          continue;
        }
        lat.push_back(static_cast<float>(std::chrono::duration<double, std::micro>(Clock::now() - t0).count()));
        report.ok++;
      }
      report.finished_ns = now_ns();
      report.cpu_s = ProcessCpuSeconds(getpid()) - cpu0;
      report.latencies = static_cast<uint32_t>(lat.size());
      if (!WriteAll(report_fd, &report, sizeof report) || !WriteAll(report_fd, lat.data(), lat.size() * sizeof(float)))
        return;
    }
  }

  std::vector<Client> clients_;
  bool broken_ = false;
};

void PrintTable(const std::vector<Row>& rows) {
  std::printf("%-9s %-15s %8s %7s %8s %9s %9s %9s %10s %7s  %s\n", "path", "op", "block", "clients", "inflight", "GB/s",
              "p50_us", "p99_us", "ceil_GB/s", "ratio", "ceiling / transport");
  for (const Row& r : rows) {
    char ceil[32] = "-", ratio[32] = "-";
    if (r.ceiling_gbps && *r.ceiling_gbps > 0) {
      std::snprintf(ceil, sizeof ceil, "%.2f", *r.ceiling_gbps);
      std::snprintf(ratio, sizeof ratio, "%.2f", r.gbps / *r.ceiling_gbps);
    }
    std::printf("%-9s %-15s %8s %7d %8d %9.2f %9.1f %9.1f %10s %7s  %s / %s%s\n", r.path.c_str(), r.op.c_str(),
                FormatByteSize(r.block_bytes).c_str(), r.clients, r.inflight, r.gbps, r.p50_us, r.p99_us, ceil, ratio,
                r.ceiling.empty() ? "none" : r.ceiling.c_str(), r.transport.c_str(),
                r.errors ? (" ERRORS=" + std::to_string(r.errors)).c_str() : "");
  }
  std::fflush(stdout);
}

void PrintJson(const std::vector<Row>& rows) {
  for (const Row& r : rows) {
    nlohmann::json j;
    j["path"] = r.path;
    j["op"] = r.op;
    j["block_bytes"] = r.block_bytes;
    j["clients"] = r.clients;
    j["inflight"] = r.inflight;
    j["gbps"] = r.gbps;
    j["p50_us"] = r.p50_us;
    j["p99_us"] = r.p99_us;
    if (r.ceiling_gbps && *r.ceiling_gbps > 0) {
      j["ceiling_gbps"] = *r.ceiling_gbps;
      j["ratio"] = r.gbps / *r.ceiling_gbps;
    } else {
      j["ceiling_gbps"] = nullptr;
      j["ratio"] = nullptr;
    }
    j["ceiling"] = r.ceiling;
    j["transport"] = r.transport;
    j["errors"] = r.errors;
    if (r.path != "ceiling") {
      j["client_cpu_us_per_mib"] = r.client_cpu_us_per_mib;
      j["node_cpu_us_per_mib"] = r.node_cpu_us_per_mib;
    }
    std::cout << j.dump() << "\n";
  }
  std::cout.flush();
}

// CPU microseconds per MiB -> CPU seconds per GB (1e9 bytes).
double CpuSecondsPerGb(double us_per_mib) { return us_per_mib * 1e-6 * (1e9 / (1 << 20)); }

std::string UtcNow() {
  const std::time_t now = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return buf;
}

// The measured rows (ceilings left out) as a machine profile.
Status WriteProfile(const TiersFlags& flags, const std::vector<Row>& rows) {
  planner::MachineProfile profile;
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  profile.host = host;
  profile.measured_at = UtcNow();
  profile.ucx_version = ucp_get_version_string();
  profile.cpus = static_cast<int>(std::thread::hardware_concurrency());
  profile.command = "foresight-bench tiers --profile " + flags.profile +
                    (flags.paths.empty() ? "" : " --paths " + flags.paths) +
                    (flags.sizes.empty() ? "" : " --sizes " + flags.sizes) +
                    (flags.inflight.empty() ? "" : " --inflight " + flags.inflight) +
                    (flags.clients.empty() ? "" : " --clients " + flags.clients);
  for (const Row& r : rows) {
    if (r.path == "ceiling" || r.gbps <= 0) continue;
    profile.measurements.push_back({r.path, r.op, r.block_bytes, r.clients, r.inflight, r.gbps, r.p50_us, r.p99_us,
                                    CpuSecondsPerGb(r.client_cpu_us_per_mib), CpuSecondsPerGb(r.node_cpu_us_per_mib)});
  }
  if (profile.measurements.empty()) return Internal("no path was measured; no profile written");
  return WriteWholeFile(flags.profile, planner::MachineProfileToJson(profile));
}

int RunTiers(TiersFlags flags) {
  const uint64_t max_block = 4u << 20;
  const bool profiling = !flags.profile.empty();
  if (profiling) {
    // A machine profile: every block size the planner may ask about, the paths a block takes, one
    // pass (the figures are read as capacity, not as a best case), and no ceilings.
    if (flags.sizes.empty()) flags.sizes = "4KiB,16KiB,64KiB,256KiB,1MiB,4MiB";
    if (flags.paths.empty()) flags.paths = "ram-shm,ram-tcp,nvme";
    if (!flags.trials_set) flags.trials = 1;
    if (!flags.row_bytes_set) flags.row_bytes = "64MiB";
    if (flags.clients.empty()) flags.clients = "1,4,16";
  }
  uint64_t ram = flags.quick ? 512ull << 20 : 1ull << 30;
  if (!flags.ram.empty()) {
    auto parsed = ParseByteSize(flags.ram);
    if (!parsed.ok()) {
      std::cerr << "tiers: --ram: " << parsed.status().ToString() << "\n";
      return 2;
    }
    ram = *parsed;
  }
  const uint64_t nvme_ram = 64ull << 20;
  std::string nvme_dir = flags.nvme_dir;
  bool remove_nvme_dir = false;
  if (nvme_dir.empty()) {
    nvme_dir = (std::filesystem::temp_directory_path() / ("foresight-tiers-" + std::to_string(getpid()))).string();
    remove_nvme_dir = true;
  }
  std::filesystem::remove_all(nvme_dir);
  std::filesystem::create_directories(nvme_dir);

  std::vector<uint64_t> sizes = flags.quick
                                    ? std::vector<uint64_t>{1u << 20}
                                    : std::vector<uint64_t>{16u << 10, 64u << 10, 256u << 10, 1u << 20, 4u << 20};
  std::vector<int> inflights = flags.quick ? std::vector<int>{1, 16} : std::vector<int>{1, 4, 16};
  if (!flags.sizes.empty()) {
    sizes.clear();
    for (const std::string& item : SplitList(flags.sizes)) {
      auto parsed = ParseByteSize(item);
      if (!parsed.ok() || *parsed == 0 || *parsed > max_block) {
        std::cerr << "tiers: --sizes: '" << item << "' is not a block size between 1 byte and 4MiB\n";
        return 2;
      }
      sizes.push_back(*parsed);
    }
  }
  if (!flags.inflight.empty()) {
    inflights.clear();
    for (const std::string& item : SplitList(flags.inflight)) {
      const int n = std::atoi(item.c_str());
      if (n < 1 || n > 16) {
        std::cerr << "tiers: --inflight: '" << item << "' is not a count between 1 and 16\n";
        return 2;
      }
      inflights.push_back(n);
    }
  }
  // Client counts beyond one: extra rows of RAM-path gets (one client is the --inflight rows).
  std::vector<int> many_clients;
  for (const std::string& item : SplitList(flags.clients)) {
    const int n = std::atoi(item.c_str());
    if (n < 1 || n > 64) {
      std::cerr << "tiers: --clients: '" << item << "' is not a count between 1 and 64\n";
      return 2;
    }
    if (n > 1) many_clients.push_back(n);
  }
  const int max_clients = many_clients.empty() ? 0 : *std::max_element(many_clients.begin(), many_clients.end());
  if (!(flags.client_seconds > 0 && flags.client_seconds <= 600)) {
    std::cerr << "tiers: --client-seconds must be more than 0 and at most 600\n";
    return 2;
  }
  std::vector<std::string> wanted = SplitList(flags.paths);
  for (const std::string& w : wanted) {
    if (w != "ram-shm" && w != "ram-tcp" && w != "ram-grpc" && w != "nvme") {
      std::cerr << "tiers: --paths: unknown path '" << w << "' (ram-shm, ram-tcp, ram-grpc, nvme)\n";
      return 2;
    }
  }
  auto want = [&](const std::string& name) {
    return wanted.empty() || std::find(wanted.begin(), wanted.end(), name) != wanted.end();
  };
  if (flags.keys < 0) {
    std::cerr << "tiers: --keys must be positive (or 0 for the default working set)\n";
    return 2;
  }
  if (flags.trials < 1 || flags.trials > 20) {
    std::cerr << "tiers: --trials must be between 1 and 20\n";
    return 2;
  }
  uint64_t bytes_per_row = flags.quick ? (128ull << 20) : (256ull << 20);
  if (!flags.row_bytes.empty()) {
    auto parsed = ParseByteSize(flags.row_bytes);
    if (!parsed.ok() || *parsed == 0) {
      std::cerr << "tiers: --row-bytes: '" << flags.row_bytes << "' is not a positive size\n";
      return 2;
    }
    bytes_per_row = *parsed;
  }
  const uint64_t nvme_bytes_per_row = flags.quick ? (32ull << 20) : (64ull << 20);

  auto huge = ParseHugePages(flags.huge_pages);
  if (!huge.ok()) {
    std::cerr << "tiers: --huge-pages: " << huge.status().message() << "\n";
    return 2;
  }
  // auto is resolved here, so that the node's arena and the memcpy ceiling's have one page size.
  HugePages pages = *huge;
  if (pages == HugePages::kAuto) {
    pages = HugePagesFit(4096, ram) ? HugePages::kOn : HugePages::kOff;  // the node's header page
    if (pages == HugePages::kOff) {
      std::cerr << "tiers: the node's arena is in 4KiB pages: " << ReadHugePageCount().free << " 2MiB huge pages free, "
                << (ram >> 21) + 1 << " needed (`sysctl vm.nr_hugepages=N` reserves them)\n";
    }
  }

  // Nodes first: fork before this process has threads or UCX state.
  BlockStoreOptions ram_options;
  ram_options.ram_bytes = ram;
  ram_options.max_block_bytes = max_block;
  ram_options.huge_pages = pages;
  auto ram_node = ForkNode(ram_options);
  if (!ram_node.ok()) {
    std::cerr << "tiers: " << ram_node.status().ToString() << "\n";
    return 1;
  }
  BlockStoreOptions nvme_options;
  nvme_options.ram_bytes = nvme_ram;
  nvme_options.max_block_bytes = max_block;
  nvme_options.nvme_dir = nvme_dir;
  nvme_options.huge_pages = pages == HugePages::kOn ? HugePages::kAuto : HugePages::kOff;
  auto nvme_node = ForkNode(nvme_options);
  if (!nvme_node.ok()) {
    std::cerr << "tiers: " << nvme_node.status().ToString() << "\n";
    StopNode(*ram_node);
    return 1;
  }

  // The clients of the --clients rows, also forked before this process has threads or UCX state.
  std::unique_ptr<ClientPool> client_pool;
  if (max_clients > 0) {
    auto pool = ClientPool::Fork(max_clients);
    if (!pool.ok()) {
      std::cerr << "tiers: --clients: " << pool.status().ToString() << "\n";
      StopNode(*ram_node);
      StopNode(*nvme_node);
      return 1;
    }
    client_pool = std::move(*pool);
  }
  const uint64_t largest = *std::max_element(sizes.begin(), sizes.end());

  // The machine may be shared: every figure, ceilings included, is the best of `trials` runs,
  // interleaved (ceiling, then each path, per trial), so that both sides see the same conditions.
  const int trials = flags.trials;
  std::vector<Row> rows;
  int status = 0;
  {
    struct PathSpec {
      std::string name;
      uint16_t port;
      std::string transports;  // "grpc": the gRPC fallback on the node's gRPC port
      bool nvme;
    };
    const std::vector<PathSpec> specs = {
        {"ram-shm", ram_node->port, "shm", false},
        {"ram-tcp", ram_node->port, "tcp", false},
        {"ram-grpc", ram_node->grpc_port, "grpc", false},
        {"nvme", nvme_node->port, "shm", true},
    };
    std::vector<std::unique_ptr<BenchPath>> paths(specs.size());
    for (size_t pi = 0; pi < specs.size(); ++pi) {
      if (!want(specs[pi].name)) continue;
      StatusOr<std::unique_ptr<BenchPath>> path = Unavailable("not connected");
      if (specs[pi].transports == "grpc") {
        auto p = GrpcBenchPath::Connect(specs[pi].port, max_block);
        if (p.ok())
          path = std::unique_ptr<BenchPath>(std::move(*p));
        else
          path = p.status();
      } else {
        auto p = UcxBenchPath::Connect(specs[pi].port, specs[pi].transports, max_block);
        if (p.ok())
          path = std::unique_ptr<BenchPath>(std::move(*p));
        else
          path = p.status();
      }
      if (!path.ok()) {
        std::cerr << "tiers: " << specs[pi].name << ": " << path.status().ToString() << "\n";
        status = 1;
        continue;
      }
      paths[pi] = std::move(*path);
    }
    // The memcpy ceiling's arena, in the node's page size (huge: hugetlb if any pages are left,
    // else transparent huge pages).
    auto ceiling_arena =
        MapArenaMemory(0, ram, /*shared=*/false, pages == HugePages::kOn ? HugePages::kAuto : HugePages::kOff);
    if (!ceiling_arena.ok()) {
      std::cerr << "tiers: the memcpy ceiling's arena: " << ceiling_arena.status().ToString() << "\n";
      StopNode(*ram_node);
      StopNode(*nvme_node);
      return 1;
    }
    uint8_t* const arena = ceiling_arena->data;
    std::memset(arena, 3, ram);
    // Every 4 KiB starts with its offset, so that tcp-stream-verify's checksums tell blocks apart.
    for (uint64_t off = 0; off + sizeof off <= ram; off += 4096) std::memcpy(arena + off, &off, sizeof off);
    std::cerr << "tiers: node arena in " << (pages == HugePages::kOn ? "2MiB huge pages" : "4KiB pages")
              << "; memcpy ceiling arena in " << ceiling_arena->description << "\n";
    std::cerr << "tiers: UCX " << ucp_get_version_string() << "; ceiling " << flags.perftest << "\n";
    std::string ceiling_note;
    for (size_t si = 0; si < sizes.size(); ++si) {
      const uint64_t block = sizes[si];
      double memcpy_best = 0, perftest_best = 0, perftest_shm_best = 0, verify_best = 0;
      std::map<StreamSource, double> tcp_stream_best;  // plain loopback TCP, by source
      std::map<int, double> perftest_window_best;      // ucp_am_bw over tcp with -O <inflight>
      std::vector<Row> best;                           // per (path, op, inflight), in order
      for (int trial = 0; trial < trials; ++trial) {
        if (!profiling) {
          memcpy_best = std::max(memcpy_best, MemcpyCeilingGbps(arena, ram, block, flags.quick ? 0.2 : 0.3));
          // perftest moves as many bytes per run as a path row does (--row-bytes), like for like.
          const int iters = static_cast<int>(std::clamp<uint64_t>(bytes_per_row / block, 100, 20000));
          if (want("ram-tcp")) {
            perftest_best = std::max(perftest_best,
                                     PerftestGbps(flags.perftest, "tcp", block, iters, 0, &ceiling_note).value_or(0));
            for (int inflight : inflights) {
              double& best_w = perftest_window_best[inflight];
              best_w = std::max(best_w,
                                PerftestGbps(flags.perftest, "tcp", block, iters, inflight, &ceiling_note).value_or(0));
            }
            // The first loopback stream after perftest's processes runs 10-25% slow, whatever its
            // source (docs/perf-notes.md, session 7): one unmeasured run first, so that no row pays it.
            TcpStreamGbps(arena, ram, block, bytes_per_row / 4, StreamSource::kHot, &ceiling_note);
            for (StreamSource source : {StreamSource::kCold, StreamSource::kHot, StreamSource::kColdVerified}) {
              double& best_s = tcp_stream_best[source];
              best_s =
                  std::max(best_s, TcpStreamGbps(arena, ram, block, bytes_per_row, source, &ceiling_note).value_or(0));
            }
          }
          if (want("ram-shm")) {
            perftest_shm_best = std::max(
                perftest_shm_best,
                PerftestGbps(flags.perftest, "posix,sysv,cma,self", block, iters, 0, &ceiling_note).value_or(0));
          }
          verify_best = std::max(verify_best, VerifyGbps(block, 0.1));
        }
        size_t at = 0;
        // Each row's trial: the best bandwidth of its trials is kept, and every trial's errors.
        auto keep_best = [&](const Row& row) {
          if (row.errors > 0) status = 1;
          if (at == best.size()) {
            best.push_back(row);
          } else {
            const uint64_t errors = best[at].errors + row.errors;
            if (row.gbps > best[at].gbps) best[at] = row;
            best[at].errors = errors;
          }
          ++at;
        };
        for (size_t pi = 0; pi < specs.size(); ++pi) {
          if (paths[pi] == nullptr) continue;
          const PathSpec& spec = specs[pi];
          uint64_t ops, keys;
          if (spec.nvme) {
            // Four times the RAM tier, read cyclically: with LRU every get misses RAM and promotes.
            keys = std::max<uint64_t>(4 * nvme_ram / block, 32);
            ops = std::max<uint64_t>(nvme_bytes_per_row / block, 64);
          } else {
            // Three paths share the RAM node: each keeps a fifth of its arena, so nothing is evicted.
            keys = std::max<uint64_t>(std::min<uint64_t>(ram * 2 / 10 / block, 1 << 16), 16);
            if (flags.keys > 0) keys = std::min<uint64_t>(keys, flags.keys);
            ops = std::max<uint64_t>(bytes_per_row / block, 64);
          }
          for (bool put : {true, false}) {
            for (int inflight : inflights) {
              // The first trial's puts write every key, so that every later get finds its block.
              const uint64_t n = put && trial == 0 ? std::max<uint64_t>(ops, keys) : ops;
              Row row = Measure(*paths[pi], spec.name, put, block, inflight, n, keys,
                                spec.nvme ? nvme_node->pid : ram_node->pid);
              if (!flags.json) {
                std::fprintf(stderr, "tiers: trial %d %s %s %s x%d: %.2f GB/s (cpu us/MiB: client %.0f, node %.0f)\n",
                             trial + 1, row.path.c_str(), row.op.c_str(), FormatByteSize(block).c_str(), inflight,
                             row.gbps, row.client_cpu_us_per_mib, row.node_cpu_us_per_mib);
              }
              keep_best(row);
            }
          }
          // After the puts of every key: the same gets from several clients at once.
          for (int n : many_clients) {
            if (spec.nvme || spec.transports == "grpc" || client_pool == nullptr) break;
            Row row = client_pool->Measure(n, spec.name, spec.port, spec.transports, block, largest,
                                           flags.client_seconds, keys, ram_node->pid);
            if (!flags.json) {
              std::fprintf(stderr,
                           "tiers: trial %d %s get %s, %d clients x1: %.2f GB/s (cpu us/MiB: client %.0f, node %.0f)\n",
                           trial + 1, row.path.c_str(), FormatByteSize(block).c_str(), n, row.gbps,
                           row.client_cpu_us_per_mib, row.node_cpu_us_per_mib);
            }
            keep_best(row);
          }
        }
      }
      for (Row& row : best) {
        if (profiling) {
          rows.push_back(row);
          continue;
        }
        if (row.path == "ram-shm" || row.path == "ram-grpc") {
          row.ceiling_gbps = memcpy_best;
          row.ceiling = "memcpy";
        } else if (row.path == "ram-tcp" && row.clients == 1) {  // perftest has one client
          row.ceiling_gbps = perftest_window_best[row.inflight];
          row.ceiling = "ucx_perftest ucp_am_bw tcp -O " + std::to_string(row.inflight);
        }
        rows.push_back(row);
      }
      // The references themselves, as rows of path "ceiling".
      auto reference = [&](const char* op, double gbps, int inflight = 0) {
        Row r;
        r.path = "ceiling";
        r.op = op;
        r.block_bytes = block;
        r.inflight = inflight;
        r.gbps = gbps;
        r.transport = "-";
        rows.push_back(r);
      };
      if (profiling) continue;  // no ceilings were measured
      reference("memcpy", memcpy_best);
      reference("xxh3-verify", verify_best);
      reference("memcpy+verify", 1.0 / (1.0 / memcpy_best + 1.0 / verify_best));
      reference("perftest-am-tcp", perftest_best);  // perftest's default window (32)
      for (const auto& [window, gbps] : perftest_window_best) reference("perftest-am-tcp", gbps, window);
      reference("perftest-am-shm", perftest_shm_best);
      if (want("ram-tcp")) {
        reference("tcp-stream", tcp_stream_best[StreamSource::kCold]);
        reference("tcp-stream-hot", tcp_stream_best[StreamSource::kHot]);
        reference("tcp-stream-verify", tcp_stream_best[StreamSource::kColdVerified]);
      }
    }
    if (!ceiling_note.empty()) std::cerr << "tiers: " << ceiling_note << "\n";
    UnmapArenaMemory(&*ceiling_arena);
  }
  client_pool.reset();  // their connections close before the nodes stop
  StopNode(*ram_node);
  StopNode(*nvme_node);
  if (remove_nvme_dir) std::filesystem::remove_all(nvme_dir);
  if (profiling) {
    Status written = WriteProfile(flags, rows);
    if (!written.ok()) {
      std::cerr << "tiers: --profile: " << written.ToString() << "\n";
      return 1;
    }
    std::cerr << "tiers: machine profile written to " << flags.profile << "\n";
  }
  if (flags.json) {
    PrintJson(rows);
  } else {
    PrintTable(rows);
  }
  return status;
}

}  // namespace

void AddTiersBench(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<TiersFlags>();
  CLI::App* cmd = app.add_subcommand(
      "tiers", "Put/get throughput and latency per data path (UCX shm, UCX TCP, NVMe) against ceilings");
  cmd->add_flag("--json", flags->json, "Print JSON rows (one object per line)");
  cmd->add_flag("--quick", flags->quick, "Short run: 1 MiB blocks only (CI smoke)");
  cmd->add_option("--ram", flags->ram, "RAM tier of the benchmark node (default 1GiB; quick 512MiB)");
  cmd->add_option("--nvme-dir", flags->nvme_dir, "Directory for the NVMe node (default: a temp dir)");
  cmd->add_option("--perftest", flags->perftest, "ucx_perftest binary");
  cmd->add_option("--paths", flags->paths, "Only these paths, e.g. ram-shm,ram-tcp (default: all)");
  cmd->add_option("--sizes", flags->sizes, "Block sizes, e.g. 1MiB,4MiB (default: 16KiB..4MiB; quick: 1MiB)");
  cmd->add_option("--inflight", flags->inflight, "Requests in flight, e.g. 1,16 (default: 1,4,16; quick: 1,16)");
  cmd->add_option("--clients", flags->clients,
                  "Also measure RAM-path gets from this many clients at once, each with its own connection and "
                  "one get in flight, e.g. 1,4,16 (default 1: none; with --profile 1,4,16)");
  cmd->add_option("--client-seconds", flags->client_seconds,
                  "Seconds of each --clients row, every client busy throughout (default 2)");
  cmd->add_option("--row-bytes", flags->row_bytes, "Bytes moved per RAM-path row (default 256MiB; quick 128MiB)");
  cmd->add_option("--keys", flags->keys,
                  "Distinct keys per RAM-path row, at most the default (a fifth of the RAM tier): a few keys "
                  "keep the node's blocks in cache, as ucx_perftest's one buffer is");
  cmd->add_option("--huge-pages", flags->huge_pages,
                  "Node arena (and memcpy ceiling arena) in 2MiB huge pages: auto (when enough are free), on, off")
      ->capture_default_str();
  cmd->add_option("--trials", flags->trials, "Interleaved trials per figure; the best is kept (default 3)");
  cmd->add_option("--profile", flags->profile,
                  "Also write the rows as a machine profile for `foresight plan` (its defaults: 4KiB..4MiB, "
                  "ram-shm,ram-tcp,nvme, clients 1,4,16, one trial, no ceilings; about 5 minutes)");
  cmd->callback([flags, cmd, exit_code] {
    flags->trials_set = cmd->count("--trials") > 0;
    flags->row_bytes_set = cmd->count("--row-bytes") > 0;
    *exit_code = RunTiers(*flags);
  });
}

}  // namespace foresight::bench
