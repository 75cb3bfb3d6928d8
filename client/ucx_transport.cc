// UCX data plane, client side. See ucx_transport.h.
#include "client/ucx_transport.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <ucp/api/ucp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <optional>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "client/arena_reader.h"
#include "client/claim_table.h"
#include "common/checksum.h"
#include "common/mutex.h"
#include "proto/region_claim.h"
#include "proto/ucx_messages.h"
#include "ucx/worker.h"

namespace foresight {

using namespace ucxwire;  // NOLINT: this file is the wire format's second owner
using Clock = std::chrono::steady_clock;

namespace {

std::string UcsText(ucs_status_t s) { return ucx::StatusText(s); }

// Whether `word` appears in `line` as a whole whitespace-separated token.
bool HasWord(const std::string& line, const std::string& word) {
  std::istringstream tokens(line);
  for (std::string t; tokens >> t;) {
    if (t == word) return true;
  }
  return false;
}

Clock::duration Seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

std::string TlsFor(const std::string& transports) {
  if (transports == "auto" || transports.empty()) return "";
  if (transports == "shm") return "posix,sysv,cma,self,tcp";
  if (transports == "tcp") return "tcp";
  return transports;
}

}  // namespace

class UcxTransport::Impl {
 public:
  Impl(std::string host, uint16_t port, std::string token, UcxTransportOptions options)
      : host_(std::move(host)), port_(port), token_(std::move(token)), options_(std::move(options)) {
    node_ = host_ + ":" + std::to_string(port_);
  }
  ~Impl();

  Status Init();
  Status EnsureConnected();
  StatusOr<UcxBuffer> AddRegion(void* data, uint64_t bytes, bool allocate);
  StatusOr<UcxBatch> Submit(std::vector<UcxGet>* gets, std::vector<UcxPut>* puts);
  std::vector<UcxItemResult> Wait(UcxBatch batch, double timeout_s);
  UcxTransportStats Stats() const {
    MutexLock lock(mu_);
    UcxTransportStats s = stats_;
    s.connected = connected_;
    return s;
  }

 private:
  struct Region {
    uint32_t id = 0;
    uint8_t* data = nullptr;
    uint64_t size = 0;
    ucp_mem_h memh = nullptr;
    bool allocated = false;
    bool fast_path = false;
    bool host = true;  // host memory (UCX's view): one-sided gets may memcpy into it
    std::vector<uint8_t> rkey;
  };
  // One request in flight; progress thread only.
  struct Op {
    uint64_t req_id = 0;
    UcxBatch batch = 0;  // 0: a control request (HELLO, REGISTER)
    size_t index = 0;
    bool get = true;
    BlockKey key;
    uint8_t* dest = nullptr;
    uint64_t capacity = 0;
    ucp_mem_h memh = nullptr;
    Clock::time_point start;
    std::function<void(const Status&, const ReplyBody&, const void*, size_t)> on_control_reply;
    const char* control = nullptr;  // a control request's name (HELLO, REGISTER, ARENA)
    bool lease = false;             // a one-sided get: LEASE, then copy out of arena
    std::vector<ByteRange> ranges;
    std::shared_ptr<ArenaMap> arena;
    std::optional<RegionClaim> claim;  // a region GET: settled before its result is reported
  };
  // A leased block ready to be copied out of the node's arena (in ready_).
  struct Ready {
    UcxBatch batch = 0;
    size_t index = 0;
    std::shared_ptr<ArenaMap> arena;
    std::vector<std::pair<const uint8_t*, uint64_t>> segments;
    uint8_t* dest = nullptr;
    uint64_t length = 0;
    uint64_t checksum = 0;
    uint64_t lease_id = 0;
    uint64_t generation = 0;  // the connection it was leased on
    Clock::time_point since;  // when the lease came back
  };
  struct SendCtx {
    std::vector<uint8_t> header;
    std::vector<uint8_t> data;
  };
  struct Batch {
    std::vector<UcxItemResult> results;
    std::vector<uint64_t> checksums;  // expected, for gets
    std::vector<const uint8_t*> dests;
    std::vector<bool> done;
    std::vector<bool> verified;  // checksum already checked while copying (one-sided)
    size_t remaining = 0;
    int copying = 0;  // one-sided copies in progress into this batch's buffers
    bool get = true;
    std::vector<BlockKey> keys;
  };
  struct PendingSend {
    std::vector<uint8_t> header;
    std::vector<uint8_t> data_copy;
    const void* data = nullptr;
    size_t length = 0;
    ucp_mem_h memh = nullptr;
    Op op;
  };

  // Progress thread: the transport's own work after each progress call (ucx::Worker::Start).
  ucx::Worker::Pass ProgressPass();
  void RunSync(std::function<void()> fn);
  void Post(std::function<void()> fn) { ucx_->Post(std::move(fn)); }
  Status DoConnect();
  Status ControlRoundTrip(std::vector<uint8_t> header, std::vector<uint8_t> data, ReplyBody* reply, double timeout_s,
                          std::vector<uint8_t>* reply_data = nullptr);
  void RequestArena();
  void HandleLeaseReply(Op& op, const ReplyBody& reply, const void* data, size_t length, bool rndv);
  // Copies one ready block (of batch `prefer` when it has one); false when none is ready.
  // The progress thread passes min_ready: it copies only when that many blocks wait, so that
  // while a thread in Wait() keeps up, messages are not held behind its copies.
  bool CopyOneReady(UcxBatch prefer, size_t min_ready = 1);
  // Records an item's result; true when that finished its batch. Wakes the batch's waiter unless
  // notify is false (then the caller does, after unlocking mu_).
  bool FinishItemLocked(UcxBatch batch, size_t index, const Status& status, uint64_t bytes, uint64_t checksum,
                        bool verified, bool notify = true) FS_REQUIRES(mu_);
  void FlushReleases();
  void SendFireAndForget(std::vector<uint8_t> header, std::vector<uint8_t> data);
  Status SendRegister(Region& region);
  // Registers the claim table (allocated on first use) on a shared-memory connection; region GETs
  // are sent only when the node honours it (kReplyClaims).
  void RegisterClaimTable();
  void StartOp(PendingSend ps);
  void CompleteOp(uint64_t req_id, const Status& status, uint64_t bytes, uint64_t checksum, bool verified = false);
  // Completes a GET whose delivered bytes hashed to `actual` on this (the progress) thread: OK
  // when that is the node's checksum, DATA_LOSS otherwise.
  void CompleteCheckedGet(uint64_t req_id, uint64_t length, uint64_t expected, uint64_t actual);
  void DropConnection(const Status& status);
  void Sweep();
  void DescribeEndpoint();
  static void OnEpError(void* arg, ucp_ep_h ep, ucs_status_t status);
  static ucs_status_t OnReplyAm(void* arg, const void* header, size_t header_length, void* data, size_t length,
                                const ucp_am_recv_param_t* param);
  ucs_status_t HandleReply(const void* header, size_t header_length, void* data, size_t length,
                           const ucp_am_recv_param_t* param);
  static void SendDone(void* request, ucs_status_t status, void* user_data);
  static void RecvDone(void* request, ucs_status_t status, size_t length, void* user_data);

