// SeedCache: the worker's cache of pooled prefill attention rows, so that a request whose prompt
// shares a long prefix with an earlier one need not recompute the rows of that prefix which seed
// its selection policy.
//
// Why: a warm request imports its published prefix (worker/offload/kv_publisher.h) but still
// prefills the last 64 prompt positions, because the policy is seeded from their attention rows
// (predictor/prefill_recorder.h). Row i (query i over keys 0..i) depends only on tokens 0..i, so
// the rows of a shared prefix are the same in every prompt that shares it, and an earlier prefill
// can hand them over. With them, the request imports every shared block that is published and
// prefills only what follows.
//
// Unit: one full 16-token block b of a prompt: the pooled rows of its 16 positions (every layer and
// query head; each row's block max and block sum over the b + 1 blocks it sees), keyed by the
// block's prefix chain (common/block_key.h: namespace, model fingerprint and the token ids of
// blocks 0..b), so that equal prefixes find each other and different tenants or models never do.
// A prompt's usable run is the consecutive blocks from where its recorder window starts, each found
// under the prompt's own chain.
//
// Rows are bit-exact across prompts when the prefill's products do not depend on how the prompt was
// cut into chunks (quantised weights through the Q8 kernels: tests/worker/prefill_chunking_test.cc).
// With float weights (sgemm) a row's last bits depend on its chunk, and a seeded request may differ
// from an unseeded one in the last bits of its policy's observation.
//
// Memory: a block at depth b holds 16 x layers x q_heads x (b + 1) x 8 bytes (SmolLM2-135M at 7K
// tokens: ~15 MB). Entries are charged that and evicted least recently used beyond the budget.
//
//   SeedCache cache(512 << 20);
//   OffloadOptions o; o.seed_cache = &cache;  // OffloadedSequence looks up and inserts
//
// Thread-safety: SeedCache is thread-safe; the rows it hands out are immutable and stay valid while
// the caller holds them, evicted or not. SeedRows: filled by one prefill (different query heads
// concurrently, as PrefillAttentionObserver), then read-only.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <unordered_map>
#include <vector>

#include "common/block_key.h"
#include "common/mutex.h"
#include "common/zeroed_floats.h"
#include "worker/policy_attention.h"
#include "worker/sequence.h"

namespace foresight::worker {

// The pooled rows of one full block's 16 positions.
class SeedRows {
 public:
  static constexpr int32_t kBlockTokens = 16;
  SeedRows(int32_t layers, int32_t q_heads, int64_t block);

  int64_t block() const { return block_; }
  // The blocks each of its rows sees (block + 1).
  int64_t width() const { return block_ + 1; }
  // Row `row` (position block * 16 + row) of `layer` and `q_head`: width() values each.
  const float* block_max(int32_t layer, int32_t q_head, int32_t row) const { return &max_[Offset(layer, q_head, row)]; }
  const float* block_sum(int32_t layer, int32_t q_head, int32_t row) const { return &sum_[Offset(layer, q_head, row)]; }
  // Pools the softmax row of `query` (in this block; query + 1 values) into its slot.
  void Pool(int32_t layer, int32_t q_head, int64_t query, const float* probs);
  uint64_t bytes() const { return (max_.size() + sum_.size()) * sizeof(float); }

 private:
  size_t Offset(int32_t layer, int32_t q_head, int32_t row) const {
    return ((static_cast<size_t>(layer) * q_heads_ + q_head) * kBlockTokens + row) * static_cast<size_t>(width());
  }
  int32_t q_heads_;
  int64_t block_;
  ZeroedFloats max_, sum_;  // [layer][q_head][row][width] (calloc: 15 MB a block at 7K tokens)
};

class SeedCache {
 public:
  // `budget_bytes`: rows kept at most (a block larger than that is never kept).
  explicit SeedCache(uint64_t budget_bytes);
  SeedCache(const SeedCache&) = delete;
  SeedCache& operator=(const SeedCache&) = delete;

  // The rows of the block whose prefix chain is `chain` (most recently used now); null if absent.
  std::shared_ptr<const SeedRows> Lookup(const BlockKey& chain);
  // Whether it holds that block (its recency unchanged).
  bool Contains(const BlockKey& chain) const;
  // Keeps `rows` under `chain` (a block already held is only touched), then evicts least recently
  // used blocks until the budget holds.
  void Insert(const BlockKey& chain, std::shared_ptr<const SeedRows> rows);

  struct Stats {
    int64_t hits = 0, misses = 0;  // Lookup
    int64_t inserted = 0, evicted = 0;
    int64_t blocks = 0;
    uint64_t bytes = 0;
  };
  Stats stats() const;
  uint64_t budget_bytes() const { return budget_; }

 private:
  struct Entry {
    BlockKey chain;
    std::shared_ptr<const SeedRows> rows;
  };
  const uint64_t budget_;
  mutable Mutex mu_;
  std::list<Entry> lru_ FS_GUARDED_BY(mu_);  // most recently used first
  std::unordered_map<BlockKey, std::list<Entry>::iterator, BlockKeyHash> index_ FS_GUARDED_BY(mu_);
  Stats stats_ FS_GUARDED_BY(mu_);
};

// Between a prefill and its policy: hands every row to `policy` and pools the rows of the blocks
// being captured into their SeedRows. Called as PrefillAttentionObserver (query heads concurrently).
class SeedRowCapture final : public PrefillAttentionObserver {
 public:
  // blocks[i]: the rows of block first_block + i to fill, or null (not captured).
  SeedRowCapture(PolicyDecodeAttention* policy, int64_t first_block, std::vector<std::shared_ptr<SeedRows>> blocks);
  void OnRow(int32_t layer, int32_t q_head, int64_t query, const float* probs) override;
  const std::vector<std::shared_ptr<SeedRows>>& blocks() const { return blocks_; }

 private:
  PolicyDecodeAttention* const policy_;
  const int64_t first_block_;
  std::vector<std::shared_ptr<SeedRows>> blocks_;
};

}  // namespace foresight::worker
