#include "cluster/member_record.h"

#include <nlohmann/json.hpp>

#include "common/json_fields.h"

namespace foresight {

namespace {

Status ReadMemberFields(const nlohmann::json& j, ClusterMember* m) {
  FS_ASSIGN_OR_RETURN(m->node_id, JsonField<std::string>(j, "node_id", ""));
  FS_ASSIGN_OR_RETURN(m->grpc, JsonField<std::string>(j, "grpc", ""));
  FS_ASSIGN_OR_RETURN(m->incarnation, JsonField<std::string>(j, "incarnation", ""));
  FS_ASSIGN_OR_RETURN(m->ucx_port, JsonField<uint16_t>(j, "ucx_port", 0));
  FS_ASSIGN_OR_RETURN(m->nvme, JsonField<bool>(j, "nvme", false));
  FS_ASSIGN_OR_RETURN(m->started_at, JsonField<int64_t>(j, "started_at", 0));
  return Status::OK();
}

}  // namespace

std::string EncodeClusterMember(const ClusterMember& member) {
  const nlohmann::json v = {{"node_id", member.node_id},         {"grpc", member.grpc},
                            {"ucx_port", member.ucx_port},       {"nvme", member.nvme},
                            {"incarnation", member.incarnation}, {"started_at", member.started_at}};
  return v.dump();
}

StatusOr<ClusterMember> ParseClusterMember(const std::string& text) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument("member entry is not a JSON object: " + text);
  ClusterMember m;
  if (Status s = ReadMemberFields(j, &m); !s.ok()) return s.WithContext("member entry " + text);
  if (m.node_id.empty() || m.grpc.empty()) return InvalidArgument("member entry lacks node_id or grpc: " + text);
  return m;
}

}  // namespace foresight