  std::string What(const Op& op) const {
    if (op.control != nullptr) return std::string(op.control) + " to node " + node_;
    return std::string(op.get ? "GET " : "PUT ") + op.key.ToHex() + " on node " + node_;
  }

  const std::string host_;
  const uint16_t port_;
  const std::string token_;
  const UcxTransportOptions options_;
  std::string node_;

  std::unique_ptr<ucx::Worker> ucx_;  // the context, the worker and the progress thread
  ucp_context_h context_ = nullptr;   // ucx_'s, for brevity
  ucp_worker_h worker_ = nullptr;     // ucx_'s; progress thread only
  bool running_ = false;              // the progress thread was started
  std::atomic<bool> stop_{false};     // the progress pass returns kStop

  // Progress thread only.
  ucp_ep_h ep_ = nullptr;
  bool ep_failed_ = false;
  ucs_status_t ep_error_ = UCS_OK;
  std::unordered_map<uint64_t, Op> ops_;
  Clock::time_point last_sweep_;

  Mutex connect_mu_;  // serializes reconnects
  mutable Mutex mu_;
  CondVar cv_;
  bool connected_ FS_GUARDED_BY(mu_) = false;
  std::vector<Region> regions_ FS_GUARDED_BY(mu_);  // appended only
  std::unordered_map<UcxBatch, Batch> batches_ FS_GUARDED_BY(mu_);
  std::deque<Ready> ready_ FS_GUARDED_BY(mu_);
  std::vector<std::pair<uint64_t, uint64_t>> releases_ FS_GUARDED_BY(mu_);  // (generation, lease id)
  std::shared_ptr<ArenaMap> arena_ FS_GUARDED_BY(mu_);                      // null: no one-sided gets
  uint64_t generation_ FS_GUARDED_BY(mu_) = 1;                              // bumped on every drop
  UcxBatch next_batch_ = 1;
  std::atomic<uint64_t> next_req_id_{1};
  uint32_t next_region_id_ = 1;
  bool ever_connected_ = false;
  UcxTransportStats stats_ FS_GUARDED_BY(mu_);

  // Claimed region GETs (proto/region_claim.h). The table's region is made on the progress thread
  // and lives as long as the transport.
  Region claim_region_;
  std::unique_ptr<ClaimTable> claims_;
  bool claims_active_ FS_GUARDED_BY(mu_) = false;  // this connection's node honours the claim table
};

// ---------------------------------------------------------------------------------------------

Status UcxTransport::Impl::Init() {
  ucx::WorkerOptions wo;
  wo.who = "UCX client";
  wo.tls = TlsFor(options_.transports);
  wo.rendezvous_threshold = kUcxRendezvousThreshold;
  wo.am_id = kUcxReplyAmId;
  wo.am_callback = &Impl::OnReplyAm;
  wo.am_arg = this;
  wo.spin_us = options_.tuning.spin_us;
  FS_ASSIGN_OR_RETURN(ucx_, ucx::Worker::Create(wo));
  context_ = ucx_->context();
  worker_ = ucx_->worker();
  {
    MutexLock lock(mu_);
    stats_.node = node_;
  }
  ucx_->Start([this] { return ProgressPass(); });
  running_ = true;
  return Status::OK();
}

UcxTransport::Impl::~Impl() {
  if (running_) {
    RunSync([this] { DropConnection(Unavailable("UCX client for node " + node_ + " is closing")); });
    stop_ = true;
    ucx_->Wake();
    ucx_->Join();
  }
  for (Region& r : regions_) {
    if (r.memh != nullptr) ucp_mem_unmap(context_, r.memh);
  }
  claims_.reset();
  if (claim_region_.memh != nullptr) ucp_mem_unmap(context_, claim_region_.memh);
}

void UcxTransport::Impl::RunSync(std::function<void()> fn) {
  std::promise<void> done;
  auto fut = done.get_future();
  Post([&fn, &done] {
    fn();
    done.set_value();
  });
  fut.wait();
}

ucx::Worker::Pass UcxTransport::Impl::ProgressPass() {
  if (stop_) return ucx::Worker::Pass::kStop;
  if (ep_failed_ && ep_ != nullptr) {
    DropConnection(Unavailable("connection to node " + node_ + " lost: " + UcsText(ep_error_)));
  }
  const bool copied = CopyOneReady(0, options_.tuning.copy_backlog);  // >= 1 (clamped at Connect)
  FlushReleases();
  const auto now = Clock::now();
  if (now - last_sweep_ > std::chrono::milliseconds(50)) {
    last_sweep_ = now;
    Sweep();
  }
  return copied ? ucx::Worker::Pass::kBusy : ucx::Worker::Pass::kIdle;
}

void UcxTransport::Impl::Sweep() {
  auto limit = Seconds(options_.request_timeout_s);
  auto now = Clock::now();
  for (auto& [id, op] : ops_) {
    if (op.batch != 0 && now - op.start > limit) {
      DropConnection(DeadlineExceeded(What(op) + ": no answer within " + std::to_string(options_.request_timeout_s) +
                                      " s (request_timeout_s); connection dropped"));
      return;
    }
  }
}

void UcxTransport::Impl::OnEpError(void* arg, ucp_ep_h ep, ucs_status_t status) {
  auto* self = static_cast<Impl*>(arg);
  if (ep != self->ep_) return;
  self->ep_failed_ = true;
  self->ep_error_ = status;
}

void UcxTransport::Impl::DropConnection(const Status& status) {
  if (ep_ != nullptr) {
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = UCP_EP_CLOSE_FLAG_FORCE;  // fails our outstanding sends and receives
    void* req = ucp_ep_close_nbx(ep_, &p);
    if (req != nullptr && !UCS_PTR_IS_ERR(req)) {
      auto deadline = Clock::now() + std::chrono::seconds(5);
      while (ucp_request_check_status(req) == UCS_INPROGRESS && Clock::now() < deadline) {
        ucp_worker_progress(worker_);
      }
      ucp_request_free(req);
    }
    ep_ = nullptr;
  }
  ep_failed_ = false;
  std::vector<uint64_t> ids;
  for (auto& [id, op] : ops_) ids.push_back(id);
  for (uint64_t id : ids) CompleteOp(id, status, 0, 0);
  MutexLock lock(mu_);
  connected_ = false;
  // Leases die with the connection: blocks not yet being copied fail like any unfinished item.
  for (Ready& r : ready_) FinishItemLocked(r.batch, r.index, status, 0, 0, false);
  ready_.clear();
  releases_.clear();
  arena_.reset();
  stats_.arena_mapped = false;
  claims_active_ = false;
  generation_++;
}

// ---------------------------------------------------------------------------------------------
// Connecting.

Status UcxTransport::Impl::EnsureConnected() {
  MutexLock connect_lock(connect_mu_);
  {
    MutexLock lock(mu_);
    if (connected_) return Status::OK();
  }
  Status result;
  RunSync([&] { result = DoConnect(); });
  return result;
}

Status UcxTransport::Impl::DoConnect() {
  if (ep_ != nullptr) DropConnection(Unavailable("reconnecting to node " + node_));
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host_.c_str(), std::to_string(port_).c_str(), &hints, &res);
  if (rc != 0 || res == nullptr) {
    return Unavailable("UCX: cannot resolve node " + node_ + ": " + gai_strerror(rc));
  }
  const addrinfo* pick = res;  // IPv4 preferred: "localhost" may list ::1 first
  for (const addrinfo* a = res; a != nullptr; a = a->ai_next) {
    if (a->ai_family == AF_INET) {
      pick = a;
      break;
    }
  }
  sockaddr_storage ss{};
  std::memcpy(&ss, pick->ai_addr, pick->ai_addrlen);
  socklen_t len = pick->ai_addrlen;
  freeaddrinfo(res);

