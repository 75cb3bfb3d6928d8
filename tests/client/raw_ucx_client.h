// RawClient: a bare UCP client of the node's data plane (TCP only) that sends hand-made messages,
// malformed ones included, and collects the replies. For tests and fuzz targets.
//
// Thread-safety: one thread.
#pragma once

#include <arpa/inet.h>
#include <ucp/api/ucp.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "proto/ucx_messages.h"

namespace foresight {

// A UCP context with active messages only, over TCP only, and one worker on it.
inline void CreateTcpAmWorker(ucp_context_h* context, ucp_worker_h* worker) {
  ucp_config_t* config;
  ucp_config_read(nullptr, nullptr, &config);
  ucp_config_modify(config, "TLS", "tcp");
  ucp_params_t p{};
  p.field_mask = UCP_PARAM_FIELD_FEATURES;
  p.features = UCP_FEATURE_AM;
  ucp_init(&p, config, context);
  ucp_config_release(config);
  ucp_worker_params_t wp{};
  ucp_worker_create(*context, &wp, worker);
}

class RawClient {
 public:
  using Clock = std::chrono::steady_clock;

  explicit RawClient(uint16_t port) {
    CreateTcpAmWorker(&context_, &worker_);
    ucp_am_handler_param_t am{};
    am.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG |
                    UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
    am.id = ucxwire::kUcxReplyAmId;
    am.flags = UCP_AM_FLAG_WHOLE_MSG;
    am.arg = this;
    am.cb = [](void* arg, const void* header, size_t header_length, void* data, size_t length,
               const ucp_am_recv_param_t* param) -> ucs_status_t {
      auto* self = static_cast<RawClient*>(arg);
      std::string error;
      auto msg = ucxwire::DecodeHeader(header, header_length, &error);
      if (!msg) return UCS_OK;
      auto body = ucxwire::DecodeReply(*msg, &error);
      if (!body) return UCS_OK;
      Reply r;
      r.type = msg->header.type;
      r.req_id = msg->header.req_id;
      r.status = static_cast<StatusCode>(body->status);
      r.flags = body->flags;
      r.checksum = body->checksum;
      r.length = body->length;
      r.rendezvous = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
      if (!(param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV)) {
        r.text.assign(static_cast<const char*>(data), length);
      }
      self->replies_.push_back(r);
      return UCS_OK;
    };
    ucp_worker_set_am_recv_handler(worker_, &am);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    ucp_ep_params_t ep{};
    ep.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                    UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
    ep.sockaddr.addr = reinterpret_cast<const sockaddr*>(&sa);
    ep.sockaddr.addrlen = sizeof sa;
    ep.err_mode = UCP_ERR_HANDLING_MODE_NONE;  // must match the node's (UCX refuses asymmetry)
    ep.err_handler.arg = this;
    ep.err_handler.cb = [](void* arg, ucp_ep_h, ucs_status_t) { static_cast<RawClient*>(arg)->failed_ = true; };
    ucp_ep_create(worker_, &ep, &ep_);
  }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;
  ~RawClient() {
    if (ep_ != nullptr) {
      ucp_request_param_t p{};
      p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      p.flags = UCP_EP_CLOSE_FLAG_FORCE;
      void* req = ucp_ep_close_nbx(ep_, &p);
      if (req != nullptr && !UCS_PTR_IS_ERR(req)) {
        while (ucp_request_check_status(req) == UCS_INPROGRESS) ucp_worker_progress(worker_);
        ucp_request_free(req);
      }
    }
    ucp_worker_destroy(worker_);
    ucp_cleanup(context_);
  }
  struct Reply {
    ucxwire::MsgType type = ucxwire::MsgType::kError;
    uint64_t req_id = 0;
    StatusCode status = StatusCode::kOk;
    uint32_t flags = 0;
    uint64_t checksum = 0;  // the reply body's
    uint64_t length = 0;
    bool rendezvous = false;  // the data came by rendezvous and was not fetched: `text` is empty
    std::string text;         // the reply's data (an error's message, a GET's bytes)
  };
  // Sends one message and waits (up to `timeout_s`) for one reply.
  std::optional<Reply> Call(const std::vector<uint8_t>& header, const std::vector<uint8_t>& data,
                            double timeout_s = 5) {
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = UCP_AM_SEND_FLAG_REPLY;
    void* req = ucp_am_send_nbx(ep_, ucxwire::kUcxRequestAmId, header.data(), header.size(),
                                data.empty() ? nullptr : data.data(), data.size(), &p);
    const auto deadline =
        Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s));
    if (req != nullptr && !UCS_PTR_IS_ERR(req)) {
      while (ucp_request_check_status(req) == UCS_INPROGRESS && Clock::now() < deadline) {
        ucp_worker_progress(worker_);
      }
      ucp_request_free(req);
    }
    while (replies_.empty() && Clock::now() < deadline) ucp_worker_progress(worker_);
    if (replies_.empty()) return std::nullopt;
    Reply r = replies_.front();
    replies_.erase(replies_.begin());
    return r;
  }
  // Sends one message that has no reply, and progresses until it is out.
  void Send(const std::vector<uint8_t>& header, const std::vector<uint8_t>& data) {
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = UCP_AM_SEND_FLAG_REPLY;
    void* req = ucp_am_send_nbx(ep_, ucxwire::kUcxRequestAmId, header.data(), header.size(),
                                data.empty() ? nullptr : data.data(), data.size(), &p);
    if (req != nullptr && !UCS_PTR_IS_ERR(req)) {
      while (ucp_request_check_status(req) == UCS_INPROGRESS) ucp_worker_progress(worker_);
      ucp_request_free(req);
    }
    for (int i = 0; i < 1000; ++i) ucp_worker_progress(worker_);
  }
  // True once the node has dropped the connection.
  bool failed() const { return failed_; }
  // Progresses for a while; true when the node dropped the connection.
  bool WaitForDrop(double seconds) {
    auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
    while (!failed_ && Clock::now() < deadline) ucp_worker_progress(worker_);
    return failed_;
  }

 private:
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  ucp_ep_h ep_ = nullptr;
  bool failed_ = false;
  std::vector<Reply> replies_;
};

}  // namespace foresight
