#include "worker/service/serving_metrics.h"

#include <chrono>

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

namespace foresight::worker {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

prometheus::Histogram::BucketBoundaries Exponential(double first, double factor, int count) {
  prometheus::Histogram::BucketBoundaries b;
  for (double x = first; count-- > 0; x *= factor) b.push_back(x);
  return b;
}

}  // namespace

struct ServingMetrics::Impl {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();

  prometheus::Gauge& running = prometheus::BuildGauge()
                                   .Name("foresight_worker_running_sequences")
                                   .Help("Sequences in the scheduler's running batch")
                                   .Register(*registry)
                                   .Add({});
  prometheus::Gauge& waiting = prometheus::BuildGauge()
                                   .Name("foresight_worker_waiting_requests")
                                   .Help("Requests queued for a place in the batch")
                                   .Register(*registry)
                                   .Add({});
  prometheus::Gauge& transfer_buffers =
      prometheus::BuildGauge()
          .Name("foresight_worker_transfer_buffer_bytes")
          .Help("Transfer buffers (shared memory on one host) held by the cache client; sequences reuse them")
          .Register(*registry)
          .Add({});
  // 10 ms to about 3 minutes: a cold 7K-token prefill on two cores takes minutes.
  prometheus::Histogram& ttft = prometheus::BuildHistogram()
                                    .Name("foresight_worker_time_to_first_token_seconds")
                                    .Help("From a request's arrival to its first generated token")
                                    .Register(*registry)
                                    .Add({}, Exponential(0.01, 2, 15));
  // 1 ms to about 4 s.
  prometheus::Histogram& itl = prometheus::BuildHistogram()
                                   .Name("foresight_worker_inter_token_latency_seconds")
                                   .Help("Between consecutive generated tokens of a request")
                                   .Register(*registry)
                                   .Add({}, Exponential(0.001, 2, 13));
  // 50 ms to about 14 minutes.
  prometheus::Histogram& e2e = prometheus::BuildHistogram()
                                   .Name("foresight_worker_request_duration_seconds")
                                   .Help("From a request's arrival to its end (end-to-end latency)")
                                   .Register(*registry)
                                   .Add({}, Exponential(0.05, 2, 15));
  prometheus::Counter& prompt_tokens = prometheus::BuildCounter()
                                           .Name("foresight_worker_prompt_tokens_total")
                                           .Help("Prompt tokens of the requests served")
                                           .Register(*registry)
                                           .Add({});
  prometheus::Counter& generated_tokens = prometheus::BuildCounter()
                                              .Name("foresight_worker_generation_tokens_total")
                                              .Help("Tokens generated")
                                              .Register(*registry)
                                              .Add({});
  prometheus::Counter& prefix_hit_tokens = prometheus::BuildCounter()
                                               .Name("foresight_worker_prefix_cache_hit_tokens_total")
                                               .Help("Prompt tokens whose KV was imported from the cache service")
                                               .Register(*registry)
                                               .Add({});
  prometheus::Counter& blocks_fetched = prometheus::BuildCounter()
                                            .Name("foresight_worker_kv_blocks_fetched_total")
                                            .Help("KV blocks fetched from the cache service")
                                            .Register(*registry)
                                            .Add({});
  prometheus::Counter& stalls = prometheus::BuildCounter()
                                    .Name("foresight_worker_stalls_total")
                                    .Help("Decode steps that waited for a KV fetch")
                                    .Register(*registry)
                                    .Add({});
  prometheus::Family<prometheus::Counter>& requests = prometheus::BuildCounter()
                                                          .Name("foresight_worker_requests_total")
                                                          .Help("Requests completed, by finish reason")
                                                          .Register(*registry);
  prometheus::Family<prometheus::Counter>& errors = prometheus::BuildCounter()
                                                        .Name("foresight_worker_request_errors_total")
                                                        .Help("Requests refused or failed, by status code")
                                                        .Register(*registry);
};

// Records one request's timings and statistics, and forwards every call.
class ServingMetrics::Observer final : public ServeObserver {
 public:
  Observer(std::shared_ptr<Impl> impl, std::shared_ptr<ServeObserver> next)
      : impl_(std::move(impl)), next_(std::move(next)), arrival_(Clock::now()) {}

  bool OnToken(TokenId id, const std::string& text) override {
    const Clock::time_point now = Clock::now();
    if (tokens_ == 0) {
      impl_->ttft.Observe(Seconds(arrival_, now));
    } else {
      impl_->itl.Observe(Seconds(last_token_, now));
    }
    last_token_ = now;
    ++tokens_;
    impl_->generated_tokens.Increment();
    return next_->OnToken(id, text);
  }

  void OnFinish(const Status& status, const v1::GenerateStats& stats, const std::string& text) override {
    impl_->e2e.Observe(Seconds(arrival_, Clock::now()));
    impl_->prompt_tokens.Increment(static_cast<double>(stats.prompt_tokens()));
    impl_->prefix_hit_tokens.Increment(static_cast<double>(stats.prefix_hit_tokens()));
    impl_->blocks_fetched.Increment(static_cast<double>(stats.blocks_fetched()));
    impl_->stalls.Increment(static_cast<double>(stats.stalls()));
    if (status.ok()) {
      impl_->requests.Add({{"finish_reason", stats.finish_reason()}}).Increment();
    } else {
      impl_->errors.Add({{"code", StatusCodeName(status.code())}}).Increment();
    }
    next_->OnFinish(status, stats, text);
  }

 private:
  const std::shared_ptr<Impl> impl_;
  const std::shared_ptr<ServeObserver> next_;
  const Clock::time_point arrival_;
  Clock::time_point last_token_;  // the scheduler calls one request's observer in order
  int64_t tokens_ = 0;
};

ServingMetrics::ServingMetrics() : impl_(std::make_shared<Impl>()) {}
ServingMetrics::~ServingMetrics() = default;

std::shared_ptr<ServeObserver> ServingMetrics::Observe(std::shared_ptr<ServeObserver> observer) {
  return std::make_shared<Observer>(impl_, std::move(observer));
}

void ServingMetrics::RecordRefused(StatusCode code) { impl_->errors.Add({{"code", StatusCodeName(code)}}).Increment(); }

std::string ServingMetrics::Render(const Scheduler::Counts& counts) const {
  impl_->running.Set(counts.running);
  impl_->waiting.Set(counts.waiting);
  impl_->transfer_buffers.Set(static_cast<double>(counts.transfer_buffer_bytes));
  return prometheus::TextSerializer().Serialize(impl_->registry->Collect());
}

}  // namespace foresight::worker
