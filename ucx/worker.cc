#include "ucx/worker.h"

#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>

namespace foresight::ucx {

namespace {
using Clock = std::chrono::steady_clock;
}  // namespace

std::string StatusText(ucs_status_t status) { return ucs_status_string(status); }

StatusOr<std::unique_ptr<Worker>> Worker::Create(const WorkerOptions& options) {
  std::unique_ptr<Worker> w(new Worker());
  w->who_ = options.who;
  w->spin_us_ = options.spin_us;
  const std::string& who = options.who;
  ucp_config_t* config = nullptr;
  ucs_status_t st = ucp_config_read(nullptr, nullptr, &config);
  if (st != UCS_OK) return Internal(who + ": reading the UCX config failed: " + StatusText(st));
  if (!options.tls.empty() && ucp_config_modify(config, "TLS", options.tls.c_str()) != UCS_OK) {
    ucp_config_release(config);
    return InvalidArgument(who + ": transports '" + options.tls + "' are not valid UCX_TLS");
  }
  // An operator's UCX_RNDV_THRESH wins (UCX reads its own variables; we only avoid overriding it).
  if (!options.rendezvous_threshold.empty() && std::getenv("UCX_RNDV_THRESH") == nullptr) {
    ucp_config_modify(config, "RNDV_THRESH", options.rendezvous_threshold.c_str());
  }
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_AM | UCP_FEATURE_RMA | UCP_FEATURE_WAKEUP;
  st = ucp_init(&params, config, &w->context_);
  ucp_config_release(config);
  if (st != UCS_OK) {
    return Unavailable(who + ": ucp_init" + (options.tls.empty() ? "" : " with transports '" + options.tls + "'") +
                       " failed: " + StatusText(st));
  }
  ucp_worker_params_t wparams{};
  wparams.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wparams.thread_mode = UCS_THREAD_MODE_SINGLE;  // only the progress thread touches the worker
  st = ucp_worker_create(w->context_, &wparams, &w->worker_);
  if (st != UCS_OK) return Internal(who + ": ucp_worker_create failed: " + StatusText(st));

  ucp_am_handler_param_t am{};
  am.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG |
                  UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
  am.id = options.am_id;
  am.cb = options.am_callback;
  am.arg = options.am_arg;
  am.flags = options.am_flags;
  st = ucp_worker_set_am_recv_handler(w->worker_, &am);
  if (st != UCS_OK) return Internal(who + ": setting the AM handler failed: " + StatusText(st));

  int efd = -1;
  st = ucp_worker_get_efd(w->worker_, &efd);
  if (st != UCS_OK) return Internal(who + ": ucp_worker_get_efd failed: " + StatusText(st));
  w->epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = efd;
  if (w->epoll_fd_ < 0 || epoll_ctl(w->epoll_fd_, EPOLL_CTL_ADD, efd, &ev) != 0) {
    return Internal(who + ": epoll setup failed: " + std::string(std::strerror(errno)));
  }
  return w;
}

Worker::~Worker() {
  Join();
  DiscardPosted();
  if (epoll_fd_ >= 0) close(epoll_fd_);
  if (worker_ != nullptr) ucp_worker_destroy(worker_);
  if (context_ != nullptr) ucp_cleanup(context_);
}

void Worker::Start(std::function<Pass()> pass) {
  pass_ = std::move(pass);
  thread_ = std::thread([this] { Loop(); });
}

void Worker::Join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::Post(std::function<void()> fn) {
  bool wake;
  {
    MutexLock lock(post_mu_);
    posted_.push_back(std::move(fn));
    wake = sleeping_;
  }
  // A polling loop finds the work on its next round; the signal (a system call here and a wake-up
  // there) is only for a loop that sleeps or is about to.
  if (wake) Wake();
}

void Worker::WakeIfSleeping() {
  bool wake;
  {
    MutexLock lock(post_mu_);
    wake = sleeping_;
  }
  if (wake) Wake();
}

void Worker::DiscardPosted() {
  std::deque<std::function<void()>> dropped;
  {
    MutexLock lock(post_mu_);
    dropped.swap(posted_);
  }
}

bool Worker::RunPosted() {
  std::deque<std::function<void()>> batch;
  {
    MutexLock lock(post_mu_);
    batch.swap(posted_);
  }
  for (auto& fn : batch) fn();
  return !batch.empty();
}

void Worker::Loop() {
  const auto spin = std::chrono::microseconds(static_cast<int64_t>(spin_us_));
  auto idle_since = Clock::now();
  for (;;) {
    bool busy = RunPosted();
    busy |= ucp_worker_progress(worker_) > 0;
    const Pass pass = pass_();
    if (pass == Pass::kStop) break;
    busy |= pass == Pass::kBusy;
    const auto now = Clock::now();
    if (busy) {
      idle_since = now;
      continue;
    }
    if (now - idle_since < spin) {
      // Polling, but any other runnable thread on this core goes first: on a busy machine a spin
      // would otherwise take the time slice of the very threads that produce our next event.
      std::this_thread::yield();
      continue;
    }
    {
      // From here on Post() wakes the worker; posted_ is checked again under the lock, so that
      // work posted before the flag was set does not wait for the epoll timeout.
      MutexLock lock(post_mu_);
      if (!posted_.empty()) continue;
      sleeping_ = true;
    }
    if (ucp_worker_arm(worker_) == UCS_OK) {
      epoll_event ev;
      epoll_wait(epoll_fd_, &ev, 1, 50);
    }
    {
      MutexLock lock(post_mu_);
      sleeping_ = false;
    }
    idle_since = Clock::now();
  }
}

}  // namespace foresight::ucx
