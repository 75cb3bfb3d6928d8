#include "worker/service/scheduler.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <optional>
#include <set>
#include <thread>

#include <spdlog/spdlog.h>

#include "common/mutex.h"
#include "worker/backend.h"
#include "worker/generator.h"
#include "worker/policy_attention.h"
#include "worker/sequence.h"
#include "worker/text_stream.h"

namespace foresight::worker {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// Prompts of at most this many tokens (still to prefill) are taken whole into a step beside the
// running decodes, whatever max_decode_slowdown allows (the step stays within step_tokens).
constexpr int64_t kShortPromptTokens = 256;

// In-flight prefix sharing: a request waits for a running request's prefill, and then imports the
// prefix that one published, when doing so saves it at least this many prompt tokens and they
// are at least half its prompt (waiting on a long prompt to save a short system prompt would only
// delay it).
constexpr int64_t kMinSharedPrefixTokens = 256;

// KV bytes one token holds on the worker (every layer's keys and values in half precision).
uint64_t KvBytesPerToken(const ModelConfig& c) {
  return uint64_t{2} * 2 * static_cast<uint64_t>(c.n_layers) * c.n_kv_heads * c.head_dim;
}

}  // namespace

// One request, from Submit to OnFinish.
struct Job {
  uint64_t id = 0;
  ServeRequest request;
  std::shared_ptr<ServeObserver> observer;
  Clock::time_point arrival;
  // The attention it runs: none is dense.
  std::optional<predictor::PolicySpec> spec;
  PolicyAttentionOptions attention{CalibrationSource::kCompactKeys};
  OffloadMode kv_mode = OffloadMode::kResident;
  uint64_t kv_bytes = 0;  // the most KV it may hold on the worker (admission)
  std::optional<Sampler> sampler;
  std::optional<TextStream> text;
  v1::GenerateStats stats;
  // In-flight prefix sharing: the running request whose prefill this one waits for before it
  // starts (0: none), and the prompt tokens it will import from it.
  uint64_t leader = 0;
  int64_t shared_tokens = 0;
  bool flushed_for_followers = false;  // as a leader: its prompt's blocks are findable
  // Starting: Open runs on the I/O thread (the cache lookup, the prefix import); the scheduler
  // thread leaves the job alone until it is back (`starting` false again), then fails it with
  // `start_status` or finishes it if it was cancelled meanwhile.
  bool starting = false;
  std::string cancel_when_started;  // not empty: why it ends once back
  Status start_status;
  // Running (seq is null until started).
  std::shared_ptr<CacheClient> client;
  bool cache_failed = false;
  std::unique_ptr<OffloadedSequence> seq;
  std::vector<float> logits;
  bool decoding = false;  // the prompt is in; each step decodes `next`
  TokenId next = 0;
  int32_t generated = 0;
  int64_t decode_steps = 0;
  Clock::time_point decode_start;
  bool done = false;
};

struct Scheduler::Impl {
  Impl(const Model& m, CacheConnection* c, const SchedulerOptions& o, const std::string& f)
      : model(m),
        cache(c),
        options(o),
        fingerprint(f),
        backend(NewCpuBackend(m)),
        seed_cache(o.seed_cache_bytes > 0 ? std::make_unique<SeedCache>(o.seed_cache_bytes) : nullptr) {}

  // Checks a request and works out what it runs; the errors Submit returns.
  Status Prepare(Job* job) const;
  void Loop();
  // Starts a job: Open on the I/O thread, so that a long prefix import never holds up the steps
  // of the running sequences; the job joins the steps when Started has seen it back.
  void Start(Job* job);
  // The I/O thread's part: connection, sequence, the published prefix looked up and imported.
  // Touches only the job.
  Status Open(Job* job) const;
  // Jobs whose Open is over: failed, cancelled meanwhile, or ready to prefill the rest.
  void Started(const std::vector<uint64_t>& ids);
  void IoLoop();
  // A job that may run in this step: started, not waiting for a leader, not done.
  static bool Ready(const Job& j) { return !j.done && !j.starting && j.seq != nullptr; }
  // The running request still prefilling a prefix of `job`'s prompt worth waiting for (sets
  // job->leader and job->shared_tokens); false if none.
  bool FollowALeader(Job* job) const;
  // Of `shared` prompt tokens, those a follower saves by waiting for `leader`'s prefill.
  static int64_t SavedTokens(const Job& leader, int64_t shared);
  // Whether the job's KV is published (every mode but resident needs the cache service to hold it;
  // resident may skip publishing).
  bool Publishes(const Job& job) const {
    return job.kv_mode != OffloadMode::kResident || (options.serving.publish && job.request.publish);
  }
  // Starts the requests whose leader's prefill is over (its prefix published) or that left.
  void StartFollowers();
  void Step();
  void Emit(Job* job);
  void Finish(Job* job, const Status& status);
  // Marks a cache-service error: the connection is dropped when the job finishes.
  Status Cache(Job* job, Status s) {
    if (!s.ok()) job->cache_failed = true;
    return s;
  }

