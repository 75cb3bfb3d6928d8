#include "cache_service/node_metrics.h"

#include <atomic>

#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "common/mutex.h"

namespace foresight {

namespace {
const char* OpName(NodeMetrics::Op op) {
  switch (op) {
    case NodeMetrics::Op::kGet:
      return "get";
    case NodeMetrics::Op::kPut:
      return "put";
    case NodeMetrics::Op::kOther:
      return "other";
  }
  return "other";
}
const char* PathName(NodeMetrics::Path p) { return p == NodeMetrics::Path::kGrpc ? "grpc" : "ucx"; }
}  // namespace

struct NodeMetrics::Impl {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  std::unique_ptr<prometheus::Exposer> exposer;

  prometheus::Family<prometheus::Gauge>& tier_bytes =
      prometheus::BuildGauge().Name("foresight_tier_bytes").Help("Bytes of blocks held per tier").Register(*registry);
  prometheus::Family<prometheus::Gauge>& tier_items =
      prometheus::BuildGauge().Name("foresight_tier_items").Help("Blocks held per tier").Register(*registry);
  prometheus::Family<prometheus::Gauge>& tier_capacity = prometheus::BuildGauge()
                                                             .Name("foresight_tier_capacity_bytes")
                                                             .Help("Capacity per tier (0: unlimited)")
                                                             .Register(*registry);
  // Counters the store keeps itself (StoreStats): each follows the store's total by the difference
  // (UpdateFromStore), so that they are exported as counters and rate() works on them.
  prometheus::Family<prometheus::Counter>& hits =
      prometheus::BuildCounter().Name("foresight_tier_hits_total").Help("Reads served per tier").Register(*registry);
  prometheus::Family<prometheus::Counter>& misses = prometheus::BuildCounter()
                                                        .Name("foresight_tier_misses_total")
                                                        .Help("Reads not found per tier")
                                                        .Register(*registry);
  prometheus::Family<prometheus::Counter>& evictions = prometheus::BuildCounter()
                                                           .Name("foresight_evictions_total")
                                                           .Help("Blocks evicted for space per tier")
                                                           .Register(*registry);
  prometheus::Family<prometheus::Counter>& store_totals =
      prometheus::BuildCounter().Name("foresight_store_events_total").Help("Store events by kind").Register(*registry);
  prometheus::Family<prometheus::Counter>& checksum_failures = prometheus::BuildCounter()
                                                                   .Name("foresight_checksum_failures_total")
                                                                   .Help("Blocks found corrupt and dropped")
                                                                   .Register(*registry);
  prometheus::Family<prometheus::Gauge>& ram_page_bytes = prometheus::BuildGauge()
                                                              .Name("foresight_ram_page_bytes")
                                                              .Help("Page size of the RAM arena (2 MiB: huge pages)")
                                                              .Register(*registry);
  prometheus::Family<prometheus::Counter>& bytes_in_family =
      prometheus::BuildCounter().Name("foresight_bytes_in_total").Help("Block bytes received").Register(*registry);
  prometheus::Family<prometheus::Counter>& bytes_out_family =
      prometheus::BuildCounter().Name("foresight_bytes_out_total").Help("Block bytes sent").Register(*registry);
  prometheus::Family<prometheus::Histogram>& latency =
      prometheus::BuildHistogram().Name("foresight_request_seconds").Help("Request latency").Register(*registry);
  prometheus::Family<prometheus::Counter>& errors =
      prometheus::BuildCounter().Name("foresight_request_errors_total").Help("Failed requests").Register(*registry);
  std::atomic<uint64_t> total_in{0}, total_out{0};
  // Two callers of UpdateFromStore (the node's refresh thread, NodeStats) must not both add the
  // same difference.
  Mutex mirror_mu;

  // Raises `counter` to the store's `total` (totals only grow while the store lives).
  void Mirror(prometheus::Counter& counter, uint64_t total) FS_REQUIRES(mirror_mu) {
    const double delta = static_cast<double>(total) - counter.Value();
    if (delta > 0) counter.Increment(delta);
  }
};

NodeMetrics::NodeMetrics() : impl_(std::make_unique<Impl>()) {}
NodeMetrics::~NodeMetrics() = default;

StatusOr<int> NodeMetrics::Serve(const std::string& host_port) {
  try {
    impl_->exposer = std::make_unique<prometheus::Exposer>(host_port);
  } catch (const std::exception& e) {
    return Unavailable("cannot serve metrics on " + host_port + ": " + e.what());
  }
  impl_->exposer->RegisterCollectable(impl_->registry);
  const std::vector<int> ports = impl_->exposer->GetListeningPorts();
  return ports.empty() ? 0 : ports.front();
}

void NodeMetrics::RecordRequest(Op op, Path path, double seconds, bool ok, uint64_t bytes_in, uint64_t bytes_out) {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {10e-6,  25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3,
                                                                   2.5e-3, 5e-3,  10e-3, 25e-3,  100e-3, 1.0};
  const prometheus::Labels labels{{"op", OpName(op)}, {"path", PathName(path)}};
  impl_->latency.Add(labels, kBuckets).Observe(seconds);
  if (!ok) impl_->errors.Add(labels).Increment();
  if (bytes_in > 0) impl_->bytes_in_family.Add({{"path", PathName(path)}}).Increment(static_cast<double>(bytes_in));
  if (bytes_out > 0) impl_->bytes_out_family.Add({{"path", PathName(path)}}).Increment(static_cast<double>(bytes_out));
  impl_->total_in += bytes_in;
  impl_->total_out += bytes_out;
}

void NodeMetrics::UpdateFromStore(const StoreStats& s) {
  auto set = [](prometheus::Family<prometheus::Gauge>& f, const char* tier, uint64_t v) {
    f.Add({{"tier", tier}}).Set(static_cast<double>(v));
  };
  Impl& m = *impl_;
  MutexLock lock(m.mirror_mu);
  for (const auto& [name, t] : {std::pair<const char*, const TierStats*>{"ram", &s.ram}, {"nvme", &s.nvme}}) {
    const prometheus::Labels tier{{"tier", name}};
    set(m.tier_bytes, name, t->used_bytes);
    set(m.tier_items, name, t->items);
    set(m.tier_capacity, name, t->capacity_bytes);
    m.Mirror(m.hits.Add(tier), t->hits);
    m.Mirror(m.misses.Add(tier), t->misses);
    m.Mirror(m.evictions.Add(tier), t->evictions);
  }
  m.Mirror(m.store_totals.Add({{"event", "promotion"}}), s.promotions);
  m.Mirror(m.store_totals.Add({{"event", "demotion"}}), s.demotions);
  m.Mirror(m.checksum_failures.Add({}), s.checksum_failures);
  m.ram_page_bytes.Add({}).Set(static_cast<double>(s.ram_page_bytes));
}

uint64_t NodeMetrics::bytes_in() const { return impl_->total_in; }
uint64_t NodeMetrics::bytes_out() const { return impl_->total_out; }

}  // namespace foresight
