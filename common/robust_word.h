// RobustWord: a 32-bit word in memory shared between processes, held by one thread while it does
// something another process must not mistake for finished (a node copying into a client's buffer,
// proto/region_claim.h), and marked by the kernel if that thread dies holding it.
//
// Why: from outside, a holder that is only slow and one that is gone look alike: a stopped process
// may resume and write; a dead one never will. A pid cannot tell them apart either once the two
// processes live in different PID namespaces. Linux's robust-futex ABI can
// (Documentation/locking/robust-futex-ABI.rst): when a thread exits, however it ends (a crash,
// SIGKILL, the OOM killer), the kernel looks at the word its robust list names as pending and, if
// the word still holds the thread's id, replaces it with kRobustWordOwnerDied. Only a thread that
// has stopped running can be marked, so a marked word proves the holder writes nothing any more.
//
// How: holding is a compare-exchange 0 -> this thread's id, after pointing the pending entry of
// the thread's robust list (glibc's, registered when the thread started) at the word; releasing
// stores 0 and clears the entry. Plain stores and one atomic: no system call, no lock. A
// process-shared robust pthread mutex in the shared page would do the same, but its unlock
// follows list pointers kept inside the mutex: the other process could rewrite them and make this
// one write where it chose. Here nothing read from the shared word is ever followed.
//
//   RobustWordHold hold(&word);  // on the thread that does the work
//   if (!hold.held()) ...        // another thread holds it, or it still marks a dead holder
//   ... work ...
//   hold.Release();              // or let it go out of scope
//
//   // The other process:
//   if (RobustWordOwnerDied(LoadRobustWord(&word))) ...  // the holder died holding it
//   ClearDeadRobustWord(&word);                           // once dealt with: it may be held again
//
// Limits: a thread holds one word at a time (the robust list has one pending entry), and a glibc
// robust mutex locked while it holds one (from a signal handler, say) drops the mark. The id
// stored is the thread's id in its own PID namespace, the one the kernel compares when it exits.
//
// Thread-safety: a RobustWordHold belongs to the thread that made it. The free functions are
// atomics on a word that other processes modify concurrently.
#pragma once

#include <atomic>
#include <cstdint>

namespace foresight {

// The kernel's FUTEX_OWNER_DIED: set, with the holder's id cleared, when the holder died.
inline constexpr uint32_t kRobustWordOwnerDied = 0x40000000;
// The kernel's FUTEX_TID_MASK: the holder's thread id; 0 when the word is free.
inline constexpr uint32_t kRobustWordHolderMask = 0x3fffffff;

constexpr bool RobustWordOwnerDied(uint32_t value) { return (value & kRobustWordOwnerDied) != 0; }

inline uint32_t LoadRobustWord(uint32_t* word) {
  return std::atomic_ref<uint32_t>(*word).load(std::memory_order_acquire);
}

// Resets a word that marks a dead holder to free. False when it marks none (free, or held).
inline bool ClearDeadRobustWord(uint32_t* word) {
  uint32_t value = LoadRobustWord(word);
  return RobustWordOwnerDied(value) &&
         std::atomic_ref<uint32_t>(*word).compare_exchange_strong(value, 0, std::memory_order_acq_rel);
}

class RobustWordHold {
 public:
  // Takes `word` (4-byte aligned, in memory this thread may write) when it is free (0).
  explicit RobustWordHold(uint32_t* word);
  ~RobustWordHold() { Release(); }
  RobustWordHold(const RobustWordHold&) = delete;
  RobustWordHold& operator=(const RobustWordHold&) = delete;

  bool held() const { return word_ != nullptr; }
  // When not held: the value found (another thread's id, or kRobustWordOwnerDied), or 0 when this
  // thread already holds another word.
  uint32_t found() const { return found_; }
  void Release();

 private:
  uint32_t* word_ = nullptr;
  uint32_t found_ = 0;
};

}  // namespace foresight
