// CacheClient: the C++ client of one cache node, linked by the worker and the CLI.
//
// Control calls (stat, list, evict, prefix lookup, stats) go over gRPC. Block data goes over UCX
// (shared memory on one host, TCP across hosts, RDMA where present) when the node offers it and
// the client can reach it; otherwise over gRPC, slower, and stats().data_path says so, with the
// reason in stats().fallback_reason. Every get is verified against its checksum before it is
// reported OK: a block is never delivered with wrong bytes.
//
//   CacheClientOptions o;
//   o.address = "127.0.0.1:7600";
//   auto client = CacheClient::Connect(o);
//   if (!client.ok()) ...
//   Status s = (*client)->Put(key, data, size);
//   auto n = (*client)->Get(key, buffer, capacity);
//
// Errors: the same misuse gets the same code on every data path (tests/client/data_path_errors_test.cc):
//   NOT_FOUND         the node holds no block under the key;
//   OUT_OF_RANGE      the block (or the ranges asked for) does not fit the destination's capacity,
//                     or a range lies outside the block;
//   INVALID_ARGUMENT  no destination buffer (null or capacity 0), an empty block, a block larger
//                     than the node's --max-block-bytes;
//   DATA_LOSS         the bytes failed their checksum (on the node or on arrival); never delivered;
//   DEADLINE_EXCEEDED the node did not answer within options.timeout (over UCX the connection is
//                     then dropped and the next call reconnects; nothing lands in the buffer after
//                     the call returned);
//   UNAVAILABLE       the node cannot be reached.
// A failed get leaves the destination's contents unspecified. Messages name the key and the node.
//
// Thread-safety: all methods may be called concurrently.
#pragma once

#include <chrono>
#include <cstdint>
#include <future>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "client/ucx_tuning.h"
#include "common/block_key.h"
#include "common/block_layout.h"
#include "common/mutex.h"
#include "common/status.h"

namespace foresight {

enum class DataPath { kAuto, kUcx, kGrpc };

struct CacheClientOptions {
  std::string address;                       // the node's gRPC HOST:PORT
  std::string token;                         // empty: no authentication
  DataPath data_path = DataPath::kAuto;      // kUcx fails Connect when UCX cannot be used
  std::string ucx_transports = "auto";       // "auto", "shm" or "tcp" (UCX_TLS for this client)
  UcxTuning ucx_tuning;                      // the UCX client's polling and get path
  std::chrono::milliseconds timeout{10000};  // per call
  std::string tls_ca;                        // PEM file of the CA; non-empty: use TLS for gRPC
};

struct ClientStats {
  std::string data_path;        // "ucx" or "grpc"
  std::string ucx_transport;    // e.g. "posix/memory", "tcp" (UCX only)
  std::string fallback_reason;  // why UCX is not used, when it is not
  uint64_t puts = 0, gets = 0, errors = 0;
  uint64_t bytes_out = 0, bytes_in = 0;
  uint64_t reconnects = 0;
  bool connected = false;  // UCX: the data connection is up (dropped on a deadline, remade by the next call)
};

struct BlockPut {
  BlockKey key;
  const void* data = nullptr;
  uint64_t size = 0;
  Status status;  // filled by the call
};

struct BlockGet {
  BlockKey key;
  std::vector<ByteRange> ranges;  // empty: the whole block; else these ranges, concatenated
  void* dest = nullptr;
  uint64_t capacity = 0;
  uint64_t bytes = 0;  // filled: bytes written to dest
  Status status;       // filled: NOT_FOUND, DATA_LOSS, ...
};

struct NodeInfo {
  std::string node_id, version;
  uint32_t ucx_port = 0;
  std::string ucx_version;  // the node's UCX library ("1.22.0"); empty from nodes before it was sent
  uint64_t max_block_bytes = 0, ram_bytes = 0, nvme_bytes = 0;
  bool nvme_enabled = false;
};

struct RemoteBlockInfo {
  BlockKey key;
  uint64_t size = 0, checksum = 0;
  bool in_ram = false, on_nvme = false;
};

struct RemoteTierStats {
  uint64_t capacity_bytes = 0, used_bytes = 0, items = 0, hits = 0, misses = 0, evictions = 0;
};
struct RemoteNodeStats {
  RemoteTierStats ram, nvme;
  uint64_t checksum_failures = 0, promotions = 0, demotions = 0, active_leases = 0;
  uint64_t bytes_in = 0, bytes_out = 0, uptime_seconds = 0;
  uint64_t ram_page_bytes = 0;  // 4096, or 2 MiB when the node's arena is in huge pages; 0: unknown
};

class CacheClient {
 public:
  // Checks the node answers (Info) and sets up the data path. Errors name the address.
  static StatusOr<std::unique_ptr<CacheClient>> Connect(const CacheClientOptions& options);
  virtual ~CacheClient() = default;
  CacheClient(const CacheClient&) = delete;
  CacheClient& operator=(const CacheClient&) = delete;

