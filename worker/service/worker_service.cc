#include "worker/service/worker_service.h"

#include <algorithm>
#include <chrono>
#include <optional>

#include <spdlog/spdlog.h>

#include "predictor/selection_policy.h"
#include "proto/grpc_common.h"
#include "worker/generator.h"
#include "worker/offload/offloaded_sequence.h"
#include "worker/policy_label.h"

namespace foresight::worker {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

}  // namespace

// One Generate call: everything it needs, and its statistics.
class WorkerService::Request {
 public:
  // `address` is the worker's own, read under run_mu_ by the caller.
  Request(WorkerService* service, grpc::ServerContext* context, const v1::GenerateRequest& request,
          grpc::ServerWriter<v1::GenerateEvent>* writer, Clock::time_point arrival, std::string address)
      : s_(*service),
        context_(context),
        request_(request),
        writer_(writer),
        arrival_(arrival),
        address_(std::move(address)) {}

  Status Run();
  const v1::GenerateStats& stats() const { return stats_; }

 private:
  Status RunWithCache();
  // Dense attention reads every block each step: offloading it would move the whole history every
  // step, so dense requests keep their KV resident (and still publish it).
  OffloadMode KvMode() const { return spec_ ? s_.options_.kv_mode : OffloadMode::kResident; }
  Status Cache(Status s);
  Status ParsePrompt();
  Status MakePolicy();
  Status Emit(TokenId id);

  WorkerService& s_;
  grpc::ServerContext* context_;
  const v1::GenerateRequest& request_;
  grpc::ServerWriter<v1::GenerateEvent>* writer_;
  const Clock::time_point arrival_;
  const std::string address_;
  std::vector<TokenId> prompt_;
  std::optional<predictor::PolicySpec> spec_;  // none: dense attention
  PolicyAttentionOptions attention_{CalibrationSource::kCompactKeys};
  std::string policy_name_;
  int32_t budget_ = 0;
  v1::GenerateStats stats_;
  std::shared_ptr<CacheClient> client_;
  bool cache_failed_ = false;
};

Status WorkerService::Request::ParsePrompt() {
  const bool has_text = !request_.prompt_text().empty();
  const bool has_tokens = request_.prompt_tokens_size() > 0;
  if (has_text == has_tokens) return InvalidArgument("give exactly one of prompt_text and prompt_tokens");
  const ModelConfig& c = s_.model_.config();
  if (has_tokens) {
    for (int32_t id : request_.prompt_tokens()) {
      if (id < 0 || id >= c.vocab_size) {
        return InvalidArgument("prompt token " + std::to_string(id) + " is outside the vocabulary [0, " +
                               std::to_string(c.vocab_size) + ")");
      }
      prompt_.push_back(id);
    }
    if (request_.chat()) return InvalidArgument("chat applies to prompt_text only");
  } else {
    const Tokenizer* tok = s_.model_.tokenizer();
    if (tok == nullptr) return FailedPrecondition("model " + s_.model_path_ + " has no tokenizer; send prompt_tokens");
    std::string text = request_.prompt_text();
    if (request_.chat()) {
      FS_ASSIGN_OR_RETURN(text, tok->FormatChat(text));
    }
    prompt_ = tok->Encode(text, /*add_bos=*/true, /*parse_special=*/request_.chat());
  }
  if (prompt_.empty()) return InvalidArgument("the prompt is empty (no tokens)");
  if (c.max_context > 0 && static_cast<int64_t>(prompt_.size()) >= c.max_context) {
    return OutOfRange("the prompt has " + std::to_string(prompt_.size()) + " tokens; the model's context is " +
                      std::to_string(c.max_context));
  }
  return Status::OK();
}

