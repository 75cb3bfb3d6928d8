// MachineProfile: what one machine's cache node measured on every path a block takes, written by
// `foresight-bench tiers --profile FILE` and read by `foresight plan --profile FILE`. The format is
// versioned JSON, documented in docs/capacity.md ("The machine profile"):
//
//   {"format": "foresight-machine-profile", "version": 2, "host": "...", "measured_at": "...",
//    "ucx_version": "1.13.1", "cpus": 2, "command": "foresight-bench tiers --profile p.json",
//    "measurements": [{"path": "ram-tcp", "op": "get", "block_bytes": 4096, "clients": 1,
//                      "inflight": 16, "gbps": 0.41, "p50_us": 150.0, "p99_us": 900.0,
//                      "client_cpu_s_per_gb": 0.9, "node_cpu_s_per_gb": 0.7}, ...]}
//
// `clients` is how many clients (each with its own connection) moved blocks at once, each keeping
// `inflight` requests in flight: one client pipelining 16 gets, or 16 clients waiting for one get
// each, as 16 workers do. Version 1 profiles had no `clients` (one client) and are refused.
//
// Paths: ram-shm (RAM tier over UCX shared memory), ram-tcp (RAM tier over UCX TCP), ram-grpc
// (the gRPC fallback), nvme (a node whose RAM tier is far smaller than the working set: a get is a
// promotion from NVMe, a put forces a demotion to NVMe). GB/s is 1e9 bytes per second.
//
// Thread-safety: value types and pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace foresight::planner {

inline constexpr char kMachineProfileFormat[] = "foresight-machine-profile";
inline constexpr int kMachineProfileVersion = 2;

struct PathMeasurement {
  std::string path;  // ram-shm, ram-tcp, ram-grpc, nvme
  std::string op;    // get, put
  uint64_t block_bytes = 0;
  int clients = 1;   // clients moving blocks at once, each with its own connection
  int inflight = 0;  // requests in flight per client
  double gbps = 0;
  double p50_us = 0, p99_us = 0;
  double client_cpu_s_per_gb = 0, node_cpu_s_per_gb = 0;
};

struct MachineProfile {
  int version = kMachineProfileVersion;
  std::string host, measured_at, ucx_version, command;
  int cpus = 0;
  std::vector<PathMeasurement> measurements;
};

std::string MachineProfileToJson(const MachineProfile& profile);

// INVALID_ARGUMENT naming `source` and the field: not a profile, another version, a measurement
// missing a field or holding a non-positive bandwidth.
StatusOr<MachineProfile> ParseMachineProfile(const std::string& text, const std::string& source);
StatusOr<MachineProfile> LoadMachineProfile(const std::string& file);

// The fastest measurement of `path` and `op` at the measured block size nearest `block_bytes`
// and, of that size, the measured client count nearest `clients` (both nearest by ratio; a tie
// goes to the smaller), over every in-flight count. NOT_FOUND naming the path when the profile
// has none (for example a profile made with --paths ram-shm asked for ram-tcp).
StatusOr<PathMeasurement> FastestNear(const MachineProfile& profile, const std::string& path, const std::string& op,
                                      uint64_t block_bytes, int clients = 1);

}  // namespace foresight::planner
