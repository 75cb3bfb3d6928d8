// A cache node's record in the cluster's member list: the etcd value under
// `<prefix><node_id>`, written by the node (cluster/membership.h) and read by every client
// (cluster/cluster_client.h, `foresight cluster`).
//
// The value is JSON: {"node_id", "grpc", "ucx_port", "nvme", "incarnation", "started_at"}.
// `incarnation` is new on every process start, so that a client can tell a restarted node (whose
// RAM tier is empty) from one that never left. Readers ignore fields they do not know, so the
// record may grow.
//
// Thread-safety: values and pure functions.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace foresight {

// Where nodes register unless told otherwise (--etcd-prefix).
inline constexpr char kDefaultMembersPrefix[] = "/foresight/nodes/";

struct ClusterMember {
  std::string node_id, grpc, incarnation;
  uint32_t ucx_port = 0;
  bool nvme = false;
  int64_t started_at = 0;  // seconds since the epoch
};

// The record's JSON text.
std::string EncodeClusterMember(const ClusterMember& member);
// INVALID_ARGUMENT, quoting the text, when it is not a member record (not JSON, a field of the
// wrong type, or no node_id or grpc address).
StatusOr<ClusterMember> ParseClusterMember(const std::string& text);

}  // namespace foresight
