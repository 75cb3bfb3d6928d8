#include "client/write_behind_queue.h"

#include <cstring>

namespace foresight {

WriteBehindQueue::WriteBehindQueue(CacheClient* client, WriteBehindOptions options)
    : client_(client), options_(options) {
  auto ring = client_->AllocateBuffer(options_.ring_bytes);
  if (ring.ok())
    ring_ = *ring;
  else
    ring_status_ = ring.status().WithContext("allocating the write-behind ring");
  sender_ = std::thread([this] { SenderLoop(); });
}

WriteBehindQueue::~WriteBehindQueue() {
  (void)Flush();
  {
    MutexLock lock(mu_);
    stopping_ = true;
  }
  cv_.SignalAll();
  sender_.join();  // the sender returns with nothing in flight
  client_->ReleaseBuffer(ring_);
}

Status WriteBehindQueue::Enqueue(const BlockKey& key, const void* data, uint64_t size) {
  if (!ring_status_.ok()) return ring_status_;
  if (size == 0 || size > options_.ring_bytes)
    return InvalidArgument("block " + key.ToHex() + " of " + std::to_string(size) +
                           " bytes does not fit the write-behind ring of " + std::to_string(options_.ring_bytes));
  MutexLock lock(mu_);
  if (!first_failure_.ok()) return first_failure_;
  // Contiguous room: skip the ring's tail end when the block would wrap.
  auto reserve_for = [&]() FS_REQUIRES(mu_) {
    const uint64_t at = head_ % options_.ring_bytes;
    return at + size <= options_.ring_bytes ? size : size + (options_.ring_bytes - at);
  };
  const auto start = std::chrono::steady_clock::now();
  cv_.Wait(mu_, [&]() FS_REQUIRES(mu_) {
    return head_ + reserve_for() - tail_ <= options_.ring_bytes || !first_failure_.ok();
  });
  stats_.enqueue_wait_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!first_failure_.ok()) return first_failure_;
  const uint64_t reserved = reserve_for();
  const uint64_t offset = (head_ + reserved - size) % options_.ring_bytes;
  head_ += reserved;
  // Copied under the lock: the ring is freed in queue order, so items must be queued in the order
  // their bytes were reserved.
  std::memcpy(ring_ + offset, data, size);
  queued_.push_back(Item{key, offset, size, reserved});
  ++enqueued_seq_;
  stats_.enqueued++;
  cv_.SignalAll();
  return Status::OK();
}

Status WriteBehindQueue::Flush() {
  MutexLock lock(mu_);
  const uint64_t target = enqueued_seq_;
  cv_.Wait(mu_, [&]() FS_REQUIRES(mu_) { return done_seq_ >= target; });
  return first_failure_;
}

WriteBehindStats WriteBehindQueue::stats() {
  MutexLock lock(mu_);
  return stats_;
}

void WriteBehindQueue::Complete(InFlight& batch) {
  Status s = batch.done.get();
  MutexLock lock(mu_);
  for (size_t i = 0; i < batch.items.size(); ++i) {
    const Status& item = batch.puts[i].status;
    if (item.ok()) {
      stats_.acknowledged++;
      stats_.bytes_acknowledged += batch.items[i].size;
    } else {
      stats_.failed++;
      if (first_failure_.ok()) first_failure_ = item.WithContext("write-behind put of " + batch.items[i].key.ToHex());
    }
    tail_ += batch.items[i].reserved;  // batches complete in order, so the ring frees in order
  }
  if (!s.ok() && first_failure_.ok()) first_failure_ = s;
  done_seq_ += batch.items.size();
  cv_.SignalAll();
}

void WriteBehindQueue::SenderLoop() {
  std::deque<InFlight> in_flight;
  for (;;) {
    InFlight batch;
    {
      MutexLock lock(mu_);
      cv_.WaitFor(mu_, std::chrono::milliseconds(in_flight.empty() ? 100 : 1),
                  [&]() FS_REQUIRES(mu_) { return stopping_ || !queued_.empty(); });
      if (stopping_ && queued_.empty() && in_flight.empty()) return;
      while (!queued_.empty() && batch.items.size() < options_.max_batch) {
        batch.items.push_back(queued_.front());
        queued_.pop_front();
      }
      sent_seq_ += batch.items.size();
    }
    if (!batch.items.empty()) {
      for (const Item& item : batch.items) batch.puts.push_back(BlockPut{item.key, ring_ + item.offset, item.size, {}});
      batch.done = client_->PutBatchAsync(batch.puts);
      in_flight.push_back(std::move(batch));
    }
    // Keep a few batches in flight; retire the oldest when over, or when idle.
    while (!in_flight.empty() &&
           (in_flight.size() > options_.max_batches_in_flight || batch.items.empty() ||
            in_flight.front().done.wait_for(std::chrono::seconds(0)) == std::future_status::ready)) {
      Complete(in_flight.front());
      in_flight.pop_front();
    }
  }
}

}  // namespace foresight
