#include "worker/service/worker_service.h"

#include <chrono>
#include <deque>
#include <memory>

#include "common/mutex.h"
#include "proto/grpc_common.h"
#include "worker/offload/offloaded_sequence.h"

namespace foresight::worker {
namespace {

// Hands the scheduler's events to the gRPC thread that streams them (the scheduler never waits
// for a client).
class EventQueue final : public ServeObserver {
 public:
  bool OnToken(TokenId id, const std::string& text) override {
    v1::GenerateEvent event;
    event.mutable_token()->set_id(id);
    event.mutable_token()->set_piece(text);
    MutexLock lock(mu_);
    if (gone_) return false;
    events_.push_back(std::move(event));
    ready_.Signal();
    return true;
  }
  void OnFinish(const Status& status, const v1::GenerateStats& stats, const std::string& text) override {
    MutexLock lock(mu_);
    finished_ = true;
    status_ = status;
    stats_ = stats;
    stats_.set_final_text(text);
    ready_.Signal();
  }
  // The client went away: OnToken says so to the scheduler from now on.
  void Gone() {
    MutexLock lock(mu_);
    gone_ = true;
  }
  // Waits up to `timeout` for events; false when none came (and it is not finished).
  bool Take(std::chrono::milliseconds timeout, std::deque<v1::GenerateEvent>* out, bool* finished) {
    MutexLock lock(mu_);
    ready_.WaitFor(mu_, timeout, [&]() FS_REQUIRES(mu_) { return !events_.empty() || finished_; });
    out->swap(events_);
    events_.clear();
    *finished = finished_ && out->empty();
    return !out->empty() || *finished;
  }
  Status status() const {
    MutexLock lock(mu_);
    return status_;
  }
  v1::GenerateStats stats() const {
    MutexLock lock(mu_);
    return stats_;
  }