  const Model& model;
  CacheConnection* const cache;
  const SchedulerOptions& options;
  const std::string& fingerprint;
  // Every job's sequences run on it (the scheduler thread's Run); the I/O thread makes them.
  const std::unique_ptr<Backend> backend;
  // Every job's sequences look up and insert prefill rows here (null: none).
  const std::unique_ptr<SeedCache> seed_cache;

  mutable Mutex mu;
  CondVar wake;
  std::deque<std::unique_ptr<Job>> waiting FS_GUARDED_BY(mu);
  std::set<uint64_t> cancelled FS_GUARDED_BY(mu);
  int32_t running_count FS_GUARDED_BY(mu) = 0;
  uint64_t running_kv FS_GUARDED_BY(mu) = 0;  // the running jobs' kv_bytes
  uint64_t next_id FS_GUARDED_BY(mu) = 1;
  bool stopping FS_GUARDED_BY(mu) = false;
  std::string address FS_GUARDED_BY(mu);
  std::atomic<int64_t> served{0}, failed{0};

  // The scheduler thread's own.
  std::vector<std::unique_ptr<Job>> running;
  std::vector<StepItem> step_items;  // a step's items and the job of each (reused)
  std::vector<Job*> step_owners;
  std::thread thread;

  // The I/O thread: jobs to Open, in order, and those done (back to the scheduler thread).
  std::deque<Job*> to_open FS_GUARDED_BY(mu);
  std::vector<uint64_t> opened FS_GUARDED_BY(mu);
  bool io_stopping FS_GUARDED_BY(mu) = false;  // set once the scheduler thread has returned
  CondVar io_wake;
  int32_t opening = 0;  // the scheduler thread's count of jobs handed over and not yet back
  std::thread io_thread;
};

