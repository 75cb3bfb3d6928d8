#include "worker/offload/offloaded_sequence.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <future>
#include <list>

#include "common/checksum.h"
#include "worker/offload/resident_pool.h"

namespace foresight::worker {
namespace {

double Now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

}  // namespace

StatusOr<OffloadMode> ParseOffloadMode(std::string_view name) {
  if (name == "resident") return OffloadMode::kResident;
  if (name == "on-demand") return OffloadMode::kOnDemand;
  if (name == "cross-layer") return OffloadMode::kCrossLayer;
  if (name == "cross-token") return OffloadMode::kCrossToken;
  return InvalidArgument("unknown offload mode '" + std::string(name) +
                         "' (resident, on-demand, cross-layer, cross-token)");
}

std::string_view OffloadModeName(OffloadMode mode) {
  switch (mode) {
    case OffloadMode::kResident:
      return "resident";
    case OffloadMode::kOnDemand:
      return "on-demand";
    case OffloadMode::kCrossLayer:
      return "cross-layer";
    case OffloadMode::kCrossToken:
      return "cross-token";
  }
  return "?";
}

struct OffloadedSequence::FetchUnit {
  int32_t head = 0;
  int32_t block = 0;
  ResidentPool::Entry* entry = nullptr;  // inserted and pinned for this fetch
};

struct OffloadedSequence::FetchState {
  struct Batch {
    int32_t layer = 0;
    std::vector<BlockGet> gets;
    // Get i covers entries[first[i], first[i + 1]); its range starts at KV head first_head[i]; a
    // staged get landed in the staging buffer and is copied into the pool after verification.
    std::vector<ResidentPool::Entry*> entries;
    std::vector<size_t> first;
    std::vector<int32_t> first_head;
    std::vector<bool> staged;
    bool holds_staging = false;
    std::future<Status> done;
  };
  std::list<Batch> batches;                               // outstanding, oldest first
  std::vector<std::vector<ResidentPool::Entry*>> pinned;  // per layer: pinned by the attention
  // Per layer: pool entries a prefetch found already there, pinned until the layer's step uses
  // them, so that the prefetches of other layers cannot evict them first.
  std::vector<std::vector<ResidentPool::Entry*>> reserved;
  std::vector<ResidentPool::Entry*> failed;  // fetched wrong or not at all
  int64_t step = 0;                          // the decode step being computed
  // Staging: layer l owns bytes [l * share, (l + 1) * share), handed out front to back and free
  // again once none of the layer's batches is outstanding (a layer has at most two at once: its
  // prefetch and its on-demand batch, both completed by the layer's AcquireLayer).
  uint8_t* staging = nullptr;
  uint64_t share = 0;
  std::vector<uint64_t> staging_used;
  std::vector<int32_t> staging_batches;