  ucp_ep_params_t p{};
  p.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                 UCP_EP_PARAM_FIELD_ERR_HANDLER;
  p.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
  p.sockaddr.addr = reinterpret_cast<const sockaddr*>(&ss);
  p.sockaddr.addrlen = len;
  // NONE keeps shared memory (PEER drops it, DESIGN.md); failures surface through the connection
  // manager (OnEpError) and the request deadlines.
  p.err_mode = UCP_ERR_HANDLING_MODE_NONE;
  p.err_handler.cb = &Impl::OnEpError;
  p.err_handler.arg = this;
  ep_failed_ = false;
  ucs_status_t st = ucp_ep_create(worker_, &p, &ep_);
  if (st != UCS_OK) {
    ep_ = nullptr;
    return Unavailable("UCX: cannot connect to node " + node_ + ": " + UcsText(st));
  }
  ReplyBody reply;
  std::vector<uint8_t> token(token_.begin(), token_.end());
  Status s = ControlRoundTrip(EncodeHello(next_req_id_++), std::move(token), &reply, options_.connect_timeout_s);
  if (s.ok()) {
    std::vector<Region> regions;
    {
      MutexLock lock(mu_);  // regions_ is appended by other threads
      regions = regions_;
    }
    for (Region& r : regions) {
      s = SendRegister(r);
      if (!s.ok()) break;
    }
    MutexLock lock(mu_);
    for (size_t i = 0; s.ok() && i < regions.size(); ++i) regions_[i].fast_path = regions[i].fast_path;
  }
  if (!s.ok()) {
    DropConnection(s);
    return s;
  }
  DescribeEndpoint();
  RegisterClaimTable();
  RequestArena();
  MutexLock lock(mu_);
  connected_ = true;
  if (ever_connected_) stats_.reconnects++;
  ever_connected_ = true;
  return Status::OK();
}

Status UcxTransport::Impl::ControlRoundTrip(std::vector<uint8_t> header, std::vector<uint8_t> data, ReplyBody* reply,
                                            double timeout_s, std::vector<uint8_t>* reply_data) {
  bool done = false;
  Status result;
  PendingSend ps;
  std::string error;
  auto decoded = DecodeHeader(header.data(), header.size(), &error);
  ps.op.req_id = decoded->header.req_id;
  ps.op.batch = 0;
  ps.op.start = Clock::now();
  const char* what = MsgTypeName(decoded->header.type);
  ps.op.control = what;
  ps.op.on_control_reply = [&](const Status& s, const ReplyBody& r, const void* d, size_t n) {
    done = true;
    result = s;
    *reply = r;
    if (reply_data != nullptr && d != nullptr) {
      reply_data->assign(static_cast<const uint8_t*>(d), static_cast<const uint8_t*>(d) + n);
    }
  };
  ps.header = std::move(header);
  ps.data_copy = std::move(data);
  StartOp(std::move(ps));
  auto deadline = Clock::now() + Seconds(timeout_s);
  while (!done && !ep_failed_ && Clock::now() < deadline) ucp_worker_progress(worker_);
  if (done) return result;
  ops_.erase(decoded->header.req_id);
  if (ep_failed_) {
    return Unavailable("UCX: cannot reach node " + node_ + " (" + what + "): " + UcsText(ep_error_));
  }
  return Unavailable("UCX: node " + node_ + " did not answer " + what + " within " + std::to_string(timeout_s) + " s");
}

Status UcxTransport::Impl::SendRegister(Region& r) {
  RegisterBody body;
  body.region_id = r.id;
  body.base = reinterpret_cast<uint64_t>(r.data);
  body.length = r.size;
  body.key_check = RkeyCheck(r.rkey.data(), r.rkey.size());
  ReplyBody reply;
  Status s = ControlRoundTrip(EncodeRegister(next_req_id_++, body), r.rkey, &reply, options_.connect_timeout_s);
  if (!s.ok()) return s;
  r.fast_path = reply.flags & kReplyMapped;
  return Status::OK();
}