Status Scheduler::Impl::Prepare(Job* job) const {
  const ServeRequest& r = job->request;
  const ServingOptions& o = options.serving;
  const ModelConfig& c = model.config();
  if (r.max_tokens <= 0) {
    return InvalidArgument("max_tokens must be positive (got " + std::to_string(r.max_tokens) + ")");
  }
  if (r.min_tokens < 0 || r.min_tokens > r.max_tokens) {
    return InvalidArgument("min_tokens must be in [0, max_tokens] (got " + std::to_string(r.min_tokens) + ")");
  }
  if (r.prompt.empty()) return InvalidArgument("the prompt is empty (no tokens)");
  for (TokenId id : r.prompt) {
    if (id < 0 || id >= c.vocab_size) {
      return InvalidArgument("prompt token " + std::to_string(id) + " is outside the vocabulary [0, " +
                             std::to_string(c.vocab_size) + ")");
    }
  }
  const int64_t prompt = static_cast<int64_t>(r.prompt.size());
  if (c.max_context > 0 && prompt >= c.max_context) {
    return OutOfRange("the prompt has " + std::to_string(prompt) + " tokens; the model's context is " +
                      std::to_string(c.max_context));
  }
  FS_ASSIGN_OR_RETURN(Sampler sampler, Sampler::Create(r.sampling));
  job->sampler.emplace(std::move(sampler));

  FS_ASSIGN_OR_RETURN(ServingPlan plan, ResolveServing(o, r.policy, r.budget, prompt, r.max_tokens, c,
                                                       options.kv_mode != OffloadMode::kResident));
  if (plan.fits_budget) {
    spdlog::debug("a request of {} + {} tokens fits ap's budget: dense", prompt, r.max_tokens);
  }
  if (plan.spec) {
    job->spec = std::move(plan.spec);
    job->attention = plan.attention;
    // Dense attention reads every block each step: offloading it would move the whole history
    // every step, so dense requests keep their KV resident (and still publish it).
    job->kv_mode = options.kv_mode;
  }
  job->stats.set_policy(plan.policy);
  job->stats.set_budget(plan.budget);
  if (!plan.weights.empty()) job->stats.set_weights(plan.weights);
  job->stats.set_kv_mode(std::string(OffloadModeName(job->kv_mode)));
  job->stats.set_prompt_tokens(prompt);
  {
    MutexLock lock(mu);
    job->stats.set_worker(address);
  }
  job->stats.set_cache(cache->Describe());

  // What it may hold on the worker: its whole context (the prompt is resident until published,
  // and a resident sequence keeps everything). An upper bound for offloaded modes.
  int64_t tokens = prompt + r.max_tokens;
  if (c.max_context > 0) tokens = std::min<int64_t>(tokens, c.max_context);
  job->kv_bytes = static_cast<uint64_t>(tokens) * KvBytesPerToken(c);
  if (options.kv_budget_bytes > 0 && job->kv_bytes > options.kv_budget_bytes) {
    return OutOfRange("the request needs up to " + std::to_string(job->kv_bytes >> 20) + " MiB of KV (" +
                      std::to_string(tokens) + " tokens); this worker's KV budget is " +
                      std::to_string(options.kv_budget_bytes >> 20) + " MiB");
  }
  job->text.emplace(model.tokenizer(), r.stop);
  return Status::OK();
}

void Scheduler::Impl::Start(Job* job) {
  job->starting = true;
  ++opening;
  {
    MutexLock lock(mu);
    to_open.push_back(job);
  }
  io_wake.Signal();
}

Status Scheduler::Impl::Open(Job* job) const {
  const ServingOptions& o = options.serving;
  FS_ASSIGN_OR_RETURN(job->client, cache->Get());
  OffloadOptions oo;
  oo.mode = job->kv_mode;
  oo.name_space = o.key_namespace;
  oo.fingerprint = fingerprint;
  oo.prefill_chunk = o.prefill_chunk;
  oo.attention = job->attention;
  // Shared prefix: the longest published prefix is imported instead of computed.
  oo.import_prefix = o.prefix_reuse && job->request.prefix_reuse;
  oo.publish = Publishes(*job);
  oo.seed_cache = seed_cache.get();
  FS_ASSIGN_OR_RETURN(job->seq, OffloadedSequence::Create(*backend, job->client.get(), job->spec, oo));
  job->logits.assign(model.config().vocab_size, 0.0f);
  Status s = job->seq->BeginPrefill(job->request.prompt);
  if (!s.ok()) job->cache_failed = true;
  return s;
}

void Scheduler::Impl::IoLoop() {
  while (true) {
    Job* job = nullptr;
    bool stop = false;
    {
      MutexLock lock(mu);
      io_wake.Wait(mu, [&]() FS_REQUIRES(mu) { return !to_open.empty() || io_stopping; });
      if (to_open.empty()) return;
      job = to_open.front();
      to_open.pop_front();
      stop = stopping;
    }
    // A worker shutting down aborts the job anyway: no import for it.
    job->start_status = stop ? Aborted("the worker is shutting down") : Open(job);
    {
      MutexLock lock(mu);
      opened.push_back(job->id);
    }
    wake.Signal();
  }
}

void Scheduler::Impl::Started(const std::vector<uint64_t>& ids) {
  for (uint64_t id : ids) {
    for (auto& j : running) {
      if (j->id != id || !j->starting) continue;
      j->starting = false;
      --opening;
      if (!j->start_status.ok()) {
        Finish(j.get(), j->start_status);
      } else if (!j->cancel_when_started.empty()) {
        Finish(j.get(), Aborted(j->cancel_when_started));
      }
    }
  }
}

int64_t Scheduler::Impl::SavedTokens(const Job& leader, int64_t shared) {
  if (leader.starting) return shared;  // what it imports is not known yet: as if nothing
  // What the leader imported was published already: the follower would import it anyway.
  const int64_t block = leader.seq->kv().layout().block_tokens();
  return shared - std::min(shared, leader.seq->stats().prefix_blocks_imported * block);
}

