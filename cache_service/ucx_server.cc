// UCX data plane, server side. See ucx_server.h for the protocol and the threading model.
#include "cache_service/ucx_server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <ucp/api/ucp.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/checksum.h"
#include "common/constant_time.h"
#include "common/mutex.h"
#include "common/robust_word.h"
#include "proto/region_claim.h"
#include "proto/ucx_messages.h"
#include "ucx/worker.h"

// XXH3 streaming, inline (AVX2), for the checksum of a lease's ranges without gathering them;
// the same values as BlockChecksum over the concatenation.
#define XXH_INLINE_ALL
#include <xxhash.h>

namespace foresight {

using namespace ucxwire;  // NOLINT: this file is the wire format's second owner
using Clock = std::chrono::steady_clock;

namespace {

std::string UcsText(ucs_status_t s) { return ucx::StatusText(s); }

std::string SockaddrText(const sockaddr_storage& ss) {
  char buf[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (ss.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf);
    port = ntohs(in->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf);
    port = ntohs(in6->sin6_port);
  }
  return std::string(buf) + ":" + std::to_string(port);
}

// A small pool for store calls and fast-path copies.
class WorkerPool {
 public:
  explicit WorkerPool(int threads) {
    for (int i = 0; i < std::max(1, threads); ++i) threads_.emplace_back([this] { Run(); });
  }
  ~WorkerPool() { Stop(); }
  void Submit(std::function<void()> fn) {
    {
      MutexLock lock(mu_);
      queue_.push_back(std::move(fn));
    }
    cv_.Signal();
  }
  void Stop() {
    {
      MutexLock lock(mu_);
      stop_ = true;
    }
    cv_.SignalAll();
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }

