// WorkerClient: the client of a foresight-worker's generation service (proto/worker.proto), used
// by `foresight generate --worker` and by tests. Generate streams each token to a callback and
// returns the request's statistics, or the worker's error (its code and message unchanged).
//
//   auto client = WorkerClient::Connect({.address = "127.0.0.1:7700"});
//   v1::GenerateRequest r;  r.set_prompt_text("..."); r.set_max_tokens(64); r.set_greedy(true);
//   auto stats = (*client)->Generate(r, [](const v1::Token& t) { std::cout << t.piece(); });
//
// Thread-safety: all methods may be called concurrently (the worker serializes requests).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "common/status.h"
#include "proto/worker.grpc.pb.h"

namespace foresight::worker {

struct WorkerClientOptions {
  std::string address;  // the worker's HOST:PORT
  std::string token;    // empty: none
  std::chrono::milliseconds connect_timeout{10000};
};

class WorkerClient {
 public:
  // Waits for the channel to connect (the worker must be up). Errors name the address.
  static StatusOr<std::unique_ptr<WorkerClient>> Connect(const WorkerClientOptions& options);

  // Streams tokens to on_token; returns the final statistics or the error that ended the request.
  // `tokens_received` (optional) counts the tokens that arrived, also when the request failed.
  StatusOr<v1::GenerateStats> Generate(const v1::GenerateRequest& request,
                                       const std::function<void(const v1::Token&)>& on_token,
                                       int64_t* tokens_received = nullptr);
  StatusOr<std::string> Health();
  StatusOr<v1::InfoResponse> Info();

  const std::string& address() const { return options_.address; }

 private:
  WorkerClient(WorkerClientOptions options, std::shared_ptr<grpc::Channel> channel);
  std::unique_ptr<grpc::ClientContext> Context() const;

  WorkerClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::WorkerService::Stub> stub_;
};

}  // namespace foresight::worker
