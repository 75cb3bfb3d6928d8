// Clang's thread-safety annotations (-Wthread-safety), as macros that vanish for other compilers.
//
//   Mutex mu_;                                 // common/mutex.h
//   int count_ FS_GUARDED_BY(mu_) = 0;         // read or written only with mu_ held
//   void AddLocked(int n) FS_REQUIRES(mu_);    // callers hold mu_
//
// std::mutex and std::lock_guard are annotated by libc++ only; with libstdc++ (Debian's default,
// also under clang) use foresight::Mutex and foresight::MutexLock from common/mutex.h, whose
// acquire and release clang can see.
#pragma once

#if defined(__clang__)
#define FS_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define FS_THREAD_ANNOTATION(x)
#endif

#define FS_CAPABILITY(x) FS_THREAD_ANNOTATION(capability(x))
#define FS_SCOPED_CAPABILITY FS_THREAD_ANNOTATION(scoped_lockable)
#define FS_GUARDED_BY(x) FS_THREAD_ANNOTATION(guarded_by(x))
#define FS_PT_GUARDED_BY(x) FS_THREAD_ANNOTATION(pt_guarded_by(x))
#define FS_REQUIRES(...) FS_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define FS_EXCLUDES(...) FS_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define FS_ACQUIRE(...) FS_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define FS_RELEASE(...) FS_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define FS_TRY_ACQUIRE(...) FS_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
#define FS_RETURN_CAPABILITY(x) FS_THREAD_ANNOTATION(lock_returned(x))
#define FS_NO_THREAD_SAFETY_ANALYSIS FS_THREAD_ANNOTATION(no_thread_safety_analysis)
