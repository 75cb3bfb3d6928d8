#include "worker/offload/seed_cache.h"

#include <span>

#include "predictor/attention_pooling.h"

namespace foresight::worker {

SeedRows::SeedRows(int32_t layers, int32_t q_heads, int64_t block)
    : q_heads_(q_heads),
      block_(block),
      max_(static_cast<size_t>(layers) * q_heads * kBlockTokens * (block + 1)),
      sum_(max_.size()) {}

void SeedRows::Pool(int32_t layer, int32_t q_head, int64_t query, const float* probs) {
  const size_t at = Offset(layer, q_head, static_cast<int32_t>(query - block_ * kBlockTokens));
  // As PrefillRecorder::AddRow pools it: the same values, whichever of the two is later fed.
  predictor::PoolAttentionRow(std::span<const float>(probs, static_cast<size_t>(query + 1)), kBlockTokens,
                              std::span<float>(&max_[at], width()), std::span<float>(&sum_[at], width()));
}

SeedCache::SeedCache(uint64_t budget_bytes) : budget_(budget_bytes) {}

std::shared_ptr<const SeedRows> SeedCache::Lookup(const BlockKey& chain) {
  MutexLock lock(mu_);
  auto it = index_.find(chain);
  if (it == index_.end()) {
    ++stats_.misses;
    return nullptr;
  }
  ++stats_.hits;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->rows;
}

bool SeedCache::Contains(const BlockKey& chain) const {
  MutexLock lock(mu_);
  return index_.count(chain) != 0;
}

void SeedCache::Insert(const BlockKey& chain, std::shared_ptr<const SeedRows> rows) {
  if (rows == nullptr || rows->bytes() > budget_) return;
  MutexLock lock(mu_);
  auto it = index_.find(chain);
  if (it != index_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second);
    return;
  }
  stats_.bytes += rows->bytes();
  ++stats_.blocks;
  ++stats_.inserted;
  lru_.push_front(Entry{chain, std::move(rows)});
  index_.emplace(chain, lru_.begin());
  while (stats_.bytes > budget_) {
    const Entry& victim = lru_.back();
    stats_.bytes -= victim.rows->bytes();
    --stats_.blocks;
    ++stats_.evicted;
    index_.erase(victim.chain);
    lru_.pop_back();
  }
}

SeedCache::Stats SeedCache::stats() const {
  MutexLock lock(mu_);
  return stats_;
}

SeedRowCapture::SeedRowCapture(PolicyDecodeAttention* policy, int64_t first_block,
                               std::vector<std::shared_ptr<SeedRows>> blocks)
    : policy_(policy), first_block_(first_block), blocks_(std::move(blocks)) {}

void SeedRowCapture::OnRow(int32_t layer, int32_t q_head, int64_t query, const float* probs) {
  if (policy_ != nullptr) policy_->OnRow(layer, q_head, query, probs);
  const int64_t i = query / SeedRows::kBlockTokens - first_block_;
  if (i >= 0 && i < static_cast<int64_t>(blocks_.size()) && blocks_[i] != nullptr) {
    blocks_[i]->Pool(layer, q_head, query, probs);
  }
}

}  // namespace foresight::worker
