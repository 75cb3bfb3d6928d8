#include "cache_service/control_service.h"

#include <algorithm>
#include <cstring>

#include <ucp/api/ucp.h>

#include "common/checksum.h"
#include "common/units.h"

namespace foresight {

namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

StatusOr<BlockKey> KeyFrom(const v1::Key& key) {
  if (key.id().size() != BlockKey::kSize)
    return InvalidArgument("malformed key: " + std::to_string(key.id().size()) + " bytes, expected " +
                           std::to_string(BlockKey::kSize));
  return BlockKey::FromBytes(key.id().data());
}

void SetStatus(const Status& s, v1::ItemStatus* out) {
  out->set_code(static_cast<int>(s.code()));
  out->set_message(s.message());
}

void FillMeta(const BlockInfo& info, v1::BlockMeta* meta) {
  meta->mutable_key()->set_id(std::string(info.key.view()));
  meta->set_size(info.size);
  meta->set_checksum(info.checksum);
  meta->set_in_ram(info.in_ram);
  meta->set_on_nvme(info.on_nvme);
}

}  // namespace

ControlService::ControlService(BlockStore* store, NodeMetrics* metrics, ControlServiceOptions options)
    : store_(store), metrics_(metrics), options_(std::move(options)) {}

grpc::Status ControlService::CheckAuth(grpc::ServerContext* ctx) const {
  return CheckBearerToken(*ctx, options_.token, "node", "pass --token-file");
}

#define FS_CHECK_AUTH(ctx)               \
  do {                                   \
    grpc::Status _auth = CheckAuth(ctx); \
    if (!_auth.ok()) return _auth;       \
  } while (0)

grpc::Status ControlService::Info(grpc::ServerContext* ctx, const v1::InfoRequest*, v1::InfoResponse* resp) {
  FS_CHECK_AUTH(ctx);
  resp->set_version("0.1.0");
  resp->set_node_id(options_.node_id);
  resp->set_ucx_port(options_.ucx_port);
  if (options_.ucx_port != 0) resp->set_ucx_version(ucp_get_version_string());
  resp->set_max_block_bytes(options_.max_block_bytes);
  resp->set_ram_bytes(store_->arena_bytes());
  resp->set_nvme_bytes(options_.nvme_bytes);
  resp->set_nvme_enabled(options_.nvme_enabled);
  return grpc::Status::OK;
}

grpc::Status ControlService::Health(grpc::ServerContext* ctx, const v1::HealthRequest*, v1::HealthResponse* resp) {
  FS_CHECK_AUTH(ctx);
  resp->set_serving(true);
  return grpc::Status::OK;
}

grpc::Status ControlService::Put(grpc::ServerContext* ctx, const v1::PutRequest* req, v1::PutResponse* resp) {
  FS_CHECK_AUTH(ctx);
  const auto start = Clock::now();
  uint64_t bytes = 0;
  bool all_ok = true;
  for (const auto& item : req->items()) {
    v1::ItemStatus* result = resp->add_results();
    auto key = KeyFrom(item.key());
    if (!key.ok()) {
      SetStatus(key.status(), result);
      all_ok = false;
      continue;
    }
    auto slot = store_->Reserve(*key, item.data().size());
    Status s = slot.status();
    if (slot.ok()) {
      std::memcpy(slot->data(), item.data().data(), item.data().size());
      s = store_->Commit(std::move(*slot), item.checksum());
    }
    if (s.ok()) bytes += item.data().size();
    all_ok &= s.ok();
    SetStatus(s, result);
  }
  metrics_->RecordRequest(NodeMetrics::Op::kPut, NodeMetrics::Path::kGrpc, SecondsSince(start), all_ok, bytes, 0);
  return grpc::Status::OK;
}