bool Scheduler::Impl::FollowALeader(Job* job) const {
  const ServeRequest& r = job->request;
  if (!options.serving.prefix_reuse || !r.prefix_reuse) return false;
  const int64_t prompt = static_cast<int64_t>(r.prompt.size());
  for (const auto& other : running) {
    // A leader prefills its prompt now or soon (it may still be opening: looking up and importing
    // what is published) and publishes it.
    if (other->done || other->decoding || other->leader != 0 || !Publishes(*other)) continue;
    // Full blocks of both prompts, the follower keeping at least one token to prefill itself.
    const std::vector<TokenId>& theirs = other->request.prompt;
    const size_t n = std::min(theirs.size(), r.prompt.size() - 1);
    const int64_t common =
        std::mismatch(theirs.begin(), theirs.begin() + static_cast<ptrdiff_t>(n), r.prompt.begin()).first -
        theirs.begin();
    const int64_t shared = common / KvCache::kBlockTokens * KvCache::kBlockTokens;
    if (SavedTokens(*other, shared) >= kMinSharedPrefixTokens && 2 * shared >= prompt && shared > job->shared_tokens) {
      job->leader = other->id;
      job->shared_tokens = shared;
    }
  }
  return job->leader != 0;
}

void Scheduler::Impl::StartFollowers() {
  for (auto& follower : running) {
    if (follower->done || follower->starting || follower->seq != nullptr || follower->leader == 0) continue;
    Job* leader = nullptr;
    for (auto& j : running) {
      if (j->id == follower->leader && !j->done) leader = j.get();
    }
    if (leader != nullptr && leader->starting) continue;  // still opening
    if (leader != nullptr && !leader->decoding) {
      // Still prefilling: wait, unless it turned out to import the shared prefix (published
      // already, so the follower imports it too and need not wait).
      if (SavedTokens(*leader, follower->shared_tokens) >= kMinSharedPrefixTokens) continue;
      leader = nullptr;
    }
    if (leader != nullptr && !leader->flushed_for_followers) {
      // The leader's prompt blocks are queued (its last prefill chunk published them): wait until
      // they are findable. A failure here fails the leader at its end (Finish flushes again); the
      // follower then imports what is there and computes the rest.
      leader->flushed_for_followers = true;
      Status s = Cache(leader, leader->seq->Flush());
      if (!s.ok())
        spdlog::warn("request {}: publishing its prompt for request {}: {}", leader->id, follower->id, s.ToString());
    }
    follower->leader = 0;
    Start(follower.get());
  }
}

void Scheduler::Impl::Emit(Job* job) {
  const Tokenizer* tok = model.tokenizer();
  const ServeRequest& r = job->request;
  const TokenId next = job->sampler->Sample(job->logits.data(), model.config().vocab_size);
  job->next = next;
  job->generated++;
  if (job->generated == 1) job->stats.set_time_to_first_token_seconds(Seconds(job->arrival, Clock::now()));
  job->stats.set_generated_tokens(job->generated);
  // Stop strings, like the end-of-generation token, count from min_tokens on (Generate's rule).
  TextStream::Piece piece = job->text->Add(next, job->generated >= r.min_tokens);
  if (!job->observer->OnToken(next, piece.text)) return Finish(job, Aborted("the client went away"));
  const bool stop_at_eos = !r.ignore_eos && job->generated >= r.min_tokens;
  std::string reason = piece.stopped ? "stop"
                                     : StopReason(tok, stop_at_eos, next, job->generated, r.max_tokens,
                                                  job->seq->position(), model.config().max_context);
  if (reason.empty()) return;
  job->stats.set_finish_reason(reason);
  Finish(job, Status::OK());
}

