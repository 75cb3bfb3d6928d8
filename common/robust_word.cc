#include "common/robust_word.h"

#include <linux/futex.h>
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <mutex>

namespace foresight {
namespace {

static_assert(kRobustWordOwnerDied == FUTEX_OWNER_DIED);
static_assert(kRobustWordHolderMask == FUTEX_TID_MASK);

// This thread's robust list and id, looked up once per thread (and again in a forked child,
// where the id changes).
struct ThreadRobustList {
  bool known = false;
  robust_list_head* head = nullptr;  // null: the kernel keeps no list for this thread
  uint32_t tid = 0;
  bool holding = false;
};
thread_local ThreadRobustList thread_list;
// Registered only for a thread that has no robust list (a libc that registers none).
thread_local robust_list_head own_head;

void ForgetThisThread() { thread_list = ThreadRobustList{}; }

ThreadRobustList& ThisThread() {
  if (thread_list.known) return thread_list;
  static std::once_flag at_fork;
  std::call_once(at_fork, [] { pthread_atfork(nullptr, nullptr, &ForgetThisThread); });
  ThreadRobustList& t = thread_list;
  t.known = true;
  t.tid = static_cast<uint32_t>(syscall(SYS_gettid));
  size_t length = 0;
  if (syscall(SYS_get_robust_list, 0, &t.head, &length) != 0) {
    // Refused (by a seccomp filter, say): a list of our own might then replace libc's.
    t.head = nullptr;
  } else if (t.head == nullptr) {
    own_head.list.next = &own_head.list;
    own_head.futex_offset = 0;
    own_head.list_op_pending = nullptr;
    if (syscall(SYS_set_robust_list, &own_head, sizeof own_head) == 0) t.head = &own_head;
  }
  if (t.head == nullptr) {
    spdlog::warn(
        "robust words: the kernel keeps no robust futex list for thread {} (get_robust_list/set_robust_list refused); "
        "if it dies holding a word, the other process cannot tell that it died",
        t.tid);
  }
  return t;
}

}  // namespace

RobustWordHold::RobustWordHold(uint32_t* word) {
  ThreadRobustList& t = ThisThread();
  if (t.holding) return;
  // Named before the word is taken: a death right after the exchange is still marked.
  if (t.head != nullptr) {
    t.head->list_op_pending = reinterpret_cast<robust_list*>(reinterpret_cast<char*>(word) - t.head->futex_offset);
  }
  std::atomic_signal_fence(std::memory_order_seq_cst);
  uint32_t expected = 0;
  if (std::atomic_ref<uint32_t>(*word).compare_exchange_strong(expected, t.tid, std::memory_order_acq_rel,
                                                               std::memory_order_acquire)) {
    word_ = word;
    t.holding = true;
    return;
  }
  found_ = expected;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  if (t.head != nullptr) t.head->list_op_pending = nullptr;
}

void RobustWordHold::Release() {
  if (word_ == nullptr) return;
  std::atomic_ref<uint32_t>(*word_).store(0, std::memory_order_release);
  // Cleared after the store: a death in between finds the word free and leaves it so.
  std::atomic_signal_fence(std::memory_order_seq_cst);
  ThreadRobustList& t = ThisThread();
  if (t.head != nullptr) t.head->list_op_pending = nullptr;
  t.holding = false;
  word_ = nullptr;
}

}  // namespace foresight
