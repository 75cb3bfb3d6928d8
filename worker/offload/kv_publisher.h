// KvPublisher: writes a sequence's KV to the cache service as it is produced, and the reading side
// of shared prefixes (which prefix of a prompt is published, and importing it into a
// BackendSequence, worker/backend.h).
//
// Keys (DESIGN.md, common/block_key.h): block i of a sequence is PrefixChain(namespace,
// fingerprint) extended over the token ids of blocks 0..i; layer l of it is that chain's
// LayerKey(l). Every FULL block (16 tokens) of every layer is put through a WriteBehindQueue (the
// producer waits only when the ring is full: back-pressure). Once every layer of a block has been
// acknowledged, a small manifest block PlainKey(namespace, "manifest/" + chain hex) is written, so a
// prefix lookup over manifests (LongestPublishedPrefix) never sees a half-written block.
//
// The manifest records the geometry and, per (layer, KV head), BlockChecksum of that head's byte
// range (BlockLayout::head_range): a worker that fetches single heads verifies them end to end
// against what the producer computed (the cache client verifies transport; this also covers the
// node's copy).
//
//   const KvCache& kv = *seq->host_kv();          // a BackendSequence of a backend that can offload
//   KvPublisher pub(client, "tenant", ModelFingerprint(model), model.config().n_layers, kv.layout());
//   FS_RETURN_IF_ERROR(seq->Prefill(tokens, &logits));
//   FS_RETURN_IF_ERROR(pub.Publish(tokens, kv));  // newly full blocks, write-behind
//   ... decode, Publish after each step ...
//   FS_RETURN_IF_ERROR(pub.Flush());              // all blocks and manifests acknowledged
//
// Thread-safety: a KvPublisher is driven by one thread (the sequence's). The free functions may be
// called concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "client/cache_client.h"
#include "client/write_behind_queue.h"
#include "common/block_key.h"
#include "common/block_layout.h"
#include "common/status.h"
#include "worker/backend.h"
#include "worker/model.h"
#include "worker/sequence.h"

namespace foresight::worker {

// 32 hex digits identifying a model's KV: XXH3-128 over its config (geometry, RoPE, norms), every
// tensor's type and shape, every norm/bias vector, a sample of every matrix's bytes (first, middle
// and last 4 KiB) and the tokenizer's pieces. Equal across processes for the same model file;
// different for models whose KV could differ in any of those.
std::string ModelFingerprint(const Model& model);

// Bytes of one sequence block's manifest: magic, geometry, then one checksum per (layer, KV head).
// The capacity planner counts them (planner/capacity_plan.h).
inline constexpr uint64_t KvManifestBytes(uint64_t n_layers, uint64_t kv_heads) {
  return 8 + 4 * 4 + 8 * n_layers * kv_heads;
}

struct KvPublisherOptions {
  WriteBehindOptions queue = {.ring_bytes = 32ull << 20, .max_batch = 32, .max_batches_in_flight = 4};
};

struct KvPublisherStats {
  int64_t blocks_enqueued = 0;   // sequence blocks whose every layer is queued
  int64_t blocks_published = 0;  // sequence blocks whose manifest is queued (all layers acknowledged)
  int64_t puts = 0;              // layer blocks + manifests queued
  uint64_t bytes = 0;            // bytes queued
  double enqueue_wait_s = 0;     // back-pressure: time Publish/Flush spent waiting for the ring
  double publish_s = 0;          // time inside Publish (hashing, copying into the ring)
};

class KvPublisher {
 public:
  // `client` must outlive the publisher. `layout` is the sequence's KvCache::layout().
  KvPublisher(CacheClient* client, std::string name_space, std::string fingerprint, int32_t n_layers,
              BlockLayout layout, KvPublisherOptions options = {});
  KvPublisher(const KvPublisher&) = delete;
  KvPublisher& operator=(const KvPublisher&) = delete;

  // Queues every block that became full since the last call: the sequence's first
  // min(tokens.size(), kv.tokens()) / 16 blocks are full. `tokens` are the sequence's token ids
  // from position 0. Also writes the manifests of blocks acknowledged meanwhile. Errors: an earlier
  // put failed (the first failure, naming the block), or the sequence was rewound below what was
  // already published.
  Status Publish(const std::vector<TokenId>& tokens, const KvCache& kv);
  // Records the first `n_blocks` full blocks of `kv` as already published (imported from the cache
  // service: their keys and checksums are known, nothing is written). Only before any Publish.
  Status Adopt(const std::vector<TokenId>& tokens, const KvCache& kv, int64_t n_blocks);
  // Waits until every queued block is acknowledged, then writes (and waits for) the remaining
  // manifests. After OK, blocks [0, published_blocks()) are in the cache service, findable.
  Status Flush();