void Scheduler::Impl::Finish(Job* job, const Status& status_in) {
  Status status = status_in;
  const Clock::time_point now = Clock::now();
  if (job->decoding && job->decode_steps > 0) {
    job->stats.set_decode_seconds(Seconds(job->decode_start, now));
    if (job->stats.decode_seconds() > 0) {
      job->stats.set_decode_tokens_per_second(job->decode_steps / job->stats.decode_seconds());
    }
  }
  if (job->seq != nullptr) {
    OffloadedSequence& seq = *job->seq;
    // Every full block is in the cache service (and findable) before the request reports success,
    // so a request sent after this one, to any worker, can reuse it.
    if (status.ok()) status = Cache(job, seq.Flush().WithContext("publishing the request's KV"));
    const ModelConfig& c = model.config();
    const OffloadStats st = seq.stats();
    job->stats.set_blocks_fetched(st.prefix_blocks_imported * (c.n_layers + 1) + st.heads_fetched);
    job->stats.set_bytes_fetched(static_cast<int64_t>(st.bytes_fetched));
    // Blocks this request wrote (an imported prefix is adopted, not written again).
    job->stats.set_blocks_published((st.blocks_published - st.prefix_blocks_imported) * c.n_layers);
    job->stats.set_bytes_published(static_cast<int64_t>(st.bytes_published));
    job->stats.set_stalls(st.stalls);
    job->stats.set_stall_seconds(st.stall_seconds);
    const SequenceStats& ss = seq.sequence().stats();
    if (ss.decode_tokens > 0) {
      job->stats.set_blocks_attended_per_step(static_cast<double>(ss.blocks_attended) / ss.decode_tokens);
      job->stats.set_blocks_total_per_step(static_cast<double>(ss.blocks_total) / ss.decode_tokens);
    }
  }
  if (job->cache_failed && job->client != nullptr) cache->MarkBroken(job->client);
  std::string tail;
  if (status.ok() && job->stats.finish_reason() != "stop") tail = job->text->Finish();
  if (status.ok()) {
    ++served;
    const v1::GenerateStats& st = job->stats;
    spdlog::info(
        "request {}: prompt {} tokens (prefix hit {}, {} of them by seed rows, imported in {:.3f} s), generated {} "
        "({}); prefill {:.1f} tok/s, decode {:.1f} tok/s, TTFT {:.3f} s",
        job->id, st.prompt_tokens(), st.prefix_hit_tokens(), st.seed_hit_tokens(), st.prefix_import_seconds(),
        st.generated_tokens(), st.finish_reason(), st.prefill_tokens_per_second(), st.decode_tokens_per_second(),
        st.time_to_first_token_seconds());
  } else {
    ++failed;
    spdlog::warn("request {} failed after {} generated tokens: {}", job->id, job->generated, status.ToString());
  }
  job->seq.reset();  // its KV and pool go back now
  job->done = true;
  job->observer->OnFinish(status, job->stats, tail);
}