  // Registers a buffer that will be used for puts and gets, once, so that transfers into and out
  // of it need no staging copies (a no-op on the gRPC path).
  virtual Status RegisterBuffer(void* data, uint64_t size) = 0;
  // A buffer owned by the client (freed with it), placed where transfers are fastest: on one host,
  // shared memory the node copies into directly. Prefer it to RegisterBuffer for hot paths.
  // Give it back with ReleaseBuffer when done with it: the client keeps it (mapped, registered,
  // its pages already faulted in) and hands it out again to a later AllocateBuffer that it fits
  // (a released buffer of at most twice the size asked for), so a long-lived client holds about
  // the most its callers ever held at once, not the sum of everything they asked for.
  StatusOr<uint8_t*> AllocateBuffer(uint64_t size);
  // Gives back a buffer from AllocateBuffer; no transfer may still be in flight into or out of it.
  // Null is ignored; a pointer this client did not hand out is a bug and aborts.
  void ReleaseBuffer(uint8_t* data);
  struct BufferUsage {
    uint64_t held_bytes = 0;    // every buffer this client allocated (freed when it closes)
    uint64_t in_use_bytes = 0;  // handed out and not released
    uint64_t buffers = 0, reuses = 0;
  };
  BufferUsage buffer_usage() const;

  // Batched data calls: each item gets its own status; the call's status is the first failure.
  virtual Status PutBatch(std::span<BlockPut> items) = 0;
  virtual Status GetBatch(std::span<BlockGet> items) = 0;
  // Asynchronous forms: `items` must stay alive until the future is ready.
  virtual std::future<Status> PutBatchAsync(std::span<BlockPut> items) = 0;
  virtual std::future<Status> GetBatchAsync(std::span<BlockGet> items) = 0;

  // Single-block conveniences.
  Status Put(const BlockKey& key, const void* data, uint64_t size);
  // Returns the bytes written to dest.
  StatusOr<uint64_t> Get(const BlockKey& key, void* dest, uint64_t capacity, std::vector<ByteRange> ranges = {});

  virtual StatusOr<NodeInfo> Info() = 0;
  virtual Status Health() = 0;
  virtual StatusOr<RemoteBlockInfo> Stat(const BlockKey& key) = 0;
  virtual StatusOr<std::vector<RemoteBlockInfo>> List(uint32_t limit) = 0;
  virtual Status Evict(const BlockKey& key) = 0;
  virtual StatusOr<uint32_t> LongestPrefix(std::span<const BlockKey> chain) = 0;
  virtual Status Flush() = 0;
  virtual StatusOr<RemoteNodeStats> NodeStats() = 0;

  virtual ClientStats stats() = 0;
  virtual const std::string& address() const = 0;

 protected:
  CacheClient() = default;
  // A new buffer of `size` bytes for AllocateBuffer, owned by the client until it closes.
  virtual StatusOr<uint8_t*> NewBuffer(uint64_t size) = 0;

 private:
  struct HeldBuffer {
    uint64_t size = 0;
    bool in_use = false;
  };
  mutable Mutex buffers_mu_;
  std::map<const uint8_t*, HeldBuffer> buffers_ FS_GUARDED_BY(buffers_mu_);
  std::multimap<uint64_t, uint8_t*> free_buffers_ FS_GUARDED_BY(buffers_mu_);  // by size
  BufferUsage buffer_usage_ FS_GUARDED_BY(buffers_mu_);
};

}  // namespace foresight
