// ServingMetrics: the worker's serving metrics in Prometheus' text format (GET /metrics on the
// HTTP API; docs/worker.md, "OpenAI-compatible API").
//
//   foresight_worker_running_sequences, foresight_worker_waiting_requests     gauges (the scheduler's counts)
//   foresight_worker_transfer_buffer_bytes    gauge: the cache client's transfer buffers, reused by sequences
//   foresight_worker_time_to_first_token_seconds                             histogram, from arrival
//   foresight_worker_inter_token_latency_seconds                             histogram, between tokens
//   foresight_worker_request_duration_seconds                                histogram, arrival to finish
//   foresight_worker_prompt_tokens_total, foresight_worker_generation_tokens_total
//   foresight_worker_prefix_cache_hit_tokens_total    prompt tokens imported from the cache service
//   foresight_worker_kv_blocks_fetched_total, foresight_worker_stalls_total
//   foresight_worker_requests_total{finish_reason}    eos | stop | max_tokens | context
//   foresight_worker_request_errors_total{code}       a foresight status code (INVALID_ARGUMENT, ...)
//
// Every front end (HTTP, gRPC) feeds it the same way: it wraps each request's observer with
// Observe() before Scheduler::Submit, and reports the requests it refuses itself with
// RecordRefused.
//
//   auto observer = metrics.Observe(std::make_shared<MyObserver>(...));
//   StatusOr<uint64_t> id = scheduler.Submit(std::move(request), observer);
//   if (!id.ok()) metrics.RecordRefused(id.status().code());
//
// Thread-safety: every method may be called from any thread; the observers it returns are called
// as the scheduler calls observers (one thread per request, in order).
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "worker/service/scheduler.h"

namespace foresight::worker {

class ServingMetrics {
 public:
  ServingMetrics();
  ~ServingMetrics();
  ServingMetrics(const ServingMetrics&) = delete;
  ServingMetrics& operator=(const ServingMetrics&) = delete;

  // An observer that records the request's timings and statistics and forwards every call to
  // `observer`. The request's arrival is now.
  std::shared_ptr<ServeObserver> Observe(std::shared_ptr<ServeObserver> observer);
  // A request that ended before it reached the scheduler, or that the scheduler refused.
  void RecordRefused(StatusCode code);

  // Every metric in Prometheus' text format, the gauges set from `counts`.
  std::string Render(const Scheduler::Counts& counts) const;

 private:
  struct Impl;
  class Observer;
  std::shared_ptr<Impl> impl_;  // shared with the observers, which may outlive this object
};

}  // namespace foresight::worker
