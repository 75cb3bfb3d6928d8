// ControlService: the node's gRPC control plane (proto/foresight.proto), including the fallback
// data path (Put/Get with inline bytes) for clients that cannot use UCX.
//
// With a token configured, every call must carry "authorization: Bearer <token>"; anything else
// is refused with UNAUTHENTICATED before the request is looked at.
//
// Thread-safety: gRPC calls the handlers concurrently; the service keeps no mutable state of its
// own beyond what BlockStore and NodeMetrics guard.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "cache_service/block_store.h"
#include "cache_service/node_metrics.h"
#include "proto/foresight.grpc.pb.h"
#include "proto/grpc_common.h"

namespace foresight {

struct ControlServiceOptions {
  std::string node_id;
  std::string token;  // empty: no authentication
  uint32_t ucx_port = 0;
  uint64_t max_block_bytes = 0;
  uint64_t nvme_bytes = 0;
  bool nvme_enabled = false;
  uint64_t max_batch_bytes = 256ull << 20;  // bytes one Put/Get call may carry
};

class ControlService final : public v1::CacheNode::Service {
 public:
  ControlService(BlockStore* store, NodeMetrics* metrics, ControlServiceOptions options);

  // Set once, before serving.
  void set_node_id(std::string id) { options_.node_id = std::move(id); }

  grpc::Status Info(grpc::ServerContext* ctx, const v1::InfoRequest* req, v1::InfoResponse* resp) override;
  grpc::Status Health(grpc::ServerContext* ctx, const v1::HealthRequest* req, v1::HealthResponse* resp) override;
  grpc::Status Put(grpc::ServerContext* ctx, const v1::PutRequest* req, v1::PutResponse* resp) override;
  grpc::Status Get(grpc::ServerContext* ctx, const v1::GetRequest* req, v1::GetResponse* resp) override;
  grpc::Status Stat(grpc::ServerContext* ctx, const v1::StatRequest* req, v1::StatResponse* resp) override;
  grpc::Status List(grpc::ServerContext* ctx, const v1::ListRequest* req, v1::ListResponse* resp) override;
  grpc::Status Evict(grpc::ServerContext* ctx, const v1::EvictRequest* req, v1::EvictResponse* resp) override;
  grpc::Status LongestPrefix(grpc::ServerContext* ctx, const v1::PrefixRequest* req, v1::PrefixResponse* resp) override;
  grpc::Status Flush(grpc::ServerContext* ctx, const v1::FlushRequest* req, v1::FlushResponse* resp) override;
  grpc::Status NodeStats(grpc::ServerContext* ctx, const v1::NodeStatsRequest* req,
                         v1::NodeStatsResponse* resp) override;

 private:
  grpc::Status CheckAuth(grpc::ServerContext* ctx) const;

  BlockStore* const store_;
  NodeMetrics* const metrics_;
  ControlServiceOptions options_;
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
};

}  // namespace foresight