 private:
  void Run() {
    for (;;) {
      std::function<void()> fn;
      {
        MutexLock lock(mu_);
        cv_.Wait(mu_, [this]() FS_REQUIRES(mu_) { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;
        fn = std::move(queue_.front());
        queue_.pop_front();
      }
      fn();
    }
  }
  Mutex mu_;
  CondVar cv_;
  std::deque<std::function<void()>> queue_ FS_GUARDED_BY(mu_);
  bool stop_ FS_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace

class UcxServer::Impl {
 public:
  Impl(BlockStore* store, UcxServerOptions options) : store_(store), options_(std::move(options)) {}
  ~Impl() { Shutdown(); }

  Status Init();
  void Shutdown();
  uint16_t port() const { return port_; }
  UcxServerStats Stats() const {
    UcxServerStats s;
    s.connections = connections_.load();
    s.connections_total = connections_total_.load();
    s.requests = requests_.load();
    s.errors_sent = errors_sent_.load();
    s.dropped_connections = dropped_.load();
    return s;
  }

 private:
  struct Region {
    uint64_t base = 0;
    uint64_t length = 0;
    ucp_rkey_h rkey = nullptr;
    uint8_t* mapped = nullptr;  // null: the node cannot map it (no fast path)
  };
  struct Outstanding;
  struct Session {
    uint64_t id = 0;
    ucp_ep_h ep = nullptr;
    std::string peer;
    bool authenticated = false;
    bool closing = false;
    Clock::time_point closed_at;
    void* close_request = nullptr;
    int pending_tasks = 0;  // worker tasks not yet posted back
    std::unordered_map<uint32_t, Region> regions;
    // The client's claim table (a mapped region of `regions`), or null: region GETs with kClaimSlot
    // name a word of it (proto/region_claim.h).
    uint32_t claim_region_id = 0;
    uint32_t* claims = nullptr;
    uint32_t claim_slots = 0;
    uint32_t* claim_writers = nullptr;  // the writer words after the claims (kRegisterClaimWriters), or null
    std::unordered_set<Outstanding*> outstanding;
    std::unordered_map<void*, Clock::time_point> held_descs;  // rendezvous/persistent data we hold
    bool arena_granted = false;                               // ARENA answered: LEASE allowed
    uint64_t next_lease_id = 1;
    struct Held {
      ReadLease lease;
      Clock::time_point since;
    };
    std::unordered_map<uint64_t, Held> leases;  // one-sided gets the client is copying
  };
  // One UCX send or receive in flight, with what it keeps alive.
  struct Outstanding {
    Impl* impl = nullptr;
    uint64_t session_id = 0;
    Clock::time_point start;
    std::vector<uint8_t> header;
    std::string text;
    std::shared_ptr<void> keep;
    std::function<void(ucs_status_t, size_t)> done;
    bool abandoned = false;  // finished by us; UCX may still call back once, then it is freed
  };
  struct GetTask {
    uint64_t session_id = 0;
    uint64_t req_id = 0;
    GetBody body;
    std::vector<ByteRange> ranges;
    Clock::time_point arrival;
    uint8_t* region_dest = nullptr;    // fast path: where to write
    uint32_t* claim = nullptr;         // with region_dest and kClaimSlot: write only after claiming it
    uint32_t* claim_writer = nullptr;  // with claim: held while writing, if the client has writer words
    Status status;
    ReadLease lease;
    std::vector<uint8_t> staging;
    const uint8_t* send_ptr = nullptr;
    bool from_arena = false;
    uint64_t length = 0;
    uint64_t checksum = 0;
    bool one_sided = false;  // LEASE: answer where the block lies; the client copies
    uint64_t block_offset = 0;
    uint64_t block_bytes = 0;
  };
  struct PutTask {
    uint64_t session_id = 0;
    uint64_t req_id = 0;
    PutBody body;
    Clock::time_point arrival;
    void* desc = nullptr;  // touched on the progress thread only
    bool rndv = false;
    const uint8_t* region_src = nullptr;
    Status status;
    WriteSlot slot;
  };

  // --- Progress thread ---
  // The node's own work after each progress call (ucx::Worker::Start).
  ucx::Worker::Pass ProgressPass();
  // After the progress thread ended: releases what sessions still hold.
  void ForceSessionsDown();
  void Post(std::function<void()> fn) { ucx_->Post(std::move(fn)); }
  void Sweep(Clock::time_point now);
  void ReapSessions();
  Session* FindSession(uint64_t id) {
    auto it = sessions_.find(id);
    return it == sessions_.end() ? nullptr : it->second.get();
  }

  static void OnConnRequest(ucp_conn_request_h request, void* arg);
  static void OnEpError(void* arg, ucp_ep_h ep, ucs_status_t status);
  static ucs_status_t OnRequestAm(void* arg, const void* header, size_t header_length, void* data, size_t length,
                                  const ucp_am_recv_param_t* param);
  ucs_status_t HandleRequest(Session* s, const void* header, size_t header_length, void* data, size_t length,
                             const ucp_am_recv_param_t* param);
  void HandleHello(Session* s, const Decoded& msg, const void* data, size_t length, bool rndv);
  void HandleRegister(Session* s, const Decoded& msg, const void* data, size_t length, bool rndv);
  ucs_status_t HandleGet(Session* s, const Decoded& msg, const void* data, size_t length, bool rndv, bool one_sided);
  void HandleArena(Session* s, const Decoded& msg);
  void HandleRelease(Session* s, const Decoded& msg, const void* data, size_t length, bool rndv);
  ucs_status_t HandlePut(Session* s, const Decoded& msg, void* data, size_t length, bool rndv);

  void ExecuteGet(GetTask* task);  // Lease, checks, copy or pin; any thread
  // Holds a claim slot's writer word (proto/region_claim.h) for a copy in *writer; see held().
  static void HoldClaimWriter(uint32_t* word, std::optional<RobustWordHold>* writer);
  // options_.TEST_pause_in_claimed_write_s: a node stopped mid-copy, for tests that kill it there.
  void PauseInClaimedWrite(const GetTask& task) const;
  void FinishGet(std::unique_ptr<GetTask> task, bool from_pool);
  void PutReserved(std::unique_ptr<PutTask> task);
  void PutReceived(std::unique_ptr<PutTask> task);
  void FinishPut(std::unique_ptr<PutTask> task);

  // Sends a reply; `done` runs on completion or failure (on the progress thread).
  void SendReply(Session* s, MsgType type, uint64_t req_id, ReplyBody body, const void* data, size_t length,
                 std::string text, std::shared_ptr<void> keep, bool data_in_arena,
                 std::function<void(ucs_status_t, size_t)> done);
  void SendError(Session* s, MsgType type, uint64_t req_id, const Status& status, bool close);
  static void SendDone(void* request, ucs_status_t status, void* user_data);
  static void RecvDone(void* request, ucs_status_t status, size_t length, void* user_data);
  void Complete(Outstanding* o, ucs_status_t status, size_t length);
  void Abandon(Outstanding* o);
  // force: fail outstanding transfers at once (dead or stuck peers); otherwise flush first, so
  // that the peer receives our last reply and then sees the disconnect.
  void CloseSession(Session* s, const std::string& why, bool force = true);
  void ReleaseDesc(Session* s, void* desc);

  void Observe(UcxRequestEvent::Op op, const Status& status, uint64_t bytes, Clock::time_point arrival,
               bool via_region) {
    if (!options_.observer) return;
    UcxRequestEvent e;
    e.op = op;
    e.ok = status.ok();
    e.code = status.code();
    e.bytes = status.ok() ? bytes : 0;
    e.latency_s = std::chrono::duration<double>(Clock::now() - arrival).count();
    e.via_region = via_region;
    options_.observer(e);
  }
  std::string Node() const { return "node " + options_.host + ":" + std::to_string(port_); }

  BlockStore* store_;
  UcxServerOptions options_;
  std::unique_ptr<ucx::Worker> ucx_;  // the context, the worker and the progress thread
  ucp_context_h context_ = nullptr;   // ucx_'s, for brevity
  ucp_worker_h worker_ = nullptr;     // ucx_'s; progress thread only
  ucp_listener_h listener_ = nullptr;
  ucp_mem_h arena_memh_ = nullptr;
  uint16_t port_ = 0;

  std::unique_ptr<WorkerPool> pool_;
  bool running_ = false;           // the progress thread was started
  std::atomic<bool> stop_{false};  // asks the progress pass to close every session and end
  bool shut_down_ = false;

  // Progress thread only.
  bool stopping_ = false;
  Clock::time_point stop_deadline_;
  Clock::time_point last_sweep_ = Clock::now();
  uint64_t next_session_id_ = 1;
  std::unordered_map<uint64_t, std::unique_ptr<Session>> sessions_;
  std::unordered_map<ucp_ep_h, uint64_t> session_by_ep_;
  std::vector<std::pair<ucp_ep_h, ucs_status_t>> failed_eps_;
  std::vector<uint64_t> refused_sessions_;  // to close politely (after their last reply)
  // Transfers given up on (Abandon) whose UCX request never completed; freed at shutdown.
  std::unordered_set<Outstanding*> abandoned_;

  std::atomic<uint64_t> connections_{0}, connections_total_{0}, requests_{0}, errors_sent_{0}, dropped_{0};
};

// ---------------------------------------------------------------------------------------------
// Setup and teardown.

Status UcxServer::Impl::Init() {
  // A restarted node takes its port back even while old connections linger in TIME_WAIT. These
  // are connection-manager settings that ucp_config_modify cannot reach; an operator's own value
  // wins.
  setenv("UCX_TCP_CM_REUSEADDR", "y", 0);
  setenv("UCX_RDMA_CM_REUSEADDR", "y", 0);
  ucx::WorkerOptions wo;
  wo.who = "UCX data plane";
  wo.tls = options_.transports;
  wo.rendezvous_threshold = kUcxRendezvousThreshold;
  wo.am_id = kUcxRequestAmId;
  wo.am_callback = &Impl::OnRequestAm;
  wo.am_arg = this;
  wo.am_flags = UCP_AM_FLAG_WHOLE_MSG | UCP_AM_FLAG_PERSISTENT_DATA;
  wo.spin_us = options_.spin_us;
  FS_ASSIGN_OR_RETURN(ucx_, ucx::Worker::Create(wo));
  context_ = ucx_->context();
  worker_ = ucx_->worker();
  ucs_status_t st;

  // The arena is registered once; replies from it are then zero-copy.
  if (store_->arena_base() != nullptr && store_->arena_bytes() > 0) {
    ucp_mem_map_params_t mp{};
    mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
    mp.address = store_->arena_base();
    mp.length = store_->arena_bytes();
    st = ucp_mem_map(context_, &mp, &arena_memh_);
    if (st != UCS_OK) {
      return Internal("UCX data plane: registering the " + std::to_string(mp.length) +
                      "-byte arena failed: " + UcsText(st));
    }
  }

  // The listen address: an IP literal or a resolvable name (IPv4 preferred).
  sockaddr_storage ss{};
  socklen_t ss_len = 0;
  {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    addrinfo* res = nullptr;
    int rc = getaddrinfo(options_.host.empty() ? nullptr : options_.host.c_str(), std::to_string(options_.port).c_str(),
                         &hints, &res);
    if (rc != 0 || res == nullptr) {
      return InvalidArgument("UCX data plane: cannot resolve listen host '" + options_.host + "': " + gai_strerror(rc));
    }
    const addrinfo* pick = res;
    for (const addrinfo* a = res; a != nullptr; a = a->ai_next) {
      if (a->ai_family == AF_INET) {
        pick = a;
        break;
      }
    }
    std::memcpy(&ss, pick->ai_addr, pick->ai_addrlen);
    ss_len = pick->ai_addrlen;
    freeaddrinfo(res);
  }
  ucp_listener_params_t lp{};
  lp.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
  lp.sockaddr.addr = reinterpret_cast<const sockaddr*>(&ss);
  lp.sockaddr.addrlen = ss_len;
  lp.conn_handler.cb = &Impl::OnConnRequest;
  lp.conn_handler.arg = this;
  st = ucp_listener_create(worker_, &lp, &listener_);
  if (st != UCS_OK) {
    return Unavailable("UCX data plane: cannot listen on " + options_.host + ":" + std::to_string(options_.port) +
                       ": " + UcsText(st) + " (is the port in use? UCX needs tcp or rdmacm for sockaddr listeners)");
  }
  ucp_listener_attr_t la{};
  la.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR;
  st = ucp_listener_query(listener_, &la);
  if (st != UCS_OK) return Internal("UCX data plane: ucp_listener_query failed: " + UcsText(st));
  port_ = la.sockaddr.ss_family == AF_INET6 ? ntohs(reinterpret_cast<const sockaddr_in6*>(&la.sockaddr)->sin6_port)
                                            : ntohs(reinterpret_cast<const sockaddr_in*>(&la.sockaddr)->sin_port);

  pool_ = std::make_unique<WorkerPool>(options_.worker_threads);
  ucx_->Start([this] { return ProgressPass(); });
  running_ = true;
  return Status::OK();
}

void UcxServer::Impl::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  if (running_) {
    stop_ = true;
    ucx_->Wake();
    ucx_->Join();
    ForceSessionsDown();
  }
  pool_.reset();                               // joins; tasks still queued run and post into a queue nobody reads
  if (ucx_ != nullptr) ucx_->DiscardPosted();  // drops leases and slots held by late completions
  if (arena_memh_ != nullptr) ucp_mem_unmap(context_, arena_memh_);
  ucx_.reset();  // the worker, then the context
  // No callback can come any more: the records of transfers UCX never completed go too.
  for (Outstanding* o : abandoned_) delete o;
  abandoned_.clear();
}

// ---------------------------------------------------------------------------------------------
// Progress thread.

ucx::Worker::Pass UcxServer::Impl::ProgressPass() {
  constexpr auto kSweepEvery = std::chrono::milliseconds(100);
  bool busy = false;
  if (!failed_eps_.empty()) {
    auto failed = std::move(failed_eps_);
    failed_eps_.clear();
    for (auto [ep, status] : failed) {
      auto it = session_by_ep_.find(ep);
      if (it != session_by_ep_.end()) {
        if (Session* s = FindSession(it->second)) CloseSession(s, "the client went away: " + UcsText(status));
      }
    }
  }
  if (!refused_sessions_.empty()) {
    auto refused = std::move(refused_sessions_);
    refused_sessions_.clear();
    for (uint64_t id : refused) {
      if (Session* s = FindSession(id)) CloseSession(s, "authentication failed", /*force=*/false);
    }
  }
  const auto now = Clock::now();
  if (!stopping_ && stop_) {
    stopping_ = true;
    stop_deadline_ = now + std::chrono::seconds(10);
    if (listener_ != nullptr) {
      ucp_listener_destroy(listener_);
      listener_ = nullptr;
    }
    for (auto& [id, s] : sessions_) CloseSession(s.get(), "the node is shutting down");
  }
  if (now - last_sweep_ >= kSweepEvery || stopping_) {
    last_sweep_ = now;
    Sweep(now);
    ReapSessions();
  }
  if (stopping_) {
    // Closing: poll until every session is gone or the deadline passed, never sleeping.
    if (sessions_.empty() || now > stop_deadline_) return ucx::Worker::Pass::kStop;
    busy = true;
  }
  return busy ? ucx::Worker::Pass::kBusy : ucx::Worker::Pass::kIdle;
}

void UcxServer::Impl::ForceSessionsDown() {
  // Anything left (only after the closing deadline): force the endpoints down.
  for (auto& [id, s] : sessions_) {
    if (s->ep != nullptr && s->close_request == nullptr) {
      for (auto& [desc, t] : s->held_descs) ucp_am_data_release(worker_, desc);
      s->held_descs.clear();
    }
    for (auto& [rid, r] : s->regions) {
      if (r.rkey != nullptr) ucp_rkey_destroy(r.rkey);
    }
  }
}

void UcxServer::Impl::Sweep(Clock::time_point now) {
  auto limit = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(options_.transfer_timeout_s));
  for (auto& [id, s] : sessions_) {
    if (s->closing) continue;
    bool expired = false;
    for (Outstanding* o : s->outstanding) expired |= now - o->start > limit;
    for (auto& [desc, t] : s->held_descs) expired |= now - t > limit;
    for (auto& [lid, held] : s->leases) expired |= now - held.since > limit;
    if (expired) {
      CloseSession(s.get(), "a transfer made no progress for " + std::to_string(options_.transfer_timeout_s) + " s");
    }
  }
}

void UcxServer::Impl::ReapSessions() {
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    Session* s = it->second.get();
    if (s->closing && s->close_request != nullptr) {
      ucs_status_t st = ucp_request_check_status(s->close_request);
      if (st != UCS_INPROGRESS) {
        ucp_request_free(s->close_request);
        s->close_request = nullptr;
        s->ep = nullptr;
      }
    }
    if (s->closing && s->ep == nullptr && !s->outstanding.empty() &&
        Clock::now() - s->closed_at > std::chrono::seconds(1)) {
      auto stuck = std::move(s->outstanding);
      s->outstanding.clear();
      for (Outstanding* o : stuck) Abandon(o);
    }
    if (s->closing && s->ep == nullptr && s->pending_tasks == 0 && s->outstanding.empty()) {
      for (auto& [rid, r] : s->regions) {
        if (r.rkey != nullptr) ucp_rkey_destroy(r.rkey);
      }
      it = sessions_.erase(it);
      continue;
    }
    ++it;
  }
}

void UcxServer::Impl::CloseSession(Session* s, const std::string& why, bool force) {
  if (s->closing) return;
  s->closing = true;
  s->closed_at = Clock::now();
  dropped_++;
  spdlog::info("UCX data plane: closing the connection from {} ({}; {} transfers outstanding)", s->peer, why,
               s->outstanding.size() + s->held_descs.size());
  connections_--;
  for (auto& [desc, t] : s->held_descs) ucp_am_data_release(worker_, desc);
  s->held_descs.clear();
  s->leases.clear();  // the client's one-sided copies: a dead client's pins go with it
  session_by_ep_.erase(s->ep);
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  // FORCE fails outstanding sends/receives; their callbacks free the leases and slots.
  p.flags = force ? UCP_EP_CLOSE_FLAG_FORCE : 0;
  void* req = ucp_ep_close_nbx(s->ep, &p);
  if (req == nullptr || UCS_PTR_IS_ERR(req)) {
    s->ep = nullptr;
  } else {
    s->close_request = req;
  }
}

void UcxServer::Impl::OnConnRequest(ucp_conn_request_h request, void* arg) {
  auto* self = static_cast<Impl*>(arg);
  if (self->stop_) {
    ucp_listener_reject(self->listener_, request);
    return;
  }
  ucp_conn_request_attr_t attr{};
  attr.field_mask = UCP_CONN_REQUEST_ATTR_FIELD_CLIENT_ADDR;
  std::string peer = "?";
  if (ucp_conn_request_query(request, &attr) == UCS_OK) peer = SockaddrText(attr.client_address);

  ucp_ep_params_t ep_params{};
  ep_params.field_mask =
      UCP_EP_PARAM_FIELD_CONN_REQUEST | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
  ep_params.conn_request = request;
  // NONE keeps the shared-memory transports (PEER drops them); dead peers are found by the
  // connection manager's disconnect event (OnEpError) and by Sweep()'s transfer timeout.
  ep_params.err_mode = UCP_ERR_HANDLING_MODE_NONE;
  ep_params.err_handler.cb = &Impl::OnEpError;
  ep_params.err_handler.arg = self;
  ucp_ep_h ep = nullptr;
  ucs_status_t st = ucp_ep_create(self->worker_, &ep_params, &ep);
  if (st != UCS_OK) return;
  auto s = std::make_unique<Session>();
  s->id = self->next_session_id_++;
  s->ep = ep;
  s->peer = peer;
  s->authenticated = self->options_.token.empty();
  self->session_by_ep_[ep] = s->id;
  self->sessions_[s->id] = std::move(s);
  self->connections_++;
  self->connections_total_++;
  spdlog::debug("UCX data plane: connection from {}", peer);
}

void UcxServer::Impl::OnEpError(void* arg, ucp_ep_h ep, ucs_status_t status) {
  // Deferred: closing an endpoint from inside its own error callback is not allowed.
  static_cast<Impl*>(arg)->failed_eps_.emplace_back(ep, status);
}

// ---------------------------------------------------------------------------------------------
// Requests.

ucs_status_t UcxServer::Impl::OnRequestAm(void* arg, const void* header, size_t header_length, void* data,
                                          size_t length, const ucp_am_recv_param_t* param) {
  auto* self = static_cast<Impl*>(arg);
  if (!(param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) || param->reply_ep == nullptr) {
    return UCS_OK;  // no way to answer (the client did not ask for replies); dropped
  }
  auto it = self->session_by_ep_.find(param->reply_ep);
  if (it == self->session_by_ep_.end()) return UCS_OK;
  Session* s = self->FindSession(it->second);
  if (s == nullptr || s->closing) return UCS_OK;
  return self->HandleRequest(s, header, header_length, data, length, param);
}

ucs_status_t UcxServer::Impl::HandleRequest(Session* s, const void* header, size_t header_length, void* data,
                                            size_t length, const ucp_am_recv_param_t* param) {
  requests_++;
  const bool rndv = param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV;
  std::string error;
  if (header_length > kMaxHeaderBytes) {
    SendError(s, MsgType::kError, 0,
              InvalidArgument(Node() + ": message header of " + std::to_string(header_length) +
                              " bytes exceeds the limit of " + std::to_string(kMaxHeaderBytes)),
              false);
    return UCS_OK;
  }
  std::optional<Decoded> msg = DecodeHeader(header, header_length, &error);
  if (!msg) {
    SendError(s, MsgType::kError, 0, InvalidArgument(Node() + ": malformed message: " + error), false);
    return UCS_OK;
  }
  const MsgType type = msg->header.type;
  if (!s->authenticated && type != MsgType::kHello) {
    SendError(
        s, MsgType::kError, msg->header.req_id,
        Unauthenticated(Node() + ": " + MsgTypeName(type) + " before HELLO; this node requires a token (--token-file)"),
        true);
    return UCS_OK;
  }
  switch (type) {
    case MsgType::kHello:
      HandleHello(s, *msg, data, length, rndv);
      return UCS_OK;
    case MsgType::kRegister:
      HandleRegister(s, *msg, data, length, rndv);
      return UCS_OK;
    case MsgType::kGet:
      return HandleGet(s, *msg, data, length, rndv, /*one_sided=*/false);
    case MsgType::kLease:
      return HandleGet(s, *msg, data, length, rndv, /*one_sided=*/true);
    case MsgType::kArena:
      HandleArena(s, *msg);
      return UCS_OK;
    case MsgType::kRelease:
      HandleRelease(s, *msg, data, length, rndv);
      return UCS_OK;
    case MsgType::kPut:
      return HandlePut(s, *msg, data, length, rndv);
    default:
      SendError(s, MsgType::kError, msg->header.req_id,
                InvalidArgument(Node() + ": unknown message type " + std::to_string(static_cast<unsigned>(type))),
                false);
      return UCS_OK;
  }
}

void UcxServer::Impl::HandleHello(Session* s, const Decoded& msg, const void* data, size_t length, bool rndv) {
  if (rndv || length > kMaxTokenBytes) {
    SendError(s, MsgType::kHelloReply, msg.header.req_id,
              Unauthenticated(Node() + ": HELLO token exceeds " + std::to_string(kMaxTokenBytes) + " bytes"), true);
    return;
  }
  if (!options_.token.empty() &&
      !ConstantTimeEquals(options_.token, std::string_view(static_cast<const char*>(data), length))) {
    SendError(s, MsgType::kHelloReply, msg.header.req_id,
              Unauthenticated(Node() + ": wrong token in HELLO from " + s->peer), true);
    return;
  }
  s->authenticated = true;
  SendReply(s, MsgType::kHelloReply, msg.header.req_id, ReplyBody{}, nullptr, 0, {}, nullptr, false, nullptr);
}

void UcxServer::Impl::HandleRegister(Session* s, const Decoded& msg, const void* data, size_t length, bool rndv) {
  std::string error;
  auto body = DecodeRegister(msg, &error);
  if (!body || rndv || length == 0 || length > kMaxRkeyBytes || body->length == 0 ||
      body->base + body->length < body->base) {
    if (error.empty())
      error = "REGISTER needs a packed key of 1.." + std::to_string(kMaxRkeyBytes) + " bytes and a non-empty region";
    SendError(s, MsgType::kRegisterReply, msg.header.req_id, InvalidArgument(Node() + ": " + error), false);
    return;
  }
  if (RkeyCheck(data, length) != body->key_check) {
    SendError(s, MsgType::kRegisterReply, msg.header.req_id,
              InvalidArgument(Node() + ": the packed remote key of region " + std::to_string(body->region_id) +
                              " does not match its check (damaged, or not packed by UCX); not unpacked"),
              false);
    return;
  }
  auto old = s->regions.find(body->region_id);
  if (old != s->regions.end()) {
    if (s->pending_tasks > 0) {
      SendError(s, MsgType::kRegisterReply, msg.header.req_id,
                FailedPrecondition(Node() + ": region " + std::to_string(body->region_id) +
                                   " is in use by transfers; register it under a new id"),
                false);
      return;
    }
    if (old->second.rkey != nullptr) ucp_rkey_destroy(old->second.rkey);
    s->regions.erase(old);
    if (s->claims != nullptr && s->claim_region_id == body->region_id) {
      s->claims = nullptr;
      s->claim_slots = 0;
      s->claim_writers = nullptr;
    }
  }
  Region r;
  r.base = body->base;
  r.length = body->length;
  // ucp_ep_rkey_unpack takes no length: unpack from a zero-padded copy so that a malformed key
  // reads our zeros, never past the message.
  std::vector<uint8_t> packed(length + 4096, 0);
  std::memcpy(packed.data(), data, length);
  ucs_status_t st = ucp_ep_rkey_unpack(s->ep, packed.data(), &r.rkey);
  if (st != UCS_OK) {
    SendError(s, MsgType::kRegisterReply, msg.header.req_id,
              InvalidArgument(Node() + ": cannot unpack the remote key of region " + std::to_string(body->region_id) +
                              ": " + UcsText(st)),
              false);
    return;
  }
  void* first = nullptr;
  void* last = nullptr;
  if (ucp_rkey_ptr(r.rkey, r.base, &first) == UCS_OK && ucp_rkey_ptr(r.rkey, r.base + r.length - 1, &last) == UCS_OK &&
      static_cast<uint8_t*>(last) == static_cast<uint8_t*>(first) + (r.length - 1)) {
    r.mapped = static_cast<uint8_t*>(first);
  }
  ReplyBody reply;
  reply.flags = r.mapped != nullptr ? kReplyMapped : 0;
  // A claim table is honoured only when mapped, word-aligned and as long as it says.
  if ((body->flags & kRegisterClaimTable) && r.mapped != nullptr && body->claim_slots > 0 &&
      reinterpret_cast<uintptr_t>(r.mapped) % alignof(uint32_t) == 0 &&
      uint64_t{body->claim_slots} * kClaimWordBytes <= r.length) {
    s->claim_region_id = body->region_id;
    s->claims = reinterpret_cast<uint32_t*>(r.mapped);
    s->claim_slots = body->claim_slots;
    reply.flags |= kReplyClaims;
    if ((body->flags & kRegisterClaimWriters) && ClaimTableBytes(body->claim_slots) <= r.length) {
      s->claim_writers = s->claims + body->claim_slots;
      reply.flags |= kReplyClaimWriters;
    }
  }
  s->regions[body->region_id] = r;
  SendReply(s, MsgType::kRegisterReply, msg.header.req_id, reply, nullptr, 0, {}, nullptr, false, nullptr);
}

void UcxServer::Impl::HandleArena(Session* s, const Decoded& msg) {
  const SharedArena shared = store_->shared_arena();
  if (shared.fd < 0) {
    SendError(s, MsgType::kArenaReply, msg.header.req_id,
              FailedPrecondition(Node() + ": ARENA: this node's arena is not in shared memory"), false);
    return;
  }
  ArenaGrant g;
  g.pid = static_cast<uint32_t>(getpid());
  g.fd = shared.fd;
  g.file_bytes = shared.file_bytes;
  g.arena_offset = shared.arena_offset;
  g.arena_bytes = store_->arena_bytes();
  std::memcpy(g.nonce, shared.nonce, sizeof g.nonce);
  std::vector<uint8_t> bytes = EncodeArenaGrant(g);
  s->arena_granted = true;
  SendReply(s, MsgType::kArenaReply, msg.header.req_id, ReplyBody{}, nullptr, 0,
            std::string(bytes.begin(), bytes.end()), nullptr, false, nullptr);
}

void UcxServer::Impl::HandleRelease(Session* s, const Decoded& msg, const void* data, size_t length, bool rndv) {
  std::string error;
  std::optional<std::vector<uint64_t>> ids;
  if (!rndv) ids = DecodeIds(data, length, &error);
  if (!ids) {
    if (error.empty()) error = "lease id list is too large";
    SendError(s, MsgType::kError, msg.header.req_id, InvalidArgument(Node() + ": RELEASE: " + error), false);
    return;
  }
  for (uint64_t id : *ids) s->leases.erase(id);  // unknown ids (expired, or never ours): ignored
}

ucs_status_t UcxServer::Impl::HandleGet(Session* s, const Decoded& msg, const void* data, size_t length, bool rndv,
                                        bool one_sided) {
  const MsgType reply_type = one_sided ? MsgType::kLeaseReply : MsgType::kGetReply;
  const char* name = one_sided ? "LEASE" : "GET";
  std::string error;
  auto body = DecodeGet(msg, &error);
  std::optional<std::vector<ByteRange>> ranges;
  if (body && !rndv) ranges = DecodeRanges(data, length, body->range_count, &error);
  if (body && rndv) error = std::string(name) + "'s range list is too large";
  if (!body || !ranges) {
    SendError(s, reply_type, msg.header.req_id, InvalidArgument(Node() + ": " + name + ": " + error), false);
    return UCS_OK;
  }
  if (one_sided && !s->arena_granted) {
    SendError(s, reply_type, msg.header.req_id,
              FailedPrecondition(Node() + ": LEASE " + body->key.ToHex() + " before ARENA"), false);
    return UCS_OK;
  }
  auto task = std::make_unique<GetTask>();
  task->session_id = s->id;
  task->req_id = msg.header.req_id;
  task->body = *body;
  task->ranges = std::move(*ranges);
  task->arrival = Clock::now();
  task->one_sided = one_sided;
  if (one_sided) {
    task->body.flags = 0;
  } else if (body->flags & kViaRegion) {
    auto r = s->regions.find(body->region_id);
    if (r == s->regions.end() || r->second.mapped == nullptr || body->region_offset > r->second.length ||
        body->capacity > r->second.length - body->region_offset) {
      SendError(s, MsgType::kGetReply, msg.header.req_id,
                InvalidArgument(Node() + ": GET " + body->key.ToHex() + ": region " + std::to_string(body->region_id) +
                                " is not registered and mapped, or the destination lies outside it"),
                false);
      return UCS_OK;
    }
    task->region_dest = r->second.mapped + body->region_offset;
    if (body->flags & kClaimSlot) {
      if (s->claims == nullptr || body->claim_slot >= s->claim_slots) {
        SendError(s, MsgType::kGetReply, msg.header.req_id,
                  InvalidArgument(Node() + ": GET " + body->key.ToHex() + ": claim slot " +
                                  std::to_string(body->claim_slot) + " is not in a registered claim table (" +
                                  std::to_string(s->claim_slots) + " slots); register one with kRegisterClaimTable"),
                  false);
        return UCS_OK;
      }
      task->claim = s->claims + body->claim_slot;
      if (s->claim_writers != nullptr) task->claim_writer = s->claim_writers + body->claim_slot;
    }
  }
  // A block already in RAM is served right here: a lease and at most one memcpy, cheaper than two
  // thread hand-offs. Anything else (a promotion from NVMe) goes to the pool.
  StatusOr<BlockInfo> info = store_->Stat(task->body.key);
  if (info.ok() && info->in_ram) {
    ExecuteGet(task.get());
    FinishGet(std::move(task), /*from_pool=*/false);
    return UCS_OK;
  }
  s->pending_tasks++;
  GetTask* raw = task.release();
  pool_->Submit([this, raw] {
    std::unique_ptr<GetTask> t(raw);
    ExecuteGet(t.get());
    GetTask* done = t.release();
    Post([this, done] { FinishGet(std::unique_ptr<GetTask>(done), /*from_pool=*/true); });
  });
  return UCS_OK;
}

void UcxServer::Impl::ExecuteGet(GetTask* t) {
  {
    const std::string what = Node() + ": GET " + t->body.key.ToHex();
    StatusOr<ReadLease> lease = store_->Lease(t->body.key);
    if (!lease.ok()) {
      t->status = lease.status().WithContext(what);
    } else {
      const uint8_t* block = lease->data();
      const uint64_t size = lease->size();
      uint64_t total = 0;
      for (const ByteRange& r : t->ranges) {
        if (r.length == 0 || r.offset > size || r.length > size - r.offset) {
          t->status = OutOfRange(what + ": range [" + std::to_string(r.offset) + ", +" + std::to_string(r.length) +
                                 ") is outside the " + std::to_string(size) + "-byte block");
          break;
        }
        total += r.length;
      }
      if (t->status.ok()) {
        if (t->ranges.empty()) total = size;
        if (total > t->body.capacity) {
          t->status = OutOfRange(what + ": " + std::to_string(total) + " bytes do not fit the " +
                                 std::to_string(t->body.capacity) + "-byte destination");
        }
      }
      if (t->status.ok()) {
        t->length = total;
        if (t->one_sided) {
          t->block_offset = static_cast<uint64_t>(block - store_->arena_base());
          t->block_bytes = size;
          if (t->ranges.empty()) {
            t->checksum = lease->checksum();
          } else {
            XXH3_state_t state;
            XXH3_64bits_reset(&state);
            for (const ByteRange& r : t->ranges) XXH3_64bits_update(&state, block + r.offset, r.length);
            t->checksum = XXH3_64bits_digest(&state);
          }
          t->lease = std::move(*lease);  // held until the client RELEASEs it
        } else if (t->region_dest != nullptr) {
          // Held from before WRITING until after DONE: if this thread dies in between, the kernel
          // marks the word, and the client stops waiting for a DONE that will never come.
          std::optional<RobustWordHold> writer;
          if (t->claim_writer != nullptr) HoldClaimWriter(t->claim_writer, &writer);
          if (writer && !writer->held()) {
            const uint32_t found = writer->found();
            t->status = Aborted(what + ": claim slot " + std::to_string(t->body.claim_slot) + ": its writer word " +
                                (RobustWordOwnerDied(found)
                                     ? std::string("still marks a node thread that died while writing into it "
                                                   "(the client clears it when it settles that get)")
                                 : found != 0 ? "is held by node thread " + std::to_string(found)
                                              : std::string("cannot be held: this thread already holds another")) +
                                "; nothing was written into the client's buffer");
          } else if (t->claim != nullptr && !BeginClaimedWrite(t->claim, t->body.claim_generation)) {
            // The client gave up on this GET (CANCELLED) and may be using the buffer again.
            t->status =
                Aborted(what + ": the client cancelled this get (claim slot " + std::to_string(t->body.claim_slot) +
                        ", generation " + std::to_string(t->body.claim_generation) + " is " +
                        ClaimStateName(ClaimStateOf(LoadClaim(t->claim))) +
                        ", not PENDING); nothing was written into its buffer");
          } else if (t->ranges.empty()) {
            PauseInClaimedWrite(*t);
            std::memcpy(t->region_dest, block, size);
            t->checksum = lease->checksum();
          } else {
            PauseInClaimedWrite(*t);
            uint64_t at = 0;
            for (const ByteRange& r : t->ranges) {
              std::memcpy(t->region_dest + at, block + r.offset, r.length);
              at += r.length;
            }
            t->checksum = BlockChecksum(t->region_dest, total);
          }
          if (t->claim != nullptr && t->status.ok()) EndClaimedWrite(t->claim, t->body.claim_generation);
        } else if (t->ranges.empty()) {
          t->send_ptr = block;
          t->from_arena = true;
          t->checksum = lease->checksum();
          t->lease = std::move(*lease);  // held until the send completes
        } else if (t->ranges.size() == 1) {
          t->send_ptr = block + t->ranges[0].offset;
          t->from_arena = true;
          t->checksum = BlockChecksum(t->send_ptr, total);
          t->lease = std::move(*lease);
        } else {
          t->staging.resize(total);
          uint64_t at = 0;
          for (const ByteRange& r : t->ranges) {
            std::memcpy(t->staging.data() + at, block + r.offset, r.length);
            at += r.length;
          }
          t->send_ptr = t->staging.data();
          t->checksum = BlockChecksum(t->send_ptr, total);
        }
      }
    }
  }
}

void UcxServer::Impl::HoldClaimWriter(uint32_t* word, std::optional<RobustWordHold>* writer) {
  // Another thread of this node holds it only briefly: a stale GET of the slot's last generation
  // (between taking it and finding the claim word not PENDING), or the slot's last writer between
  // DONE and letting go. Waited for, so that such a race does not fail a good GET.
  const auto give_up = Clock::now() + std::chrono::milliseconds(100);
  for (;;) {
    writer->emplace(word);
    const uint32_t found = (*writer)->found();
    if ((*writer)->held() || found == 0 || RobustWordOwnerDied(found) || Clock::now() >= give_up) return;
    std::this_thread::yield();
  }
}

void UcxServer::Impl::PauseInClaimedWrite(const GetTask& t) const {
  if (options_.TEST_pause_in_claimed_write_s <= 0 || t.claim == nullptr) return;
  spdlog::warn("{}: TEST: GET {} holds claim slot {} (generation {}) WRITING; pausing {} s before the copy", Node(),
               t.body.key.ToHex(), t.body.claim_slot, t.body.claim_generation, options_.TEST_pause_in_claimed_write_s);
  std::this_thread::sleep_for(std::chrono::duration<double>(options_.TEST_pause_in_claimed_write_s));
}

void UcxServer::Impl::FinishGet(std::unique_ptr<GetTask> t, bool from_pool) {
  Session* s = FindSession(t->session_id);
  if (s != nullptr && from_pool) s->pending_tasks--;
  if (s == nullptr || s->closing) {
    Observe(UcxRequestEvent::Op::kGet, Status(StatusCode::kAborted, "connection closed"), 0, t->arrival,
            t->region_dest != nullptr);
    return;  // the lease goes with the task
  }
  if (!t->status.ok()) {
    Observe(UcxRequestEvent::Op::kGet, t->status, 0, t->arrival, t->region_dest != nullptr);
    SendError(s, t->one_sided ? MsgType::kLeaseReply : MsgType::kGetReply, t->req_id, t->status, false);
    return;
  }
  if (t->one_sided) {
    LeaseGrant g;
    g.lease_id = s->next_lease_id++;
    g.block_offset = t->block_offset;
    g.block_bytes = t->block_bytes;
    s->leases.emplace(g.lease_id, Session::Held{std::move(t->lease), Clock::now()});
    std::vector<uint8_t> bytes = EncodeLeaseGrant(g);
    ReplyBody reply;
    reply.checksum = t->checksum;
    reply.length = t->length;
    const uint64_t n = t->length;
    const auto arrival = t->arrival;
    SendReply(s, MsgType::kLeaseReply, t->req_id, reply, nullptr, 0, std::string(bytes.begin(), bytes.end()), nullptr,
              false, [this, n, arrival](ucs_status_t st, size_t) {
                UcxRequestEvent::Op op = UcxRequestEvent::Op::kGet;
                Observe(op, st == UCS_OK ? Status::OK() : Unavailable(UcsText(st)), n, arrival, true);
              });
    return;
  }
  ReplyBody reply;
  reply.checksum = t->checksum;
  reply.length = t->length;
  const bool via_region = t->region_dest != nullptr;
  if (via_region) reply.flags |= kReplyWroteRegion;
  const void* data = via_region ? nullptr : t->send_ptr;
  const size_t data_len = via_region ? 0 : t->length;
  const bool in_arena = t->from_arena;
  const uint64_t bytes = t->length;
  const auto arrival = t->arrival;
  std::shared_ptr<GetTask> keep(std::move(t));
  SendReply(s, MsgType::kGetReply, keep->req_id, reply, data, data_len, {}, keep, in_arena,
            [this, bytes, arrival, via_region](ucs_status_t st, size_t) {
              Observe(UcxRequestEvent::Op::kGet, st == UCS_OK ? Status::OK() : Unavailable(UcsText(st)), bytes, arrival,
                      via_region);
            });
}

ucs_status_t UcxServer::Impl::HandlePut(Session* s, const Decoded& msg, void* data, size_t length, bool rndv) {
  std::string error;
  auto body = DecodePut(msg, &error);
  auto reject = [&](const Status& status) {
    SendError(s, MsgType::kPutReply, msg.header.req_id, status, false);
    return UCS_OK;  // drops the data (a rendezvous sender completes without sending it)
  };
  if (!body) return reject(InvalidArgument(Node() + ": PUT: " + error));
  const std::string what = Node() + ": PUT " + body->key.ToHex();
  auto task = std::make_unique<PutTask>();
  task->session_id = s->id;
  task->req_id = msg.header.req_id;
  task->body = *body;
  task->arrival = Clock::now();
  if (body->flags & kViaRegion) {
    auto r = s->regions.find(body->region_id);
    if (length != 0 || r == s->regions.end() || r->second.mapped == nullptr || body->region_offset > r->second.length ||
        body->size > r->second.length - body->region_offset) {
      return reject(InvalidArgument(what + ": region " + std::to_string(body->region_id) +
                                    " is not registered and mapped, or the source lies outside it"));
    }
    task->region_src = r->second.mapped + body->region_offset;
  } else if (length != body->size) {
    return reject(InvalidArgument(what + ": header says " + std::to_string(body->size) + " bytes but " +
                                  std::to_string(length) + " bytes came"));
  }
  if (body->size == 0) return reject(InvalidArgument(what + ": empty block"));
  ucs_status_t keep_data = UCS_OK;
  if (task->region_src == nullptr) {
    task->desc = data;
    task->rndv = rndv;
    s->held_descs[data] = task->arrival;
    keep_data = UCS_INPROGRESS;
  }
  s->pending_tasks++;
  PutTask* raw = task.release();
  pool_->Submit([this, raw, what] {
    std::unique_ptr<PutTask> t(raw);
    StatusOr<WriteSlot> slot = store_->Reserve(t->body.key, t->body.size);
    if (!slot.ok()) {
      t->status = slot.status().WithContext(what);
    } else {
      t->slot = std::move(*slot);
      if (t->region_src != nullptr) {
        std::memcpy(t->slot.data(), t->region_src, t->body.size);
        Status st = store_->Commit(std::move(t->slot), t->body.checksum);
        if (!st.ok()) t->status = st.WithContext(what);
      }
    }
    PutTask* done = t.release();
    Post([this, done] {
      std::unique_ptr<PutTask> t(done);
      Session* s = FindSession(t->session_id);
      if (s != nullptr) s->pending_tasks--;
      if (!t->status.ok() && t->desc != nullptr) {
        ReleaseDesc(s, t->desc);
        t->desc = nullptr;
      }
      if (t->region_src != nullptr || !t->status.ok()) {
        FinishPut(std::move(t));
      } else {
        PutReserved(std::move(t));
      }
    });
  });
  return keep_data;
}

void UcxServer::Impl::ReleaseDesc(Session* s, void* desc) {
  if (s != nullptr && s->held_descs.erase(desc) > 0) ucp_am_data_release(worker_, desc);
}

void UcxServer::Impl::PutReserved(std::unique_ptr<PutTask> t) {
  Session* s = FindSession(t->session_id);
  if (s == nullptr || s->closing || s->held_descs.count(t->desc) == 0) {
    // The connection went away; its data descriptors were released with it. The slot is freed.
    Observe(UcxRequestEvent::Op::kPut, Status(StatusCode::kAborted, "connection closed"), 0, t->arrival, false);
    return;
  }
  s->held_descs.erase(t->desc);
  if (!t->rndv) {
    std::memcpy(t->slot.data(), t->desc, t->body.size);
    ucp_am_data_release(worker_, t->desc);
    t->desc = nullptr;
    PutReceived(std::move(t));
    return;
  }
  void* desc = t->desc;
  t->desc = nullptr;
  auto* o = new Outstanding;
  o->impl = this;
  o->session_id = s->id;
  o->start = Clock::now();
  uint8_t* dest = t->slot.data();
  const uint64_t size = t->body.size;
  std::shared_ptr<PutTask> task(std::move(t));
  o->keep = task;
  o->done = [this, task](ucs_status_t st, size_t) mutable {
    if (st != UCS_OK) {
      task->status =
          Unavailable(Node() + ": PUT " + task->body.key.ToHex() + ": receiving the block failed: " + UcsText(st));
      FinishPut(std::make_unique<PutTask>(std::move(*task)));
      return;
    }
    PutReceived(std::make_unique<PutTask>(std::move(*task)));
  };
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  p.cb.recv_am = &Impl::RecvDone;
  p.user_data = o;
  if (arena_memh_ != nullptr) {
    p.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
    p.memh = arena_memh_;
  }
  s->outstanding.insert(o);
  void* req = ucp_am_recv_data_nbx(worker_, desc, dest, size, &p);
  if (req == nullptr) {
    Complete(o, UCS_OK, size);
  } else if (UCS_PTR_IS_ERR(req)) {
    Complete(o, UCS_PTR_STATUS(req), 0);
  }
}

void UcxServer::Impl::PutReceived(std::unique_ptr<PutTask> t) {
  Session* s = FindSession(t->session_id);
  if (s == nullptr || s->closing) {
    Observe(UcxRequestEvent::Op::kPut, Status(StatusCode::kAborted, "connection closed"), 0, t->arrival, false);
    return;
  }
  s->pending_tasks++;
  PutTask* raw = t.release();
  pool_->Submit([this, raw] {
    std::unique_ptr<PutTask> t(raw);
    Status st = store_->Commit(std::move(t->slot), t->body.checksum);
    if (!st.ok()) t->status = st.WithContext(Node() + ": PUT " + t->body.key.ToHex());
    PutTask* done = t.release();
    Post([this, done] {
      std::unique_ptr<PutTask> t(done);
      if (Session* s = FindSession(t->session_id)) s->pending_tasks--;
      FinishPut(std::move(t));
    });
  });
}

void UcxServer::Impl::FinishPut(std::unique_ptr<PutTask> t) {
  Session* s = FindSession(t->session_id);
  const bool via_region = t->region_src != nullptr;
  if (s == nullptr || s->closing) {
    Observe(UcxRequestEvent::Op::kPut, Status(StatusCode::kAborted, "connection closed"), 0, t->arrival, via_region);
    return;
  }
  Observe(UcxRequestEvent::Op::kPut, t->status, t->body.size, t->arrival, via_region);
  if (!t->status.ok()) {
    SendError(s, MsgType::kPutReply, t->req_id, t->status, false);
    return;
  }
  ReplyBody reply;
  reply.length = t->body.size;
  reply.checksum = t->body.checksum;
  SendReply(s, MsgType::kPutReply, t->req_id, reply, nullptr, 0, {}, nullptr, false, nullptr);
}

// ---------------------------------------------------------------------------------------------
// Sending.

void UcxServer::Impl::SendError(Session* s, MsgType type, uint64_t req_id, const Status& status, bool close) {
  errors_sent_++;
  ReplyBody body;
  body.status = static_cast<int32_t>(status.code());
  if (close) body.flags |= kReplyCloses;
  std::string text = status.message();
  const uint64_t sid = s->id;
  SendReply(s, type, req_id, body, nullptr, 0, std::move(text), nullptr, false,
            [this, sid, close](ucs_status_t, size_t) {
              if (!close) return;
              // Deferred to the progress loop: this may run inside a UCX callback.
              refused_sessions_.push_back(sid);
            });
}

void UcxServer::Impl::SendReply(Session* s, MsgType type, uint64_t req_id, ReplyBody body, const void* data,
                                size_t length, std::string text, std::shared_ptr<void> keep, bool data_in_arena,
                                std::function<void(ucs_status_t, size_t)> done) {
  auto* o = new Outstanding;
  o->impl = this;
  o->session_id = s->id;
  o->start = Clock::now();
  o->header = EncodeReply(type, req_id, body);
  o->text = std::move(text);
  o->keep = std::move(keep);
  o->done = std::move(done);
  if (data == nullptr && !o->text.empty()) {
    data = o->text.data();
    length = o->text.size();
  }
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  p.cb.send = &Impl::SendDone;
  p.user_data = o;
  if (data_in_arena && arena_memh_ != nullptr) {
    p.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
    p.memh = arena_memh_;
  }
  s->outstanding.insert(o);
  void* req = ucp_am_send_nbx(s->ep, kUcxReplyAmId, o->header.data(), o->header.size(), data, length, &p);
  if (req == nullptr) {
    Complete(o, UCS_OK, length);
  } else if (UCS_PTR_IS_ERR(req)) {
    Complete(o, UCS_PTR_STATUS(req), 0);
  }
}

void UcxServer::Impl::SendDone(void* request, ucs_status_t status, void* user_data) {
  auto* o = static_cast<Outstanding*>(user_data);
  o->impl->Complete(o, status, 0);
  ucp_request_free(request);
}

void UcxServer::Impl::RecvDone(void* request, ucs_status_t status, size_t length, void* user_data) {
  auto* o = static_cast<Outstanding*>(user_data);
  o->impl->Complete(o, status, length);
  ucp_request_free(request);
}

void UcxServer::Impl::Complete(Outstanding* o, ucs_status_t status, size_t length) {
  if (o->abandoned) {  // the late callback of a transfer we already gave up on
    abandoned_.erase(o);
    delete o;
    return;
  }
  if (Session* s = FindSession(o->session_id)) s->outstanding.erase(o);
  if (o->done) o->done(status, length);
  delete o;
}

void UcxServer::Impl::Abandon(Outstanding* o) {
  // UCX 1.13 does not always complete a rendezvous send whose peer died, even after a forced
  // close; its endpoint is gone, so no byte can move any more. Free what the transfer holds (the
  // lease or the slot) and keep only the small record, in case UCX calls back after all.
  o->abandoned = true;
  abandoned_.insert(o);
  auto done = std::move(o->done);
  o->done = nullptr;
  if (done) done(UCS_ERR_CANCELED, 0);
  o->keep.reset();
}

// ---------------------------------------------------------------------------------------------

UcxServer::UcxServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
UcxServer::~UcxServer() = default;
uint16_t UcxServer::port() const { return impl_->port(); }
UcxServerStats UcxServer::Stats() const { return impl_->Stats(); }

StatusOr<std::unique_ptr<UcxServer>> UcxServer::Start(BlockStore* store, UcxServerOptions options) {
  if (store == nullptr) return InvalidArgument("UcxServer::Start: no block store");
  auto impl = std::make_unique<Impl>(store, std::move(options));
  Status st = impl->Init();
  if (!st.ok()) return st;
  return std::unique_ptr<UcxServer>(new UcxServer(std::move(impl)));
}

}  // namespace foresight
