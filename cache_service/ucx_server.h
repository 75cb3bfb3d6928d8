// UcxServer: the cache node's data plane. Serves a BlockStore's blocks to clients over UCX
// (shared memory on one host, TCP across hosts), with the wire format of proto/ucx_messages.h.
//
//   auto store = BlockStore::Open(options);
//   UcxServerOptions server_options;
//   server_options.token = token;                 // empty: no authentication
//   server_options.observer = [&](const UcxRequestEvent& e) { metrics.Observe(e); };
//   FS_ASSIGN_OR_RETURN(auto server, UcxServer::Start(store->get(), server_options));
//   info.set_ucx_port(server->port());             // clients learn the port from gRPC Info
//
// Protocol (active messages; the node holds the leases and slots, so no remote key of the node
// ever leaves it):
// - A client connects to the listener (host:port, UCX sockaddr wireup). With a token set, its first
//   message must be HELLO{token}; any other message first, or a wrong token, is answered with
//   UNAUTHENTICATED and the connection is dropped.
// - GET{key, ranges}: the node Lease()s the block on a worker thread (a promotion from NVMe never
//   stalls the progress thread) and answers GET_REPLY{status, checksum, length} + the bytes. A
//   whole block or one range is sent zero-copy from the registered arena (UCX rendezvous); several
//   ranges are gathered into one buffer. The lease is released when the send completes or fails.
// - PUT{key, size, checksum} + bytes: the node Reserve()s a slot, receives the bytes straight into
//   the arena (ucp_am_recv_data_nbx), Commit()s (checksum verified) and answers PUT_REPLY.
// - Shared-memory fast path: a client on the same host may REGISTER buffers it allocated in UCX
//   shared memory (posix/sysv) and send its remote key. When the node can map that region
//   (ucp_rkey_ptr), GET and PUT name a place in the region instead of carrying bytes, and a node
//   worker thread copies between the arena and the region with one memcpy. This is the client's key
//   handed to the node, never the reverse; offsets are bounds-checked against the region. Cross-
//   process memory (CMA) is far slower than memcpy (docs/perf-notes.md), so rendezvous alone cannot
//   reach memcpy. A GET that writes into the region is claimed (proto/region_claim.h): the client
//   REGISTERs a claim table too, the GET names a word of it, and the worker thread writes only
//   after moving that word from PENDING to WRITING (DONE after the copy). A client that gave up on
//   the GET cancelled the word first: the node then writes nothing and answers ABORTED, so a node
//   that resumes after a stall never writes into a buffer its caller owns again. When the client's
//   table has writer words (kRegisterClaimWriters), the copying thread holds the slot's writer word
//   (common/robust_word.h) around WRITING..DONE, so that if the node dies mid-copy the kernel marks
//   it and the client stops waiting for DONE.
// - One-sided gets (same host): when the store's arena lives in a memfd (BlockStore::shared_arena),
//   an authenticated session may ask ARENA; the answer (pid, fd, sizes, nonce) lets the client open
//   /proc/<pid>/fd/<fd> read-only, which the kernel allows only to the node's own user (or root),
//   and the nonce in the file's header page proves it is this node's arena. LEASE{key, ranges}
//   then pins the block (promoting it from NVMe on a worker thread if needed) and answers its
//   offset in the arena and its checksum; the client copies the bytes itself, verifying the
//   checksum in the same pass, and RELEASEs lease ids in batches. The node does no copy. Leases
//   belong to the session: closing it (disconnect, kill -9 of the client, or a lease held longer
//   than transfer_timeout_s) releases them all.
// - Checksums: a whole-block reply carries the writer's checksum; a range subset carries
//   BlockChecksum over exactly the bytes sent (the ranges concatenated in request order).
//
// Error handling: endpoints use UCP_ERR_HANDLING_MODE_NONE, because PEER mode drops the shared-
// memory transports (DESIGN.md). Dead clients are found by the connection manager's disconnect
// event and by a per-transfer timeout (options.transfer_timeout_s): the connection is then closed
// by force, which fails its outstanding sends and receives, and their leases and slots are freed.
// (UCX 1.13 leaves some rendezvous sends to a dead peer pending even after a forced close; one
// second after the close the node finishes those itself and frees what they held.)
// Malformed messages (short header, unknown type, absurd lengths) are answered with ERROR.
//
// Thread-safety: Start() and the destructor from one thread; port() from any. The node runs one
// progress thread (which owns every UCX object) and `worker_threads` store threads. The observer is
// called from those threads and must be thread-safe. The BlockStore must outlive the server.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "cache_service/block_store.h"
#include "common/status.h"

namespace foresight {

struct UcxRequestEvent {
  enum class Op { kGet, kPut };
  Op op = Op::kGet;
  uint64_t bytes = 0;    // bytes delivered (get) or stored (put); 0 on failure
  double latency_s = 0;  // from the request's arrival to its reply's completion
  bool ok = false;
  StatusCode code = StatusCode::kOk;
  bool via_region = false;  // moved by the shared-memory fast path (or copied one-sided by the client)
};

struct UcxServerOptions {
  std::string host = "0.0.0.0";                          // listen address (an IP)
  uint16_t port = 0;                                     // 0: pick a free port; see UcxServer::port()
  std::string token;                                     // empty: no authentication
  std::function<void(const UcxRequestEvent&)> observer;  // optional; called once per GET/PUT
  int worker_threads = 2;                                // threads for Lease/Reserve/Commit and fast-path copies
  double transfer_timeout_s = 30;                        // a transfer outstanding longer drops its connection
  std::string transports;                                // UCX_TLS for the node; empty: UCX's default (all)
  // After activity the progress thread polls this long before sleeping on the worker's event fd:
  // lower latency against CPU burnt (foresight-cached takes FORESIGHT_UCX_SPIN_US).
  double spin_us = 50;
  // Tests only: after moving a claim word to WRITING, sleep this long before copying (a node
  // stopped mid-copy, for tests that kill it there). foresight-cached takes
  // FORESIGHT_TEST_PAUSE_IN_CLAIMED_WRITE_S.
  double TEST_pause_in_claimed_write_s = 0;
};

struct UcxServerStats {
  uint64_t connections = 0;  // currently connected clients
  uint64_t connections_total = 0;
  uint64_t requests = 0;
  uint64_t errors_sent = 0;          // error replies of any kind
  uint64_t dropped_connections = 0;  // closed for auth failure, timeout or peer failure
};

class UcxServer {
 public:
  // Creates the UCX context and listener, registers the store's arena once, and starts the
  // threads. UNAVAILABLE (naming host:port) when the listener cannot be created.
  static StatusOr<std::unique_ptr<UcxServer>> Start(BlockStore* store, UcxServerOptions options);
  // Stops accepting, closes every connection (releasing leases and slots) and joins the threads.
  ~UcxServer();
  UcxServer(const UcxServer&) = delete;
  UcxServer& operator=(const UcxServer&) = delete;

  uint16_t port() const;
  UcxServerStats Stats() const;

  class Impl;

 private:
  explicit UcxServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace foresight
