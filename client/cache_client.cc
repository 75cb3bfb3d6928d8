#include "client/cache_client.h"

#include <cstring>
#include <fstream>
#include <sstream>
#include <type_traits>

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>
#include <ucp/api/ucp.h>

#include "client/ucx_transport.h"
#include "common/checksum.h"
#include "common/file_io.h"
#include "common/mutex.h"
#include "proto/foresight.grpc.pb.h"
#include "proto/grpc_common.h"
#include "proto/ucx_messages.h"

namespace foresight {

namespace {

// The call's status, naming the node and the call; an unreachable node says what to check.
Status FromGrpc(const grpc::Status& s, const std::string& address, const std::string& call) {
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {
    return Unavailable("node " + address + " is unreachable (" + s.error_message() +
                       "); is foresight-cached running there?");
  }
  return FromGrpcStatus(s, "node " + address + ": " + call);
}

Status ItemStatus(const v1::ItemStatus& s) {
  if (s.code() == 0) return Status::OK();
  return Status(static_cast<StatusCode>(s.code()), s.message());
}

v1::Key ToProto(const BlockKey& key) {
  v1::Key k;
  k.set_id(std::string(key.view()));
  return k;
}

RemoteBlockInfo FromProto(const v1::BlockMeta& m) {
  RemoteBlockInfo info;
  if (m.key().id().size() == BlockKey::kSize) info.key = BlockKey::FromBytes(m.key().id().data());
  info.size = m.size();
  info.checksum = m.checksum();
  info.in_ram = m.in_ram();
  info.on_nvme = m.on_nvme();
  return info;
}

Status FirstFailure(std::span<const Status> statuses) {
  for (const Status& s : statuses)
    if (!s.ok()) return s;
  return Status::OK();
}

class GrpcCacheClient final : public CacheClient {
 public:
  GrpcCacheClient(CacheClientOptions options, std::shared_ptr<grpc::Channel> channel)
      : options_(std::move(options)), channel_(std::move(channel)), stub_(v1::CacheNode::NewStub(channel_)) {
    stats_.data_path = "grpc";
  }

  void set_fallback_reason(std::string reason) {
    MutexLock lock(mu_);
    stats_.fallback_reason = std::move(reason);
  }

  Status RegisterBuffer(void*, uint64_t) override { return Status::OK(); }

  StatusOr<uint8_t*> NewBuffer(uint64_t size) override {
    MutexLock lock(mu_);
    buffers_.emplace_back(new uint8_t[size]);
    return buffers_.back().get();
  }

  Status PutBatch(std::span<BlockPut> items) override {
    v1::PutRequest req;
    uint64_t bytes = 0;
    for (const BlockPut& item : items) {
      v1::PutItem* p = req.add_items();
      *p->mutable_key() = ToProto(item.key);
      p->set_data(item.data, item.size);
      p->set_checksum(BlockChecksum(item.data, item.size));
      bytes += item.size;
    }
    v1::PutResponse resp;
    auto ctx = Context();
    Status s = FromGrpc(stub_->Put(ctx.get(), req, &resp), options_.address, "put");
    std::vector<Status> statuses;
    for (size_t i = 0; i < items.size(); ++i) {
      if (!s.ok())
        items[i].status = s;
      else if (static_cast<int>(i) >= resp.results_size())
        items[i].status = Internal("node " + options_.address + " answered fewer put results than items");
      else
        items[i].status = ItemStatus(resp.results(static_cast<int>(i))).WithContext("put " + items[i].key.ToHex());
      statuses.push_back(items[i].status);
    }
    Account(/*put=*/true, items.size(), s.ok() ? bytes : 0, statuses);
    return FirstFailure(statuses);
  }