Status WorkerService::Request::MakePolicy() {
  const WorkerServiceOptions& o = s_.options_;
  policy_name_ = request_.policy().empty() ? o.default_policy : request_.policy();
  std::replace(policy_name_.begin(), policy_name_.end(), '-', '_');
  budget_ = request_.budget() > 0 ? request_.budget() : o.default_budget;
  if (request_.budget() < 0) return InvalidArgument("budget " + std::to_string(request_.budget()) + " is negative");
  predictor::PolicySpec spec;
  FS_ASSIGN_OR_RETURN(spec.kind, predictor::ParsePolicyKind(policy_name_));
  policy_name_ = std::string(predictor::PolicyKindName(spec.kind));
  if (spec.kind == predictor::PolicyKind::kOracle) {
    return InvalidArgument(
        "policy oracle needs each step's dense attention and is offline-only; "
        "use `foresight predictor eval` on a trace");
  }
  if (spec.kind == predictor::PolicyKind::kDense) return Status::OK();
  spec.budget.budget_tokens = budget_;
  spec.budget.sink_tokens = o.sink_tokens;
  spec.budget.local_tokens = o.local_tokens;
  spec.dense_first_layers = o.dense_first_layers;
  ApplyQueryRefinement(o.query_refine, &spec, &attention_, o.kv_mode != OffloadMode::kResident);
  policy_name_ = PolicyLabel(spec);
  if (spec.kind == predictor::PolicyKind::kAttentionPredictor) {
    if (o.weights == nullptr) {
      return FailedPrecondition("policy attention_predictor needs the CNN weights, and this worker has none");
    }
    spec.weights = o.weights;
    stats_.set_weights(o.weights_name);
  }
  spec_ = spec;
  return Status::OK();
}

Status WorkerService::Request::Emit(TokenId id) {
  if (stats_.generated_tokens() == 0) stats_.set_time_to_first_token_seconds(Seconds(arrival_, Clock::now()));
  stats_.set_generated_tokens(stats_.generated_tokens() + 1);
  v1::GenerateEvent event;
  event.mutable_token()->set_id(id);
  const Tokenizer* tok = s_.model_.tokenizer();
  if (tok != nullptr) event.mutable_token()->set_piece(tok->TokenPiece(id, false));
  if (!writer_->Write(event)) return Aborted("the client went away");
  return Status::OK();
}

Status WorkerService::Request::Run() {
  if (request_.max_tokens() <= 0) {
    return InvalidArgument("max_tokens must be positive (got " + std::to_string(request_.max_tokens()) + ")");
  }
  if (!request_.greedy()) return Unimplemented("only greedy decoding is implemented (set greedy)");
  FS_RETURN_IF_ERROR(ParsePrompt());
  FS_RETURN_IF_ERROR(MakePolicy());
  stats_.set_prompt_tokens(static_cast<int64_t>(prompt_.size()));
  stats_.set_policy(policy_name_);
  stats_.set_budget(spec_ ? budget_ : 0);
  stats_.set_kv_mode(std::string(OffloadModeName(KvMode())));
  stats_.set_worker(address_);
  stats_.set_cache(s_.cache_->Describe());

  // The cache service: any failure from here on ends the request with the error, and the next
  // request reconnects.
  StatusOr<std::shared_ptr<CacheClient>> connected = s_.cache_->Get();
  if (!connected.ok()) return connected.status();
  client_ = *connected;
  Status s = RunWithCache();
  if (!s.ok() && cache_failed_) s_.cache_->MarkBroken(client_);
  return s;
}

// Marks a cache-service error: the connection is dropped at the end of the request.
Status WorkerService::Request::Cache(Status s) {
  if (!s.ok()) cache_failed_ = true;
  return s;
}

