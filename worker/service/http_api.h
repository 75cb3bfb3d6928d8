// HttpApi: foresight-worker's OpenAI-compatible HTTP API (`--http HOST:PORT`; docs/worker.md,
// "OpenAI-compatible API"), served by cpp-httplib on its own threads.
//
//   POST /v1/completions, POST /v1/chat/completions   streamed (server-sent events) or not
//   GET  /v1/models                                    the one model, named after its file
//   GET  /health                                       200 once Ready, 503 while the model loads
//   GET  /metrics                                      ServingMetrics, Prometheus text format
//
// Requests go to the scheduler (through ServeBackend) with their observers wrapped by
// ServingMetrics. Each connection runs on one of the server's threads: a streamed response writes
// the scheduler's text as it comes; a client that goes away (a write fails) cancels its request,
// so its sequence is freed at the next step. While nothing comes to write (queued, prefilling) the
// stream carries an SSE comment every second, so that a client gone during a long prefill is
// noticed too. A non-streamed request is noticed only when its response is written.
//
// With a token, every path but /health requires `Authorization: Bearer <token>` (compared in
// constant time). Bodies beyond max_body_bytes get 413. Every error is an OpenAI error object
// (openai_protocol.h); nothing a client sends can crash the worker.
//
// Thread-safety: Start, Ready and Stop are called by one owner thread; the rest is internal.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <thread>

#include "common/mutex.h"
#include "common/status.h"
#include "worker/service/openai_protocol.h"
#include "worker/service/scheduler.h"
#include "worker/service/serving_metrics.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace foresight::worker {

// What the API submits requests to: the worker's Scheduler (SchedulerBackend), or a fake in tests.
// Same contract as Scheduler's Submit, Cancel and counts.
class ServeBackend {
 public:
  virtual ~ServeBackend() = default;
  virtual StatusOr<uint64_t> Submit(ServeRequest request, std::shared_ptr<ServeObserver> observer) = 0;
  virtual void Cancel(uint64_t id) = 0;
  virtual Scheduler::Counts counts() const = 0;
};

// The Scheduler as a ServeBackend (defined in scheduler_backend.cc, so that a program that does not
// use it does not link the scheduler).
class SchedulerBackend final : public ServeBackend {
 public:
  explicit SchedulerBackend(Scheduler* scheduler) : scheduler_(scheduler) {}
  StatusOr<uint64_t> Submit(ServeRequest request, std::shared_ptr<ServeObserver> observer) override;
  void Cancel(uint64_t id) override;
  Scheduler::Counts counts() const override;

 private:
  Scheduler* const scheduler_;
};

// The served model as the API describes and checks it: named after its file without the extension
// (SmolLM2-135M-Instruct.Q4_1.gguf: "SmolLM2-135M-Instruct.Q4_1"; a Hugging Face folder: its name),
// its tokenizer, vocabulary and context.
openai::ModelInfo ServedModelInfo(const Model& model, const std::string& model_path);

struct HttpApiOptions {
  std::string token;                        // required of callers (empty: none)
  size_t max_body_bytes = size_t{8} << 20;  // larger request bodies get 413
  // Connections served at once; a streamed or waiting request holds one for its whole length, so
  // at least the scheduler's running plus waiting requests, and a few for /health and /metrics.
  int threads = 80;
};

class HttpApi {
 public:
  // `metrics` must outlive this object.
  HttpApi(HttpApiOptions options, ServingMetrics* metrics);
  ~HttpApi();  // Stop()
  HttpApi(const HttpApi&) = delete;
  HttpApi& operator=(const HttpApi&) = delete;

  // Binds HOST:PORT (port 0: a free one) and serves on its own thread; returns the bound port.
  // Until Ready, /health and the API answer 503 (the worker is loading its model).
  StatusOr<int> Start(const std::string& host_port);
  // The model is loaded and `backend` (which must outlive Stop) takes requests from now on.
  void Ready(openai::ModelInfo model, ServeBackend* backend);
  // Stops listening, cancels the requests still streaming or waiting, and joins the threads.
  void Stop();

 private:
  struct Request;
  struct Serving {
    openai::ModelInfo model;
    ServeBackend* backend = nullptr;
  };

  void Route();
  // The serving state once Ready; null while loading.
  const Serving* serving() const;
  bool Authorized(const httplib::Request& req, httplib::Response& res);
  void Reply(httplib::Response& res, const openai::ApiError& error);
  void HandleGeneration(openai::Endpoint endpoint, const httplib::Request& req, httplib::Response& res);
  void Stream(const std::shared_ptr<Request>& request, openai::StreamEncoder encoder, httplib::Response& res);
  void WaitAndReply(const std::shared_ptr<Request>& request, const openai::ResponseContext& context,
                    httplib::Response& res);
  uint64_t Random();
  std::string NewId(const char* prefix);

  const HttpApiOptions options_;
  ServingMetrics* const metrics_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<const Serving*> serving_{nullptr};
  // Written once, by Ready, before serving_ points at them.
  std::unique_ptr<Serving> serving_storage_;
  int64_t ready_time_ = 0;  // the model's "created" in /v1/models
  Mutex random_mu_;
  std::mt19937_64 random_ FS_GUARDED_BY(random_mu_);  // ids and absent seeds
};

}  // namespace foresight::worker
