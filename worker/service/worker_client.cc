#include "worker/service/worker_client.h"

#include <grpcpp/grpcpp.h>

#include "proto/grpc_common.h"

namespace foresight::worker {
namespace {

Status FromGrpc(const grpc::Status& s, const std::string& address) { return FromGrpcStatus(s, "worker " + address); }

}  // namespace

WorkerClient::WorkerClient(WorkerClientOptions options, std::shared_ptr<grpc::Channel> channel)
    : options_(std::move(options)), channel_(std::move(channel)), stub_(v1::WorkerService::NewStub(channel_)) {}

StatusOr<std::unique_ptr<WorkerClient>> WorkerClient::Connect(const WorkerClientOptions& options) {
  if (options.address.empty()) return InvalidArgument("no worker address (HOST:PORT)");
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  auto channel = grpc::CreateCustomChannel(options.address, grpc::InsecureChannelCredentials(), args);
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + options.connect_timeout)) {
    return Unavailable("worker " + options.address + " is unreachable; is foresight-worker running there?");
  }
  return std::unique_ptr<WorkerClient>(new WorkerClient(options, std::move(channel)));
}

std::unique_ptr<grpc::ClientContext> WorkerClient::Context() const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  AddBearerToken(ctx.get(), options_.token);
  return ctx;
}

StatusOr<v1::GenerateStats> WorkerClient::Generate(const v1::GenerateRequest& request,
                                                   const std::function<void(const v1::Token&)>& on_token,
                                                   int64_t* tokens_received) {
  auto ctx = Context();
  auto reader = stub_->Generate(ctx.get(), request);
  v1::GenerateEvent event;
  v1::GenerateStats stats;
  bool have_stats = false;
  int64_t received = 0;
  while (reader->Read(&event)) {
    if (event.has_token()) {
      ++received;
      if (tokens_received != nullptr) *tokens_received = received;
      if (on_token) on_token(event.token());
    } else if (event.has_stats()) {
      stats = event.stats();
      have_stats = true;
    }
  }
  Status s = FromGrpc(reader->Finish(), options_.address);
  if (!s.ok()) return s;
  if (!have_stats) return Internal("worker " + options_.address + " ended the stream without statistics");
  return stats;
}

StatusOr<std::string> WorkerClient::Health() {
  auto ctx = Context();
  v1::HealthResponse resp;
  Status s = FromGrpc(stub_->Health(ctx.get(), v1::HealthRequest(), &resp), options_.address);
  if (!s.ok()) return s;
  return resp.status();
}

StatusOr<v1::InfoResponse> WorkerClient::Info() {
  auto ctx = Context();
  v1::InfoResponse resp;
  Status s = FromGrpc(stub_->Info(ctx.get(), v1::InfoRequest(), &resp), options_.address);
  if (!s.ok()) return s;
  return resp;
}

}  // namespace foresight::worker