  void ReleaseStaging(const Batch& b) {
    if (b.holds_staging && --staging_batches[b.layer] == 0) staging_used[b.layer] = 0;
  }
};

OffloadedSequence::OffloadedSequence(Backend& backend, CacheClient* client, OffloadOptions options)
    : model_(backend.model()),
      backend_(backend),
      client_(client),
      options_(std::move(options)),
      fetch_(std::make_unique<FetchState>()) {
  const Model& model = model_;
  fetch_->pinned.resize(model.config().n_layers);
  fetch_->reserved.resize(model.config().n_layers);
  fetch_->staging_used.assign(model.config().n_layers, 0);
  fetch_->staging_batches.assign(model.config().n_layers, 0);
}

OffloadedSequence::~OffloadedSequence() {
  // Nothing lands in the pool or the staging after this; then both go back to the client, for the
  // next sequence (no new mapping, no page faults).
  AbandonFetches();
  if (client_ != nullptr) {
    client_->ReleaseBuffer(pool_buffer_);
    client_->ReleaseBuffer(fetch_->staging);
  }
}

StatusOr<std::unique_ptr<OffloadedSequence>> OffloadedSequence::Create(
    const Model& model, CacheClient* client, const std::optional<predictor::PolicySpec>& policy,
    OffloadOptions options) {
  std::unique_ptr<Backend> cpu = NewCpuBackend(model);
  FS_ASSIGN_OR_RETURN(std::unique_ptr<OffloadedSequence> s, Create(*cpu, client, policy, std::move(options)));
  s->owned_backend_ = std::move(cpu);
  return s;
}

StatusOr<std::unique_ptr<OffloadedSequence>> OffloadedSequence::Create(
    Backend& backend, CacheClient* client, const std::optional<predictor::PolicySpec>& policy, OffloadOptions options) {
  FS_RETURN_IF_ERROR(backend.SupportsOffload().WithContext("an offloaded sequence"));
  const Model& model = backend.model();
  const bool offload = options.mode != OffloadMode::kResident;
  if (offload && !options.publish)
    return InvalidArgument("offload mode " + std::string(OffloadModeName(options.mode)) + " needs publish");
  if ((offload || options.publish || options.import_prefix) && client == nullptr) {
    return InvalidArgument("offload, publishing and prefix import need a cache client");
  }
  if (offload && !policy.has_value()) {
    return InvalidArgument("offload mode " + std::string(OffloadModeName(options.mode)) +
                           " needs a selection policy (dense attention would move the whole history every step)");
  }
  if (options.sink_blocks < 0 || options.local_blocks < 1 || options.margin_blocks < -1) {
    return InvalidArgument("sink_blocks >= 0, local_blocks >= 1 and margin_blocks >= -1 (auto) are required");
  }
  if (offload && options.attention.calibration == CalibrationSource::kExact &&
      policy->kind == predictor::PolicyKind::kAttentionPredictor && policy->calibration_period > 0) {
    return InvalidArgument(
        "exact calibration attends every block densely; offloaded modes need compact-key calibration");
  }
  if (options.fingerprint.empty() && client != nullptr) options.fingerprint = ModelFingerprint(model);
  std::unique_ptr<OffloadedSequence> s(new OffloadedSequence(backend, client, std::move(options)));
  FS_ASSIGN_OR_RETURN(s->seq_, backend.NewSequence(s->options_.prefill_chunk));
  if (s->seq_->host_kv() == nullptr) {
    return Unimplemented("an offloaded sequence: the " + std::string(backend.name()) +
                         " backend keeps no KV in host memory to publish and drop");
  }
  s->spec_ = policy;
  const OffloadOptions& o = s->options_;
  const ModelConfig& c = model.config();
  if (o.publish) {
    s->publisher_ =
        std::make_unique<KvPublisher>(client, o.name_space, o.fingerprint, c.n_layers, s->kv().layout(), o.publisher);
  }
  if (offload) {
    const BlockLayout& layout = s->kv().layout();
    const int64_t per_head =
        ResidentPoolBlocksPerHead(policy->budget.budget_tokens, c.n_heads / c.n_kv_heads, o.margin_blocks);
    const int64_t slots = int64_t{c.n_layers} * c.n_kv_heads * per_head;
    FS_ASSIGN_OR_RETURN(s->pool_buffer_, client->AllocateBuffer(slots * layout.head_bytes()));
    s->pool_ = std::make_unique<ResidentPool>(s->pool_buffer_, layout.head_bytes(), slots);
    const int64_t staging = o.staging_bytes < 0 ? slots * static_cast<int64_t>(layout.head_bytes()) : o.staging_bytes;
    const uint64_t share = static_cast<uint64_t>(staging) / c.n_layers / layout.head_bytes() * layout.head_bytes();
    if (share >= 2 * layout.head_bytes()) {  // room for at least one coalesced pair per layer
      FS_ASSIGN_OR_RETURN(s->fetch_->staging, client->AllocateBuffer(share * c.n_layers));
      s->fetch_->share = share;
    }
  }
  return s;
}

int64_t OffloadedSequence::DropBound() const {
  if (publisher_ == nullptr) return 0;
  const int64_t full = seq_->position() / kv().block_tokens();
  return std::max<int64_t>(0, std::min(publisher_->acknowledged_blocks(), full - options_.local_blocks));
}

Status OffloadedSequence::DropAcknowledged() {
  if (options_.mode == OffloadMode::kResident) return Status::OK();
  const int64_t bound = DropBound();
  FS_RETURN_IF_ERROR(seq_->DropBlocks(std::max(dropped_upto_, options_.sink_blocks), bound));
  dropped_upto_ = std::max(dropped_upto_, bound);
  return Status::OK();
}

Status OffloadedSequence::Publish() {
  if (publisher_ == nullptr) return Status::OK();
  FS_RETURN_IF_ERROR(publisher_->Publish(tokens_, kv()));
  return DropAcknowledged();
}

Status OffloadedSequence::AfterContext() {
  if (policy_ != nullptr) policy_->PrepareKeys(kv());
  if (publisher_ != nullptr) {
    FS_RETURN_IF_ERROR(publisher_->Publish(tokens_, kv()));
    // Offloaded modes start decoding with the context in the cache service and off the worker.
    if (options_.mode != OffloadMode::kResident) FS_RETURN_IF_ERROR(publisher_->Flush());
    FS_RETURN_IF_ERROR(DropAcknowledged());
  }
  if (options_.mode == OffloadMode::kCrossToken) {
    for (int32_t l = 0; l < model_.config().n_layers; ++l) PrefetchNext(l, seq_->position() + 1, 0);
  }
  return Status::OK();
}

std::vector<std::shared_ptr<const SeedRows>> OffloadedSequence::FindSeedRows(int64_t from, int64_t upto) const {
  std::vector<std::shared_ptr<const SeedRows>> rows;
  for (int64_t b = from; b < upto; ++b) {
    std::shared_ptr<const SeedRows> r = options_.seed_cache->Lookup(chains_[b]);
    if (r == nullptr) break;
    rows.push_back(std::move(r));
  }
  return rows;
}

void OffloadedSequence::StartCapture(int64_t from, int64_t prompt_tokens) {
  constexpr int64_t kCapturedPositions = 128;
  const int64_t bt = SeedRows::kBlockTokens;
  const int64_t first = std::max(from, (std::max<int64_t>(0, prompt_tokens - kCapturedPositions) + bt - 1) / bt);
  const int64_t full = prompt_tokens / bt;
  std::vector<std::shared_ptr<SeedRows>> blocks;
  bool any = false;
  for (int64_t b = first; b < full; ++b) {
    if (options_.seed_cache->Contains(chains_[b])) {
      blocks.push_back(nullptr);
      continue;
    }
    blocks.push_back(std::make_shared<SeedRows>(model_.config().n_layers, model_.config().n_heads, b));
    any = true;
  }
  if (any) capture_ = std::make_unique<SeedRowCapture>(policy_.get(), first, std::move(blocks));
}

Status OffloadedSequence::MakePolicy(int64_t prompt_tokens, int64_t imported,
                                     const std::vector<std::shared_ptr<const SeedRows>>& seeds) {
  if (!spec_.has_value()) return Status::OK();
  FS_ASSIGN_OR_RETURN(policy_,
                      PolicyDecodeAttention::Create(model_.config(), *spec_, prompt_tokens, options_.attention));
  // The seeded rows first, in query order per head, as the prefill would have handed them over.
  const ModelConfig& c = model_.config();
  const int64_t bt = SeedRows::kBlockTokens;
  for (const std::shared_ptr<const SeedRows>& rows : seeds) {
    for (int32_t l = 0; l < c.n_layers; ++l) {
      for (int32_t h = 0; h < c.n_heads; ++h) {
        for (int32_t r = 0; r < SeedRows::kBlockTokens; ++r) {
          policy_->OnPooledRow(l, h, rows->block() * bt + r, rows->block_max(l, h, r), rows->block_sum(l, h, r),
                               rows->width());
        }
      }
    }
  }
  if (options_.seed_cache != nullptr) StartCapture(imported, prompt_tokens);
  return Status::OK();
}

Status OffloadedSequence::BeginPrefill(const std::vector<TokenId>& prompt) {
  if (seq_->position() != 0 || !tokens_.empty()) return FailedPrecondition("Prefill runs once, on an empty sequence");
  if (prompt.empty()) return InvalidArgument("prefill needs at least one token");
  prefill_t0_ = Now();
  const int64_t p = static_cast<int64_t>(prompt.size());
  const int64_t bt = kv().block_tokens();
  const bool seeding = options_.seed_cache != nullptr && spec_.has_value();
  const bool importing = options_.import_prefix && client_ != nullptr;
  // The prompt's chain keys, once: the published-prefix lookup and the seed cache both use them.
  if (seeding || importing) chains_ = PromptChains(options_.name_space, options_.fingerprint, prompt);
  int64_t imported = 0;
  std::vector<std::shared_ptr<const SeedRows>> seeds;
  bool policy_made = false;
  if (importing) {
    FS_ASSIGN_OR_RETURN(int64_t published, LongestPublishedPrefix(client_, options_.name_space, chains_));
    // Keep the last 64 prompt tokens (at least one) to prefill: the policy learns from their rows.
    const int64_t keep = spec_.has_value() ? std::min<int64_t>(64, p) : 1;
    imported = std::min(published, (p - keep) / bt);
    // Rows the seed cache holds need no prefill: import further, up to the last published block
    // and at least one token short of the prompt (its logits).
    if (seeding) seeds = FindSeedRows(imported, std::min(published, (p - 1) / bt));
    imported += static_cast<int64_t>(seeds.size());
    if (imported > 0) {
      // The policy (its prefill recorders: 62 MB at 7K tokens for SmolLM2), its seeded rows and
      // the seed capture do not depend on the imported KV: they are made on a thread of their own
      // while the import waits on the cache service.
      std::future<Status> made =
          std::async(std::launch::async, [this, p, imported, &seeds] { return MakePolicy(p, imported, seeds); });
      ImportStats st;
      Status s = ImportPrefix(client_, options_.name_space, options_.fingerprint, prompt, imported, seq_.get(), &st);
      Status m = made.get();
      FS_RETURN_IF_ERROR(s);
      FS_RETURN_IF_ERROR(m);
      policy_made = true;
      stats_.import_seconds += st.seconds;
      stats_.prefix_blocks_imported = imported;
      stats_.seed_blocks = static_cast<int64_t>(seeds.size());
      stats_.bytes_fetched += st.bytes;
      if (publisher_ != nullptr) FS_RETURN_IF_ERROR(publisher_->Adopt(prompt, kv(), imported));
    }
  }
  if (!policy_made) FS_RETURN_IF_ERROR(MakePolicy(p, imported, seeds));
  tokens_ = prompt;
  prompt_tokens_ = p;
  prefill_at_ = imported * bt;
  return Status::OK();
}

StepItem OffloadedSequence::NextPrefillChunk(int64_t max_tokens, float* logits) {
  StepItem item;
  item.sequence = seq_.get();
  item.tokens = tokens_.data() + prefill_at_;
  item.n = std::min(std::max<int64_t>(1, max_tokens), prefill_remaining());
  item.logits = item.n == prefill_remaining() ? logits : nullptr;
  item.observer = capture_ != nullptr ? static_cast<PrefillAttentionObserver*>(capture_.get()) : policy_.get();
  item.prefill = true;
  return item;
}

Status OffloadedSequence::EndPrefillChunk(const StepItem& item) {
  FS_RETURN_IF_ERROR(item.status);
  prefill_at_ += item.n;
  if (prefill_remaining() > 0) return Status::OK();
  if (capture_ != nullptr) {
    for (size_t i = 0; i < capture_->blocks().size(); ++i) {
      const std::shared_ptr<SeedRows>& rows = capture_->blocks()[i];
      if (rows == nullptr) continue;
      options_.seed_cache->Insert(chains_[rows->block()], rows);
      stats_.seed_blocks_captured++;
    }
    capture_.reset();
  }
  if (policy_ != nullptr) FS_RETURN_IF_ERROR(policy_->FinishPrefill());
  FS_RETURN_IF_ERROR(AfterContext());
  stats_.prefill_tokens += prompt_tokens_;
  stats_.prefill_seconds += Now() - prefill_t0_;
  return Status::OK();
}

Status OffloadedSequence::Prefill(const std::vector<TokenId>& prompt, std::vector<float>* logits) {
  FS_RETURN_IF_ERROR(BeginPrefill(prompt));
  if (logits != nullptr) logits->assign(model_.config().vocab_size, 0.0f);
  alone_items_.resize(1);
  while (prefill_remaining() > 0) {
    alone_items_[0] = NextPrefillChunk(options_.prefill_chunk, logits != nullptr ? logits->data() : nullptr);
    backend_.Run(&alone_items_);
    FS_RETURN_IF_ERROR(EndPrefillChunk(alone_items_[0]));
  }
  return Status::OK();
}

Status OffloadedSequence::TEST_FillRandom(const std::vector<TokenId>& ids, uint32_t seed) {
  if (seq_->position() != 0) return FailedPrecondition("TEST_FillRandom needs an empty sequence");
  FS_RETURN_IF_ERROR(seq_->TEST_FillRandomKv(static_cast<int64_t>(ids.size()), seed));
  tokens_ = ids;
  prompt_tokens_ = prefill_at_ = static_cast<int64_t>(ids.size());
  if (spec_.has_value()) {
    FS_ASSIGN_OR_RETURN(policy_, PolicyDecodeAttention::Create(model_.config(), *spec_,
                                                               static_cast<int64_t>(ids.size()), options_.attention));
    FS_RETURN_IF_ERROR(policy_->FinishPrefill());
  }
  return AfterContext();
}

StatusOr<StepItem> OffloadedSequence::DecodeStep(TokenId token, float* logits) {
  if (seq_->position() == 0 || prefill_remaining() > 0) return FailedPrecondition("Decode needs a prefilled sequence");
  decode_t0_ = Now();
  fetch_->step = stats_.decode_tokens;
  decode_token_ = token;
  StepItem item;
  item.sequence = seq_.get();
  item.tokens = &decode_token_;
  item.n = 1;
  item.logits = logits;
  item.hook = policy_.get();
  item.source = options_.mode != OffloadMode::kResident ? this : nullptr;
  return item;
}

Status OffloadedSequence::EndDecode(const StepItem& item) {
  Status s = item.status;
  if (policy_ != nullptr && !policy_->status().ok()) {
    s = policy_->status().WithContext("selection policy");
  }
  if (!s.ok()) {
    AbandonFetches();
    return s;
  }
  tokens_.push_back(decode_token_);
  FS_RETURN_IF_ERROR(Publish());
  stats_.decode_tokens++;
  stats_.decode_seconds += Now() - decode_t0_;
  return Status::OK();
}

Status OffloadedSequence::Decode(TokenId token, std::vector<float>* logits) {
  if (logits != nullptr) logits->assign(model_.config().vocab_size, 0.0f);
  FS_ASSIGN_OR_RETURN(StepItem item, DecodeStep(token, logits != nullptr ? logits->data() : nullptr));
  alone_items_.assign(1, item);
  backend_.Run(&alone_items_);
  return EndDecode(alone_items_[0]);
}

Status OffloadedSequence::Flush() { return publisher_ != nullptr ? publisher_->Flush() : Status::OK(); }

void OffloadedSequence::Prefetch(int32_t layer, const std::vector<std::vector<int32_t>>& blocks, int64_t step) {
  const int64_t bound = std::max(dropped_upto_, DropBound());
  std::vector<FetchUnit> units;
  bool pool_full = false;
  for (int32_t h = 0; h < static_cast<int32_t>(blocks.size()) && !pool_full; ++h) {
    for (int32_t b : blocks[h]) {
      if (b < options_.sink_blocks || b >= bound) continue;  // read from the worker's KV cache
      ResidentPool::Entry* e = pool_->Lookup({layer, h, b});
      if (e != nullptr && (options_.reuse || e->step == step)) {
        pool_->Touch(e);
        pool_->Pin(e);  // wanted next: keep it from being evicted by the fetches before its step
        fetch_->reserved[layer].push_back(e);
        continue;
      }
      if (e != nullptr) {
        if (e->refs > 0) continue;  // in use; the step will fetch it on demand
        pool_->Erase(e);
      }
      e = pool_->Insert({layer, h, b}, step);
      if (e == nullptr) {  // every slot pinned: the rest is fetched on demand; what was set up is sent
        pool_full = true;
        break;
      }
      units.push_back({h, b, e});
    }
  }
  SendFetches(layer, &units);
}

void OffloadedSequence::SendFetches(int32_t layer, std::vector<FetchUnit>* units) {
  if (units->empty()) return;
  FetchState& f = *fetch_;
  const BlockLayout& layout = kv().layout();
  const uint64_t head_bytes = layout.head_bytes();
  std::sort(units->begin(), units->end(), [](const FetchUnit& a, const FetchUnit& b) {
    return a.block != b.block ? a.block < b.block : a.head < b.head;
  });
  f.batches.emplace_back();
  FetchState::Batch& batch = f.batches.back();
  batch.layer = layer;
  for (size_t i = 0; i < units->size();) {
    // A run: heads of one block with at most one unwanted head between neighbours (moving an
    // unwanted 4-8 KiB head costs less than another request).
    size_t j = i + 1;
    while (j < units->size() && (*units)[j].block == (*units)[i].block && (*units)[j].head - (*units)[j - 1].head <= 2)
      ++j;
    const int32_t h0 = (*units)[i].head;
    uint32_t span = 1;
    uint8_t* dest = pool_->data((*units)[i].entry);
    bool staged = false;
    if (j - i > 1) {
      span = static_cast<uint32_t>((*units)[j - 1].head - h0 + 1);
      if (f.staging_used[layer] + span * head_bytes <= f.share) {
        dest = f.staging + layer * f.share + f.staging_used[layer];
        f.staging_used[layer] += span * head_bytes;
        staged = true;
      } else {
        j = i + 1;  // the layer's staging is taken: one get per head
        span = 1;
      }
    }
    BlockGet g;
    g.key = publisher_->layer_key((*units)[i].block, layer);
    // Every head: the whole block, checked by the client against the writer's own checksum.
    if (span < layout.kv_heads()) g.ranges = {layout.heads_range(static_cast<uint32_t>(h0), span)};
    g.dest = dest;
    g.capacity = span * head_bytes;
    batch.gets.push_back(std::move(g));
    batch.first.push_back(batch.entries.size());
    batch.first_head.push_back(h0);
    batch.staged.push_back(staged);
    batch.holds_staging = batch.holds_staging || staged;
    for (size_t k = i; k < j; ++k) batch.entries.push_back((*units)[k].entry);
    i = j;
  }
  batch.first.push_back(batch.entries.size());
  if (batch.holds_staging) f.staging_batches[layer]++;
  units->clear();
  batch.done = client_->GetBatchAsync(batch.gets);
}

void OffloadedSequence::PrefetchNext(int32_t layer, int64_t key_tokens, int64_t step) {
  std::vector<std::vector<int32_t>> blocks;
  if (policy_ == nullptr || !policy_->PeekSelection(layer, key_tokens, &blocks)) return;
  Prefetch(layer, blocks, step);
}

Status OffloadedSequence::CompleteFetches(int32_t layer) {
  Status first;
  const uint64_t head_bytes = kv().layout().head_bytes();
  for (auto it = fetch_->batches.begin(); it != fetch_->batches.end();) {
    if (it->layer != layer) {
      ++it;
      continue;
    }
    (void)it->done.get();  // per-item statuses below
    const double tv = Now();
    for (size_t i = 0; i < it->gets.size(); ++i) {
      const BlockGet& g = it->gets[i];
      Status got = g.status;
      if (got.ok() && g.bytes != g.capacity) {
        got = DataLoss(std::to_string(g.bytes) + " bytes instead of " + std::to_string(g.capacity));
      }
      if (got.ok()) stats_.bytes_fetched += g.bytes;
      for (size_t u = it->first[i]; u < it->first[i + 1]; ++u) {
        ResidentPool::Entry* e = it->entries[u];
        const PoolKey& k = e->key;
        const uint8_t* bytes = static_cast<const uint8_t*>(g.dest) + (k.head - it->first_head[i]) * head_bytes;
        Status s = got;
        if (s.ok() && BlockChecksum(bytes, head_bytes) != publisher_->head_checksum(k.block, k.layer, k.head)) {
          s = DataLoss("the fetched bytes differ from the producer's checksum");
        }
        if (s.ok()) {
          if (it->staged[i]) std::memcpy(pool_->data(e), bytes, head_bytes);
          pool_->MarkReady(e);
          pool_->Unpin(e);
          stats_.heads_fetched++;
        } else {
          pool_->Unpin(e);
          fetch_->failed.push_back(e);
          if (first.ok()) {
            first = s.WithContext("fetching layer " + std::to_string(k.layer) + " block " + std::to_string(k.block) +
                                  " KV head " + std::to_string(k.head) + " from " + client_->address());
          }
        }
      }
    }
    stats_.verify_seconds += Now() - tv;
    stats_.fetch_requests += static_cast<int64_t>(it->gets.size());
    fetch_->ReleaseStaging(*it);
    it = fetch_->batches.erase(it);
  }
  return first;
}

void OffloadedSequence::AbandonFetches() {
  for (int32_t l = 0; l < static_cast<int32_t>(fetch_->pinned.size()); ++l) {
    for (ResidentPool::Entry* e : fetch_->pinned[l]) pool_->Unpin(e);
    fetch_->pinned[l].clear();
    for (ResidentPool::Entry* e : fetch_->reserved[l]) pool_->Unpin(e);
    fetch_->reserved[l].clear();
  }
  for (FetchState::Batch& b : fetch_->batches) {
    (void)b.done.get();
    for (ResidentPool::Entry* e : b.entries) {
      pool_->Unpin(e);
      fetch_->failed.push_back(e);  // not verified: never used
    }
  }
  fetch_->batches.clear();
  std::fill(fetch_->staging_used.begin(), fetch_->staging_used.end(), 0);
  std::fill(fetch_->staging_batches.begin(), fetch_->staging_batches.end(), 0);
  for (ResidentPool::Entry* e : fetch_->failed) {
    if (e->refs == 0) pool_->Erase(e);
  }
  fetch_->failed.clear();
}

Status OffloadedSequence::AcquireLayer(int32_t layer, int64_t position, const std::vector<std::vector<int32_t>>& blocks,
                                       std::vector<std::vector<const uint16_t*>>* heads) {
  const int64_t step = fetch_->step;
  if (layer + 1 < model_.config().n_layers &&
      (options_.mode == OffloadMode::kCrossLayer || (options_.mode == OffloadMode::kCrossToken && policy_ != nullptr &&
                                                     policy_->HasLookahead(layer + 1, position + 1)))) {
    // InfiniGen: the next layer's blocks during this one. Cross-token asked for the next layer's
    // blocks a step ago; a lookahead query has now told the rest (the query's share).
    PrefetchNext(layer + 1, position + 1, step);
  }
  std::vector<ResidentPool::Entry*>& pinned = fetch_->pinned[layer];
  std::vector<FetchUnit> demand;
  for (int32_t h = 0; h < static_cast<int32_t>(blocks.size()); ++h) {
    for (int32_t b : blocks[h]) {
      if (!Dropped(b)) continue;
      ResidentPool::Entry* e = pool_->Lookup({layer, h, b});
      if (e != nullptr && !options_.reuse && e->step != step && e->refs == 0) {
        pool_->Erase(e);  // no reuse: only what was fetched for this step counts
        e = nullptr;
      }
      if (e != nullptr) {
        stats_.pool_hits++;
        pool_->Pin(e);
      } else {
        stats_.pool_misses++;
        e = pool_->Insert({layer, h, b}, step);
        if (e == nullptr) {
          return ResourceExhausted("the resident pool (" + std::to_string(pool_->slots()) +
                                   " slots) has no free slot for layer " + std::to_string(layer) + " block " +
                                   std::to_string(b) + "; raise margin_blocks or lower the budget");
        }
        pool_->Pin(e);
        demand.push_back({h, b, e});
      }
      pinned.push_back(e);
    }
  }
  // The attention's pins now hold what the prefetches reserved.
  for (ResidentPool::Entry* e : fetch_->reserved[layer]) pool_->Unpin(e);
  fetch_->reserved[layer].clear();
  const double t0 = Now();
  const bool on_demand = !demand.empty();
  SendFetches(layer, &demand);
  const double tv0 = stats_.verify_seconds;
  Status s = CompleteFetches(layer);
  const double waited = Now() - t0 - (stats_.verify_seconds - tv0);
  stats_.stall_seconds += waited;
  if (on_demand || waited > 50e-6) stats_.stalls++;
  if (!s.ok()) {
    ReleaseLayer(layer, -1);
    AbandonFetches();
    return s;
  }
  size_t at = 0;
  for (int32_t h = 0; h < static_cast<int32_t>(blocks.size()); ++h) {
    for (size_t i = 0; i < blocks[h].size(); ++i) {
      if (!Dropped(blocks[h][i])) continue;
      ResidentPool::Entry* e = pinned[at++];
      if (!e->ready) return Internal("pool entry not ready after its fetch completed");
      (*heads)[h][i] = reinterpret_cast<const uint16_t*>(pool_->data(e));
    }
  }
  return Status::OK();
}

void OffloadedSequence::ReleaseLayer(int32_t layer, int64_t position) {
  for (ResidentPool::Entry* e : fetch_->pinned[layer]) pool_->Unpin(e);
  fetch_->pinned[layer].clear();
  if (position >= 0 && options_.mode == OffloadMode::kCrossToken) {
    // The policy has observed this step; ask it for the next step and fetch while the rest of
    // this step (and the next step's earlier layers) compute.
    PrefetchNext(layer, position + 2, fetch_->step + 1);
  }
}

OffloadStats OffloadedSequence::stats() const {
  OffloadStats s = stats_;
  if (publisher_ != nullptr) {
    const KvPublisherStats p = publisher_->stats();
    s.blocks_published = p.blocks_published;
    s.bytes_published = p.bytes;
    s.offload_wait_seconds = p.enqueue_wait_s;
  }
  s.resident_kv_bytes = kv().resident_bytes();
  if (pool_ != nullptr) {
    s.pool_bytes = pool_->slots() * pool_->slot_bytes();
    s.pool_evictions = pool_->evictions();
    s.staging_bytes = fetch_->share * model_.config().n_layers;
  }
  return s;
}

}  // namespace foresight::worker
