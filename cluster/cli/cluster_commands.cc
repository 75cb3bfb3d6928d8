// foresight --etcd URL cluster status|repair|put|get: operator commands against a whole cluster.
//
// `status` reads the member list from etcd and asks every node for its stats (NodeStats over
// gRPC): tiers' fill, hit rates, health. A node that is listed but does not answer is shown as
// down, and the command exits 1 so that scripts notice. `repair` runs one repair pass
// (cluster/cluster_client.h): every block is copied to those of its R owners that lack it.
// `put KEY FILE` / `get KEY FILE` route one block as a worker would (R replicas, failover); KEY as
// in the single-node commands: a plain name hashed under --namespace, or "hex:<32 hex digits>".
#include <cstdio>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/cli_util.h"
#include "client/cache_client.h"
#include "cluster/cli/cluster_commands.h"
#include "cluster/cluster_client.h"
#include "cluster/etcd_client.h"
#include "common/file_io.h"
#include "common/units.h"

namespace foresight::cli {

namespace {

struct ClusterFlags {
  std::string etcd;
  std::string prefix = kDefaultMembersPrefix;
  double timeout_s = 3;
  bool json = false;
  int replication = 1;
};

// The root app's --token-file (cache_commands.cc owns the option); empty when not given.
StatusOr<std::string> TokenFrom(CLI::App& root) {
  CLI::Option* opt = root.get_option_no_throw("--token-file");
  if (opt == nullptr || opt->count() == 0) return std::string();
  return ReadSecretFile(opt->as<std::string>(), "--token-file");
}

double Ratio(uint64_t hits, uint64_t misses) { return hits + misses == 0 ? 0.0 : double(hits) / double(hits + misses); }

std::string Fill(uint64_t used, uint64_t capacity) {
  char buf[64];
  if (capacity == 0) {
    std::snprintf(buf, sizeof(buf), "%s", FormatByteSize(used).c_str());
  } else {
    std::snprintf(buf, sizeof(buf), "%s/%s (%.0f%%)", FormatByteSize(used).c_str(), FormatByteSize(capacity).c_str(),
                  100.0 * double(used) / double(capacity));
  }
  return buf;
}

int Status_(CLI::App& root, const ClusterFlags& f) {
  auto etcd = EtcdClient::Create(f.etcd, std::chrono::milliseconds(static_cast<int64_t>(f.timeout_s * 1000)));
  if (!etcd.ok()) return Fail(etcd.status());
  auto range = (*etcd)->RangePrefix(f.prefix);
  if (!range.ok()) return Fail(range.status());
  auto token = TokenFrom(root);
  if (!token.ok()) return Fail(token.status());

  nlohmann::json nodes = nlohmann::json::array();
  int down = 0;
  for (const auto& kv : range->kvs) {
    auto m = ParseClusterMember(kv.value);
    if (!m.ok()) {
      std::cerr << "foresight: skipping " << kv.key << ": " << m.status().message() << "\n";
      continue;
    }
    nlohmann::json row = {{"node_id", m->node_id},
                          {"grpc", m->grpc},
                          {"ucx_port", m->ucx_port},
                          {"incarnation", m->incarnation},
                          {"started_at", m->started_at}};
    CacheClientOptions o;
    o.ucx_tuning = UcxTuningFromEnvironment();
    o.address = m->grpc;
    o.token = *token;
    o.data_path = DataPath::kGrpc;  // stats only: no data plane needed
    o.timeout = std::chrono::milliseconds(static_cast<int64_t>(f.timeout_s * 1000));
    auto client = CacheClient::Connect(o);
    StatusOr<RemoteNodeStats> st = client.ok() ? (*client)->NodeStats() : StatusOr<RemoteNodeStats>(client.status());
    if (!st.ok()) {
      ++down;
      row["health"] = "down";
      row["error"] = st.status().message();
    } else {
      row["health"] = "ok";
      auto tier = [](const RemoteTierStats& t) {
        return nlohmann::json{{"capacity_bytes", t.capacity_bytes},
                              {"used_bytes", t.used_bytes},
                              {"items", t.items},
                              {"hits", t.hits},
                              {"misses", t.misses},
                              {"hit_rate", Ratio(t.hits, t.misses)}};
      };
      row["ram"] = tier(st->ram);
      row["nvme"] = tier(st->nvme);
      row["uptime_seconds"] = st->uptime_seconds;
      row["checksum_failures"] = st->checksum_failures;
    }
    nodes.push_back(row);
  }
  if (f.json) {
    std::cout << nlohmann::json{{"etcd", f.etcd}, {"revision", range->revision}, {"nodes", nodes}}.dump(2) << "\n";
    return down == 0 ? 0 : 1;
  }
  std::printf("cluster at %s: %zu node(s), %d down\n", f.etcd.c_str(), nodes.size(), down);
  std::printf("%-12s %-22s %-6s %-24s %-24s %8s %8s %9s\n", "NODE", "GRPC", "HEALTH", "RAM", "NVME", "RAM-HIT",
              "NVME-HIT", "ITEMS");
  for (const auto& n : nodes) {
    if (n["health"] == "ok") {
      const auto& r = n["ram"];
      const auto& v = n["nvme"];
      std::printf("%-12s %-22s %-6s %-24s %-24s %7.1f%% %7.1f%% %9llu\n", n["node_id"].get<std::string>().c_str(),
                  n["grpc"].get<std::string>().c_str(), "ok", Fill(r["used_bytes"], r["capacity_bytes"]).c_str(),
                  Fill(v["used_bytes"], v["capacity_bytes"]).c_str(), 100 * r["hit_rate"].get<double>(),
                  100 * v["hit_rate"].get<double>(),
                  static_cast<unsigned long long>(r["items"].get<uint64_t>() + v["items"].get<uint64_t>()));
    } else {
      std::printf("%-12s %-22s %-6s %s\n", n["node_id"].get<std::string>().c_str(),
                  n["grpc"].get<std::string>().c_str(), "DOWN", n["error"].get<std::string>().c_str());
    }
  }
  return down == 0 ? 0 : 1;
}

StatusOr<std::unique_ptr<ClusterClient>> ConnectCluster(CLI::App& root, const ClusterFlags& f) {
  FS_ASSIGN_OR_RETURN(std::string token, TokenFrom(root));
  ClusterClientOptions o;
  o.etcd = f.etcd;
  o.prefix = f.prefix;
  o.replication = f.replication;
  o.node.token = token;
  o.node.timeout = std::chrono::milliseconds(static_cast<int64_t>(f.timeout_s * 1000));
  return ClusterClient::Connect(o);
}

// The root app's --namespace (cache_commands.cc owns the option), else "default".
StatusOr<BlockKey> KeyFrom(CLI::App& root, const std::string& text) {
  if (text.rfind("hex:", 0) == 0) return BlockKey::FromHex(text.substr(4));
  if (text.empty()) return InvalidArgument("empty key");
  CLI::Option* ns = root.get_option_no_throw("--namespace");
  const std::string name_space = ns != nullptr && ns->count() > 0 ? ns->as<std::string>() : "default";
  return PlainKey(name_space, text);
}

int Put(CLI::App& root, const ClusterFlags& f, const std::string& key_text, const std::string& file) {
  auto key = KeyFrom(root, key_text);
  if (!key.ok()) return Fail(key.status());
  auto data = ReadWholeFile(file);
  if (!data.ok()) return Fail(data.status());
  auto cluster = ConnectCluster(root, f);
  if (!cluster.ok()) return Fail(cluster.status());
  Status s = (*cluster)->Put(*key, data->data(), data->size());
  if (!s.ok()) return Fail(s);
  std::string owners;
  for (const auto& o : (*cluster)->Owners(*key)) owners += (owners.empty() ? "" : ",") + o;
  std::cout << "put " << key->ToHex() << " " << data->size() << " bytes on " << f.replication << " node(s) (owners "
            << owners << ")\n";
  return 0;
}

int Get(CLI::App& root, const ClusterFlags& f, const std::string& key_text, const std::string& file) {
  auto key = KeyFrom(root, key_text);
  if (!key.ok()) return Fail(key.status());
  auto cluster = ConnectCluster(root, f);
  if (!cluster.ok()) return Fail(cluster.status());
  // The block's size: ask its nodes in order until one has it.
  uint64_t size = 0;
  for (const auto& m : (*cluster)->members()) {
    auto c = (*cluster)->NodeClient(m.node_id);
    if (!c.ok()) continue;
    auto info = (*c)->Stat(*key);
    if (info.ok()) {
      size = info->size;
      break;
    }
  }
  if (size == 0) return Fail(NotFound("block " + key->ToHex() + " is on no member of the cluster"));
  std::vector<char> buffer(size);
  auto n = (*cluster)->Get(*key, buffer.data(), buffer.size());
  if (!n.ok()) return Fail(n.status());
  Status written = WriteOutput(file, std::string_view(buffer.data(), *n));
  if (!written.ok()) return Fail(written);
  if (file == "-") return 0;
  std::cerr << "got " << key->ToHex() << " " << *n << " bytes\n";
  return 0;
}

int Repair(CLI::App& root, const ClusterFlags& f) {
  auto token = TokenFrom(root);
  if (!token.ok()) return Fail(token.status());
  ClusterClientOptions o;
  o.etcd = f.etcd;
  o.prefix = f.prefix;
  o.replication = f.replication;
  o.node.token = *token;
  o.node.timeout = std::chrono::milliseconds(static_cast<int64_t>(f.timeout_s * 1000));
  auto cluster = ClusterClient::Connect(o);
  if (!cluster.ok()) return Fail(cluster.status());
  Status s = (*cluster)->RepairOnce();
  const RepairStats r = (*cluster)->repair_stats();
  std::printf("repair: %llu block(s) scanned, %llu copied, %llu copy error(s)\n",
              static_cast<unsigned long long>(r.blocks_scanned), static_cast<unsigned long long>(r.blocks_copied),
              static_cast<unsigned long long>(r.copy_errors));
  return s.ok() ? 0 : Fail(s);
}

}  // namespace

void AddClusterCommands(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<ClusterFlags>();
  const char* env = std::getenv("FORESIGHT_ETCD_ENDPOINTS");
  flags->etcd = env != nullptr ? env : "http://127.0.0.1:2379";
  app.add_option("--etcd", flags->etcd,
                 "etcd endpoints of the cluster, http://HOST:PORT[,...] "
                 "(default: $FORESIGHT_ETCD_ENDPOINTS or http://127.0.0.1:2379)");
  CLI::App* cluster = app.add_subcommand("cluster", "Many cache nodes coordinated through etcd");
  cluster->require_subcommand(1);
  cluster->add_option("--prefix", flags->prefix, "etcd key prefix of the member list")->capture_default_str();
  cluster->add_option("--node-timeout", flags->timeout_s, "Per-node timeout in seconds")->capture_default_str();

  CLI::App* status = cluster->add_subcommand("status", "Nodes, their tiers' fill, hit rates and health");
  status->add_flag("--json", flags->json, "Print JSON");
  status->fallthrough();  // `cluster status --node-timeout 1` as well as `cluster --node-timeout 1 status`
  status->callback([&app, flags, exit_code] { *exit_code = Status_(app, *flags); });

  CLI::App* repair = cluster->add_subcommand("repair", "Copy every block to those of its owners that lack it");
  repair->add_option("--replication,-R", flags->replication, "Replication factor R")->capture_default_str();
  repair->fallthrough();

  struct KeyFile {
    std::string key, file;
  };
  auto put_args = std::make_shared<KeyFile>();
  CLI::App* put = cluster->add_subcommand("put", "Store FILE as block KEY on its R owners");
  put->add_option("KEY", put_args->key)->required();
  put->add_option("FILE", put_args->file)->required();
  put->add_option("--replication,-R", flags->replication, "Replication factor R")->capture_default_str();
  put->fallthrough();
  put->callback([&app, flags, put_args, exit_code] { *exit_code = Put(app, *flags, put_args->key, put_args->file); });

  auto get_args = std::make_shared<KeyFile>();
  CLI::App* get = cluster->add_subcommand("get", "Fetch block KEY from the cluster into FILE ('-' for stdout)");
  get->add_option("KEY", get_args->key)->required();
  get->add_option("FILE", get_args->file)->required();
  get->add_option("--replication,-R", flags->replication, "Replication factor R")->capture_default_str();
  get->fallthrough();
  get->callback([&app, flags, get_args, exit_code] { *exit_code = Get(app, *flags, get_args->key, get_args->file); });
  repair->callback([&app, flags, exit_code] { *exit_code = Repair(app, *flags); });
}

}  // namespace foresight::cli
