// ucx::Worker: the UCX plumbing that both ends of Foresight's data plane share (the client,
// client/ucx_transport.cc, and the node, cache_service/ucx_server.cc).
//
// It owns one UCP context and one single-threaded UCP worker set up for active messages, RMA and
// wake-ups, and runs that worker's progress loop on a thread of its own:
//
//   auto worker = ucx::Worker::Create({.who = "UCX client", .am_id = kUcxReplyAmId,
//                                      .am_callback = &OnReply, .am_arg = this});
//   (*worker)->Start([this] { return Pass(); });  // one pass of the owner's own work
//   (*worker)->Post([this] { StartSend(); });        // from any thread: runs on the progress thread
//
// The loop, each round: run the posted functions, ucp_worker_progress, then the owner's pass. After
// a round with nothing to do it keeps polling (yielding the core to runnable threads) for
// `spin_us`, then arms the worker and sleeps on its event fd (at most 50 ms). Post wakes the
// worker only when the loop sleeps or is about to: while it polls, a posted function is found on
// the next round without a system call on either side.
//
// Only the progress thread may touch the UCP worker (UCS_THREAD_MODE_SINGLE): everything else
// goes through Post. Thread-safety: Post from any thread; the rest from the owner's thread.
#pragma once

#include <ucp/api/ucp.h>

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "common/mutex.h"
#include "common/status.h"

namespace foresight::ucx {

std::string StatusText(ucs_status_t status);

struct WorkerOptions {
  std::string who;  // prefixes errors: "UCX client", "UCX data plane"
  std::string tls;  // UCX_TLS for this context; empty: UCX's default (or the environment's)
  // Messages up to this size go eagerly (UCX_RNDV_THRESH), unless the environment sets that variable.
  std::string rendezvous_threshold;
  // The active-message handler this end receives on.
  unsigned am_id = 0;
  ucp_am_recv_callback_t am_callback = nullptr;
  void* am_arg = nullptr;
  uint32_t am_flags = UCP_AM_FLAG_WHOLE_MSG;
  double spin_us = 50;  // polling after activity before sleeping on the event fd
};

class Worker {
 public:
  // What one pass of the owner's work reports to the loop.
  enum class Pass {
    kIdle,  // nothing done: the loop may start counting towards sleep
    kBusy,  // work done (or pending that must not wait for a wake-up): poll again at once
    kStop,  // leave the loop; the thread ends
  };

  static StatusOr<std::unique_ptr<Worker>> Create(const WorkerOptions& options);
  ~Worker();  // joins the loop (if started), then destroys the worker and the context
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  ucp_context_h context() const { return context_; }
  ucp_worker_h worker() const { return worker_; }

  // Starts the progress thread; `pass` runs on it after every progress call. The loop ends only
  // when `pass` returns kStop: an owner that wants it to end sets a flag of its own that its pass
  // reads, calls Wake(), then Join().
  void Start(std::function<Pass()> pass);
  // Waits for the progress thread to end (see Start).
  void Join();
  // Runs fn on the progress thread, in posting order.
  void Post(std::function<void()> fn);
  // Drops posted functions that never ran (after Join; their captures are destroyed here).
  void DiscardPosted();
  // Wakes the loop (to see a flag the owner set).
  void Wake() { ucp_worker_signal(worker_); }
  // Wakes the loop only when it sleeps or is about to: the rule Post follows, for owners that
  // leave work in their own queues for the pass.
  void WakeIfSleeping();
  bool on_progress_thread() const { return std::this_thread::get_id() == thread_.get_id(); }

 private:
  Worker() = default;
  void Loop();
  // Runs what was posted; returns whether anything ran.
  bool RunPosted();

  std::string who_;
  double spin_us_ = 50;
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  int epoll_fd_ = -1;
  std::function<Pass()> pass_;
  std::thread thread_;

  Mutex post_mu_;
  std::deque<std::function<void()>> posted_ FS_GUARDED_BY(post_mu_);
  // The loop found posted_ empty and sleeps, or is about to, in epoll_wait.
  bool sleeping_ FS_GUARDED_BY(post_mu_) = false;
};

}  // namespace foresight::ucx