void Scheduler::Impl::Step() {
  std::vector<StepItem>& items = step_items;
  std::vector<Job*>& owners = step_owners;
  items.clear();
  owners.clear();
  int64_t budget = std::max(1, options.step_tokens);
  // Every running decode first: one row each.
  for (auto& j : running) {
    if (!j->decoding || j->done) continue;
    StatusOr<StepItem> item = j->seq->DecodeStep(j->next, j->logits.data());
    if (!item.ok()) {
      Finish(j.get(), item.status());
      continue;
    }
    items.push_back(*item);
    owners.push_back(j.get());
    --budget;
  }
  // Then prompts, in arrival order, in chunks, within what is left of the step and the decode
  // slowdown bound (at least one row, so a prompt always advances). A short prompt goes in whole
  // beside the decodes (within the step): one step a little longer, instead of a short request
  // waiting behind many thin chunks.
  const int64_t room = std::max<int64_t>(budget, 1);
  const int64_t decoding = static_cast<int64_t>(items.size());
  if (decoding > 0) {
    budget = std::min<int64_t>(budget, static_cast<int64_t>(std::max(0.0f, options.max_decode_slowdown - 1.0f) *
                                                            static_cast<float>(decoding)));
  }
  budget = std::max<int64_t>(budget, 1);
  int64_t whole = room;  // rows left for short prompts taken whole
  for (auto& j : running) {
    if (j->decoding || !Ready(*j)) continue;
    const int64_t remaining = j->seq->prefill_remaining();
    int64_t take = 0;
    if (remaining <= kShortPromptTokens && remaining <= whole) {
      take = remaining;
    } else if (budget > 0) {
      take = std::min<int64_t>(budget, options.serving.prefill_chunk);
    } else {
      continue;
    }
    items.push_back(j->seq->NextPrefillChunk(take, j->logits.data()));
    owners.push_back(j.get());
    budget -= items.back().n;
    whole -= items.back().n;
  }
  if (items.empty()) return;
  for (Job* job : owners) {
    job->stats.set_max_batch(std::max<int32_t>(job->stats.max_batch(), static_cast<int32_t>(owners.size())));
  }
  backend->Run(&items);
  for (size_t i = 0; i < items.size(); ++i) {
    Job* job = owners[i];
    OffloadedSequence& seq = *job->seq;
    if (job->decoding) {
      // A block that cannot be fetched, or fails its checksum, or a publish that fails, ends the
      // request here: the step's logits are never used.
      Status s = Cache(job, seq.EndDecode(items[i]));
      if (!s.ok()) {
        Finish(job, s);
        continue;
      }
      job->decode_steps++;
      Emit(job);
      continue;
    }
    Status s = Cache(job, seq.EndPrefillChunk(items[i]));
    if (!s.ok()) {
      Finish(job, s);
      continue;
    }
    if (seq.prefill_remaining() > 0) continue;
    const OffloadStats st = seq.stats();
    const int64_t hit = st.prefix_blocks_imported * seq.kv().layout().block_tokens();
    v1::GenerateStats& stats = job->stats;
    stats.set_prefix_hit_tokens(hit);
    stats.set_seed_hit_tokens(st.seed_blocks * seq.kv().layout().block_tokens());
    stats.set_prefix_import_seconds(st.import_seconds);
    stats.set_prefill_tokens(stats.prompt_tokens() - hit);
    stats.set_prefill_seconds(std::max(0.0, st.prefill_seconds - st.import_seconds));
    if (stats.prefill_seconds() > 0) {
      stats.set_prefill_tokens_per_second(static_cast<double>(stats.prefill_tokens()) / stats.prefill_seconds());
    }
    job->decoding = true;
    job->decode_start = Clock::now();
    Emit(job);
  }
}

void Scheduler::Impl::Loop() {
  while (true) {
    std::vector<std::unique_ptr<Job>> admitted, dropped;
    std::set<uint64_t> cancel;
    std::vector<uint64_t> back;
    bool stop = false;
    // Something to step: a started job, or one waiting for a leader that is no longer opening
    // (StartFollowers starts it or lets it wait on the leader's prefill). A follower of a leader
    // still opening waits with the rest for the I/O thread's wake-up instead of spinning here.
    const bool busy = std::any_of(running.begin(), running.end(), [&](const auto& j) {
      if (j->starting) return false;
      if (j->leader == 0) return true;
      return std::none_of(running.begin(), running.end(),
                          [&](const auto& l) { return l->id == j->leader && l->starting; });
    });
    {
      MutexLock lock(mu);
      wake.Wait(mu, [&]() FS_REQUIRES(mu) {
        return stopping || !waiting.empty() || !cancelled.empty() || !opened.empty() || busy;
      });
      stop = stopping;
      cancel.swap(cancelled);
      back.swap(opened);
      for (auto it = waiting.begin(); it != waiting.end();) {
        if (stop || cancel.count((*it)->id) > 0) {
          dropped.push_back(std::move(*it));
          it = waiting.erase(it);
        } else {
          ++it;
        }
      }
      // Admission in arrival order: a job that does not fit the KV budget waits, and so do the
      // ones behind it (no overtaking, so a large request is not starved).
      while (!stop && !waiting.empty() && running_count < options.max_seqs) {
        const uint64_t need = waiting.front()->kv_bytes;
        if (options.kv_budget_bytes > 0 && running_count > 0 && running_kv + need > options.kv_budget_bytes) break;
        running_kv += need;
        ++running_count;
        admitted.push_back(std::move(waiting.front()));
        waiting.pop_front();
      }
    }
    const char* why = stop ? "the worker is shutting down" : "the request was cancelled";
    for (auto& j : dropped) Finish(j.get(), Aborted(why));
    for (auto& j : running) {
      if (!stop && cancel.count(j->id) == 0) continue;
      if (j->starting) {
        j->cancel_when_started = why;  // its Open is under way: it ends once back
      } else if (!j->done) {
        Finish(j.get(), Aborted(why));
      }
    }
    Started(back);
    for (auto& j : admitted) {
      // Requests admitted together may share a prefix: the first starts, the others follow it.
      if (FollowALeader(j.get())) {
        spdlog::info("request {} waits for request {}'s prefill: they share {} prompt tokens", j->id, j->leader,
                     j->shared_tokens);
      } else {
        Start(j.get());
      }
      running.push_back(std::move(j));
    }
    if (!stop) {
      StartFollowers();
      Step();
    }
    while (stop && opening > 0) {
      // Jobs being opened are the I/O thread's until they are back.
      {
        MutexLock lock(mu);
        wake.Wait(mu, [&]() FS_REQUIRES(mu) { return !opened.empty(); });
        back.clear();
        back.swap(opened);
      }
      Started(back);
    }
    // Jobs that finished leave the batch.
    uint64_t freed = 0;
    int32_t left = 0;
    for (auto it = running.begin(); it != running.end();) {
      if ((*it)->done) {
        freed += (*it)->kv_bytes;
        ++left;
        it = running.erase(it);
      } else {
        ++it;
      }
    }
    {
      MutexLock lock(mu);
      running_kv -= freed;
      running_count -= left;
    }
    if (stop) return;
  }
}

