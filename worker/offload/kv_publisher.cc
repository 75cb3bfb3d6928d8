#include "worker/offload/kv_publisher.h"

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t as a member
#include <xxhash.h>

#include <chrono>
#include <cstring>
#include <span>

#include "common/checksum.h"

namespace foresight::worker {
namespace {

double Now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

constexpr char kManifestMagic[8] = {'F', 'S', 'K', 'V', 'M', 'A', 'N', '1'};
// magic, then u32 n_layers, kv_heads, head_bytes, block_tokens, then u64 checksums [layer][head].
constexpr size_t kManifestHeader = 8 + 4 * 4;

class Hasher {
 public:
  Hasher() { XXH3_128bits_reset(&state_); }
  void Bytes(const void* data, size_t n) {
    const uint64_t len = n;
    XXH3_128bits_update(&state_, &len, sizeof(len));
    XXH3_128bits_update(&state_, data, n);
  }
  template <typename T>
  void Value(const T& v) {
    Bytes(&v, sizeof(v));
  }
  void String(std::string_view s) { Bytes(s.data(), s.size()); }
  void Floats(const std::vector<float>& v) { Bytes(v.data(), v.size() * sizeof(float)); }
  void Matrix(const WeightMatrix& m) {
    Value(static_cast<int32_t>(m.type()));
    Value(m.rows());
    Value(m.cols());
    if (m.empty()) return;
    const uint8_t* data = m.row(0);
    const uint64_t n = m.bytes(), sample = 4096;
    if (n <= 3 * sample) {
      Bytes(data, n);
    } else {
      Bytes(data, sample);
      Bytes(data + n / 2, sample);
      Bytes(data + n - sample, sample);
    }
  }
  std::string Hex() {
    const XXH128_hash_t h = XXH3_128bits_digest(&state_);
    char buf[33];
    std::snprintf(buf, sizeof(buf), "%016llx%016llx", static_cast<unsigned long long>(h.high64),
                  static_cast<unsigned long long>(h.low64));
    return buf;
  }