  Status GetBatch(std::span<BlockGet> items) override {
    for (BlockGet& item : items) {
      if (item.dest == nullptr || item.capacity == 0) {  // as UcxTransport::SubmitGets refuses it
        const Status refused = InvalidArgument("GET " + item.key.ToHex() + ": no destination buffer");
        for (BlockGet& i : items) {
          i.bytes = 0;
          i.status = refused;
        }
        return refused;
      }
    }
    v1::GetRequest req;
    for (const BlockGet& item : items) {
      v1::GetItem* g = req.add_items();
      *g->mutable_key() = ToProto(item.key);
      for (const ByteRange& r : item.ranges) {
        v1::ByteRange* pr = g->add_ranges();
        pr->set_offset(r.offset);
        pr->set_length(r.length);
      }
    }
    v1::GetResponse resp;
    auto ctx = Context();
    Status s = FromGrpc(stub_->Get(ctx.get(), req, &resp), options_.address, "get");
    std::vector<Status> statuses;
    uint64_t bytes = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      BlockGet& item = items[i];
      item.bytes = 0;
      if (!s.ok()) {
        item.status = s;
      } else if (static_cast<int>(i) >= resp.results_size()) {
        item.status = Internal("node " + options_.address + " answered fewer get results than items");
      } else {
        const v1::GetResult& r = resp.results(static_cast<int>(i));
        item.status = ItemStatus(r.status());
        if (item.status.ok()) {
          if (BlockChecksum(r.data().data(), r.data().size()) != r.checksum()) {
            item.status = DataLoss("block " + item.key.ToHex() + " from " + options_.address +
                                   " failed its checksum on arrival; not delivered");
          } else if (r.data().size() > item.capacity) {
            item.status = OutOfRange("block " + item.key.ToHex() + " from " + options_.address + ": " +
                                     std::to_string(r.data().size()) + " bytes do not fit the " +
                                     std::to_string(item.capacity) + "-byte destination");
          } else {
            std::memcpy(item.dest, r.data().data(), r.data().size());
            item.bytes = r.data().size();
            bytes += item.bytes;
          }
        }
      }
      statuses.push_back(item.status);
    }
    Account(/*put=*/false, items.size(), bytes, statuses);
    return FirstFailure(statuses);
  }

  std::future<Status> PutBatchAsync(std::span<BlockPut> items) override {
    return std::async(std::launch::async, [this, items] { return PutBatch(items); });
  }
  std::future<Status> GetBatchAsync(std::span<BlockGet> items) override {
    return std::async(std::launch::async, [this, items] { return GetBatch(items); });
  }

  StatusOr<NodeInfo> Info() override {
    v1::InfoResponse resp;
    auto ctx = Context();
    FS_RETURN_IF_ERROR(FromGrpc(stub_->Info(ctx.get(), v1::InfoRequest(), &resp), options_.address, "info"));
    NodeInfo info;
    info.node_id = resp.node_id();
    info.version = resp.version();
    info.ucx_port = resp.ucx_port();
    info.ucx_version = resp.ucx_version();
    info.max_block_bytes = resp.max_block_bytes();
    info.ram_bytes = resp.ram_bytes();
    info.nvme_bytes = resp.nvme_bytes();
    info.nvme_enabled = resp.nvme_enabled();
    return info;
  }

  Status Health() override {
    v1::HealthResponse resp;
    auto ctx = Context();
    FS_RETURN_IF_ERROR(FromGrpc(stub_->Health(ctx.get(), v1::HealthRequest(), &resp), options_.address, "health"));
    if (!resp.serving()) return Unavailable("node " + options_.address + " is not serving");
    return Status::OK();
  }

  StatusOr<RemoteBlockInfo> Stat(const BlockKey& key) override {
    v1::StatRequest req;
    *req.mutable_key() = ToProto(key);
    v1::StatResponse resp;
    auto ctx = Context();
    FS_RETURN_IF_ERROR(FromGrpc(stub_->Stat(ctx.get(), req, &resp), options_.address, "stat"));
    return FromProto(resp.block());
  }

  StatusOr<std::vector<RemoteBlockInfo>> List(uint32_t limit) override {
    v1::ListRequest req;
    req.set_limit(limit);
    v1::ListResponse resp;
    auto ctx = Context();
    FS_RETURN_IF_ERROR(FromGrpc(stub_->List(ctx.get(), req, &resp), options_.address, "list"));
    std::vector<RemoteBlockInfo> out;
    for (const auto& m : resp.blocks()) out.push_back(FromProto(m));
    return out;
  }

