// foresight put/get/stat/ls/evict/flush/health: operator commands against one cache node.
//
// KEY is a plain name, hashed under --namespace (see common/block_key.h PlainKey), or
// "hex:<32 hex digits>" for a raw block key as `ls` prints it.
#include <cstdio>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/cli_util.h"
#include "client/cache_client.h"
#include "client/cli/commands.h"
#include "common/file_io.h"
#include "common/units.h"

namespace foresight::cli {

namespace {

struct CacheFlags {
  std::string cache = "127.0.0.1:7600";
  std::string token_file;
  std::string name_space = "default";
  std::string transport = "auto";
  std::string tls_ca;
  double timeout_s = 10;
};

StatusOr<BlockKey> ParseKey(const std::string& text, const std::string& name_space) {
  if (text.rfind("hex:", 0) == 0) return BlockKey::FromHex(text.substr(4));
  if (text.empty()) return InvalidArgument("empty key");
  return PlainKey(name_space, text);
}

StatusOr<std::unique_ptr<CacheClient>> ConnectFrom(const CacheFlags& f) {
  CacheClientOptions o;
  o.ucx_tuning = UcxTuningFromEnvironment();
  o.address = f.cache;
  o.timeout = std::chrono::milliseconds(static_cast<int64_t>(f.timeout_s * 1000));
  o.tls_ca = f.tls_ca;
  if (f.transport == "grpc")
    o.data_path = DataPath::kGrpc;
  else if (f.transport == "ucx")
    o.data_path = DataPath::kUcx;
  else if (f.transport != "auto")
    return InvalidArgument("--transport '" + f.transport + "': expected auto, ucx or grpc");
  if (!f.token_file.empty()) {
    FS_ASSIGN_OR_RETURN(o.token, ReadSecretFile(f.token_file, "--token-file"));
  }
  return CacheClient::Connect(o);
}

nlohmann::json TierJson(const RemoteTierStats& t) {
  return {{"capacity_bytes", t.capacity_bytes},
          {"used_bytes", t.used_bytes},
          {"items", t.items},
          {"hits", t.hits},
          {"misses", t.misses},
          {"evictions", t.evictions}};
}

nlohmann::json BlockJson(const RemoteBlockInfo& b) {
  return {
      {"key", b.key.ToHex()}, {"size", b.size}, {"checksum", b.checksum}, {"in_ram", b.in_ram}, {"on_nvme", b.on_nvme}};
}

std::string Tiers(const RemoteBlockInfo& b) {
  if (b.in_ram && b.on_nvme) return "ram+nvme";
  return b.in_ram ? "ram" : "nvme";
}

}  // namespace

void AddCacheCommands(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<CacheFlags>();
  app.add_option("--cache", flags->cache, "Cache node gRPC address HOST:PORT")->capture_default_str();
  app.add_option("--token-file", flags->token_file, "File holding the node's token");
  app.add_option("--namespace", flags->name_space, "Namespace (tenant) that plain keys are hashed under")
      ->capture_default_str();
  app.add_option("--transport", flags->transport, "Data path: auto, ucx or grpc")->capture_default_str();
  app.add_option("--tls-ca", flags->tls_ca, "PEM CA file: talk to the node over TLS");
  app.add_option("--timeout", flags->timeout_s, "Per-call timeout in seconds")->capture_default_str();

  struct KeyFile {
    std::string key, file;
  };
  auto put_args = std::make_shared<KeyFile>();
  auto put_json = std::make_shared<bool>(false);
  CLI::App* put = app.add_subcommand("put", "Store FILE as the block KEY");
  put->add_option("KEY", put_args->key)->required();
  put->add_option("FILE", put_args->file)->required();
  put->add_flag("--json", *put_json, "Print JSON");
  put->callback([flags, put_args, put_json, exit_code] {
    auto key = ParseKey(put_args->key, flags->name_space);
    if (!key.ok()) {
      *exit_code = Fail(key.status());
      return;
    }
    auto data = ReadWholeFile(put_args->file);
    if (!data.ok()) {
      *exit_code = Fail(data.status());
      return;
    }
    auto client = ConnectFrom(*flags);
    if (!client.ok()) {
      *exit_code = Fail(client.status());
      return;
    }
    Status s = (*client)->Put(*key, data->data(), data->size());
    if (!s.ok()) {
      *exit_code = Fail(s.WithContext("put " + put_args->key));
      return;
    }
    if (*put_json) {
      nlohmann::json j = {{"key", key->ToHex()}, {"size", data->size()}, {"data_path", (*client)->stats().data_path}};
      std::cout << j.dump(2) << "\n";
      return;
    }
    std::cout << "put " << key->ToHex() << " " << data->size() << " bytes via " << (*client)->stats().data_path << "\n";
  });

  auto get_args = std::make_shared<KeyFile>();
  CLI::App* get = app.add_subcommand("get", "Fetch block KEY into FILE ('-' for stdout)");
  get->add_option("KEY", get_args->key)->required();
  get->add_option("FILE", get_args->file)->required();
  get->callback([flags, get_args, exit_code] {
    auto key = ParseKey(get_args->key, flags->name_space);
    if (!key.ok()) {
      *exit_code = Fail(key.status());
      return;
    }
    auto client = ConnectFrom(*flags);
    if (!client.ok()) {
      *exit_code = Fail(client.status());
      return;
    }
    auto info = (*client)->Stat(*key);
    if (!info.ok()) {
      *exit_code = Fail(info.status().WithContext("get " + get_args->key));
      return;
    }
    std::vector<char> buf(info->size);
    auto n = (*client)->Get(*key, buf.data(), buf.size());
    if (!n.ok()) {
      *exit_code = Fail(n.status().WithContext("get " + get_args->key));
      return;
    }
    Status written = WriteOutput(get_args->file, std::string_view(buf.data(), *n));
    if (!written.ok()) {
      *exit_code = Fail(written);
      return;
    }
    if (get_args->file == "-") return;
    std::cerr << "got " << key->ToHex() << " " << *n << " bytes\n";
  });

  auto stat_key = std::make_shared<std::string>();
  auto stat_json = std::make_shared<bool>(false);
  CLI::App* stat = app.add_subcommand("stat", "Node statistics, or one block's metadata with KEY");
  stat->add_option("KEY", *stat_key);
  stat->add_flag("--json", *stat_json, "Print JSON");
  stat->callback([flags, stat_key, stat_json, exit_code] {
    auto client = ConnectFrom(*flags);
    if (!client.ok()) {
      *exit_code = Fail(client.status());
      return;
    }
    if (!stat_key->empty()) {
      auto key = ParseKey(*stat_key, flags->name_space);
      if (!key.ok()) {
        *exit_code = Fail(key.status());
        return;
      }
      auto info = (*client)->Stat(*key);
      if (!info.ok()) {
        *exit_code = Fail(info.status());
        return;
      }
      if (*stat_json)
        std::cout << BlockJson(*info).dump(2) << "\n";
      else
        std::cout << info->key.ToHex() << " " << info->size << " bytes, " << Tiers(*info) << "\n";
      return;
    }
    auto node = (*client)->Info();
    auto s = (*client)->NodeStats();
    if (!node.ok() || !s.ok()) {
      *exit_code = Fail(node.ok() ? s.status() : node.status());
      return;
    }
    if (*stat_json) {
      nlohmann::json j = {{"node_id", node->node_id},
                          {"version", node->version},
                          {"ucx_port", node->ucx_port},
                          {"ucx_version", node->ucx_version},
                          {"ram", TierJson(s->ram)},
                          {"nvme", TierJson(s->nvme)},
                          {"checksum_failures", s->checksum_failures},
                          {"promotions", s->promotions},
                          {"demotions", s->demotions},
                          {"active_leases", s->active_leases},
                          {"bytes_in", s->bytes_in},
                          {"bytes_out", s->bytes_out},
                          {"uptime_seconds", s->uptime_seconds},
                          {"ram_page_bytes", s->ram_page_bytes},
                          {"client_data_path", (*client)->stats().data_path}};
      std::cout << j.dump(2) << "\n";
      return;
    }
    auto line = [](const char* name, const RemoteTierStats& t) {
      std::printf("%-5s %10s / %-10s %8llu blocks  hits %llu  misses %llu  evictions %llu\n", name,
                  FormatByteSize(t.used_bytes).c_str(),
                  t.capacity_bytes ? FormatByteSize(t.capacity_bytes).c_str() : "unlimited",
                  (unsigned long long)t.items, (unsigned long long)t.hits, (unsigned long long)t.misses,
                  (unsigned long long)t.evictions);
    };
    std::printf("node %s (v%s), up %llus, UCX port %u (UCX %s)\n", node->node_id.c_str(), node->version.c_str(),
                (unsigned long long)s->uptime_seconds, node->ucx_port,
                node->ucx_version.empty() ? "?" : node->ucx_version.c_str());
    line("ram", s->ram);
    if (s->ram_page_bytes > 0)
      std::printf("      arena in %s%s pages\n", FormatByteSize(s->ram_page_bytes).c_str(),
                  s->ram_page_bytes > 4096 ? " huge" : "");
    if (node->nvme_enabled) line("nvme", s->nvme);
    std::printf("promotions %llu  demotions %llu  checksum failures %llu  in %s  out %s\n",
                (unsigned long long)s->promotions, (unsigned long long)s->demotions,
                (unsigned long long)s->checksum_failures, FormatByteSize(s->bytes_in).c_str(),
                FormatByteSize(s->bytes_out).c_str());
  });

  auto ls_limit = std::make_shared<uint32_t>(100);
  auto ls_json = std::make_shared<bool>(false);
  CLI::App* ls = app.add_subcommand("ls", "List blocks (key order)");
  ls->add_option("--limit", *ls_limit, "At most this many")->capture_default_str();
  ls->add_flag("--json", *ls_json, "Print JSON");
  ls->callback([flags, ls_limit, ls_json, exit_code] {
    auto client = ConnectFrom(*flags);
    if (!client.ok()) {
      *exit_code = Fail(client.status());
      return;
    }
    auto blocks = (*client)->List(*ls_limit);
    if (!blocks.ok()) {
      *exit_code = Fail(blocks.status());
      return;
    }
    if (*ls_json) {
      nlohmann::json j = nlohmann::json::array();
      for (const auto& b : *blocks) j.push_back(BlockJson(b));
      std::cout << j.dump(2) << "\n";
      return;
    }
    for (const auto& b : *blocks)
      std::printf("hex:%s %10llu %s\n", b.key.ToHex().c_str(), (unsigned long long)b.size, Tiers(b).c_str());
  });

  auto evict_key = std::make_shared<std::string>();
  CLI::App* evict = app.add_subcommand("evict", "Remove block KEY from every tier");
  evict->add_option("KEY", *evict_key)->required();
  evict->callback([flags, evict_key, exit_code] {
    auto key = ParseKey(*evict_key, flags->name_space);
    if (!key.ok()) {
      *exit_code = Fail(key.status());
      return;
    }
    auto client = ConnectFrom(*flags);
    if (!client.ok()) {
      *exit_code = Fail(client.status());
      return;
    }
    Status s = (*client)->Evict(*key);
    if (!s.ok()) {
      *exit_code = Fail(s.WithContext("evict " + *evict_key));
      return;
    }
    std::cout << "evicted " << key->ToHex() << "\n";
  });

  auto flush_json = std::make_shared<bool>(false);
  CLI::App* flush = app.add_subcommand("flush", "Write every RAM-only block down to NVMe");
  flush->add_flag("--json", *flush_json, "Print JSON");
  flush->callback([flags, flush_json, exit_code] {
    auto client = ConnectFrom(*flags);
    if (!client.ok()) {
      *exit_code = Fail(client.status());
      return;
    }
    Status s = (*client)->Flush();
    if (!s.ok()) {
      *exit_code = Fail(s);
      return;
    }
    if (*flush_json) {
      auto stats = (*client)->NodeStats();
      if (!stats.ok()) {
        *exit_code = Fail(stats.status());
        return;
      }
      nlohmann::json j = {{"address", (*client)->address()}, {"flushed", true}, {"nvme", TierJson(stats->nvme)}};
      std::cout << j.dump(2) << "\n";
      return;
    }
    std::cout << "flushed\n";
  });

  auto health_json = std::make_shared<bool>(false);
  CLI::App* health = app.add_subcommand("health", "Exit 0 when the node serves");
  health->add_flag("--json", *health_json, "Print JSON");
  health->callback([flags, health_json, exit_code] {
    auto client = ConnectFrom(*flags);
    if (!client.ok()) {
      *exit_code = Fail(client.status());
      return;
    }
    Status s = (*client)->Health();
    if (!s.ok()) {
      *exit_code = Fail(s);
      return;
    }
    if (*health_json) {
      nlohmann::json j = {
          {"address", (*client)->address()}, {"serving", true}, {"data_path", (*client)->stats().data_path}};
      std::cout << j.dump(2) << "\n";
      return;
    }
    std::cout << "ok " << (*client)->address() << " data path " << (*client)->stats().data_path << "\n";
  });
}

}  // namespace foresight::cli
