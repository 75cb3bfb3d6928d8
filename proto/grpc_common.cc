#include "proto/grpc_common.h"

#include <string_view>

#include "common/constant_time.h"

namespace foresight {

namespace {
constexpr char kAuthorization[] = "authorization";
constexpr std::string_view kBearer = "Bearer ";
}  // namespace

grpc::Status ToGrpcStatus(const Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), status.message());
}

Status FromGrpcStatus(const grpc::Status& status, const std::string& context) {
  if (status.ok()) return Status::OK();
  const StatusCode code = static_cast<StatusCode>(status.error_code());
  return Status(code, context.empty() ? status.error_message() : context + ": " + status.error_message());
}

void AddBearerToken(grpc::ClientContext* context, const std::string& token) {
  if (!token.empty()) context->AddMetadata(kAuthorization, std::string(kBearer) + token);
}

grpc::Status CheckBearerToken(const grpc::ServerContext& context, const std::string& token, const std::string& service,
                              const std::string& how_to_pass) {
  if (token.empty()) return grpc::Status::OK;
  const auto& metadata = context.client_metadata();
  auto it = metadata.find(kAuthorization);
  if (it == metadata.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "this " + service + " requires a token: " + how_to_pass + " (no 'authorization' metadata)");
  }
  const std::string_view value(it->second.data(), it->second.size());
  if (value.substr(0, kBearer.size()) != kBearer || !ConstantTimeEquals(token, value.substr(kBearer.size()))) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "the token is not valid for this " + service);
  }
  return grpc::Status::OK;
}

}  // namespace foresight
