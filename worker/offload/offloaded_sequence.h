// OffloadedSequence: one request run with its KV offloaded to the cache service (issue 5).
//
// The worker holds only part of the KV: sink blocks, the most recent blocks, and a resident pool
// (ResidentPool) of budget/16 + margin blocks per (layer, KV head). Every full block is published
// as it is produced (KvPublisher, write-behind) and, once acknowledged, dropped from the worker.
// Decode attends the blocks the selection policy picks; those not resident are fetched per KV head
// (BlockLayout::head_range) with CacheClient::GetBatchAsync into the pool, and used only after
// their bytes match the producer's per-head checksum.
//
// Modes (OffloadMode): resident (nothing dropped, nothing fetched: the baseline), on-demand (fetch
// a layer's missing blocks when the layer needs them), cross-layer (layer l+1's selection is
// fetched while layer l computes, as InfiniGen), cross-token (right after layer l of step t, the
// policy's selection for layer l at step t+1 is fetched; step t+1 waits only for what has not
// arrived: a stall). `reuse = false` fetches the whole selected set every step (the paper's
// CPU-to-GPU setting). Policies that need the query to select (Quest) cannot be asked ahead: their
// layers fetch on demand in every mode.
//
// Fetch requests: the (block, KV head) units of one layer are grouped by block; the wanted heads
// of a block that lie close together (at most one unwanted head between two wanted ones) are one
// ranged get of the contiguous heads (BlockLayout::heads_range) into a staging buffer, each wanted
// head is checked against the producer's checksum there and copied into its pool slot; a lone
// head goes straight into its slot. Per request the client, the transport and the node pay a
// fixed cost that dwarfs a 4 KiB head (measured: docs/perf-notes.md), so fewer, larger gets.
//
// Calibration: AttentionPredictor's dense calibration rows are scored against a compact int8 key
// copy on the worker (PolicyDecodeAttention, CalibrationSource::kCompactKeys) while attention
// stays over the selected blocks, in every mode (resident included), so all modes give identical
// tokens. Exact calibration (dense attention over every block) is resident-only.
//
// Shared prefixes: Prefill first asks the node for the longest published prefix of the prompt
// (LongestPublishedPrefix) and imports it (ImportPrefix) instead of computing it, all but the last
// 64 prompt positions, whose attention rows seed the policy. With a SeedCache
// (worker/offload/seed_cache.h) holding those rows for the shared blocks (an earlier prefill on
// this worker computed them), they come from there and every shared published block is imported;
// the policy's observation is bit-identical either way. Each prefill gives the cache the rows of
// its last 128 positions' full blocks that it computed.
//
// Backends: the sequence runs on a Backend (worker/backend.h) that can offload (its KV in a host
// KvCache, decode reading blocks from a KvBlockSource: Backend::SupportsOffload); today the CPU's.
// Create refuses any other (the CUDA backend) with an error saying why.
//
//   auto seq = OffloadedSequence::Create(model, client, policy_spec, options);   // a CPU backend
//   auto seq = OffloadedSequence::Create(backend, client, policy_spec, options); // a shared one
//   FS_RETURN_IF_ERROR((*seq)->Prefill(prompt, &logits));
//   for (...) FS_RETURN_IF_ERROR((*seq)->Decode(next, &logits));
//   (*seq)->stats();   // blocks fetched, bytes moved, stalls, prefix blocks imported, ...
//
// Thread-safety: one thread drives an OffloadedSequence; several may run on one Model and one
// CacheClient concurrently.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "client/cache_client.h"
#include "common/status.h"
#include "predictor/selection_policy.h"
#include "worker/backend.h"
#include "worker/model.h"
#include "worker/offload/kv_publisher.h"
#include "worker/offload/seed_cache.h"
#include "worker/policy_attention.h"
#include "worker/sequence.h"

