// GatedCacheClient: a test double in front of a real CacheClient that holds put batches at a gate,
// so that a test decides when (and whether) a put is acknowledged. It holds every put batch, or only
// the batches that carry one chosen key; everything else is forwarded as is. Open() lets the held
// puts through; Fail(status) fails the chosen key's put (or every held put) with `status`.
//
// A held batch's future is deferred: its put runs on the thread that calls get() on it (for a
// WriteBehindQueue, its sender thread), once the gate is decided.
//
// Thread-safety: PutBatchAsync may be called from any thread; Open/Fail from any other.
#pragma once

#include <atomic>
#include <future>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "client/cache_client.h"

namespace foresight::testing_util {

class GatedCacheClient : public CacheClient {
 public:
  // `inner` must outlive this client. No `hold_key`: every put batch is held.
  explicit GatedCacheClient(CacheClient* inner, std::optional<BlockKey> hold_key = std::nullopt)
      : inner_(inner), hold_key_(std::move(hold_key)), gate_(verdict_.get_future().share()) {}
  // Opens the gate (OK) if the test left it closed, so that nobody waits on it forever.
  ~GatedCacheClient() override { Open(); }

  void Open() { Decide(Status::OK()); }
  void Fail(Status status) { Decide(std::move(status)); }
  // Put batches that reached the gate so far.
  uint64_t batches_held() const { return held_.load(); }

  std::future<Status> PutBatchAsync(std::span<BlockPut> items) override {
    if (!Holds(items)) return inner_->PutBatchAsync(items);
    held_++;
    return std::async(std::launch::deferred, [this, items] {
      const Status verdict = gate_.get();
      if (verdict.ok()) return inner_->PutBatch(items);
      Status first;
      for (BlockPut& item : items) {
        if (!hold_key_ || item.key == *hold_key_) {
          item.status = verdict;
        } else {
          Status s = inner_->PutBatch(std::span<BlockPut>(&item, 1));
          (void)s;  // the item carries its own status
        }
        if (first.ok() && !item.status.ok()) first = item.status;
      }
      return first;
    });
  }
  Status PutBatch(std::span<BlockPut> items) override { return PutBatchAsync(items).get(); }

  Status RegisterBuffer(void* data, uint64_t size) override { return inner_->RegisterBuffer(data, size); }
  StatusOr<uint8_t*> NewBuffer(uint64_t size) override { return inner_->AllocateBuffer(size); }
  Status GetBatch(std::span<BlockGet> items) override { return inner_->GetBatch(items); }
  std::future<Status> GetBatchAsync(std::span<BlockGet> items) override { return inner_->GetBatchAsync(items); }
  StatusOr<NodeInfo> Info() override { return inner_->Info(); }
  Status Health() override { return inner_->Health(); }
  StatusOr<RemoteBlockInfo> Stat(const BlockKey& key) override { return inner_->Stat(key); }
  StatusOr<std::vector<RemoteBlockInfo>> List(uint32_t limit) override { return inner_->List(limit); }
  Status Evict(const BlockKey& key) override { return inner_->Evict(key); }
  StatusOr<uint32_t> LongestPrefix(std::span<const BlockKey> chain) override { return inner_->LongestPrefix(chain); }
  Status Flush() override { return inner_->Flush(); }
  StatusOr<RemoteNodeStats> NodeStats() override { return inner_->NodeStats(); }
  ClientStats stats() override { return inner_->stats(); }
  const std::string& address() const override { return inner_->address(); }

 private:
  bool Holds(std::span<const BlockPut> items) const {
    if (!hold_key_) return true;
    for (const BlockPut& item : items)
      if (item.key == *hold_key_) return true;
    return false;
  }
  void Decide(Status verdict) {
    std::lock_guard<std::mutex> lock(mu_);
    if (decided_) return;
    decided_ = true;
    verdict_.set_value(std::move(verdict));
  }

  CacheClient* const inner_;
  const std::optional<BlockKey> hold_key_;
  std::mutex mu_;
  bool decided_ = false;  // guarded by mu_
  std::promise<Status> verdict_;
  std::shared_future<Status> gate_;
  std::atomic<uint64_t> held_{0};
};

// Opens the gate when it goes out of scope. Declare it after the queue or publisher that puts
// through the gate, so that an early return (a failed ASSERT) cannot leave that one's destructor
// waiting for acknowledgements forever.
struct OpenGateOnExit {
  GatedCacheClient& gate;
  ~OpenGateOnExit() { gate.Open(); }
};

}  // namespace foresight::testing_util