  Status Evict(const BlockKey& key) override {
    v1::EvictRequest req;
    *req.mutable_key() = ToProto(key);
    v1::EvictResponse resp;
    auto ctx = Context();
    return FromGrpc(stub_->Evict(ctx.get(), req, &resp), options_.address, "evict " + key.ToHex() + "");
  }

  StatusOr<uint32_t> LongestPrefix(std::span<const BlockKey> chain) override {
    v1::PrefixRequest req;
    for (const BlockKey& k : chain) *req.add_chain() = ToProto(k);
    v1::PrefixResponse resp;
    auto ctx = Context();
    FS_RETURN_IF_ERROR(FromGrpc(stub_->LongestPrefix(ctx.get(), req, &resp), options_.address, "prefix"));
    return resp.length();
  }

  Status Flush() override {
    v1::FlushResponse resp;
    auto ctx = Context();
    return FromGrpc(stub_->Flush(ctx.get(), v1::FlushRequest(), &resp), options_.address, "flush");
  }

  StatusOr<RemoteNodeStats> NodeStats() override {
    v1::NodeStatsResponse resp;
    auto ctx = Context();
    FS_RETURN_IF_ERROR(FromGrpc(stub_->NodeStats(ctx.get(), v1::NodeStatsRequest(), &resp), options_.address, "stats"));
    auto tier = [](const v1::TierStats& t) {
      return RemoteTierStats{t.capacity_bytes(), t.used_bytes(), t.items(), t.hits(), t.misses(), t.evictions()};
    };
    RemoteNodeStats s;
    s.ram = tier(resp.ram());
    s.nvme = tier(resp.nvme());
    s.checksum_failures = resp.checksum_failures();
    s.promotions = resp.promotions();
    s.demotions = resp.demotions();
    s.active_leases = resp.active_leases();
    s.bytes_in = resp.bytes_in();
    s.bytes_out = resp.bytes_out();
    s.uptime_seconds = resp.uptime_seconds();
    s.ram_page_bytes = resp.ram_page_bytes();
    return s;
  }

  ClientStats stats() override {
    MutexLock lock(mu_);
    return stats_;
  }
  const std::string& address() const override { return options_.address; }

 private:
  std::unique_ptr<grpc::ClientContext> Context() const {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + options_.timeout);
    AddBearerToken(ctx.get(), options_.token);
    return ctx;
  }

  void Account(bool put, size_t n, uint64_t bytes, const std::vector<Status>& statuses) {
    MutexLock lock(mu_);
    (put ? stats_.puts : stats_.gets) += n;
    (put ? stats_.bytes_out : stats_.bytes_in) += bytes;
    for (const Status& s : statuses)
      if (!s.ok()) stats_.errors++;
  }

  const CacheClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::CacheNode::Stub> stub_;
  Mutex mu_;
  ClientStats stats_ FS_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<uint8_t[]>> buffers_ FS_GUARDED_BY(mu_);
};

// Data over UCX, control (and everything else) over gRPC.
class UcxCacheClient final : public CacheClient {
 public:
  UcxCacheClient(std::unique_ptr<GrpcCacheClient> control, std::unique_ptr<UcxTransport> ucx, double timeout_s)
      : control_(std::move(control)), ucx_(std::move(ucx)), timeout_s_(timeout_s) {}

  Status RegisterBuffer(void* data, uint64_t size) override { return ucx_->Register(data, size).status(); }

  StatusOr<uint8_t*> NewBuffer(uint64_t size) override {
    FS_ASSIGN_OR_RETURN(UcxBuffer buffer, ucx_->Allocate(size));
    return buffer.data;
  }

  Status PutBatch(std::span<BlockPut> items) override { return PutBatchAsync(items).get(); }
  Status GetBatch(std::span<BlockGet> items) override { return GetBatchAsync(items).get(); }