namespace foresight::worker {

enum class OffloadMode { kResident, kOnDemand, kCrossLayer, kCrossToken };
// "resident", "on-demand", "cross-layer", "cross-token".
StatusOr<OffloadMode> ParseOffloadMode(std::string_view name);
std::string_view OffloadModeName(OffloadMode mode);

// Blocks the resident pool holds per (layer, KV head): budget / 16 + margin, the margin chosen as
// OffloadOptions::margin_blocks says (-1: auto). The capacity planner replays this pool
// (planner/churn_table.h).
inline int64_t ResidentPoolBlocksPerHead(int64_t budget_tokens, int64_t group, int64_t margin_blocks) {
  const int64_t budget_blocks = (budget_tokens + 15) / 16;
  const int64_t auto_margin = (group - 1) * budget_blocks + 16;
  return budget_blocks +
         (margin_blocks >= 0 ? margin_blocks : (auto_margin > budget_blocks ? auto_margin : budget_blocks));
}

struct OffloadOptions {
  OffloadMode mode = OffloadMode::kCrossToken;
  bool reuse = true;  // false: every selected non-resident block is fetched every step
  std::string name_space = "default";
  std::string fingerprint;  // empty: ModelFingerprint(model), computed by Create
  // Pool per (layer, KV head) = budget / 16 + margin. -1: room for the union of a KV head's query
  // heads' selections (up to group x budget / 16 blocks: (group - 1) x budget / 16 + 16 more), and
  // at least twice the budget. A KV head fetches that union, which exceeds one head's budget (more
  // when each query head refines by its own query), and a pool that barely holds it evicts blocks
  // the next step needs (docs/perf-notes.md, "the LRU touch and the pool margin"); one smaller than
  // a step's prefetches, all pinned until used, fails the step.
  int64_t margin_blocks = -1;
  // Staging for coalesced gets (see the class comment), split evenly between layers; a layer
  // whose share is taken falls back to one get per head. -1: as large as the pool (a whole step
  // of no-reuse fetches is in flight at once in cross-token mode); 0: no coalescing.
  int64_t staging_bytes = -1;
  int64_t sink_blocks = 4;    // blocks [0, sink) are never dropped
  int64_t local_blocks = 8;   // the most recent full blocks are never dropped
  bool publish = true;        // publish KV (required by every mode but resident)
  bool import_prefix = true;  // Prefill imports the longest published prefix
  int32_t prefill_chunk = 512;
  // How the policy attends (worker/policy_attention.h). Calibration rows come from the compact key
  // copy (exact calibration attends every block densely: resident only). Query-refined
  // AttentionPredictor (ApplyQueryRefinement): with `lookahead_query`, cross-token fetches layer
  // l + 1's query share while layer l computes; `speculative_blocks` steers what is prefetched a
  // step ahead otherwise.
  PolicyAttentionOptions attention{CalibrationSource::kCompactKeys};
  KvPublisherOptions publisher;
  // Pooled prefill rows shared between this worker's requests (must outlive the sequence); null:
  // the policy's rows are always prefilled. Used with a policy only.
  SeedCache* seed_cache = nullptr;
};

struct OffloadStats {
  int64_t prefix_blocks_imported = 0;
  int64_t seed_blocks = 0;           // of those, blocks imported because the seed cache held their rows
  int64_t seed_blocks_captured = 0;  // blocks whose rows this prefill gave the seed cache
  double import_seconds = 0;
  int64_t prefill_tokens = 0;
  double prefill_seconds = 0;  // import included
  int64_t decode_tokens = 0;
  double decode_seconds = 0;
  int64_t heads_fetched = 0;               // (layer, block, KV head) units fetched (and verified)
  int64_t fetch_requests = 0;              // the gets that brought them (fewer when heads are coalesced)
  uint64_t bytes_fetched = 0;              // moved by those gets (unwanted heads in a coalesced range too) and imports
  int64_t pool_hits = 0, pool_misses = 0;  // selected non-resident units found / not found in the pool
  int64_t stalls = 0;                      // (step, layer) pairs that fetched on demand or waited > 50 us
  double stall_seconds = 0;                // time the decode waited for fetches (client checksum included)
  double verify_seconds = 0;               // end-to-end per-head checksum checks of fetched bytes
  int64_t pool_evictions = 0;
  int64_t blocks_published = 0;
  uint64_t bytes_published = 0;
  double offload_wait_seconds = 0;  // publish back-pressure
  uint64_t resident_kv_bytes = 0;   // worker KV storage after the last step (pool excluded)
  uint64_t pool_bytes = 0;
  uint64_t staging_bytes = 0;
};

class ResidentPool;

class OffloadedSequence : public KvBlockSource {
 public:
  // `policy` null: dense attention (every block, so every mode but resident moves the whole
  // history; useful only as a check). `client` must outlive the sequence; it may be null only in
  // resident mode with publish = false. The sequence runs on `backend` (which must outlive it);
  // UNIMPLEMENTED when that backend cannot offload (Backend::SupportsOffload).
  static StatusOr<std::unique_ptr<OffloadedSequence>> Create(Backend& backend, CacheClient* client,
                                                             const std::optional<predictor::PolicySpec>& policy,
                                                             OffloadOptions options);
  // On a CPU backend of `model` of its own.
  static StatusOr<std::unique_ptr<OffloadedSequence>> Create(const Model& model, CacheClient* client,
                                                             const std::optional<predictor::PolicySpec>& policy,
                                                             OffloadOptions options);
  ~OffloadedSequence() override;

