// foresight-cached: one cache node. See README.md ("Running a cache node") and docs/architecture.md.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <ucp/api/ucp.h>
#include <CLI/CLI.hpp>

#include "cache_service/block_store.h"
#include "cache_service/control_service.h"
#include "cache_service/node_metrics.h"
#include "cache_service/ucx_server.h"
#include "cluster/membership.h"
#include "common/file_io.h"
#include "common/units.h"

namespace {

using namespace foresight;

struct Flags {
  std::string listen = "127.0.0.1:7600";
  std::string ram_bytes = "1GiB";
  std::string nvme_dir;
  std::string nvme_bytes = "0";
  std::string max_block_bytes = "4MiB";
  std::string huge_pages = "auto";
  std::string token_file;
  std::string metrics;
  std::string ucx_listen;  // HOST:PORT; default: the gRPC host, a free port
  bool no_ucx = false;
  std::string tls_cert, tls_key;
  std::string node_id;
  std::string log_level = "info";
  // Cluster membership (cluster/membership.h).
  std::string etcd, advertise, etcd_prefix = kDefaultMembersPrefix;
  int64_t etcd_ttl = 10;
};

StatusOr<std::pair<std::string, uint16_t>> SplitHostPort(const std::string& hp, const char* flag) {
  const auto colon = hp.rfind(':');
  if (colon == std::string::npos || colon == 0)
    return InvalidArgument(std::string(flag) + " '" + hp + "' must be HOST:PORT");
  const std::string port = hp.substr(colon + 1);
  char* end = nullptr;
  const long p = std::strtol(port.c_str(), &end, 10);
  if (port.empty() || *end != '\0' || p < 0 || p > 65535)
    return InvalidArgument(std::string(flag) + " '" + hp + "': bad port '" + port + "'");
  return std::make_pair(hp.substr(0, colon), static_cast<uint16_t>(p));
}

int Run(const Flags& f) {
  // Logs go to stderr; stdout carries only the READY line. A daemon never dies of SIGPIPE.
  spdlog::set_default_logger(spdlog::stderr_color_mt("foresight-cached"));
  spdlog::set_level(spdlog::level::from_str(f.log_level));
  signal(SIGPIPE, SIG_IGN);

  auto fail = [](const Status& s) {
    spdlog::error("{}", s.ToString());
    std::cerr << "foresight-cached: " << s.message() << "\n";
    return 2;
  };
  BlockStoreOptions store_options;
  auto ram = ParseByteSize(f.ram_bytes);
  if (!ram.ok()) return fail(ram.status().WithContext("--ram-bytes"));
  auto nvme = ParseByteSize(f.nvme_bytes);
  if (!nvme.ok()) return fail(nvme.status().WithContext("--nvme-bytes"));
  auto max_block = ParseByteSize(f.max_block_bytes);
  if (!max_block.ok()) return fail(max_block.status().WithContext("--max-block-bytes"));
  store_options.ram_bytes = *ram;
  store_options.nvme_dir = f.nvme_dir;
  store_options.nvme_bytes = *nvme;
  store_options.max_block_bytes = *max_block;
  auto huge = ParseHugePages(f.huge_pages);
  if (!huge.ok()) return fail(huge.status().WithContext("--huge-pages"));
  store_options.huge_pages = *huge;
  auto listen = SplitHostPort(f.listen, "--listen");
  if (!listen.ok()) return fail(listen.status());

  std::string token;
  if (!f.token_file.empty()) {
    auto t = ReadSecretFile(f.token_file, "--token-file");
    if (!t.ok()) return fail(t.status());
    token = *t;
  }

  // Block termination signals in every thread; one thread waits for them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto store = BlockStore::Open(store_options);
  if (!store.ok()) return fail(store.status());

  NodeMetrics metrics;
  int metrics_port = 0;
  if (!f.metrics.empty()) {
    auto port = metrics.Serve(f.metrics);
    if (!port.ok()) return fail(port.status());
    metrics_port = *port;
  }

  std::unique_ptr<UcxServer> ucx;
  if (!f.no_ucx) {
    UcxServerOptions uo;
    // The progress thread's polling window, for experiments (docs/perf-notes.md).
    if (const char* spin = std::getenv("FORESIGHT_UCX_SPIN_US")) uo.spin_us = std::atof(spin);
    // Tests only (UcxServerOptions): stop mid-copy of a claimed GET, to be killed there.
    if (const char* pause = std::getenv("FORESIGHT_TEST_PAUSE_IN_CLAIMED_WRITE_S")) {
      uo.TEST_pause_in_claimed_write_s = std::atof(pause);
    }
    uo.host = listen->first;
    uo.port = 0;
    if (!f.ucx_listen.empty()) {
      auto u = SplitHostPort(f.ucx_listen, "--ucx-listen");
      if (!u.ok()) return fail(u.status());
      uo.host = u->first;
      uo.port = u->second;
    }
    uo.token = token;
    uo.observer = [&metrics](const UcxRequestEvent& e) {
      const bool put = e.op == UcxRequestEvent::Op::kPut;
      metrics.RecordRequest(put ? NodeMetrics::Op::kPut : NodeMetrics::Op::kGet, NodeMetrics::Path::kUcx, e.latency_s,
                            e.ok, put ? e.bytes : 0, put ? 0 : e.bytes);
    };
    auto started = UcxServer::Start(store->get(), uo);
    if (!started.ok()) return fail(started.status().WithContext("starting the UCX data plane"));
    ucx = std::move(*started);
  }

  ControlServiceOptions co;
  co.node_id = f.node_id.empty() ? f.listen : f.node_id;
  co.token = token;
  co.ucx_port = ucx ? ucx->port() : 0;
  co.max_block_bytes = store_options.max_block_bytes;
  co.nvme_bytes = store_options.nvme_bytes;
  co.nvme_enabled = !store_options.nvme_dir.empty();
  ControlService service(store->get(), &metrics, co);

  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  if (!f.tls_cert.empty() || !f.tls_key.empty()) {
    if (f.tls_cert.empty() || f.tls_key.empty())
      return fail(InvalidArgument("TLS needs both --tls-cert and --tls-key"));
    auto cert = ReadSecretFile(f.tls_cert, "--tls-cert");
    if (!cert.ok()) return fail(cert.status());
    auto key = ReadSecretFile(f.tls_key, "--tls-key");
    if (!key.ok()) return fail(key.status());
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({*key, *cert});
    creds = grpc::SslServerCredentials(ssl);
  }
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(f.listen, creds, &bound_port);
  builder.RegisterService(&service);
  builder.SetMaxReceiveMessageSize(512 << 20);
  builder.SetMaxSendMessageSize(512 << 20);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || bound_port == 0)
    return fail(Unavailable("cannot listen on " + f.listen + " (address in use, or not a local address?)"));

