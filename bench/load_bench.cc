// foresight-bench load: N client processes doing mixed put/get against one node for a while, on a
// working set larger than the RAM tier, checking every byte that comes back.
//
// Every block is self-describing: a header {magic, key index, seed} and a payload generated from
// the seed, so any reader can tell a wrong block from a right one whichever writer wrote it last.
// A block that this process has had acknowledged must be found again (the NVMe tier has no
// capacity limit here), so a NOT_FOUND for it counts as an error.
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <new>
#include <random>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/commands.h"
#include "client/cache_client.h"
#include "common/units.h"
#include "testing/local_node.h"

namespace foresight::bench {

namespace {

constexpr uint32_t kMagic = 0x4c4f4144;  // "LOAD"
constexpr size_t kHeader = 16;

struct LoadFlags {
  std::string cache;  // empty: start a local node
  int clients = 8;
  double seconds = 60;
  std::string ram = "256MiB";
  std::string block = "256KiB";
  double working_set_factor = 3.0;
  double put_share = 0.5;
  std::string transport = "auto";
  std::string ucx_transports = "auto";  // UCX_TLS of the clients: auto, shm or tcp
  bool preload = false;                 // put every key once before the timed run
  bool json = false;
};

// Per-process results, written into shared memory for the parent.
struct ClientResult {
  uint64_t puts = 0, gets = 0, errors = 0, mismatches = 0, lost = 0, not_found = 0;
  uint64_t bytes = 0;
  uint32_t put_lat_n = 0, get_lat_n = 0;
  static constexpr uint32_t kMaxSamples = 200000;
  float put_us[kMaxSamples];
  float get_us[kMaxSamples];
  char first_error[256];
  char data_path[32];
};

void Fill(uint8_t* block, size_t size, uint32_t key, uint64_t seed) {
  std::memcpy(block, &kMagic, 4);
  std::memcpy(block + 4, &key, 4);
  std::memcpy(block + 8, &seed, 8);
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + key + 1;
  for (size_t i = kHeader; i + 8 <= size; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(block + i, &x, 8);
  }
}

bool Check(const uint8_t* block, size_t size, uint32_t key, std::vector<uint8_t>& scratch) {
  uint32_t magic, k;
  uint64_t seed;
  std::memcpy(&magic, block, 4);
  std::memcpy(&k, block + 4, 4);
  std::memcpy(&seed, block + 8, 8);
  if (magic != kMagic || k != key) return false;
  Fill(scratch.data(), size, key, seed);
  return std::memcmp(scratch.data(), block, size) == 0;
}

void RunClient(const LoadFlags& f, const std::string& address, uint64_t block_bytes, uint32_t keys, int index,
               std::atomic<int>* preloaded, ClientResult* out) {
  CacheClientOptions o;
  o.ucx_tuning = UcxTuningFromEnvironment();
  o.ucx_transports = f.ucx_transports;
  o.address = address;
  o.data_path = f.transport == "grpc" ? DataPath::kGrpc : (f.transport == "ucx" ? DataPath::kUcx : DataPath::kAuto);
  auto client = CacheClient::Connect(o);
  if (!client.ok()) {
    out->errors++;
    std::snprintf(out->first_error, sizeof(out->first_error), "%s", client.status().ToString().c_str());
    return;
  }
  std::snprintf(out->data_path, sizeof(out->data_path), "%s", (*client)->stats().data_path.c_str());
  std::vector<uint8_t> buf(block_bytes), scratch(block_bytes);
  (void)(*client)->RegisterBuffer(buf.data(), buf.size());
  std::vector<bool> acknowledged(keys, false);
  std::mt19937_64 rng(1234 + index);
  auto note_error = [&](const Status& s) {
    if (out->errors++ == 0) std::snprintf(out->first_error, sizeof(out->first_error), "%s", s.ToString().c_str());
  };
  if (f.preload) {
    // Every client puts its share of the keys, untimed; the timed run starts when all are done.
    for (uint32_t key = static_cast<uint32_t>(index); key < keys; key += static_cast<uint32_t>(f.clients)) {
      Fill(buf.data(), buf.size(), key, rng());
      Status s = (*client)->Put(PlainKey("load", std::to_string(key)), buf.data(), buf.size());
      if (!s.ok()) note_error(s.WithContext("preload"));
    }
    preloaded->fetch_add(1);
    while (preloaded->load() < f.clients) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::fill(acknowledged.begin(), acknowledged.end(), true);
  }
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(f.seconds);
  while (std::chrono::steady_clock::now() < end) {
    const uint32_t key = static_cast<uint32_t>(rng() % keys);
    const BlockKey bk = PlainKey("load", std::to_string(key));
    const bool put = std::uniform_real_distribution<double>(0, 1)(rng) < f.put_share;
    const auto t0 = std::chrono::steady_clock::now();
    if (put) {
      Fill(buf.data(), buf.size(), key, rng());
      Status s = (*client)->Put(bk, buf.data(), buf.size());
      const float us = std::chrono::duration<float, std::micro>(std::chrono::steady_clock::now() - t0).count();
      out->puts++;
      if (!s.ok()) {
        note_error(s);
        continue;
      }
      acknowledged[key] = true;
      out->bytes += buf.size();
      if (out->put_lat_n < ClientResult::kMaxSamples) out->put_us[out->put_lat_n++] = us;
    } else {
      auto n = (*client)->Get(bk, buf.data(), buf.size());
      const float us = std::chrono::duration<float, std::micro>(std::chrono::steady_clock::now() - t0).count();
      out->gets++;
      if (!n.ok()) {
        if (n.status().code() == StatusCode::kNotFound) {
          out->not_found++;
          if (acknowledged[key]) {
            out->lost++;
            note_error(n.status().WithContext("acknowledged block lost"));
          }
        } else {
          note_error(n.status());
        }
        continue;
      }
      out->bytes += *n;
      if (*n != buf.size() || !Check(buf.data(), buf.size(), key, scratch)) out->mismatches++;
      if (out->get_lat_n < ClientResult::kMaxSamples) out->get_us[out->get_lat_n++] = us;
    }
  }
}

double Percentile(std::vector<float>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

int RunLoad(const LoadFlags& f) {
  auto ram = ParseByteSize(f.ram);
  auto block = ParseByteSize(f.block);
  if (!ram.ok() || !block.ok()) {
    std::cerr << "foresight-bench load: " << (ram.ok() ? block.status() : ram.status()).message() << "\n";
    return 2;
  }
  if (*block < kHeader + 8) {
    std::cerr << "foresight-bench load: --block must be at least 24 bytes\n";
    return 2;
  }
  const uint32_t keys = static_cast<uint32_t>(std::max<double>(1, f.working_set_factor * *ram / *block));
  std::unique_ptr<LocalNode> node;
  std::string nvme_dir;
  std::string address = f.cache;
  if (address.empty()) {
    nvme_dir = std::filesystem::temp_directory_path().string() + "/foresight-load-" + std::to_string(getpid());
    std::filesystem::remove_all(nvme_dir);
    auto started = LocalNode::Start({"--ram-bytes", f.ram, "--nvme-dir", nvme_dir});
    if (!started.ok()) {
      std::cerr << "foresight-bench load: " << started.status().message() << "\n";
      return 2;
    }
    node = std::move(*started);
    address = node->address();
  }
  void* shared =
      mmap(nullptr, sizeof(ClientResult) * f.clients, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  auto* results = static_cast<ClientResult*>(shared);
  std::memset(shared, 0, sizeof(ClientResult) * f.clients);
  void* shared_count =
      mmap(nullptr, sizeof(std::atomic<int>), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  auto* preloaded = new (shared_count) std::atomic<int>(0);
  if (!f.json)
    std::printf(
        "load: %d client processes, %.0f s, %u keys x %s = %s working set (%.1fx the %s RAM tier), %.0f%% puts\n",
        f.clients, f.seconds, keys, FormatByteSize(*block).c_str(), FormatByteSize(uint64_t{keys} * *block).c_str(),
        static_cast<double>(keys) * *block / *ram, f.ram.c_str(), 100 * f.put_share);
  std::vector<pid_t> pids;
  for (int i = 0; i < f.clients; ++i) {
    pid_t pid = fork();
    if (pid == 0) {
      RunClient(f, address, *block, keys, i, preloaded, &results[i]);
      _exit(0);
    }
    pids.push_back(pid);
  }
  int crashed = 0;
  for (pid_t pid : pids) {
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) crashed++;
  }
  ClientResult total{};
  std::vector<float> put_us, get_us;
  std::string first_error, data_path;
  for (int i = 0; i < f.clients; ++i) {
    const ClientResult& r = results[i];
    total.puts += r.puts;
    total.gets += r.gets;
    total.errors += r.errors;
    total.mismatches += r.mismatches;
    total.lost += r.lost;
    total.not_found += r.not_found;
    total.bytes += r.bytes;
    put_us.insert(put_us.end(), r.put_us, r.put_us + r.put_lat_n);
    get_us.insert(get_us.end(), r.get_us, r.get_us + r.get_lat_n);
    if (first_error.empty() && r.first_error[0]) first_error = r.first_error;
    if (data_path.empty()) data_path = r.data_path;
  }
  munmap(shared, sizeof(ClientResult) * f.clients);
  munmap(shared_count, sizeof(std::atomic<int>));
  nlohmann::json j = {{"clients", f.clients},
                      {"put_share", f.put_share},
                      {"preload", f.preload},
                      {"ucx_transports", f.ucx_transports},
                      {"seconds", f.seconds},
                      {"keys", keys},
                      {"block_bytes", *block},
                      {"ram_bytes", *ram},
                      {"data_path", data_path},
                      {"puts", total.puts},
                      {"gets", total.gets},
                      {"errors", total.errors},
                      {"mismatches", total.mismatches},
                      {"lost", total.lost},
                      {"not_found", total.not_found},
                      {"crashed_clients", crashed},
                      {"gbps", total.bytes / f.seconds / 1e9},
                      {"put_p50_us", Percentile(put_us, 0.5)},
                      {"put_p99_us", Percentile(put_us, 0.99)},
                      {"get_p50_us", Percentile(get_us, 0.5)},
                      {"get_p99_us", Percentile(get_us, 0.99)}};
  if (node) {
    CacheClientOptions o;
    o.ucx_tuning = UcxTuningFromEnvironment();
    o.address = address;
    o.data_path = DataPath::kGrpc;
    if (auto c = CacheClient::Connect(o); c.ok()) {
      if (auto s = (*c)->NodeStats(); s.ok()) {
        j["node"] = {{"ram_items", s->ram.items},
                     {"nvme_items", s->nvme.items},
                     {"demotions", s->demotions},
                     {"promotions", s->promotions},
                     {"checksum_failures", s->checksum_failures}};
      }
    }
    j["node_exit"] = node->Stop();
    std::filesystem::remove_all(nvme_dir);
  }
  if (f.json) {
    std::cout << j.dump(2) << "\n";
  } else {
    std::printf(
        "data path %s: %llu puts, %llu gets (%.2f GB/s), %llu errors, %llu mismatches, %llu acknowledged blocks lost\n",
        data_path.c_str(), (unsigned long long)total.puts, (unsigned long long)total.gets,
        total.bytes / f.seconds / 1e9, (unsigned long long)total.errors, (unsigned long long)total.mismatches,
        (unsigned long long)total.lost);
    std::printf("put p50 %.0f us  p99 %.0f us | get p50 %.0f us  p99 %.0f us\n", Percentile(put_us, 0.5),
                Percentile(put_us, 0.99), Percentile(get_us, 0.5), Percentile(get_us, 0.99));
    if (j.contains("node")) std::printf("node: %s\n", j["node"].dump().c_str());
    if (!first_error.empty()) std::printf("first error: %s\n", first_error.c_str());
  }
  // A load test that moved nothing (a node that refused every client before its first operation)
  // proves nothing: it fails too.
  return (total.errors == 0 && total.mismatches == 0 && crashed == 0 && total.puts + total.gets > 0) ? 0 : 1;
}

}  // namespace

void AddLoadBench(CLI::App& app, int* exit_code) {
  auto f = std::make_shared<LoadFlags>();
  CLI::App* cmd = app.add_subcommand("load", "Mixed put/get from many client processes, every byte checked");
  cmd->add_option("--cache", f->cache, "Node HOST:PORT (default: start a local node with an NVMe tier)");
  cmd->add_option("--clients", f->clients, "Client processes")->check(CLI::Range(1, 1024))->capture_default_str();
  cmd->add_option("--seconds", f->seconds, "Duration")->check(CLI::Range(0.1, 86400.0))->capture_default_str();
  cmd->add_option("--ram-bytes", f->ram, "RAM tier of the local node")->capture_default_str();
  cmd->add_option("--block", f->block, "Block size")->capture_default_str();
  cmd->add_option("--working-set", f->working_set_factor, "Working set as a multiple of the RAM tier")
      ->check(CLI::Range(0.01, 1000.0))
      ->capture_default_str();
  cmd->add_option("--put-share", f->put_share, "Share of operations that are puts")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--transport", f->transport, "auto, ucx or grpc")->capture_default_str();
  cmd->add_option("--ucx-transports", f->ucx_transports, "UCX transports of the clients: auto, shm or tcp")
      ->check(CLI::IsMember({"auto", "shm", "tcp"}))
      ->capture_default_str();
  cmd->add_flag("--preload", f->preload,
                "Put every key once before the timed run (untimed), so that gets find their blocks (with "
                "--put-share 0: a get-only run)");
  cmd->add_flag("--json", f->json, "Print JSON");
  cmd->callback([f, exit_code] { *exit_code = RunLoad(*f); });
}

}  // namespace foresight::bench