  // The prompt, once, before any Decode. Imports the published prefix when asked, prefills the
  // rest densely, seeds the policy, publishes. `logits`: the last token's.
  Status Prefill(const std::vector<TokenId>& prompt, std::vector<float>* logits);
  // Benchmarks only: a context of `tokens` random KV (Sequence::TEST_FillRandomKv) with token ids
  // `ids` (for keys), published like a prefill; the policy starts without prefill history.
  Status TEST_FillRandom(const std::vector<TokenId>& ids, uint32_t seed);
  // One token; logits of the next. An error (a block that cannot be fetched or fails its
  // checksum, a failed publish) ends the request: the sequence is not advanced.
  Status Decode(TokenId token, std::vector<float>* logits);
  // Waits for every queued publish.
  Status Flush();

  // Prefill and Decode a step at a time, for a scheduler that runs several sequences in one
  // forward pass (Backend::Run, worker/backend.h); Prefill and Decode are these with a batch of
  // one. BeginPrefill imports the published prefix and makes the policy; then, while
  // prefill_remaining() > 0, NextPrefillChunk gives the next chunk (at most `max_tokens`; the last
  // writes the prompt's logits to `logits` [vocab]) and EndPrefillChunk takes it back after the
  // step ran (the last seeds the policy and publishes). DecodeStep / EndDecode are one Decode. The
  // items point into this sequence: keep it alive and unchanged until the End call.
  Status BeginPrefill(const std::vector<TokenId>& prompt);
  int64_t prefill_remaining() const { return prompt_tokens_ - prefill_at_; }
  StepItem NextPrefillChunk(int64_t max_tokens, float* logits);
  Status EndPrefillChunk(const StepItem& item);
  StatusOr<StepItem> DecodeStep(TokenId token, float* logits);
  Status EndDecode(const StepItem& item);

  int64_t position() const { return seq_->position(); }
  const std::vector<TokenId>& tokens() const { return tokens_; }
  OffloadStats stats() const;
  const BackendSequence& sequence() const { return *seq_; }
  Backend& backend() const { return backend_; }
  // The sequence's KV on the worker (blocks dropped once published and acknowledged).
  const KvCache& kv() const { return *seq_->host_kv(); }
  const OffloadOptions& options() const { return options_; }
  // Tests: the policy (null before BeginPrefill or without one).
  PolicyDecodeAttention* TEST_policy() const { return policy_.get(); }