 private:
  mutable Mutex mu_;
  CondVar ready_;
  std::deque<v1::GenerateEvent> events_ FS_GUARDED_BY(mu_);
  bool finished_ FS_GUARDED_BY(mu_) = false;
  bool gone_ FS_GUARDED_BY(mu_) = false;
  Status status_ FS_GUARDED_BY(mu_);
  v1::GenerateStats stats_ FS_GUARDED_BY(mu_);
};

}  // namespace

WorkerService::WorkerService(const Model& model, std::string model_path, CacheConnection* cache, Scheduler* scheduler,
                             std::string token, ServingMetrics* metrics)
    : model_(model),
      model_path_(std::move(model_path)),
      cache_(cache),
      scheduler_(scheduler),
      token_(std::move(token)),
      metrics_(metrics) {}

WorkerService::~WorkerService() = default;

grpc::Status WorkerService::CheckToken(grpc::ServerContext* context) const {
  return CheckBearerToken(*context, token_, "worker", "foresight generate --token-file");
}

StatusOr<ServeRequest> WorkerService::ToServeRequest(const v1::GenerateRequest& request) const {
  ServeRequest r;
  const bool has_text = !request.prompt_text().empty();
  const bool has_tokens = request.prompt_tokens_size() > 0;
  if (has_text == has_tokens) return InvalidArgument("give exactly one of prompt_text and prompt_tokens");
  if (has_tokens) {
    if (request.chat()) return InvalidArgument("chat applies to prompt_text only");
    r.prompt.assign(request.prompt_tokens().begin(), request.prompt_tokens().end());
  } else {
    const Tokenizer* tok = model_.tokenizer();
    if (tok == nullptr) return FailedPrecondition("model " + model_path_ + " has no tokenizer; send prompt_tokens");
    std::string text = request.prompt_text();
    if (request.chat()) {
      FS_ASSIGN_OR_RETURN(text, tok->FormatChat(text));
    }
    r.prompt = tok->Encode(text, /*add_bos=*/true, /*parse_special=*/request.chat());
  }
  r.max_tokens = request.max_tokens();
  r.min_tokens = request.min_tokens();
  r.ignore_eos = request.ignore_eos();
  r.stop.assign(request.stop().begin(), request.stop().end());
  if (!request.greedy()) {
    r.sampling.temperature = request.temperature();
    r.sampling.top_k = request.top_k();
    r.sampling.top_p = request.top_p() == 0 ? 1.0f : request.top_p();
    r.sampling.seed = request.seed();
  }
  r.policy = request.policy();
  r.budget = request.budget();
  r.prefix_reuse = !request.no_prefix_reuse();
  r.publish = !request.no_publish();
  return r;
}

grpc::Status WorkerService::Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                                     grpc::ServerWriter<v1::GenerateEvent>* writer) {
  if (grpc::Status auth = CheckToken(context); !auth.ok()) return auth;
  StatusOr<ServeRequest> serve = ToServeRequest(*request);
  if (!serve.ok()) {
    if (metrics_ != nullptr) metrics_->RecordRefused(serve.status().code());
    return ToGrpcStatus(serve.status());
  }
  auto events = std::make_shared<EventQueue>();
  std::shared_ptr<ServeObserver> observer = events;
  if (metrics_ != nullptr) observer = metrics_->Observe(observer);
  StatusOr<uint64_t> id = scheduler_->Submit(std::move(*serve), observer);
  if (!id.ok()) {
    if (metrics_ != nullptr) metrics_->RecordRefused(id.status().code());
    return ToGrpcStatus(id.status());
  }
  std::deque<v1::GenerateEvent> batch;
  bool finished = false;
  while (!finished) {
    if (context->IsCancelled()) {
      events->Gone();
      scheduler_->Cancel(*id);
      return ToGrpcStatus(Aborted("the client cancelled the request"));
    }
    if (!events->Take(std::chrono::milliseconds(100), &batch, &finished)) continue;
    for (const v1::GenerateEvent& event : batch) {
      if (!writer->Write(event)) {
        events->Gone();
        scheduler_->Cancel(*id);
        return ToGrpcStatus(Aborted("the client went away"));
      }
    }
  }
  Status s = events->status();
  if (!s.ok()) return ToGrpcStatus(s);
  v1::GenerateEvent last;
  *last.mutable_stats() = events->stats();
  writer->Write(last);
  return grpc::Status::OK;
}

grpc::Status WorkerService::Health(grpc::ServerContext* context, const v1::HealthRequest*,
                                   v1::HealthResponse* response) {
  if (grpc::Status auth = CheckToken(context); !auth.ok()) return auth;
  Status s = cache_->Check();
  response->set_status(s.ok() ? "SERVING" : "DEGRADED: cache service " + cache_->Describe() + ": " + s.message());
  return grpc::Status::OK;
}

grpc::Status WorkerService::Info(grpc::ServerContext* context, const v1::InfoRequest*, v1::InfoResponse* response) {
  if (grpc::Status auth = CheckToken(context); !auth.ok()) return auth;
  const SchedulerOptions& o = scheduler_->options();
  const Scheduler::Counts counts = scheduler_->counts();
  response->set_version("0.1.0");
  response->set_model(model_path_);
  response->set_fingerprint(scheduler_->fingerprint());
  response->set_n_layers(model_.config().n_layers);
  response->set_max_context(static_cast<int32_t>(model_.config().max_context));
  response->set_cache(cache_->Describe());
  response->set_key_namespace(o.serving.key_namespace);
  response->set_default_policy(scheduler_->DefaultPolicyLabel());
  response->set_weights(o.serving.weights_name);
  response->set_default_budget(o.serving.default_budget);
  response->set_concurrency(o.max_seqs);
  response->set_kv_mode(std::string(OffloadModeName(o.kv_mode)));
  response->set_requests_served(counts.served);
  response->set_requests_failed(counts.failed);
  return grpc::Status::OK;
}

}  // namespace foresight::worker
