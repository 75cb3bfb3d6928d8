#include "planner/machine_profile.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "common/file_io.h"
#include "common/json_fields.h"

namespace foresight::planner {
namespace {

StatusOr<PathMeasurement> ParseMeasurement(const nlohmann::json& j, const std::string& where) {
  PathMeasurement m;
  auto need_string = [&](const char* key) -> StatusOr<std::string> {
    auto v = JsonField<std::string>(j, key, "");
    if (!v.ok()) return v.status().WithContext(where);
    if (v->empty()) return InvalidArgument(where + ": field \"" + key + "\" is missing");
    return *v;
  };
  auto number = [&](const char* key) -> StatusOr<double> {
    auto v = JsonField<double>(j, key, -1.0);
    if (!v.ok()) return v.status().WithContext(where);
    if (*v < 0 || !std::isfinite(*v)) return InvalidArgument(where + ": field \"" + key + "\" is missing or negative");
    return *v;
  };
  FS_ASSIGN_OR_RETURN(m.path, need_string("path"));
  FS_ASSIGN_OR_RETURN(m.op, need_string("op"));
  if (m.op != "get" && m.op != "put") return InvalidArgument(where + ": field \"op\" is \"" + m.op + "\" (get, put)");
  auto block = JsonField<uint64_t>(j, "block_bytes", 0);
  if (!block.ok()) return block.status().WithContext(where);
  if (*block == 0) return InvalidArgument(where + ": field \"block_bytes\" is missing or 0");
  m.block_bytes = *block;
  auto clients = JsonField<int>(j, "clients", 0);
  if (!clients.ok()) return clients.status().WithContext(where);
  if (*clients <= 0) return InvalidArgument(where + ": field \"clients\" is missing or not positive");
  m.clients = *clients;
  auto inflight = JsonField<int>(j, "inflight", 0);
  if (!inflight.ok()) return inflight.status().WithContext(where);
  if (*inflight <= 0) return InvalidArgument(where + ": field \"inflight\" is missing or not positive");
  m.inflight = *inflight;
  FS_ASSIGN_OR_RETURN(m.gbps, number("gbps"));
  if (m.gbps <= 0) return InvalidArgument(where + ": field \"gbps\" must be positive");
  FS_ASSIGN_OR_RETURN(m.p50_us, number("p50_us"));
  FS_ASSIGN_OR_RETURN(m.p99_us, number("p99_us"));
  FS_ASSIGN_OR_RETURN(m.client_cpu_s_per_gb, number("client_cpu_s_per_gb"));
  FS_ASSIGN_OR_RETURN(m.node_cpu_s_per_gb, number("node_cpu_s_per_gb"));
  return m;
}

}  // namespace

std::string MachineProfileToJson(const MachineProfile& profile) {
  nlohmann::json j;
  j["format"] = kMachineProfileFormat;
  j["version"] = profile.version;
  j["host"] = profile.host;
  j["measured_at"] = profile.measured_at;
  j["ucx_version"] = profile.ucx_version;
  j["cpus"] = profile.cpus;
  j["command"] = profile.command;
  nlohmann::json rows = nlohmann::json::array();
  for (const PathMeasurement& m : profile.measurements) {
    rows.push_back({{"path", m.path},
                    {"op", m.op},
                    {"block_bytes", m.block_bytes},
                    {"clients", m.clients},
                    {"inflight", m.inflight},
                    {"gbps", m.gbps},
                    {"p50_us", m.p50_us},
                    {"p99_us", m.p99_us},
                    {"client_cpu_s_per_gb", m.client_cpu_s_per_gb},
                    {"node_cpu_s_per_gb", m.node_cpu_s_per_gb}});
  }
  j["measurements"] = std::move(rows);
  return j.dump(1) + "\n";
}

StatusOr<MachineProfile> ParseMachineProfile(const std::string& text, const std::string& source) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  const std::string where = "--profile " + source;
  if (j.is_discarded() || !j.is_object()) return InvalidArgument(where + " is not a JSON object");
  auto format = JsonField<std::string>(j, "format", "");
  if (!format.ok() || *format != kMachineProfileFormat) {
    return InvalidArgument(where + ": field \"format\" is not \"" + kMachineProfileFormat +
                           "\" (make one with `foresight-bench tiers --profile FILE`)");
  }
  MachineProfile p;
  auto version = JsonField<int>(j, "version", 0);
  if (!version.ok()) return version.status().WithContext(where);
  if (*version != kMachineProfileVersion) {
    return InvalidArgument(where + ": field \"version\" is " + std::to_string(*version) + ", this planner reads " +
                           std::to_string(kMachineProfileVersion) +
                           " (version 2 added concurrent clients; measure again with this build: "
                           "foresight-bench tiers --profile FILE)");
  }
  p.version = *version;
  for (auto [key, field] : {std::pair{"host", &p.host}, std::pair{"measured_at", &p.measured_at},
                            std::pair{"ucx_version", &p.ucx_version}, std::pair{"command", &p.command}}) {
    auto v = JsonField<std::string>(j, key, "");
    if (!v.ok()) return v.status().WithContext(where);
    *field = *v;
  }
  auto cpus = JsonField<int>(j, "cpus", 0);
  if (!cpus.ok()) return cpus.status().WithContext(where);
  p.cpus = *cpus;
  const auto rows = j.find("measurements");
  if (rows == j.end() || !rows->is_array() || rows->empty()) {
    return InvalidArgument(where + ": field \"measurements\" is missing or empty");
  }
  for (size_t i = 0; i < rows->size(); ++i) {
    FS_ASSIGN_OR_RETURN(PathMeasurement m,
                        ParseMeasurement((*rows)[i], where + ": measurements[" + std::to_string(i) + "]"));
    p.measurements.push_back(std::move(m));
  }
  return p;
}

