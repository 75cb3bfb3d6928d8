// UcxTransport: the client side of the UCX data plane (see cache_service/ucx_server.h for the
// protocol and proto/ucx_messages.h for the wire format). Async, batched put and get of KV blocks
// between a cache node and caller-owned buffers.
//
//   UcxTransportOptions options;
//   options.transports = "shm";                        // or "tcp", "auto"
//   FS_ASSIGN_OR_RETURN(auto ucx, UcxTransport::Connect("127.0.0.1", info.ucx_port(), token, options));
//   FS_ASSIGN_OR_RETURN(UcxBuffer buf, ucx->Allocate(64 << 20));  // registered once
//   UcxGet get{key, {layout.head_range(3)}, buf.data, layout.head_bytes()};
//   FS_ASSIGN_OR_RETURN(UcxBatch batch, ucx->SubmitGets({get}));
//   ... compute ...
//   std::vector<UcxItemResult> results = ucx->Wait(batch, /*timeout_s=*/1.0);
//
// One-sided gets: on a shared-memory connection the client maps the node's arena read-only (see
// cache_service/ucx_server.h); a get then leases the block, copies it out of the arena into the
// destination (any memory) with XXH3 computed over each copied chunk while it is hot in cache, and
// releases the lease (batched). The node does no copy. The copies run on threads blocked in Wait(),
// which take ready blocks of any batch, and on the progress thread when two blocks wait or one has
// waited 200 us, so two cores copy at once under load and a lease is never held for long.
//
// Buffers: Allocate() gives memory that UCX places in shared memory when it can (posix/sysv); a
// node on the same host maps it and copies blocks with one memcpy (the fast path, used for puts,
// and for gets when the arena cannot be mapped). Register() makes
// caller-allocated memory known (zero-copy over TCP; over shared memory UCX then moves bytes by CMA,
// far slower than memcpy, docs/perf-notes.md). Pointers given to SubmitGets/SubmitPuts may lie anywhere, but only those
// inside a buffer from Allocate()/Register() avoid extra copies. A GET the node writes into a mapped
// buffer holds a claim word (client/claim_table.h, proto/region_claim.h): one atomic store when
// sent, and when the GET ends unanswered the claim is cancelled, or, if the node is mid-copy, waited
// for, before the result is reported; a node that dies mid-copy ends that wait (its writer word is
// marked by the kernel) and the GET fails UNAVAILABLE ("the node died while copying"). Without a
// claim table the node honours (an older node) or with all 1024 words in use, such a GET carries
// its bytes in the reply instead.
//
// Integrity: every GET reply carries a checksum (the writer's for a whole block; for a list of
// ranges, BlockChecksum over the ranges concatenated in request order), verified over the
// delivered bytes before the get is reported done: by the progress thread as each block lands
// (while the bytes are in its core's cache; options.verify_on_progress_thread), else in Wait().
// A mismatch is DATA_LOSS. A block is never reported delivered with wrong bytes.
//
// Failures: every request has a deadline (options.request_timeout_s); Wait() has its own. When
// either passes, or the node goes away, the connection is dropped and the batch's unfinished items
// fail (DEADLINE_EXCEEDED / UNAVAILABLE); the next Submit reconnects. After a failed GET the
// destination's contents are unspecified, and nothing is written into it after Wait() returned. Errors name the node
// and the key.
//
// Thread-safety: all methods are safe to call from any thread. One progress thread per transport
// owns the UCX worker and verifies the gets it receives; Wait() does one-sided copies (verified as
// they copy) on the caller's thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "client/ucx_tuning.h"
#include "common/block_key.h"
#include "common/block_layout.h"
#include "common/status.h"

namespace foresight {

struct UcxTransportOptions {
  // "shm": shared memory (plus tcp, which connecting by IP needs); "tcp": TCP only; "auto": UCX's
  // default; anything else is passed to UCX as its UCX_TLS list.
  std::string transports = "auto";
  double connect_timeout_s = 5;
  double request_timeout_s = 10;
  UcxTuning tuning;
};

struct UcxBuffer {
  uint8_t* data = nullptr;
  uint64_t size = 0;
  uint32_t region_id = 0;
  bool fast_path = false;  // the node mapped it: blocks move by one memcpy on the node
};

struct UcxGet {
  BlockKey key;
  std::vector<ByteRange> ranges;  // empty: the whole block; else these ranges, concatenated
  uint8_t* dest = nullptr;
  uint64_t capacity = 0;  // room at dest
};

struct UcxPut {
  BlockKey key;
  const uint8_t* src = nullptr;
  uint64_t size = 0;
  uint64_t checksum = 0;  // BlockChecksum(src, size)
};

struct UcxItemResult {
  Status status;
  uint64_t bytes = 0;  // bytes delivered (get) or stored (put)
};

struct UcxTransportStats {
  std::string node;       // host:port
  std::string transport;  // UCX transport of the message lane: "sysv", "posix", "tcp", ...
  std::string path;       // "shm" or "tcp" (or "self", "unknown")
  std::string lanes;      // UCX's own description of the endpoint (ucp_ep_print_info)
  bool connected = false;
  uint64_t gets = 0, puts = 0, failures = 0;
  uint64_t bytes_in = 0, bytes_out = 0;
  uint64_t fast_path_ops = 0;  // moved through a mapped buffer
  uint64_t reconnects = 0;
  bool arena_mapped = false;    // the node's arena is mapped: gets are one-sided
  uint64_t one_sided_gets = 0;  // gets copied out of the node's arena by this client
  std::string arena_note;       // why the arena is not mapped (empty when it is, or not tried)
};

using UcxBatch = uint64_t;

class UcxTransport {
 public:
  // Connects and authenticates (HELLO{token}; empty token: none). UNAVAILABLE naming host:port
  // when the node cannot be reached, UNAUTHENTICATED when it refuses the token.
  static StatusOr<std::unique_ptr<UcxTransport>> Connect(const std::string& host, uint16_t port,
                                                         const std::string& token, UcxTransportOptions options = {});
  ~UcxTransport();
  UcxTransport(const UcxTransport&) = delete;
  UcxTransport& operator=(const UcxTransport&) = delete;

  // A new registered buffer, freed with the transport.
  StatusOr<UcxBuffer> Allocate(uint64_t bytes);
  // Registers caller-owned memory; it must outlive the transport.
  StatusOr<UcxBuffer> Register(void* data, uint64_t bytes);

  // Starts the transfers; buffers must stay untouched until Wait() returns.
  StatusOr<UcxBatch> SubmitGets(std::vector<UcxGet> gets);
  StatusOr<UcxBatch> SubmitPuts(std::vector<UcxPut> puts);
  // One result per item, in order. A handle is consumed by Wait(); an unknown one gives an empty
  // vector.
  std::vector<UcxItemResult> Wait(UcxBatch batch, double timeout_s);

  std::string transport_name() const;
  UcxTransportStats Stats() const;

  class Impl;

 private:
  explicit UcxTransport(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace foresight