  std::future<Status> PutBatchAsync(std::span<BlockPut> items) override {
    std::vector<UcxPut> puts;
    puts.reserve(items.size());
    for (const BlockPut& item : items)
      puts.push_back(
          UcxPut{item.key, static_cast<const uint8_t*>(item.data), item.size, BlockChecksum(item.data, item.size)});
    auto batch = ucx_->SubmitPuts(std::move(puts));
    return std::async(std::launch::deferred, [this, items, batch] { return Finish(batch, items); });
  }

  std::future<Status> GetBatchAsync(std::span<BlockGet> items) override {
    std::vector<UcxGet> gets;
    gets.reserve(items.size());
    for (const BlockGet& item : items)
      gets.push_back(UcxGet{item.key, item.ranges, static_cast<uint8_t*>(item.dest), item.capacity});
    auto batch = ucx_->SubmitGets(std::move(gets));
    return std::async(std::launch::deferred, [this, items, batch] { return Finish(batch, items); });
  }

  StatusOr<NodeInfo> Info() override { return control_->Info(); }
  Status Health() override { return control_->Health(); }
  StatusOr<RemoteBlockInfo> Stat(const BlockKey& key) override { return control_->Stat(key); }
  StatusOr<std::vector<RemoteBlockInfo>> List(uint32_t limit) override { return control_->List(limit); }
  Status Evict(const BlockKey& key) override { return control_->Evict(key); }
  StatusOr<uint32_t> LongestPrefix(std::span<const BlockKey> chain) override { return control_->LongestPrefix(chain); }
  Status Flush() override { return control_->Flush(); }
  StatusOr<RemoteNodeStats> NodeStats() override { return control_->NodeStats(); }

  ClientStats stats() override {
    const UcxTransportStats u = ucx_->Stats();
    ClientStats s;
    s.data_path = "ucx";
    s.ucx_transport = u.path.empty() ? u.transport : u.path + " (" + u.transport + ")";
    s.puts = u.puts;
    s.gets = u.gets;
    s.errors = u.failures;
    s.bytes_out = u.bytes_out;
    s.bytes_in = u.bytes_in;
    s.reconnects = u.reconnects;
    s.connected = u.connected;
    return s;
  }
  const std::string& address() const override { return control_->address(); }

 private:
  // Waits for a submitted batch and copies each item's outcome into `items`.
  template <typename Item>
  Status Finish(const StatusOr<UcxBatch>& batch, std::span<Item> items) {
    if (!batch.ok()) {
      for (Item& item : items) item.status = batch.status();
      return batch.status();
    }
    std::vector<UcxItemResult> results = ucx_->Wait(*batch, timeout_s_);
    std::vector<Status> statuses;
    for (size_t i = 0; i < items.size(); ++i) {
      items[i].status =
          i < results.size() ? results[i].status : Internal("UCX transport returned fewer results than items");
      if constexpr (std::is_same_v<Item, BlockGet>) items[i].bytes = items[i].status.ok() ? results[i].bytes : 0;
      statuses.push_back(items[i].status);
    }
    return FirstFailure(statuses);
  }

  std::unique_ptr<GrpcCacheClient> control_;
  std::unique_ptr<UcxTransport> ucx_;
  const double timeout_s_;
};

}  // namespace

Status CacheClient::Put(const BlockKey& key, const void* data, uint64_t size) {
  BlockPut item{key, data, size, {}};
  return PutBatch(std::span<BlockPut>(&item, 1));
}

StatusOr<uint64_t> CacheClient::Get(const BlockKey& key, void* dest, uint64_t capacity, std::vector<ByteRange> ranges) {
  BlockGet item;
  item.key = key;
  item.ranges = std::move(ranges);
  item.dest = dest;
  item.capacity = capacity;
  FS_RETURN_IF_ERROR(GetBatch(std::span<BlockGet>(&item, 1)));
  return item.bytes;
}

