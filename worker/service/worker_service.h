// WorkerService: the gRPC generation service of `foresight-worker` (proto/worker.proto). Each
// Generate call is one request to the worker's Scheduler (worker/service/scheduler.h), which runs
// up to --max-seqs of them together: it tokenises the prompt, submits it, and streams each token
// as the scheduler produces it, ending with a statistics event. The scheduler imports the longest
// published prefix, prefills the rest, decodes with the request's attention policy (KV offloaded
// to the cache service, the predictor's next blocks prefetched) and publishes every full block.
//
// Failure rule: when the cache service fails (unreachable, a block missing or failing its
// checksum) the request ends with that error, named (UNAVAILABLE / DATA_LOSS / NOT_FOUND with the
// block and node); KV is never guessed or recomputed silently, so every token streamed before the
// error came from verified KV. The connection is then dropped and the next request reconnects
// (CacheConnection), so the worker serves again as soon as the node is back.
//
// Thread-safety: gRPC calls it from many threads.
#pragma once

#include <string>

#include "proto/worker.grpc.pb.h"
#include "worker/model.h"
#include "worker/service/cache_connection.h"
#include "worker/service/scheduler.h"
#include "worker/service/serving_metrics.h"

namespace foresight::worker {

class WorkerService final : public v1::WorkerService::Service {
 public:
  // `token`: required of callers (empty: none). `metrics` (may be null) counts this front end's
  // requests beside the HTTP API's.
  WorkerService(const Model& model, std::string model_path, CacheConnection* cache, Scheduler* scheduler,
                std::string token, ServingMetrics* metrics = nullptr);
  ~WorkerService() override;

  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateEvent>* writer) override;
  grpc::Status Health(grpc::ServerContext* context, const v1::HealthRequest* request,
                      v1::HealthResponse* response) override;
  grpc::Status Info(grpc::ServerContext* context, const v1::InfoRequest* request, v1::InfoResponse* response) override;

 private:
  grpc::Status CheckToken(grpc::ServerContext* context) const;
  // The request as the scheduler takes it (the prompt tokenised, the chat template applied).
  StatusOr<ServeRequest> ToServeRequest(const v1::GenerateRequest& request) const;

  const Model& model_;
  const std::string model_path_;
  CacheConnection* cache_;
  Scheduler* scheduler_;
  const std::string token_;
  ServingMetrics* metrics_;
};

}  // namespace foresight::worker
