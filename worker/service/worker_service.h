// WorkerService: the gRPC generation service of `foresight-worker` (proto/worker.proto). It runs
// one request at a time on one Model, as an OffloadedSequence (worker/offload/): tokenises the
// prompt, imports the longest prefix of it that any worker already published to the cache
// service, prefills the rest, decodes greedily with the request's attention policy (KV offloaded
// to the cache service, the predictor's next blocks prefetched), streams each token as it comes,
// publishes every full KV block it produces, and ends with a statistics event.
//
// Failure rule: when the cache service fails (unreachable, a block missing or failing its
// checksum) the request ends with that error, named (UNAVAILABLE / DATA_LOSS / NOT_FOUND with the
// block and node); KV is never guessed or recomputed silently, so every token streamed before the
// error came from verified KV. The connection is then dropped and the next request reconnects
// (CacheConnection), so the worker serves again as soon as the node is back.
//
// Thread-safety: gRPC calls it from many threads; Generate calls are serialized (the engine uses
// every core through OpenMP for one sequence), waiting in arrival order.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "common/mutex.h"
#include "common/status.h"
#include "predictor/cnn_weights.h"
#include "predictor/selection_policy.h"
#include "proto/worker.grpc.pb.h"
#include "worker/model.h"
#include "worker/offload/offloaded_sequence.h"
#include "worker/service/cache_connection.h"

namespace foresight::worker {

struct WorkerServiceOptions {
  std::string key_namespace = "default";
  std::string default_policy = "dense";
  int32_t default_budget = 1024;
  int32_t sink_tokens = 64;
  int32_t local_tokens = 64;
  int32_t dense_first_layers = 0;
  // AttentionPredictor: share of the kept blocks chosen by the step's query (PolicySpec::query_refine).
  float query_refine = predictor::PolicySpec::kServingQueryRefine;
  std::shared_ptr<const predictor::CnnWeights> weights;  // AttentionPredictor; null: refused
  std::string weights_name;  // what they are (predictor::CnnWeightsName), for statistics and Info
  int32_t prefill_chunk = 512;
  std::string token;         // required of callers (empty: none)
  bool prefix_reuse = true;  // look up and import published prefixes
  bool publish = true;       // publish every full block
  // Where the KV lives during decode (worker/offload/offloaded_sequence.h): cross-token keeps a
  // budget's worth on the worker and prefetches the predictor's next blocks.
  OffloadMode kv_mode = OffloadMode::kCrossToken;
};

class WorkerService final : public v1::WorkerService::Service {
 public:
  WorkerService(const Model& model, std::string model_path, CacheConnection* cache, WorkerServiceOptions options);
  ~WorkerService() override;

  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateEvent>* writer) override;
  grpc::Status Health(grpc::ServerContext* context, const v1::HealthRequest* request,
                      v1::HealthResponse* response) override;
  grpc::Status Info(grpc::ServerContext* context, const v1::InfoRequest* request, v1::InfoResponse* response) override;

  const std::string& fingerprint() const { return fingerprint_; }
  // The policy a request without one runs, as its statistics name it (worker/policy_label.h).
  std::string DefaultPolicyLabel() const;
  // The bound HOST:PORT, reported in each request's statistics.
  void set_address(std::string address);

 private:
  class Request;
  grpc::Status CheckToken(grpc::ServerContext* context) const;

  const Model& model_;
  const std::string model_path_;
  CacheConnection* cache_;
  const WorkerServiceOptions options_;
  const std::string fingerprint_;
  Mutex run_mu_;  // one request at a time
  std::string address_ FS_GUARDED_BY(run_mu_);
  std::atomic<int64_t> served_{0}, failed_{0};
};

}  // namespace foresight::worker