  // Blocks whose layers are all acknowledged (their bytes may be dropped from the worker).
  int64_t acknowledged_blocks() const { return acknowledged_; }
  int64_t published_blocks() const { return manifests_; }
  int64_t enqueued_blocks() const { return static_cast<int64_t>(chains_.size()); }
  // The key of layer `layer` of sequence block `block` (< enqueued_blocks()).
  const BlockKey& layer_key(int64_t block, int32_t layer) const { return layer_keys_[block * n_layers_ + layer]; }
  // BlockChecksum of KV head `head`'s byte range of that block, as the producer computed it.
  uint64_t head_checksum(int64_t block, int32_t layer, int32_t head) const {
    return head_sums_[(block * n_layers_ + layer) * layout_.kv_heads() + head];
  }
  const BlockLayout& layout() const { return layout_; }
  KvPublisherStats stats();

 private:
  Status EnqueueManifests(int64_t upto);
  void UpdateAcknowledged();
  Status AddBlock(const std::vector<TokenId>& tokens, const KvCache& kv, int64_t b, bool enqueue);

  CacheClient* const client_;
  const std::string ns_;
  const int32_t n_layers_;
  const BlockLayout layout_;
  PrefixChain chain_;
  std::vector<BlockKey> chains_;      // per block
  std::vector<BlockKey> layer_keys_;  // [block][layer]
  std::vector<uint64_t> head_sums_;   // [block][layer][head]
  std::vector<uint64_t> last_seq_;    // per block: queue sequence number of its last layer put
  uint64_t seq_ = 0;                  // puts queued so far
  int64_t acknowledged_ = 0, manifests_ = 0;
  KvPublisherStats stats_;
  std::unique_ptr<WriteBehindQueue> queue_;  // last: destroyed (flushed) first
};

// The manifest key of the block whose prefix chain is `chain`.
BlockKey ManifestKey(std::string_view name_space, const BlockKey& chain);

// The prefix chain keys of every full 16-token block of `tokens`, in order.
std::vector<BlockKey> PromptChains(std::string_view name_space, std::string_view fingerprint,
                                   const std::vector<TokenId>& tokens);

// How many leading full blocks of `tokens` are published (their manifests are in the node).
StatusOr<int64_t> LongestPublishedPrefix(CacheClient* client, std::string_view name_space, std::string_view fingerprint,
                                         const std::vector<TokenId>& tokens);
// The same for a prompt whose chains (PromptChains) are already known.
StatusOr<int64_t> LongestPublishedPrefix(CacheClient* client, std::string_view name_space,
                                         std::span<const BlockKey> chains);

struct ImportStats {
  int64_t blocks = 0;  // sequence blocks imported
  int64_t gets = 0;    // layer blocks fetched
  uint64_t bytes = 0;  // bytes fetched
  double seconds = 0;
};

// Fills the empty `seq` with the first `n_blocks` full blocks of `tokens` from the cache service
// (every layer; whole-block gets, each verified against the writer's checksum by the client, and
// the manifest's per-head checksums checked too). The sequence then continues at position
// n_blocks * 16 exactly as if it had prefilled those tokens. Keep at least one token to prefill
// (n_blocks * 16 < tokens.size()) to get the next token's logits. Errors name the block and
// layer; the sequence is left empty. Damaged data is DATA_LOSS: a manifest that does not describe
// this geometry, a layer block shorter or longer than the layout's, a head whose bytes differ from
// the manifest's checksum (naming the head too). `seq` must keep its KV in host memory
// (BackendSequence::host_kv, as the CPU backend's sequences do); otherwise UNIMPLEMENTED.
Status ImportPrefix(CacheClient* client, std::string_view name_space, std::string_view fingerprint,
                    const std::vector<TokenId>& tokens, int64_t n_blocks, BackendSequence* seq,
                    ImportStats* stats = nullptr);

}  // namespace foresight::worker