  // KvBlockSource (called by the backend's decode step).
  Status AcquireLayer(int32_t layer, int64_t position, const std::vector<std::vector<int32_t>>& blocks,
                      std::vector<std::vector<const uint16_t*>>* heads) override;
  void ReleaseLayer(int32_t layer, int64_t position) override;

 private:
  OffloadedSequence(Backend& backend, CacheClient* client, OffloadOptions options);
  Status AfterContext();  // publish, drop, after prefill/fill
  // With a seed cache: the rows of the prompt's blocks [from, upto) it holds, the consecutive run
  // from `from`.
  std::vector<std::shared_ptr<const SeedRows>> FindSeedRows(int64_t from, int64_t upto) const;
  // With a seed cache: captures the rows of the last 128 positions' full blocks from `from` on
  // that the cache does not hold yet.
  void StartCapture(int64_t from, int64_t prompt_tokens);
  // With a policy: makes it for a prompt of `prompt_tokens` of which `imported` blocks are
  // imported, hands it the rows of `seeds` and starts the seed capture. Reads nothing of the KV,
  // so it may run on another thread while the import fills the KV.
  Status MakePolicy(int64_t prompt_tokens, int64_t imported, const std::vector<std::shared_ptr<const SeedRows>>& seeds);
  Status Publish();
  Status DropAcknowledged();
  // Queues fetches of `blocks` (per KV head) of `layer` that are neither resident nor pooled.
  void Prefetch(int32_t layer, const std::vector<std::vector<int32_t>>& blocks, int64_t step);
  struct FetchUnit;
  // Sends one batch for `units` (pool entries inserted and pinned for them): coalesced gets where
  // the staging allows, one get per unit otherwise. Takes `units`.
  void SendFetches(int32_t layer, std::vector<FetchUnit>* units);
  void PrefetchNext(int32_t layer, int64_t key_tokens, int64_t step);
  // Completes every outstanding fetch of `layer`; the first failure, if any.
  Status CompleteFetches(int32_t layer);
  void AbandonFetches();
  bool Dropped(int64_t block) const { return block >= options_.sink_blocks && block < dropped_upto_; }
  int64_t DropBound() const;

  const Model& model_;
  std::unique_ptr<Backend> owned_backend_;  // Create(model, ...)'s CPU backend; else null
  Backend& backend_;
  CacheClient* const client_;
  const OffloadOptions options_;
  std::optional<predictor::PolicySpec> spec_;
  std::unique_ptr<BackendSequence> seq_;
  std::vector<TokenId> tokens_;
  std::unique_ptr<PolicyDecodeAttention> policy_;
  // With a seed cache: the prompt's full blocks' prefix chains, and the rows being captured.
  std::vector<BlockKey> chains_;
  std::unique_ptr<SeedRowCapture> capture_;
  std::unique_ptr<KvPublisher> publisher_;
  std::unique_ptr<ResidentPool> pool_;
  uint8_t* pool_buffer_ = nullptr;  // the pool's slots, from client_->AllocateBuffer (released when done)
  struct FetchState;
  std::unique_ptr<FetchState> fetch_;
  int64_t dropped_upto_ = 0;  // blocks [sink, dropped_upto_) are dropped from seq_'s KV
  OffloadStats stats_;
  std::vector<float> logits_scratch_;
  // The stepwise form's state: prompt tokens [0, prefill_at_) are in the KV; the token of the
  // decode step in flight; when the prefill and the step began.
  int64_t prompt_tokens_ = 0, prefill_at_ = 0;
  TokenId decode_token_ = 0;
  double prefill_t0_ = 0, decode_t0_ = 0;
  std::vector<StepItem> alone_items_;  // Prefill and Decode's batch of one
};

}  // namespace foresight::worker