Scheduler::Scheduler(const Model& model, CacheConnection* cache, SchedulerOptions options)
    : options_(std::move(options)),
      fingerprint_(ModelFingerprint(model)),
      impl_(std::make_unique<Impl>(model, cache, options_, fingerprint_)) {
  impl_->thread = std::thread([this] { impl_->Loop(); });
  impl_->io_thread = std::thread([this] { impl_->IoLoop(); });
}

Scheduler::~Scheduler() {
  {
    MutexLock lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->wake.SignalAll();
  impl_->thread.join();
  {
    MutexLock lock(impl_->mu);
    impl_->io_stopping = true;
  }
  impl_->io_wake.Signal();
  impl_->io_thread.join();
}

StatusOr<uint64_t> Scheduler::Submit(ServeRequest request, std::shared_ptr<ServeObserver> observer) {
  auto job = std::make_unique<Job>();
  job->request = std::move(request);
  job->observer = std::move(observer);
  job->arrival = Clock::now();
  FS_RETURN_IF_ERROR(impl_->Prepare(job.get()));
  uint64_t id = 0;
  {
    MutexLock lock(impl_->mu);
    if (impl_->stopping) return Unavailable("the worker is shutting down");
    // Room in the next step's batch, or in the queue beyond it.
    const int32_t beyond = impl_->running_count + static_cast<int32_t>(impl_->waiting.size()) - options_.max_seqs;
    if (beyond >= options_.max_waiting) {
      return ResourceExhausted("the worker is busy: " + std::to_string(impl_->running_count) +
                               " requests running and " + std::to_string(impl_->waiting.size()) +
                               " waiting (--max-waiting " + std::to_string(options_.max_waiting) + "); retry later");
    }
    id = impl_->next_id++;
    job->id = id;
    impl_->waiting.push_back(std::move(job));
  }
  impl_->wake.Signal();
  return id;
}

void Scheduler::Cancel(uint64_t id) {
  {
    MutexLock lock(impl_->mu);
    impl_->cancelled.insert(id);
  }
  impl_->wake.Signal();
}

Scheduler::Counts Scheduler::counts() const {
  Counts c;
  if (impl_->cache != nullptr) c.transfer_buffer_bytes = impl_->cache->transfer_buffer_bytes();
  MutexLock lock(impl_->mu);
  c.running = impl_->running_count;
  c.waiting = static_cast<int32_t>(impl_->waiting.size());
  c.served = impl_->served;
  c.failed = impl_->failed;
  return c;
}

void Scheduler::set_address(std::string address) {
  MutexLock lock(impl_->mu);
  impl_->address = std::move(address);
}

std::string Scheduler::DefaultPolicyLabel() const {
  StatusOr<std::string> label = worker::DefaultPolicyLabel(options_.serving);
  return label.ok() ? *label : options_.serving.default_policy;  // every request will say why
}

}  // namespace foresight::worker