StatusOr<uint8_t*> CacheClient::AllocateBuffer(uint64_t size) {
  if (size == 0) return InvalidArgument("cannot allocate an empty transfer buffer");
  {
    MutexLock lock(buffers_mu_);
    auto fit = free_buffers_.lower_bound(size);
    if (fit != free_buffers_.end() && fit->first / 2 <= size) {
      uint8_t* data = fit->second;
      free_buffers_.erase(fit);
      HeldBuffer& held = buffers_.at(data);
      held.in_use = true;
      buffer_usage_.in_use_bytes += held.size;
      buffer_usage_.reuses++;
      return data;
    }
  }
  FS_ASSIGN_OR_RETURN(uint8_t * data, NewBuffer(size));
  MutexLock lock(buffers_mu_);
  buffers_[data] = HeldBuffer{size, true};
  buffer_usage_.held_bytes += size;
  buffer_usage_.in_use_bytes += size;
  buffer_usage_.buffers++;
  return data;
}

void CacheClient::ReleaseBuffer(uint8_t* data) {
  if (data == nullptr) return;
  MutexLock lock(buffers_mu_);
  auto it = buffers_.find(data);
  if (it == buffers_.end() || !it->second.in_use) {
    spdlog::critical("CacheClient::ReleaseBuffer: {} is not a buffer this client handed out", fmt::ptr(data));
    std::abort();
  }
  it->second.in_use = false;
  buffer_usage_.in_use_bytes -= it->second.size;
  free_buffers_.emplace(it->second.size, data);
}

CacheClient::BufferUsage CacheClient::buffer_usage() const {
  MutexLock lock(buffers_mu_);
  return buffer_usage_;
}

StatusOr<std::unique_ptr<CacheClient>> CacheClient::Connect(const CacheClientOptions& options) {
  if (options.address.empty()) return InvalidArgument("no cache node address given (--cache HOST:PORT)");
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (!options.tls_ca.empty()) {
    auto pem = ReadSecretFile(options.tls_ca, "TLS CA file");
    if (!pem.ok()) return pem.status();
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = *pem;
    creds = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(512 << 20);
  args.SetMaxSendMessageSize(512 << 20);
  auto channel = grpc::CreateCustomChannel(options.address, creds, args);
  auto grpc_client = std::make_unique<GrpcCacheClient>(options, channel);
  auto info = grpc_client->Info();
  if (!info.ok()) return info.status();
  if (options.data_path == DataPath::kGrpc) {
    grpc_client->set_fallback_reason("gRPC data path requested");
    return std::unique_ptr<CacheClient>(std::move(grpc_client));
  }
  Status ucx_failure;
  if (info->ucx_port == 0) {
    ucx_failure = Unavailable("node " + options.address + " offers no UCX listener (started with --no-ucx?)");
  } else if (const std::string ours = ucp_get_version_string();
             !info->ucx_version.empty() && !ucxwire::UcxVersionsInteroperate(info->ucx_version, ours)) {
    ucx_failure = FailedPrecondition("node " + options.address + " runs UCX " + info->ucx_version +
                                     " and this client UCX " + ours +
                                     ", whose wire protocols do not interoperate; build both with the same "
                                     "UCX (README, \"UCX\")");
  } else {
    const std::string host = options.address.substr(0, options.address.rfind(':'));
    UcxTransportOptions uo;
    uo.transports = options.ucx_transports;
    uo.tuning = options.ucx_tuning;
    uo.request_timeout_s = std::chrono::duration<double>(options.timeout).count();
    auto ucx = UcxTransport::Connect(host, static_cast<uint16_t>(info->ucx_port), options.token, uo);
    if (ucx.ok()) {
      return std::unique_ptr<CacheClient>(new UcxCacheClient(std::move(grpc_client), std::move(*ucx),
                                                             std::chrono::duration<double>(options.timeout).count()));
    }
    ucx_failure = ucx.status();
  }
  if (options.data_path == DataPath::kUcx) return ucx_failure;
  spdlog::warn("cache node {}: using the gRPC data path (slower): {}", options.address, ucx_failure.message());
  grpc_client->set_fallback_reason(ucx_failure.message());
  return std::unique_ptr<CacheClient>(std::move(grpc_client));
}

}  // namespace foresight