void UcxTransport::Impl::RegisterClaimTable() {
  {
    MutexLock lock(mu_);
    claims_active_ = false;
    if (stats_.path != "shm") return;  // the node maps no region of ours over TCP
  }
  if (claim_region_.memh == nullptr) {
    Region r;
    ucp_mem_map_params_t mp{};
    mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH | UCP_MEM_MAP_PARAM_FIELD_FLAGS;
    mp.address = nullptr;
    mp.length = ClaimTableBytes(kClaimTableSlots);
    mp.flags = UCP_MEM_MAP_ALLOCATE;
    ucs_status_t st = ucp_mem_map(context_, &mp, &r.memh);
    if (st != UCS_OK) {
      spdlog::warn(
          "UCX client: cannot allocate the claim table for node {} ({}); GETs into buffers from Allocate() "
          "carry their bytes in the reply",
          node_, UcsText(st));
      return;
    }
    ucp_mem_attr_t attr{};
    attr.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS;
    ucp_mem_query(r.memh, &attr);
    r.data = static_cast<uint8_t*>(attr.address);
    r.size = mp.length;
    r.allocated = true;
    std::memset(r.data, 0, r.size);
    void* rkey = nullptr;
    size_t rkey_len = 0;
    st = ucp_rkey_pack(context_, r.memh, &rkey, &rkey_len);
    if (st != UCS_OK) {
      ucp_mem_unmap(context_, r.memh);
      spdlog::warn("UCX client: cannot pack the claim table's key for node {} ({})", node_, UcsText(st));
      return;
    }
    r.rkey.assign(static_cast<uint8_t*>(rkey), static_cast<uint8_t*>(rkey) + rkey_len);
    ucp_rkey_buffer_release(rkey);
    {
      MutexLock lock(mu_);
      r.id = next_region_id_++;
    }
    claim_region_ = std::move(r);
    auto* words = reinterpret_cast<uint32_t*>(claim_region_.data);
    claims_ = std::make_unique<ClaimTable>(words, kClaimTableSlots, words + kClaimTableSlots);
  }
  RegisterBody body;
  body.region_id = claim_region_.id;
  body.base = reinterpret_cast<uint64_t>(claim_region_.data);
  body.length = claim_region_.size;
  body.key_check = RkeyCheck(claim_region_.rkey.data(), claim_region_.rkey.size());
  body.flags = kRegisterClaimTable | kRegisterClaimWriters;
  body.claim_slots = kClaimTableSlots;
  ReplyBody reply;
  Status s =
      ControlRoundTrip(EncodeRegister(next_req_id_++, body), claim_region_.rkey, &reply, options_.connect_timeout_s);
  const bool active = s.ok() && (reply.flags & kReplyClaims);
  if (!active) {
    spdlog::warn(
        "UCX client: node {} does not honour the claim table ({}); GETs into buffers from Allocate() carry their "
        "bytes in the reply (slower) so that a stalled node cannot write into them late. Upgrade the node to get the "
        "one-memcpy path back",
        node_, s.ok() ? "an older node: no kReplyClaims" : s.ToString());
  } else if (!(reply.flags & kReplyClaimWriters)) {
    spdlog::warn(
        "UCX client: node {} does not hold the claim table's writer words (an older node): if it dies in the middle "
        "of copying a GET into a buffer from Allocate(), that GET waits for ever instead of failing. Upgrade the node",
        node_);
  }
  MutexLock lock(mu_);
  claims_active_ = active;
}

void UcxTransport::Impl::DescribeEndpoint() {
  char* buf = nullptr;
  size_t size = 0;
  FILE* f = open_memstream(&buf, &size);
  if (f == nullptr) return;
  ucp_ep_print_info(ep_, f);
  fclose(f);
  std::string text(buf, size);
  free(buf);
  std::string transport = "unknown";
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    // UCX 1.13: "#   lane[1]:  3:sysv/memory.0 md[2] -> md[2]/sysv/sysdev[255] am am_bw#0"
    // UCX 1.22: "#   lane[0]:  1:tcp/lo.0 md[0] -> md[0]/tcp/sysdev[255] seg 4294967295 rma_bw#0 am"
    if (line.find("lane[") == std::string::npos || !HasWord(line, "am")) continue;
    size_t colon = line.find(':', line.find("lane["));
    size_t tl_start = line.find(':', colon + 1);
    size_t slash = line.find('/', tl_start);
    if (tl_start != std::string::npos && slash != std::string::npos) {
      transport = line.substr(tl_start + 1, slash - tl_start - 1);
    }
    break;
  }
  MutexLock lock(mu_);
  stats_.lanes = text;
  stats_.transport = transport;
  if (transport == "sysv" || transport == "posix" || transport == "xpmem" || transport == "knem") {
    stats_.path = "shm";
  } else if (transport == "tcp") {
    stats_.path = "tcp";
  } else {
    stats_.path = transport;
  }
}

// ---------------------------------------------------------------------------------------------
// Buffers.