  if (f.node_id.empty()) {
    co.node_id = listen->first + ":" + std::to_string(bound_port);
    service.set_node_id(co.node_id);
  }
  spdlog::info("foresight-cached {} serving gRPC on {}:{}, UCX {} on port {}, RAM {}, NVMe {}", co.node_id,
               listen->first, bound_port, ucp_get_version_string(), co.ucx_port,
               FormatByteSize(store->get()->arena_bytes()), f.nvme_dir.empty() ? std::string("off") : f.nvme_dir);
  // Join the cluster before announcing READY, so that READY means "listed" when etcd answers.
  std::unique_ptr<NodeMembership> membership;
  if (!f.etcd.empty()) {
    MembershipOptions mo;
    mo.etcd = f.etcd;
    mo.prefix = f.etcd_prefix;
    mo.node_id = co.node_id;
    mo.advertise = f.advertise.empty() ? listen->first + ":" + std::to_string(bound_port) : f.advertise;
    mo.ucx_port = co.ucx_port;
    mo.nvme = co.nvme_enabled;
    mo.ttl_seconds = f.etcd_ttl;
    auto m = NodeMembership::Start(mo);
    if (!m.ok()) {
      server->Shutdown();
      return fail(m.status().WithContext("joining the cluster"));
    }
    membership = std::move(*m);
  }
  // One parseable line for launchers and tests.
  std::cout << "READY grpc=" << listen->first << ":" << bound_port << " ucx=" << co.ucx_port
            << " metrics=" << metrics_port << std::endl;

  std::atomic<bool> stopping{false};
  std::thread signal_thread([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    spdlog::info("signal {}: shutting down", sig);
    stopping = true;
    if (membership) (void)membership->Stop();  // clients stop routing here before the node goes away
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  });
  std::thread metrics_thread([&] {
    while (!stopping) {
      metrics.UpdateFromStore(store->get()->Stats());
      for (int i = 0; i < 10 && !stopping; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  server->Wait();
  if (membership) (void)membership->Stop();
  if (!stopping) {  // Wait() returned on its own: wake the signal thread.
    stopping = true;
    kill(getpid(), SIGTERM);
  }
  signal_thread.join();
  metrics_thread.join();
  ucx.reset();
  store->reset();
  spdlog::info("stopped cleanly");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"foresight-cached: a Foresight cache node (RAM + NVMe tiers, gRPC control, UCX data)"};
  Flags f;
  app.set_config("--config", "", "Read flags from a TOML/INI file (keys are the long flag names)");
  app.allow_config_extras(CLI::config_extras_mode::error);  // a misspelt key is an error, not ignored
  app.add_option("--listen", f.listen, "gRPC address HOST:PORT (port 0: pick a free one)")->capture_default_str();
  app.add_option("--ram-bytes", f.ram_bytes, "RAM tier size, e.g. 512MiB, 8GiB")->capture_default_str();
  app.add_option("--nvme-dir", f.nvme_dir, "NVMe tier directory (RocksDB); empty: no NVMe tier");
  app.add_option("--nvme-bytes", f.nvme_bytes, "NVMe tier capacity (0: unlimited)")->capture_default_str();
  app.add_option("--max-block-bytes", f.max_block_bytes, "Largest block accepted")->capture_default_str();
  app.add_option("--huge-pages", f.huge_pages,
                 "RAM arena in 2MiB huge pages: auto (when enough are reserved), on (required), off")
      ->capture_default_str();
  app.add_option("--token-file", f.token_file, "Require this token on every call (gRPC and UCX)");
  app.add_option("--metrics", f.metrics, "Serve Prometheus metrics on HOST:PORT");
  app.add_option("--ucx-listen", f.ucx_listen, "UCX data plane HOST:PORT (default: gRPC host, free port)");
  app.add_flag("--no-ucx", f.no_ucx, "Serve data over gRPC only");
  app.add_option("--tls-cert", f.tls_cert, "PEM certificate for gRPC TLS");
  app.add_option("--tls-key", f.tls_key, "PEM private key for gRPC TLS");
  app.add_option("--node-id", f.node_id, "Name of this node (default: the listen address)");
  app.add_option("--etcd", f.etcd, "Join the cluster: etcd endpoints http://HOST:PORT[,...]");
  app.add_option("--advertise", f.advertise, "gRPC HOST:PORT clients should dial (default: the bound address)");
  app.add_option("--etcd-ttl", f.etcd_ttl, "Membership lease TTL in seconds")->capture_default_str();
  app.add_option("--etcd-prefix", f.etcd_prefix, "etcd key prefix of the member list")->capture_default_str();
  app.add_option("--log-level", f.log_level, "trace|debug|info|warn|error")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return Run(f);
}