StatusOr<MachineProfile> LoadMachineProfile(const std::string& file) {
  auto text = ReadWholeFile(file, "machine profile");
  if (!text.ok()) return text.status().WithContext("--profile");
  return ParseMachineProfile(*text, file);
}

StatusOr<PathMeasurement> FastestNear(const MachineProfile& profile, const std::string& path, const std::string& op,
                                      uint64_t block_bytes, int clients) {
  // Nearest by ratio; on a tie the smaller value (rows are scanned in any order).
  auto nearer = [](double value, double target, double best) {
    const double d = std::fabs(std::log(value / target)), db = std::fabs(std::log(best / target));
    return d < db - 1e-12 || (std::fabs(d - db) <= 1e-12 && value < best);
  };
  uint64_t nearest_size = 0;
  for (const PathMeasurement& m : profile.measurements) {
    if (m.path != path || m.op != op) continue;
    if (nearest_size == 0 || nearer(static_cast<double>(m.block_bytes), static_cast<double>(block_bytes),
                                    static_cast<double>(nearest_size))) {
      nearest_size = m.block_bytes;
    }
  }
  if (nearest_size == 0) {
    return NotFound("the machine profile has no \"" + path + "\" " + op +
                    " measurement (measure it: foresight-bench tiers --profile FILE --paths " + path + ")");
  }
  int nearest_clients = 0;
  for (const PathMeasurement& m : profile.measurements) {
    if (m.path != path || m.op != op || m.block_bytes != nearest_size) continue;
    if (nearest_clients == 0 || nearer(m.clients, std::max(clients, 1), nearest_clients)) nearest_clients = m.clients;
  }
  const PathMeasurement* best = nullptr;
  for (const PathMeasurement& m : profile.measurements) {
    if (m.path == path && m.op == op && m.block_bytes == nearest_size && m.clients == nearest_clients &&
        (best == nullptr || m.gbps > best->gbps)) {
      best = &m;
    }
  }
  return *best;
}

}  // namespace foresight::planner