StatusOr<UcxBuffer> UcxTransport::Impl::AddRegion(void* data, uint64_t bytes, bool allocate) {
  if (bytes == 0) return InvalidArgument("UCX client: cannot register an empty buffer");
  Status result;
  UcxBuffer out;
  RunSync([&] {
    Region r;
    ucp_mem_map_params_t mp{};
    mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH | UCP_MEM_MAP_PARAM_FIELD_FLAGS;
    mp.address = allocate ? nullptr : data;
    mp.length = bytes;
    mp.flags = allocate ? UCP_MEM_MAP_ALLOCATE : 0;
    ucs_status_t st = ucp_mem_map(context_, &mp, &r.memh);
    if (st != UCS_OK) {
      result = ResourceExhausted("UCX client: cannot " + std::string(allocate ? "allocate" : "register") + " a " +
                                 std::to_string(bytes) + "-byte buffer: " + UcsText(st));
      return;
    }
    ucp_mem_attr_t attr{};
    attr.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS | UCP_MEM_ATTR_FIELD_LENGTH | UCP_MEM_ATTR_FIELD_MEM_TYPE;
    ucp_mem_query(r.memh, &attr);
    r.data = static_cast<uint8_t*>(attr.address);
    r.host = attr.mem_type == UCS_MEMORY_TYPE_HOST;
    r.size = bytes;
    r.allocated = allocate;
    void* rkey = nullptr;
    size_t rkey_len = 0;
    st = ucp_rkey_pack(context_, r.memh, &rkey, &rkey_len);
    if (st != UCS_OK) {
      ucp_mem_unmap(context_, r.memh);
      result = Internal("UCX client: ucp_rkey_pack failed: " + UcsText(st));
      return;
    }
    r.rkey.assign(static_cast<uint8_t*>(rkey), static_cast<uint8_t*>(rkey) + rkey_len);
    ucp_rkey_buffer_release(rkey);
    bool connected;
    {
      MutexLock lock(mu_);
      r.id = next_region_id_++;
      connected = connected_;
    }
    if (connected) {
      Status s = SendRegister(r);  // a failure only means no fast path for this buffer
      if (!s.ok()) r.fast_path = false;
    }
    out.data = r.data;
    out.size = r.size;
    out.region_id = r.id;
    out.fast_path = r.fast_path;
    MutexLock lock(mu_);
    regions_.push_back(std::move(r));
  });
  if (!result.ok()) return result;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Transfers.

StatusOr<UcxBatch> UcxTransport::Impl::Submit(std::vector<UcxGet>* gets, std::vector<UcxPut>* puts) {
  const bool is_get = gets != nullptr;
  const size_t n = is_get ? gets->size() : puts->size();
  if (n == 0) return InvalidArgument("UCX client: empty batch");
  for (size_t i = 0; i < n; ++i) {
    if (is_get && ((*gets)[i].dest == nullptr || (*gets)[i].capacity == 0)) {
      return InvalidArgument("GET " + (*gets)[i].key.ToHex() + ": no destination buffer");
    }
    if (is_get && (*gets)[i].ranges.size() > kMaxRanges) {
      return InvalidArgument("GET " + (*gets)[i].key.ToHex() + ": more than " + std::to_string(kMaxRanges) + " ranges");
    }
    if (!is_get && ((*puts)[i].src == nullptr || (*puts)[i].size == 0)) {
      return InvalidArgument("PUT " + (*puts)[i].key.ToHex() + ": empty block");
    }
  }
  FS_RETURN_IF_ERROR(EnsureConnected());

  std::vector<PendingSend> sends(n);
  UcxBatch id;
  {
    MutexLock lock(mu_);
    id = next_batch_++;
    Batch& b = batches_[id];
    b.get = is_get;
    b.remaining = n;
    b.results.resize(n);
    b.checksums.resize(n);
    b.dests.resize(n);
    b.done.assign(n, false);
    b.verified.assign(n, false);
    b.keys.resize(n);
    auto find_region = [&](const uint8_t* p, uint64_t len) FS_REQUIRES(mu_) -> const Region* {
      for (const Region& r : regions_) {
        if (p >= r.data && len <= r.size && p - r.data <= static_cast<ptrdiff_t>(r.size - len)) return &r;
      }
      return nullptr;
    };
    for (size_t i = 0; i < n; ++i) {
      PendingSend& ps = sends[i];
      ps.op.req_id = next_req_id_++;
      ps.op.batch = id;
      ps.op.index = i;
      ps.op.get = is_get;
      if (is_get) {
        UcxGet& g = (*gets)[i];
        const Region* r = find_region(g.dest, g.capacity);
        GetBody body;
        body.key = g.key;
        body.capacity = g.capacity;
        body.range_count = static_cast<uint32_t>(g.ranges.size());
        if (arena_ != nullptr && (r == nullptr || r->host)) {
          ps.op.lease = true;
          ps.op.ranges = g.ranges;
          ps.op.arena = arena_;
          stats_.one_sided_gets++;
        } else if (r != nullptr && r->fast_path && claims_active_ && (ps.op.claim = claims_->Arm())) {
          // Only with a claim: the node must not write into the buffer once we gave up on the
          // GET. Without one (an older node, or every claim word in use) the bytes come in the
          // reply, received into the registered buffer.
          body.flags = kViaRegion | kClaimSlot;
          body.region_id = r->id;
          body.region_offset = static_cast<uint64_t>(g.dest - r->data);
          body.claim_slot = ps.op.claim->slot;
          body.claim_generation = ps.op.claim->generation;
          stats_.fast_path_ops++;
        }
        ps.op.key = g.key;
        ps.op.dest = g.dest;
        ps.op.capacity = g.capacity;
        ps.op.memh = r != nullptr ? r->memh : nullptr;
        ps.header = ps.op.lease ? EncodeLease(ps.op.req_id, body) : EncodeGet(ps.op.req_id, body);
        ps.data_copy = EncodeRanges(g.ranges);
        b.dests[i] = g.dest;
        b.keys[i] = g.key;
        stats_.gets++;
      } else {
        UcxPut& u = (*puts)[i];
        const Region* r = find_region(u.src, u.size);
        PutBody body;
        body.key = u.key;
        body.size = u.size;
        body.checksum = u.checksum;
        if (r != nullptr && r->fast_path) {
          body.flags = kViaRegion;
          body.region_id = r->id;
          body.region_offset = static_cast<uint64_t>(u.src - r->data);
          stats_.fast_path_ops++;
        } else {
          ps.data = u.src;
          ps.length = u.size;
          ps.memh = r != nullptr ? r->memh : nullptr;
        }
        ps.op.key = u.key;
        ps.header = EncodePut(ps.op.req_id, body);
        b.keys[i] = u.key;
        stats_.puts++;
      }
    }
  }
  auto shared = std::make_shared<std::vector<PendingSend>>(std::move(sends));
  Post([this, shared] {
    for (PendingSend& ps : *shared) {
      if (ep_ == nullptr) {
        ops_.emplace(ps.op.req_id, ps.op);
        CompleteOp(ps.op.req_id, Unavailable(What(ps.op) + ": not connected"), 0, 0);
        continue;
      }
      StartOp(std::move(ps));
    }
  });
  return id;
}

void UcxTransport::Impl::StartOp(PendingSend ps) {
  auto* ctx = new SendCtx;
  ctx->header = std::move(ps.header);
  ctx->data = std::move(ps.data_copy);
  const void* data = ps.data != nullptr ? ps.data : ctx->data.data();
  const size_t length = ps.data != nullptr ? ps.length : ctx->data.size();
  const uint64_t req_id = ps.op.req_id;
  ps.op.start = Clock::now();
  ops_.emplace(req_id, std::move(ps.op));
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
  p.flags = UCP_AM_SEND_FLAG_REPLY;
  p.cb.send = &Impl::SendDone;
  p.user_data = new std::pair<Impl*, std::pair<SendCtx*, uint64_t>>(this, {ctx, req_id});
  if (ps.memh != nullptr) {
    p.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
    p.memh = ps.memh;
  }
  void* req = ucp_am_send_nbx(ep_, kUcxRequestAmId, ctx->header.data(), ctx->header.size(), length > 0 ? data : nullptr,
                              length, &p);
  if (req == nullptr) {
    delete static_cast<std::pair<Impl*, std::pair<SendCtx*, uint64_t>>*>(p.user_data);
    delete ctx;
  } else if (UCS_PTR_IS_ERR(req)) {
    delete static_cast<std::pair<Impl*, std::pair<SendCtx*, uint64_t>>*>(p.user_data);
    delete ctx;
    auto it = ops_.find(req_id);
    if (it != ops_.end()) {
      CompleteOp(req_id, Unavailable(What(it->second) + ": send failed: " + UcsText(UCS_PTR_STATUS(req))), 0, 0);
    }
  }
}

void UcxTransport::Impl::SendDone(void* request, ucs_status_t status, void* user_data) {
  auto* info = static_cast<std::pair<Impl*, std::pair<SendCtx*, uint64_t>>*>(user_data);
  Impl* self = info->first;
  delete info->second.first;
  const uint64_t req_id = info->second.second;
  delete info;
  ucp_request_free(request);
  if (status != UCS_OK) {
    auto it = self->ops_.find(req_id);
    if (it != self->ops_.end()) {
      self->CompleteOp(req_id, Unavailable(self->What(it->second) + ": send failed: " + UcsText(status)), 0, 0);
    }
  }
}

struct RecvInfo {
  UcxTransport::Impl* impl;
  uint64_t req_id;
  uint64_t checksum;
};

void UcxTransport::Impl::RecvDone(void* request, ucs_status_t status, size_t length, void* user_data) {
  auto* info = static_cast<RecvInfo*>(user_data);
  Impl* self = info->impl;
  const uint64_t req_id = info->req_id;
  const uint64_t checksum = info->checksum;
  delete info;
  ucp_request_free(request);
  auto it = self->ops_.find(req_id);
  if (it == self->ops_.end()) return;
  if (status != UCS_OK) {
    self->CompleteOp(req_id, Unavailable(self->What(it->second) + ": receiving failed: " + UcsText(status)), 0, 0);
  } else if (self->options_.tuning.verify_on_progress_thread) {
    self->CompleteCheckedGet(req_id, length, checksum, BlockChecksum(it->second.dest, length));
  } else {
    self->CompleteOp(req_id, Status::OK(), length, checksum);
  }
}

void UcxTransport::Impl::CompleteCheckedGet(uint64_t req_id, uint64_t length, uint64_t expected, uint64_t actual) {
  auto it = ops_.find(req_id);
  if (it == ops_.end()) return;
  if (actual != expected) {
    CompleteOp(
        req_id,
        DataLoss(What(it->second) + ": checksum mismatch on the delivered bytes (the block " + "was not delivered)"), 0,
        0);
    return;
  }
  CompleteOp(req_id, Status::OK(), length, expected, /*verified=*/true);
}

ucs_status_t UcxTransport::Impl::OnReplyAm(void* arg, const void* header, size_t header_length, void* data,
                                           size_t length, const ucp_am_recv_param_t* param) {
  return static_cast<Impl*>(arg)->HandleReply(header, header_length, data, length, param);
}

ucs_status_t UcxTransport::Impl::HandleReply(const void* header, size_t header_length, void* data, size_t length,
                                             const ucp_am_recv_param_t* param) {
  const bool rndv = param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV;
  std::string error;
  auto msg = DecodeHeader(header, header_length, &error);
  if (!msg) return UCS_OK;  // not ours to answer; dropped
  std::optional<ReplyBody> reply = DecodeReply(*msg, &error);
  auto it = ops_.find(msg->header.req_id);
  if (it == ops_.end()) {
    if (msg->header.type == MsgType::kError && reply && (reply->flags & kReplyCloses)) {
      ep_failed_ = true;
      ep_error_ = UCS_ERR_REJECTED;
    }
    return UCS_OK;  // a late answer to a request we gave up on
  }
  Op& op = it->second;
  if (!reply) {
    if (op.on_control_reply) {
      op.on_control_reply(Internal("node " + node_ + " sent a malformed reply: " + error), ReplyBody{}, nullptr, 0);
      ops_.erase(it);
      return UCS_OK;
    }
    CompleteOp(op.req_id, Internal(What(op) + ": malformed reply: " + error), 0, 0);
    return UCS_OK;
  }
  Status status;
  if (reply->status != 0) {
    std::string text = (!rndv && data != nullptr) ? std::string(static_cast<const char*>(data), length) : "";
    status = Status(static_cast<StatusCode>(reply->status), text);
  }
  if (op.on_control_reply) {
    auto cb = std::move(op.on_control_reply);
    ops_.erase(it);
    cb(status, *reply, rndv ? nullptr : data, rndv ? 0 : length);
    return UCS_OK;
  }
  if (!status.ok()) {
    CompleteOp(op.req_id, status, 0, 0);
    return UCS_OK;
  }
  if (op.lease) {
    HandleLeaseReply(op, *reply, data, length, rndv);
    return UCS_OK;
  }
  if (!op.get) {
    CompleteOp(op.req_id, Status::OK(), reply->length, 0);
    return UCS_OK;
  }
  if (reply->flags & kReplyWroteRegion) {
    if (op.claim) {
      // The node wrote (DONE) before it answered: it is done with the claim word.
      claims_->Release(*op.claim);
      op.claim.reset();
    }
    if (reply->length > op.capacity) {
      CompleteOp(op.req_id,
                 DataLoss(What(op) + ": node claims " + std::to_string(reply->length) + " bytes for a " +
                          std::to_string(op.capacity) + "-byte buffer"),
                 0, 0);
    } else {
      CompleteOp(op.req_id, Status::OK(), reply->length, reply->checksum);
    }
    return UCS_OK;
  }
  if (reply->length != length || length > op.capacity) {
    CompleteOp(op.req_id,
               DataLoss(What(op) + ": reply carries " + std::to_string(length) + " bytes, header says " +
                        std::to_string(reply->length) + ", buffer holds " + std::to_string(op.capacity)),
               0, 0);
    return UCS_OK;
  }
  if (!rndv) {
    if (options_.tuning.verify_on_progress_thread) {
      const uint64_t actual = CopyAndChecksum(op.dest, {{static_cast<const uint8_t*>(data), length}});
      CompleteCheckedGet(op.req_id, length, reply->checksum, actual);
    } else {
      std::memcpy(op.dest, data, length);
      CompleteOp(op.req_id, Status::OK(), length, reply->checksum);
    }
    return UCS_OK;
  }
  auto* info = new RecvInfo{this, op.req_id, reply->checksum};
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  p.cb.recv_am = &Impl::RecvDone;
  p.user_data = info;
  if (op.memh != nullptr) {
    p.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
    p.memh = op.memh;
  }
  void* req = ucp_am_recv_data_nbx(worker_, data, op.dest, length, &p);
  if (req == nullptr) {
    delete info;
    if (options_.tuning.verify_on_progress_thread) {
      CompleteCheckedGet(op.req_id, length, reply->checksum, BlockChecksum(op.dest, length));
    } else {
      CompleteOp(op.req_id, Status::OK(), length, reply->checksum);
    }
  } else if (UCS_PTR_IS_ERR(req)) {
    delete info;
    CompleteOp(op.req_id, Unavailable(What(op) + ": receive failed: " + UcsText(UCS_PTR_STATUS(req))), 0, 0);
  }
  return UCS_INPROGRESS;
}

void UcxTransport::Impl::CompleteOp(uint64_t req_id, const Status& status, uint64_t bytes, uint64_t checksum,
                                    bool verified) {
  auto it = ops_.find(req_id);
  if (it == ops_.end()) return;
  Op op = std::move(it->second);
  ops_.erase(it);
  // Before the result is reported: the caller may reuse the buffer as soon as it is.
  Status result = status;
  if (op.claim && claims_->Settle(*op.claim) == ClaimOutcome::kNodeDied) {
    result = Unavailable(What(op) + ": the node died while copying the block into the buffer (claim slot " +
                         std::to_string(op.claim->slot) + ", generation " + std::to_string(op.claim->generation) +
                         " left WRITING): the buffer may hold part of the block, and nothing more will be written into "
                         "it" +
                         (status.ok() ? std::string() : "; " + status.ToString()));
    spdlog::error("UCX client: {}", result.message());
  }
  if (op.on_control_reply) {
    op.on_control_reply(result, ReplyBody{}, nullptr, 0);
    return;
  }
  bool finished;
  {
    MutexLock lock(mu_);
    finished = FinishItemLocked(op.batch, op.index, result, bytes, checksum, verified, /*notify=*/false);
  }
  // After unlocking: a waiter woken while the lock is held only blocks on it again (one more
  // futex round trip and context switch per get).
  if (finished) cv_.SignalAll();
}

bool UcxTransport::Impl::FinishItemLocked(UcxBatch id, size_t index, const Status& status, uint64_t bytes,
                                          uint64_t checksum, bool verified, bool notify) {
  auto b = batches_.find(id);
  if (b == batches_.end() || b->second.done[index]) return false;
  Batch& batch = b->second;
  batch.done[index] = true;
  batch.verified[index] = verified;
  batch.results[index].status = status;
  batch.results[index].bytes = status.ok() ? bytes : 0;
  batch.checksums[index] = checksum;
  if (status.ok()) {
    (batch.get ? stats_.bytes_in : stats_.bytes_out) += bytes;
  } else {
    stats_.failures++;
  }
  if (--batch.remaining != 0) return false;
  if (notify) cv_.SignalAll();
  return true;
}

std::vector<UcxItemResult> UcxTransport::Impl::Wait(UcxBatch id, double timeout_s) {
  mu_.Lock();
  auto it = batches_.find(id);
  if (it == batches_.end()) {
    mu_.Unlock();
    return {};
  }
  const auto deadline = Clock::now() + Seconds(timeout_s);
  bool finished = false;
  for (;;) {
    if (batches_[id].remaining == 0) {
      finished = true;
      break;
    }
    if (Clock::now() >= deadline) break;
    if (!ready_.empty()) {
      // Copy a leased block (this batch's first, else any): this thread and the progress thread
      // then copy two blocks at once.
      mu_.Unlock();
      CopyOneReady(id);
      mu_.Lock();
      continue;
    }
    cv_.WaitUntil(mu_, deadline, [&]() FS_REQUIRES(mu_) { return batches_[id].remaining == 0 || !ready_.empty(); });
  }
  if (!finished) {
    mu_.Unlock();
    // Nothing may land in the caller's buffers after we return: drop the connection (which fails
    // the blocks not yet being copied) and let the copies already running finish.
    RunSync([&] {
      DropConnection(DeadlineExceeded("UCX batch on node " + node_ + " not done within " + std::to_string(timeout_s) +
                                      " s (Wait timeout); connection dropped"));
    });
    mu_.Lock();
    cv_.Wait(mu_, [&]() FS_REQUIRES(mu_) { return batches_[id].copying == 0; });
  }
  Batch batch = std::move(batches_[id]);
  batches_.erase(id);
  mu_.Unlock();
  for (size_t i = 0; i < batch.results.size(); ++i) {
    UcxItemResult& r = batch.results[i];
    if (!batch.done[i]) {
      r.status = DeadlineExceeded((batch.get ? "GET " : "PUT ") + batch.keys[i].ToHex() + " on node " + node_ +
                                  ": not done within " + std::to_string(timeout_s) + " s");
      continue;
    }
    if (!batch.get || !r.status.ok() || batch.verified[i]) continue;
    const uint64_t actual = BlockChecksum(batch.dests[i], r.bytes);
    if (actual != batch.checksums[i]) {
      r.status = DataLoss("GET " + batch.keys[i].ToHex() + " on node " + node_ +
                          ": checksum mismatch on the delivered bytes (the block was not delivered)");
      r.bytes = 0;
      MutexLock stats_lock(mu_);
      stats_.failures++;
    }
  }
  return std::move(batch.results);
}

// ---------------------------------------------------------------------------------------------
// One-sided gets.

void UcxTransport::Impl::RequestArena() {
  {
    MutexLock lock(mu_);
    arena_.reset();
    stats_.arena_mapped = false;
    stats_.arena_note.clear();
    if (!options_.tuning.one_sided_gets) return;
    if (stats_.path != "shm") return;  // not the same host as far as UCX can tell
  }
  ReplyBody reply;
  std::vector<uint8_t> data;
  Status s = ControlRoundTrip(EncodeArena(next_req_id_++), {}, &reply, options_.connect_timeout_s, &data);
  StatusOr<std::shared_ptr<ArenaMap>> map = Unavailable("no arena");
  if (s.ok()) {
    std::string error;
    auto grant = DecodeArenaGrant(data.data(), data.size(), &error);
    map = grant ? MapArena(*grant) : StatusOr<std::shared_ptr<ArenaMap>>(Internal(error));
  } else {
    map = s;
  }
  MutexLock lock(mu_);
  if (map.ok()) {
    arena_ = *map;
    stats_.arena_mapped = true;
  } else {
    stats_.arena_note = map.status().ToString();
  }
}

void UcxTransport::Impl::HandleLeaseReply(Op& op, const ReplyBody& reply, const void* data, size_t length, bool rndv) {
  std::string error;
  std::optional<LeaseGrant> grant;
  if (!rndv) grant = DecodeLeaseGrant(data, length, &error);
  if (!grant) {
    CompleteOp(op.req_id, Internal(What(op) + ": malformed lease: " + error), 0, 0);
    return;
  }
  const ArenaMap& arena = *op.arena;
  MutexLock lock(mu_);
  Ready r;
  r.batch = op.batch;
  r.index = op.index;
  r.arena = op.arena;
  r.dest = op.dest;
  r.checksum = reply.checksum;
  r.lease_id = grant->lease_id;
  r.generation = generation_;
  r.since = Clock::now();
  // Everything the node says is bounds-checked against our mapping before a byte is read.
  bool ok = grant->block_offset <= arena.arena_bytes && grant->block_bytes <= arena.arena_bytes - grant->block_offset;
  const uint8_t* block = arena.arena + grant->block_offset;
  uint64_t total = 0;
  if (op.ranges.empty()) {
    r.segments.emplace_back(block, grant->block_bytes);
    total = grant->block_bytes;
  } else {
    for (const ByteRange& range : op.ranges) {
      ok = ok && range.offset <= grant->block_bytes && range.length <= grant->block_bytes - range.offset;
      r.segments.emplace_back(block + range.offset, range.length);
      total += range.length;
    }
  }
  ok = ok && total == reply.length && total <= op.capacity;
  r.length = total;
  const uint64_t req_id = op.req_id;
  const UcxBatch batch = op.batch;
  const size_t index = op.index;
  const std::string what = What(op);
  ops_.erase(req_id);  // op is gone from here on
  if (!ok) {
    releases_.emplace_back(generation_, grant->lease_id);
    FinishItemLocked(batch, index,
                     DataLoss(what + ": the node's lease (" + std::to_string(grant->block_bytes) + " bytes at " +
                              std::to_string(grant->block_offset) + ", " + std::to_string(reply.length) +
                              " to deliver) does not fit the arena, the ranges or the buffer"),
                     0, 0, false);
    return;
  }
  ready_.push_back(std::move(r));
  cv_.SignalAll();
}

bool UcxTransport::Impl::CopyOneReady(UcxBatch prefer, size_t min_ready) {
  Ready r;
  {
    MutexLock lock(mu_);
    if (ready_.empty()) return false;
    // Below the backlog, the progress thread still takes a block nobody has taken for a while
    // (no thread in Wait()), so that leases are never held for long.
    if (ready_.size() < min_ready && Clock::now() - ready_.front().since < std::chrono::microseconds(200)) {
      return false;
    }
    auto pick = ready_.begin();
    if (prefer != 0) {
      auto own = std::find_if(ready_.begin(), ready_.end(), [&](const Ready& x) { return x.batch == prefer; });
      pick = own != ready_.end() ? own : std::prev(ready_.end());
    }
    r = std::move(*pick);
    ready_.erase(pick);
    auto b = batches_.find(r.batch);
    if (b == batches_.end()) {
      releases_.emplace_back(r.generation, r.lease_id);
      return true;
    }
    b->second.copying++;
  }
  const uint64_t actual = CopyAndChecksum(r.dest, r.segments);
  MutexLock lock(mu_);
  const bool first_release = releases_.empty();
  releases_.emplace_back(r.generation, r.lease_id);
  Batch& batch = batches_[r.batch];
  batch.copying--;
  if (actual == r.checksum) {
    FinishItemLocked(r.batch, r.index, Status::OK(), r.length, r.checksum, true);
  } else {
    FinishItemLocked(r.batch, r.index,
                     DataLoss("GET " + batch.keys[r.index].ToHex() + " on node " + node_ +
                              ": checksum mismatch on the bytes copied from the node's arena (the block was "
                              "not delivered)"),
                     0, 0, false);
  }
  if (batch.copying == 0) cv_.SignalAll();
  if (first_release && !ucx_->on_progress_thread()) ucx_->WakeIfSleeping();
  return true;
}

void UcxTransport::Impl::FlushReleases() {
  std::vector<uint64_t> ids;
  {
    MutexLock lock(mu_);
    if (releases_.empty()) return;
    for (auto [gen, id] : releases_) {
      if (gen == generation_) ids.push_back(id);
    }
    releases_.clear();
  }
  if (ep_ == nullptr || ids.empty()) return;
  for (size_t at = 0; at < ids.size(); at += kMaxReleaseIds) {
    std::vector<uint64_t> part(ids.begin() + at, ids.begin() + std::min(ids.size(), at + kMaxReleaseIds));
    SendFireAndForget(EncodeRelease(next_req_id_++), EncodeIds(part));
  }
}

void UcxTransport::Impl::SendFireAndForget(std::vector<uint8_t> header, std::vector<uint8_t> data) {
  auto* ctx = new SendCtx;
  ctx->header = std::move(header);
  ctx->data = std::move(data);
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
  p.flags = UCP_AM_SEND_FLAG_REPLY;
  p.cb.send = [](void* request, ucs_status_t, void* user_data) {
    delete static_cast<SendCtx*>(user_data);
    ucp_request_free(request);
  };
  p.user_data = ctx;
  void* req = ucp_am_send_nbx(ep_, kUcxRequestAmId, ctx->header.data(), ctx->header.size(),
                              ctx->data.empty() ? nullptr : ctx->data.data(), ctx->data.size(), &p);
  if (req == nullptr || UCS_PTR_IS_ERR(req)) delete ctx;
}

// ---------------------------------------------------------------------------------------------

UcxTransport::UcxTransport(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
UcxTransport::~UcxTransport() = default;

StatusOr<std::unique_ptr<UcxTransport>> UcxTransport::Connect(const std::string& host, uint16_t port,
                                                              const std::string& token, UcxTransportOptions options) {
  options.tuning.copy_backlog = std::max<size_t>(1, options.tuning.copy_backlog);
  auto impl = std::make_unique<Impl>(host, port, token, std::move(options));
  FS_RETURN_IF_ERROR(impl->Init());
  FS_RETURN_IF_ERROR(impl->EnsureConnected());
  return std::unique_ptr<UcxTransport>(new UcxTransport(std::move(impl)));
}

StatusOr<UcxBuffer> UcxTransport::Allocate(uint64_t bytes) { return impl_->AddRegion(nullptr, bytes, true); }
StatusOr<UcxBuffer> UcxTransport::Register(void* data, uint64_t bytes) {
  if (data == nullptr) return InvalidArgument("UCX client: cannot register a null buffer");
  return impl_->AddRegion(data, bytes, false);
}
StatusOr<UcxBatch> UcxTransport::SubmitGets(std::vector<UcxGet> gets) { return impl_->Submit(&gets, nullptr); }
StatusOr<UcxBatch> UcxTransport::SubmitPuts(std::vector<UcxPut> puts) { return impl_->Submit(nullptr, &puts); }
std::vector<UcxItemResult> UcxTransport::Wait(UcxBatch batch, double timeout_s) {
  return impl_->Wait(batch, timeout_s);
}
std::string UcxTransport::transport_name() const { return impl_->Stats().transport; }
UcxTransportStats UcxTransport::Stats() const { return impl_->Stats(); }

}  // namespace foresight