Status WorkerService::Request::RunWithCache() {
  const WorkerServiceOptions& o = s_.options_;
  const ModelConfig& c = s_.model_.config();
  OffloadOptions oo;
  oo.mode = KvMode();
  oo.name_space = o.key_namespace;
  oo.fingerprint = s_.fingerprint_;
  oo.prefill_chunk = o.prefill_chunk;
  oo.attention = attention_;
  // Shared prefix: Prefill imports the longest published prefix instead of computing it, but
  // prefills at least one token (the logits) and, with a policy, the last 64 (the policy is seeded
  // from their attention rows).
  oo.import_prefix = o.prefix_reuse && !request_.no_prefix_reuse();
  // Every mode but resident needs the KV in the cache service; resident may skip publishing.
  oo.publish = oo.mode != OffloadMode::kResident || (o.publish && !request_.no_publish());
  StatusOr<std::unique_ptr<OffloadedSequence>> created = OffloadedSequence::Create(s_.model_, client_.get(), spec_, oo);
  if (!created.ok()) return created.status();
  OffloadedSequence& seq = **created;

  std::vector<float> logits;
  const auto t_prefill = Clock::now();
  FS_RETURN_IF_ERROR(Cache(seq.Prefill(prompt_, &logits)));
  const double prefill_total = Seconds(t_prefill, Clock::now());
  {
    const OffloadStats st = seq.stats();
    const int64_t hit = st.prefix_blocks_imported * seq.sequence().kv().layout().block_tokens();
    stats_.set_prefix_hit_tokens(hit);
    stats_.set_prefix_import_seconds(st.import_seconds);
    stats_.set_prefill_tokens(static_cast<int64_t>(prompt_.size()) - hit);
    stats_.set_prefill_seconds(std::max(0.0, prefill_total - st.import_seconds));
    if (stats_.prefill_seconds() > 0) {
      stats_.set_prefill_tokens_per_second(static_cast<double>(stats_.prefill_tokens()) / stats_.prefill_seconds());
    }
  }

  const Tokenizer* tok = s_.model_.tokenizer();
  const auto t_decode = Clock::now();
  int64_t decode_steps = 0;
  for (int32_t i = 0; i < request_.max_tokens(); ++i) {
    if (context_->IsCancelled()) return Aborted("the client cancelled the request");
    const TokenId next = static_cast<TokenId>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    FS_RETURN_IF_ERROR(Emit(next));
    stats_.set_finish_reason(StopReason(tok, true, next, i + 1, request_.max_tokens(), seq.position(), c.max_context));
    if (!stats_.finish_reason().empty()) break;
    // A block that cannot be fetched, or fails its checksum, or a publish that fails, ends the
    // request here: the step's logits are never used.
    FS_RETURN_IF_ERROR(Cache(seq.Decode(next, &logits)));
    ++decode_steps;
  }
  stats_.set_decode_seconds(Seconds(t_decode, Clock::now()));
  if (decode_steps > 0 && stats_.decode_seconds() > 0) {
    stats_.set_decode_tokens_per_second(decode_steps / stats_.decode_seconds());
  }
  // Every full block is in the cache service (and findable) before the request reports success,
  // so a request sent after this one, to any worker, can reuse it.
  FS_RETURN_IF_ERROR(Cache(seq.Flush().WithContext("publishing the request's KV")));
  const OffloadStats st = seq.stats();
  stats_.set_blocks_fetched(st.prefix_blocks_imported * (c.n_layers + 1) + st.heads_fetched);
  stats_.set_bytes_fetched(static_cast<int64_t>(st.bytes_fetched));
  // Blocks this request wrote (an imported prefix is adopted, not written again).
  stats_.set_blocks_published((st.blocks_published - st.prefix_blocks_imported) * c.n_layers);
  stats_.set_bytes_published(static_cast<int64_t>(st.bytes_published));
  stats_.set_stalls(st.stalls);
  stats_.set_stall_seconds(st.stall_seconds);
  const SequenceStats& ss = seq.sequence().stats();
  if (ss.decode_tokens > 0) {
    stats_.set_blocks_attended_per_step(static_cast<double>(ss.blocks_attended) / ss.decode_tokens);
    stats_.set_blocks_total_per_step(static_cast<double>(ss.blocks_total) / ss.decode_tokens);
  }
  return Status::OK();
}

