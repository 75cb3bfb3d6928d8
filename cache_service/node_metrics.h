// NodeMetrics: the node's Prometheus metrics, served in the text format on --metrics HOST:PORT.
//
//   foresight_tier_bytes{tier}, foresight_tier_items{tier}, foresight_tier_capacity_bytes{tier}
//   foresight_tier_hits_total{tier}, foresight_tier_misses_total{tier}, foresight_evictions_total{tier}
//   foresight_bytes_in_total{path}, foresight_bytes_out_total{path}        path = grpc | ucx
//   foresight_request_seconds{op,path} (histogram), foresight_request_errors_total{op,path}
//   foresight_checksum_failures_total, foresight_store_events_total{event}  event = promotion | demotion
//   foresight_ram_page_bytes (4096, or 2097152 when the arena is in huge pages)
//
// Every *_total is a counter, *_seconds a histogram, the rest gauges; `promtool check metrics`
// accepts the text (tests/integration/metrics_endpoints_test.cc), and deploy/grafana/ charts it.
//
// Thread-safety: all methods are safe to call concurrently.
#pragma once

#include <memory>
#include <string>

#include "cache_service/block_store.h"
#include "common/status.h"

namespace prometheus {
class Registry;
class Exposer;
}  // namespace prometheus

namespace foresight {

class NodeMetrics {
 public:
  enum class Op { kGet, kPut, kOther };
  enum class Path { kGrpc, kUcx };

  NodeMetrics();
  ~NodeMetrics();
  // Starts the HTTP endpoint (GET /metrics); returns the bound port (HOST:0 picks a free one).
  // Errors name the address.
  StatusOr<int> Serve(const std::string& host_port);

  void RecordRequest(Op op, Path path, double seconds, bool ok, uint64_t bytes_in, uint64_t bytes_out);
  // Copies the store's tier gauges and counters.
  void UpdateFromStore(const StoreStats& stats);

  uint64_t bytes_in() const;
  uint64_t bytes_out() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace foresight
