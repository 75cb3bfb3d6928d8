// Scheduler: continuous batching for one Model on one worker (issue 19). Every front end (the gRPC
// WorkerService, the OpenAI-compatible HTTP API) submits requests here; one thread runs them. A
// second thread opens each admitted request (its cache connection, the lookup and import of the
// longest published prefix of its prompt), so that importing a long prefix never holds up the
// steps of the sequences already running; the request joins the steps once it is open.
//
// Each step is one forward pass over up to `max_seqs` running sequences: the weight matrices are
// multiplied once for all of the step's token rows (one GEMM per weight, not one GEMV per
// sequence), attention runs per sequence with its own policy, budget and KV offload (the cache
// service's cross-token prefetch keeps working per sequence). A step holds at most `step_tokens`
// rows: every running decode first, then prefill chunks of the waiting prompts, bounded so that a
// long prompt slows running decodes by at most `max_decode_slowdown`. Requests join and leave at step boundaries. A
// cancelled request (the client went away) frees its sequence before the next step.
//
// Admission: at most `max_seqs` sequences run and `max_waiting` wait; beyond that Submit says
// RESOURCE_EXHAUSTED. A request whose KV would not fit the `kv_budget_bytes` left by the running
// sequences waits (it never runs the worker out of memory); one that could never fit is refused.
//
// Exactness: a sequence's tokens do not depend on what else runs in its steps (each row's
// arithmetic is the same alone or batched), so greedy output alone and batched is identical.
//
// Thread-safety: Submit, Cancel and counts may be called from any thread. Observers are called on
// the scheduler's thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "predictor/cnn_weights.h"
#include "predictor/selection_policy.h"
#include "proto/worker.pb.h"
#include "worker/model.h"
#include "worker/offload/offloaded_sequence.h"
#include "worker/sampler.h"
#include "worker/service/cache_connection.h"
#include "worker/serving_options.h"

namespace foresight::worker {

struct SchedulerOptions {
  ServingOptions serving;  // policies and their defaults (worker/serving_options.h), namespace, prefixes
  // Where a sparse request's KV lives during decode (worker/offload/offloaded_sequence.h); dense
  // requests keep theirs resident.
  OffloadMode kv_mode = OffloadMode::kCrossToken;
  int32_t max_seqs = 8;       // sequences in one step
  int32_t max_waiting = 64;   // queued beyond those; more is RESOURCE_EXHAUSTED
  int32_t step_tokens = 512;  // token rows per step: the running decodes, then prefill chunks
  // While sequences decode, a step holds at most (max_decode_slowdown - 1) prompt rows per
  // decoding row (at least one), so a long prompt slows running decodes by about this factor at
  // most (a step's time grows with its rows on a CPU); with none decoding, prompts fill the step.
  // A short prompt (256 tokens or fewer left) goes in whole, within step_tokens.
  float max_decode_slowdown = 3.0f;
  uint64_t kv_budget_bytes = 0;  // worker-resident KV of the running sequences; 0: no limit
  // Pooled prefill rows the requests share (worker/offload/seed_cache.h), so that a request
  // sharing a published prefix with an earlier one on this worker prefills only what follows
  // it; 0: none (the last 64 prompt tokens are always prefilled).
  uint64_t seed_cache_bytes = uint64_t{512} << 20;
};

// One generation request, as every front end hands it over (already tokenised).
struct ServeRequest {
  std::vector<TokenId> prompt;
  int32_t max_tokens = 16;        // > 0
  int32_t min_tokens = 0;         // EOS and stop strings do not end generation before this many tokens
  bool ignore_eos = false;        // generate max_tokens whatever the model says (benchmarks)
  std::vector<std::string> stop;  // stop strings (worker/text_stream.h)
  SamplingParams sampling;
  std::string policy;  // "" : the worker's default
  int32_t budget = 0;  // 0: the worker's default
  bool prefix_reuse = true;
  bool publish = true;
};

// Hears one request's output, on the scheduler's thread, in order. Keep each call short (queue the
// bytes; never wait for a slow client).
class ServeObserver {
 public:
  virtual ~ServeObserver() = default;
  // A generated token and the text it releases (worker/text_stream.h; may be empty). Return false
  // when the client is gone: the request is cancelled and OnFinish follows with ABORTED.
  virtual bool OnToken(TokenId id, const std::string& text) = 0;
  // Exactly once, last. OK: stats.finish_reason() is "eos", "stop", "max_tokens" or "context", and
  // `text` is what the stream still held back. Otherwise the error (statistics so far).
  virtual void OnFinish(const Status& status, const v1::GenerateStats& stats, const std::string& text) = 0;
};

class Scheduler {
 public:
  Scheduler(const Model& model, CacheConnection* cache, SchedulerOptions options);
  ~Scheduler();  // cancels what runs and waits (ABORTED), then joins

  // Checks the request (INVALID_ARGUMENT / OUT_OF_RANGE / FAILED_PRECONDITION, naming the field)
  // and queues it; RESOURCE_EXHAUSTED when max_waiting requests already wait. The id cancels it.
  StatusOr<uint64_t> Submit(ServeRequest request, std::shared_ptr<ServeObserver> observer);
  // Cancels a queued or running request (OnFinish with ABORTED follows); unknown ids are ignored.
  void Cancel(uint64_t id);

  struct Counts {
    int32_t running = 0;
    int32_t waiting = 0;
    int64_t served = 0;
    int64_t failed = 0;
    uint64_t transfer_buffer_bytes = 0;  // held by the cache client (CacheConnection::transfer_buffer_bytes)
  };
  Counts counts() const;

  const SchedulerOptions& options() const { return options_; }
  const std::string& fingerprint() const { return fingerprint_; }
  // The policy a request without one runs, as its statistics name it (worker/policy_label.h).
  std::string DefaultPolicyLabel() const;
  // The worker's own address, reported in each request's statistics.
  void set_address(std::string address);

 private:
  struct Impl;
  const SchedulerOptions options_;
  const std::string fingerprint_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace foresight::worker