 private:
  XXH3_state_t state_;
};

template <typename T>
void PutLe(std::vector<uint8_t>* out, T v) {
  uint8_t b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // the project's hosts are little-endian (as the block layout)
  out->insert(out->end(), b, b + sizeof(T));
}

template <typename T>
T GetLe(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

}  // namespace

std::string ModelFingerprint(const Model& model) {
  Hasher h;
  const ModelConfig& c = model.config();
  h.String("foresight-kv-v1");
  h.String(c.architecture);
  for (int32_t v : {c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn_dim, c.vocab_size}) h.Value(v);
  h.Value(c.rms_eps);
  h.Value(c.rope_theta);
  h.Value(static_cast<int32_t>(c.rope_style));
  h.Floats(c.rope_freq_factors);
  h.Value(static_cast<int32_t>(c.qkv_bias));
  h.Value(static_cast<int32_t>(c.tied_embeddings));
  const ModelWeights& w = model.weights();
  h.Matrix(w.token_embedding);
  for (const LayerWeights& L : w.layers) {
    h.Floats(L.attn_norm);
    h.Floats(L.ffn_norm);
    for (const WeightMatrix* m : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) h.Matrix(*m);
    h.Floats(L.bq);
    h.Floats(L.bk);
    h.Floats(L.bv);
  }
  h.Floats(w.output_norm);
  h.Matrix(w.output);
  if (const Tokenizer* t = model.tokenizer()) {
    h.Value(t->vocab_size());
    for (int32_t id = 0; id < t->vocab_size(); ++id) h.String(t->TokenPiece(id, /*render_special=*/true));
  } else {
    h.String("no tokenizer");
  }
  return h.Hex();
}

BlockKey ManifestKey(std::string_view name_space, const BlockKey& chain) {
  return PlainKey(name_space, "manifest/" + chain.ToHex());
}

KvPublisher::KvPublisher(CacheClient* client, std::string name_space, std::string fingerprint, int32_t n_layers,
                         BlockLayout layout, KvPublisherOptions options)
    : client_(client),
      ns_(std::move(name_space)),
      n_layers_(n_layers),
      layout_(layout),
      chain_(ns_, fingerprint),
      queue_(std::make_unique<WriteBehindQueue>(client, options.queue)) {}

void KvPublisher::UpdateAcknowledged() {
  const WriteBehindStats q = queue_->stats();
  if (q.failed > 0) return;  // the next Enqueue/Flush reports the failure
  // Batches complete in queue order, so `acknowledged` puts are the first ones queued.
  while (acknowledged_ < static_cast<int64_t>(chains_.size()) && last_seq_[acknowledged_] <= q.acknowledged) {
    ++acknowledged_;
  }
}

Status KvPublisher::EnqueueManifests(int64_t upto) {
  const uint32_t heads = layout_.kv_heads();
  std::vector<uint8_t> m;
  for (; manifests_ < upto; ++manifests_) {
    m.clear();
    m.insert(m.end(), kManifestMagic, kManifestMagic + 8);
    PutLe<uint32_t>(&m, static_cast<uint32_t>(n_layers_));
    PutLe<uint32_t>(&m, heads);
    PutLe<uint32_t>(&m, static_cast<uint32_t>(layout_.head_bytes()));
    PutLe<uint32_t>(&m, layout_.block_tokens());
    for (int32_t l = 0; l < n_layers_; ++l) {
      for (uint32_t h = 0; h < heads; ++h) PutLe<uint64_t>(&m, head_checksum(manifests_, l, h));
    }
    FS_RETURN_IF_ERROR(queue_->Enqueue(ManifestKey(ns_, chains_[manifests_]), m.data(), m.size()));
    ++seq_;
    stats_.puts++;
    stats_.bytes += m.size();
  }
  return Status::OK();
}

Status KvPublisher::Publish(const std::vector<TokenId>& tokens, const KvCache& kv) {
  const double t0 = Now();
  const int64_t bt = layout_.block_tokens();
  if (kv.n_layers() != n_layers_ || kv.layout().block_bytes() != layout_.block_bytes()) {
    return InvalidArgument("the KV cache's geometry differs from the publisher's");
  }
  const int64_t full = std::min<int64_t>(static_cast<int64_t>(tokens.size()), kv.tokens()) / bt;
  if (kv.tokens() < static_cast<int64_t>(chains_.size()) * bt) {
    return FailedPrecondition("the sequence was rewound to " + std::to_string(kv.tokens()) + " tokens below the " +
                              std::to_string(chains_.size()) + " blocks already published");
  }
  for (int64_t b = static_cast<int64_t>(chains_.size()); b < full; ++b) {
    FS_RETURN_IF_ERROR(AddBlock(tokens, kv, b, /*enqueue=*/true));
  }
  UpdateAcknowledged();
  Status s = EnqueueManifests(acknowledged_);
  stats_.publish_s += Now() - t0;
  return s;
}

Status KvPublisher::AddBlock(const std::vector<TokenId>& tokens, const KvCache& kv, int64_t b, bool enqueue) {
  const int64_t bt = layout_.block_tokens();
  const uint32_t heads = layout_.kv_heads();
  chains_.push_back(chain_.Extend(std::span<const int32_t>(tokens.data() + b * bt, bt)));
  for (int32_t l = 0; l < n_layers_; ++l) {
    const uint8_t* data = kv.block_data(l, b);
    if (data == nullptr) {
      return FailedPrecondition("block " + std::to_string(b) + " of layer " + std::to_string(l) +
                                " was dropped before it was published");
    }
    layer_keys_.push_back(chain_.LayerKey(static_cast<uint32_t>(l)));
    for (uint32_t h = 0; h < heads; ++h) {
      const ByteRange r = layout_.head_range(h);
      head_sums_.push_back(BlockChecksum(data + r.offset, r.length));
    }
    if (!enqueue) continue;
    FS_RETURN_IF_ERROR(queue_->Enqueue(layer_keys_.back(), data, layout_.block_bytes())
                           .WithContext("publishing block " + std::to_string(b) + " layer " + std::to_string(l)));
    ++seq_;
    stats_.puts++;
    stats_.bytes += layout_.block_bytes();
  }
  last_seq_.push_back(enqueue ? seq_ : 0);
  if (enqueue) stats_.blocks_enqueued++;
  return Status::OK();
}

Status KvPublisher::Adopt(const std::vector<TokenId>& tokens, const KvCache& kv, int64_t n_blocks) {
  if (!chains_.empty()) return FailedPrecondition("Adopt must come before any Publish");
  if (n_blocks * layout_.block_tokens() > std::min<int64_t>(static_cast<int64_t>(tokens.size()), kv.tokens())) {
    return InvalidArgument("cannot adopt " + std::to_string(n_blocks) + " blocks of a " + std::to_string(kv.tokens()) +
                           "-token sequence");
  }
  for (int64_t b = 0; b < n_blocks; ++b) FS_RETURN_IF_ERROR(AddBlock(tokens, kv, b, /*enqueue=*/false));
  acknowledged_ = manifests_ = n_blocks;
  return Status::OK();
}

Status KvPublisher::Flush() {
  FS_RETURN_IF_ERROR(queue_->Flush());
  UpdateAcknowledged();
  FS_RETURN_IF_ERROR(EnqueueManifests(acknowledged_));
  return queue_->Flush();
}

KvPublisherStats KvPublisher::stats() {
  KvPublisherStats s = stats_;
  s.blocks_published = manifests_;
  s.enqueue_wait_s = queue_->stats().enqueue_wait_s;
  return s;
}

std::vector<BlockKey> PromptChains(std::string_view name_space, std::string_view fingerprint,
                                   const std::vector<TokenId>& tokens) {
  PrefixChain chain(name_space, fingerprint);
  std::vector<BlockKey> chains;
  constexpr int64_t bt = 16;
  for (int64_t b = 0; (b + 1) * bt <= static_cast<int64_t>(tokens.size()); ++b) {
    chains.push_back(chain.Extend(std::span<const int32_t>(tokens.data() + b * bt, bt)));
  }
  return chains;
}

StatusOr<int64_t> LongestPublishedPrefix(CacheClient* client, std::string_view name_space, std::string_view fingerprint,
                                         const std::vector<TokenId>& tokens) {
  return LongestPublishedPrefix(client, name_space, PromptChains(name_space, fingerprint, tokens));
}

StatusOr<int64_t> LongestPublishedPrefix(CacheClient* client, std::string_view name_space,
                                         std::span<const BlockKey> chains) {
  std::vector<BlockKey> manifests;
  manifests.reserve(chains.size());
  for (const BlockKey& c : chains) manifests.push_back(ManifestKey(name_space, c));
  if (manifests.empty()) return int64_t{0};
  FS_ASSIGN_OR_RETURN(uint32_t n, client->LongestPrefix(manifests));
  return static_cast<int64_t>(n);
}

namespace {

// A get's failure during an import, naming `what`. A stored block longer than this geometry's
// (OUT_OF_RANGE: it does not fit the destination) is damaged data like a short one: DATA_LOSS.
Status StoredBlockStatus(const Status& s, const std::string& what) {
  if (s.code() == StatusCode::kOutOfRange) {
    return DataLoss(what + ": the stored block is larger than this model's KV geometry allows (" + s.message() + ")");
  }
  return s.WithContext(what);
}

}  // namespace

Status ImportPrefix(CacheClient* client, std::string_view name_space, std::string_view fingerprint,
                    const std::vector<TokenId>& tokens, int64_t n_blocks, BackendSequence* seq, ImportStats* stats) {
  const double t0 = Now();
  if (seq->host_kv() == nullptr) {
    return Unimplemented("importing a shared prefix: the " + std::string(seq->backend().name()) +
                         " backend keeps no KV in host memory");
  }
  const KvCache& kv = *seq->host_kv();
  const BlockLayout& layout = kv.layout();
  const int64_t bt = layout.block_tokens();
  const int32_t n_layers = kv.n_layers();
  const uint32_t heads = layout.kv_heads();
  if (n_blocks < 0 || n_blocks * bt > static_cast<int64_t>(tokens.size())) {
    return InvalidArgument("cannot import " + std::to_string(n_blocks) + " blocks of a " +
                           std::to_string(tokens.size()) + "-token prompt");
  }
  // Manifests first: they say every layer is there, and carry the per-head checksums.
  PrefixChain chain(name_space, fingerprint);
  std::vector<std::vector<BlockKey>> keys(n_blocks);
  const uint64_t manifest_bytes = KvManifestBytes(n_layers, heads);
  std::vector<uint8_t> manifests(n_blocks * manifest_bytes);
  std::vector<BlockGet> gets(n_blocks);
  for (int64_t b = 0; b < n_blocks; ++b) {
    const BlockKey& c = chain.Extend(std::span<const int32_t>(tokens.data() + b * bt, bt));
    for (int32_t l = 0; l < n_layers; ++l) keys[b].push_back(chain.LayerKey(static_cast<uint32_t>(l)));
    gets[b].key = ManifestKey(name_space, c);
    gets[b].dest = manifests.data() + b * manifest_bytes;
    gets[b].capacity = manifest_bytes;
  }
  ImportStats st;
  if (n_blocks > 0) {
    Status s = client->GetBatch(gets);
    for (int64_t b = 0; b < n_blocks; ++b) {
      if (!gets[b].status.ok()) {
        return StoredBlockStatus(gets[b].status, "manifest of prefix block " + std::to_string(b));
      }
      const uint8_t* m = manifests.data() + b * manifest_bytes;
      if (gets[b].bytes != manifest_bytes || std::memcmp(m, kManifestMagic, 8) != 0 ||
          GetLe<uint32_t>(m + 8) != static_cast<uint32_t>(n_layers) || GetLe<uint32_t>(m + 12) != heads ||
          GetLe<uint32_t>(m + 16) != layout.head_bytes() || GetLe<uint32_t>(m + 20) != layout.block_tokens()) {
        return DataLoss("manifest of prefix block " + std::to_string(b) + " (" + gets[b].key.ToHex() +
                        ") does not describe this model's KV geometry");
      }
    }
    FS_RETURN_IF_ERROR(s);
    st.gets += n_blocks;
    st.bytes += n_blocks * manifest_bytes;
  }
  std::vector<BlockGet> layer_gets(n_blocks);
  Status s = seq->ImportKv(n_blocks, [&](int32_t l, const std::vector<uint8_t*>& dests) -> Status {
    for (int64_t b = 0; b < n_blocks; ++b) {
      layer_gets[b] = BlockGet{};
      layer_gets[b].key = keys[b][l];
      layer_gets[b].dest = dests[b];
      layer_gets[b].capacity = layout.block_bytes();
    }
    (void)client->GetBatch(layer_gets);
    for (int64_t b = 0; b < n_blocks; ++b) {
      const BlockGet& g = layer_gets[b];
      const std::string what = "prefix block " + std::to_string(b) + " layer " + std::to_string(l);
      if (!g.status.ok()) return StoredBlockStatus(g.status, what);
      if (g.bytes != layout.block_bytes()) {
        return DataLoss(what + ": " + std::to_string(g.bytes) + " bytes, expected " +
                        std::to_string(layout.block_bytes()));
      }
      const uint8_t* m = manifests.data() + b * manifest_bytes + kManifestHeader + uint64_t{8} * l * heads;
      for (uint32_t h = 0; h < heads; ++h) {
        const ByteRange r = layout.head_range(h);
        if (BlockChecksum(dests[b] + r.offset, r.length) != GetLe<uint64_t>(m + 8 * h)) {
          return DataLoss(what + " head " + std::to_string(h) + ": bytes differ from the producer's checksum");
        }
      }
      st.gets++;
      st.bytes += g.bytes;
    }
    return Status::OK();
  });
  FS_RETURN_IF_ERROR(s);
  st.blocks = n_blocks;
  st.seconds = Now() - t0;
  if (stats != nullptr) *stats = st;
  return Status::OK();
}

}  // namespace foresight::worker