WorkerService::WorkerService(const Model& model, std::string model_path, CacheConnection* cache,
                             WorkerServiceOptions options)
    : model_(model),
      model_path_(std::move(model_path)),
      cache_(cache),
      options_(std::move(options)),
      fingerprint_(ModelFingerprint(model)) {}

WorkerService::~WorkerService() = default;

void WorkerService::set_address(std::string address) {
  MutexLock lock(run_mu_);
  address_ = std::move(address);
}

grpc::Status WorkerService::CheckToken(grpc::ServerContext* context) const {
  return CheckBearerToken(*context, options_.token, "worker", "foresight generate --token-file");
}

grpc::Status WorkerService::Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                                     grpc::ServerWriter<v1::GenerateEvent>* writer) {
  if (grpc::Status auth = CheckToken(context); !auth.ok()) return auth;
  const auto arrival = Clock::now();
  MutexLock lock(run_mu_);  // arrival order: gRPC threads queue on the mutex
  Request r(this, context, *request, writer, arrival, address_);
  Status s = r.Run();
  if (!s.ok()) {
    ++failed_;
    spdlog::warn("request failed after {} generated tokens: {}", r.stats().generated_tokens(), s.ToString());
    return ToGrpcStatus(s);
  }
  ++served_;
  const v1::GenerateStats& st = r.stats();
  spdlog::info(
      "request: prompt {} tokens (prefix hit {}), generated {}; prefill {:.1f} tok/s, decode {:.1f} tok/s, "
      "TTFT {:.3f} s",
      st.prompt_tokens(), st.prefix_hit_tokens(), st.generated_tokens(), st.prefill_tokens_per_second(),
      st.decode_tokens_per_second(), st.time_to_first_token_seconds());
  v1::GenerateEvent event;
  *event.mutable_stats() = st;
  writer->Write(event);
  return grpc::Status::OK;
}

grpc::Status WorkerService::Health(grpc::ServerContext* context, const v1::HealthRequest*,
                                   v1::HealthResponse* response) {
  if (grpc::Status auth = CheckToken(context); !auth.ok()) return auth;
  Status s = cache_->Check();
  response->set_status(s.ok() ? "SERVING" : "DEGRADED: cache service " + cache_->Describe() + ": " + s.message());
  return grpc::Status::OK;
}

std::string WorkerService::DefaultPolicyLabel() const {
  std::string name = options_.default_policy;
  std::replace(name.begin(), name.end(), '-', '_');
  predictor::PolicySpec spec;
  StatusOr<predictor::PolicyKind> kind = predictor::ParsePolicyKind(name);
  if (!kind.ok()) return options_.default_policy;  // every request will say why
  spec.kind = *kind;
  PolicyAttentionOptions attention;
  ApplyQueryRefinement(options_.query_refine, &spec, &attention);
  return PolicyLabel(spec);
}

grpc::Status WorkerService::Info(grpc::ServerContext* context, const v1::InfoRequest*, v1::InfoResponse* response) {
  if (grpc::Status auth = CheckToken(context); !auth.ok()) return auth;
  response->set_version("0.1.0");
  response->set_model(model_path_);
  response->set_fingerprint(fingerprint_);
  response->set_n_layers(model_.config().n_layers);
  response->set_max_context(static_cast<int32_t>(model_.config().max_context));
  response->set_cache(cache_->Describe());
  response->set_key_namespace(options_.key_namespace);
  response->set_default_policy(DefaultPolicyLabel());
  response->set_weights(options_.weights_name);
  response->set_default_budget(options_.default_budget);
  response->set_concurrency(1);
  response->set_kv_mode(std::string(OffloadModeName(options_.kv_mode)));
  response->set_requests_served(served_);
  response->set_requests_failed(failed_);
  return grpc::Status::OK;
}

}  // namespace foresight::worker
