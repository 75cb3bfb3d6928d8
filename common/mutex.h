// Mutex, MutexLock and CondVar: std::mutex and std::condition_variable with Clang's thread-safety
// annotations (common/thread_annotations.h), so that -Wthread-safety checks every access to a
// member marked FS_GUARDED_BY. libstdc++'s own types carry no annotations, so the analysis cannot
// see them lock.
//
//   Mutex mu_;
//   std::deque<Job> jobs_ FS_GUARDED_BY(mu_);
//   CondVar cv_;
//   ...
//   MutexLock lock(mu_);
//   cv_.Wait(mu_, [&]() FS_REQUIRES(mu_) { return !jobs_.empty(); });
//
// Thread-safety: as std::mutex and std::condition_variable.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "common/thread_annotations.h"

namespace foresight {

class FS_CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() FS_ACQUIRE() { mu_.lock(); }
  void Unlock() FS_RELEASE() { mu_.unlock(); }
  bool TryLock() FS_TRY_ACQUIRE(true) { return mu_.try_lock(); }

 private:
  friend class CondVar;
  std::mutex mu_;
};

// Holds a Mutex for its scope.
class FS_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) FS_ACQUIRE(mu) : mu_(mu) { mu_.Lock(); }
  ~MutexLock() FS_RELEASE() { mu_.Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex& mu_;
};

// A condition variable waited on with a Mutex held (released while waiting, as usual).
class CondVar {
 public:
  void Wait(Mutex& mu) FS_REQUIRES(mu) {
    std::unique_lock<std::mutex> lock(mu.mu_, std::adopt_lock);
    cv_.wait(lock);
    lock.release();
  }
  // The predicate runs with mu held: annotate it FS_REQUIRES(the caller's mutex). (The analysis
  // cannot tie `mu` to the caller's member, so it is off inside these templates.)
  template <typename Predicate>
  void Wait(Mutex& mu, Predicate done) FS_REQUIRES(mu) FS_NO_THREAD_SAFETY_ANALYSIS {
    while (!done()) Wait(mu);
  }
  // Returns false on timeout.
  template <typename Clock, typename Duration>
  bool WaitUntil(Mutex& mu, const std::chrono::time_point<Clock, Duration>& deadline) FS_REQUIRES(mu) {
    std::unique_lock<std::mutex> lock(mu.mu_, std::adopt_lock);
    const bool woken = cv_.wait_until(lock, deadline) == std::cv_status::no_timeout;
    lock.release();
    return woken;
  }
  // Returns done()'s final value (false: the deadline passed first).
  template <typename Clock, typename Duration, typename Predicate>
  bool WaitUntil(Mutex& mu, const std::chrono::time_point<Clock, Duration>& deadline, Predicate done)
      FS_REQUIRES(mu) FS_NO_THREAD_SAFETY_ANALYSIS {
    while (!done()) {
      if (!WaitUntil(mu, deadline)) return done();
    }
    return true;
  }
  template <typename Rep, typename Period, typename Predicate>
  bool WaitFor(Mutex& mu, const std::chrono::duration<Rep, Period>& timeout, Predicate done) FS_REQUIRES(mu) {
    return WaitUntil(mu, std::chrono::steady_clock::now() + timeout, done);
  }

  void Signal() { cv_.notify_one(); }
  void SignalAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

}  // namespace foresight
