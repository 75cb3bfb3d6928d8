// WriteBehindQueue: offloads blocks to a cache node in the background, so that the producer (a
// worker writing each KV block as it fills) never waits for the network unless it runs ahead by
// more than a fixed number of bytes (back-pressure).
//
// Enqueue copies the block into a staging ring that the client registered once (on one host,
// shared memory the node copies from directly), so the caller may reuse its buffer at once. A
// background thread sends batches with PutBatchAsync and keeps a few in flight. The first failure
// is remembered and returned by the next Enqueue or Flush: a producer learns that offload failed
// and can recompute or fail the request; it is never silently dropped.
//
//   WriteBehindQueue queue(client.get(), {.ring_bytes = 64 << 20});
//   for (each finished block) FS_RETURN_IF_ERROR(queue.Enqueue(key, data, size));
//   FS_RETURN_IF_ERROR(queue.Flush());  // everything acknowledged by the node
//
// Thread-safety: Enqueue and Flush may be called from several threads.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <thread>

#include "client/cache_client.h"
#include "common/mutex.h"

namespace foresight {

struct WriteBehindOptions {
  uint64_t ring_bytes = 64ull << 20;  // staging space: the most bytes queued or in flight
  size_t max_batch = 32;              // blocks per put batch
  size_t max_batches_in_flight = 4;
};

struct WriteBehindStats {
  uint64_t enqueued = 0, acknowledged = 0, failed = 0;
  uint64_t bytes_acknowledged = 0;
  double enqueue_wait_s = 0;  // time producers spent blocked on back-pressure
};

class WriteBehindQueue {
 public:
  // `client` must outlive the queue. A failed staging allocation is reported by the first Enqueue.
  WriteBehindQueue(CacheClient* client, WriteBehindOptions options = {});
  // Sends what is queued and waits for it.
  ~WriteBehindQueue();
  WriteBehindQueue(const WriteBehindQueue&) = delete;
  WriteBehindQueue& operator=(const WriteBehindQueue&) = delete;

  // Copies the block and queues it; blocks while the ring is full. INVALID_ARGUMENT for a block
  // larger than the ring; otherwise the first asynchronous failure so far, if any.
  Status Enqueue(const BlockKey& key, const void* data, uint64_t size);
  // Waits until every block enqueued before the call is acknowledged; returns the first failure.
  Status Flush();
  WriteBehindStats stats();

 private:
  struct Item {
    BlockKey key;
    uint64_t offset, size, reserved;  // reserved = size plus any bytes skipped at the ring's end
  };
  struct InFlight {
    std::vector<BlockPut> puts;
    std::vector<Item> items;
    std::future<Status> done;
  };
  void SenderLoop();
  void Complete(InFlight& batch) FS_EXCLUDES(mu_);  // takes mu_ itself

  CacheClient* const client_;
  const WriteBehindOptions options_;
  uint8_t* ring_ = nullptr;
  Status ring_status_;

  Mutex mu_;
  CondVar cv_;
  std::deque<Item> queued_ FS_GUARDED_BY(mu_);
  uint64_t head_ FS_GUARDED_BY(mu_) = 0;  // next free byte (monotonic; ring offset = head_ % size)
  uint64_t tail_ FS_GUARDED_BY(mu_) = 0;  // oldest byte still in use (monotonic)
  uint64_t sent_seq_ FS_GUARDED_BY(mu_) = 0;
  uint64_t done_seq_ FS_GUARDED_BY(mu_) = 0;
  uint64_t enqueued_seq_ FS_GUARDED_BY(mu_) = 0;
  Status first_failure_ FS_GUARDED_BY(mu_);
  WriteBehindStats stats_ FS_GUARDED_BY(mu_);
  bool stopping_ FS_GUARDED_BY(mu_) = false;
  std::thread sender_;
};

}  // namespace foresight
