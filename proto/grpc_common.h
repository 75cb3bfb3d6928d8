// What every Foresight gRPC service and client shares: the mapping between Status and
// grpc::Status (the codes are the same numbers), and the bearer token in the "authorization"
// metadata.
//
// Thread-safety: pure functions.
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>

#include "common/status.h"

namespace foresight {

grpc::Status ToGrpcStatus(const Status& status);

// The Status of a finished call; a non-empty `context` is prepended to the message
// ("<context>: <message>").
Status FromGrpcStatus(const grpc::Status& status, const std::string& context = "");

// Sends `token` as "authorization: Bearer <token>"; an empty token sends nothing.
void AddBearerToken(grpc::ClientContext* context, const std::string& token);

// OK when `token` is empty (no authentication) or the call carries "Bearer <token>", compared in
// constant time; otherwise UNAUTHENTICATED, naming `service` ("node", "worker") and, when the
// metadata is missing, telling the caller `how_to_pass` it ("pass --token-file").
grpc::Status CheckBearerToken(const grpc::ServerContext& context, const std::string& token, const std::string& service,
                              const std::string& how_to_pass);

}  // namespace foresight