grpc::Status ControlService::Get(grpc::ServerContext* ctx, const v1::GetRequest* req, v1::GetResponse* resp) {
  FS_CHECK_AUTH(ctx);
  const auto start = Clock::now();
  uint64_t bytes = 0;
  bool all_ok = true;
  for (const auto& item : req->items()) {
    v1::GetResult* result = resp->add_results();
    auto key = KeyFrom(item.key());
    if (!key.ok()) {
      SetStatus(key.status(), result->mutable_status());
      all_ok = false;
      continue;
    }
    auto lease = store_->Lease(*key);
    if (!lease.ok()) {
      SetStatus(lease.status(), result->mutable_status());
      all_ok = false;
      continue;
    }
    std::string* data = result->mutable_data();
    if (item.ranges().empty()) {
      data->assign(reinterpret_cast<const char*>(lease->data()), lease->size());
      result->set_checksum(lease->checksum());
    } else {
      Status bad;
      for (const auto& r : item.ranges()) {
        if (r.length() == 0 || r.offset() > lease->size() || r.length() > lease->size() - r.offset()) {
          bad = OutOfRange("range [" + std::to_string(r.offset()) + ", +" + std::to_string(r.length()) +
                           ") is outside block " + key->ToHex() + " of " + std::to_string(lease->size()) + " bytes");
          break;
        }
        data->append(reinterpret_cast<const char*>(lease->data()) + r.offset(), r.length());
      }
      if (!bad.ok()) {
        data->clear();
        SetStatus(bad, result->mutable_status());
        all_ok = false;
        continue;
      }
      result->set_checksum(BlockChecksum(data->data(), data->size()));
    }
    if (bytes + data->size() > options_.max_batch_bytes) {
      data->clear();
      SetStatus(ResourceExhausted("batch exceeds " + FormatByteSize(options_.max_batch_bytes) +
                                  " of data; split it into smaller Get calls"),
                result->mutable_status());
      all_ok = false;
      continue;
    }
    bytes += data->size();
    result->set_block_bytes(lease->size());
    result->set_tier(lease->was_in_ram() ? 0 : 1);
    SetStatus(Status::OK(), result->mutable_status());
  }
  metrics_->RecordRequest(NodeMetrics::Op::kGet, NodeMetrics::Path::kGrpc, SecondsSince(start), all_ok, 0, bytes);
  return grpc::Status::OK;
}

grpc::Status ControlService::Stat(grpc::ServerContext* ctx, const v1::StatRequest* req, v1::StatResponse* resp) {
  FS_CHECK_AUTH(ctx);
  auto key = KeyFrom(req->key());
  if (!key.ok()) return ToGrpcStatus(key.status());
  auto info = store_->Stat(*key);
  if (!info.ok()) return ToGrpcStatus(info.status());
  FillMeta(*info, resp->mutable_block());
  return grpc::Status::OK;
}

grpc::Status ControlService::List(grpc::ServerContext* ctx, const v1::ListRequest* req, v1::ListResponse* resp) {
  FS_CHECK_AUTH(ctx);
  const size_t limit = req->limit() == 0 ? 1000 : std::min<uint32_t>(req->limit(), 100000);
  for (const BlockInfo& info : store_->List(limit)) FillMeta(info, resp->add_blocks());
  return grpc::Status::OK;
}

grpc::Status ControlService::Evict(grpc::ServerContext* ctx, const v1::EvictRequest* req, v1::EvictResponse*) {
  FS_CHECK_AUTH(ctx);
  auto key = KeyFrom(req->key());
  if (!key.ok()) return ToGrpcStatus(key.status());
  return ToGrpcStatus(store_->Remove(*key));
}

grpc::Status ControlService::LongestPrefix(grpc::ServerContext* ctx, const v1::PrefixRequest* req,
                                           v1::PrefixResponse* resp) {
  FS_CHECK_AUTH(ctx);
  std::vector<BlockKey> chain;
  chain.reserve(req->chain_size());
  for (const auto& k : req->chain()) {
    auto key = KeyFrom(k);
    if (!key.ok()) return ToGrpcStatus(key.status().WithContext("chain entry " + std::to_string(chain.size())));
    chain.push_back(*key);
  }
  resp->set_length(static_cast<uint32_t>(store_->LongestPrefix(chain)));
  return grpc::Status::OK;
}

grpc::Status ControlService::Flush(grpc::ServerContext* ctx, const v1::FlushRequest*, v1::FlushResponse*) {
  FS_CHECK_AUTH(ctx);
  return ToGrpcStatus(store_->Flush());
}

grpc::Status ControlService::NodeStats(grpc::ServerContext* ctx, const v1::NodeStatsRequest*,
                                       v1::NodeStatsResponse* resp) {
  FS_CHECK_AUTH(ctx);
  const StoreStats s = store_->Stats();
  metrics_->UpdateFromStore(s);
  auto fill = [](const TierStats& t, v1::TierStats* out) {
    out->set_capacity_bytes(t.capacity_bytes);
    out->set_used_bytes(t.used_bytes);
    out->set_items(t.items);
    out->set_hits(t.hits);
    out->set_misses(t.misses);
    out->set_evictions(t.evictions);
  };
  fill(s.ram, resp->mutable_ram());
  fill(s.nvme, resp->mutable_nvme());
  resp->set_checksum_failures(s.checksum_failures);
  resp->set_promotions(s.promotions);
  resp->set_demotions(s.demotions);
  resp->set_active_leases(s.active_leases);
  resp->set_ram_page_bytes(s.ram_page_bytes);
  resp->set_bytes_in(metrics_->bytes_in());
  resp->set_bytes_out(metrics_->bytes_out());
  resp->set_uptime_seconds(static_cast<uint64_t>(SecondsSince(started_)));
  return grpc::Status::OK;
}

}  // namespace foresight
