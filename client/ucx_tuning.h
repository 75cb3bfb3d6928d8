// UcxTuning: how the UCX client's progress thread polls and how gets travel (client/ucx_transport.h
// uses it; CacheClientOptions carries it without needing the transport's header).
//
// Thread-safety: a value.
#pragma once

#include <cstddef>

namespace foresight {

// How the client's progress thread polls and how gets travel; the defaults are the measured best
// (docs/perf-notes.md). Programs may take them from the environment (UcxTuningFromEnvironment).
struct UcxTuning {
  // After activity the progress thread polls this long before sleeping on the worker's event fd
  // (FORESIGHT_UCX_SPIN_US).
  double spin_us = 50;
  // On a shared-memory connection, map the node's arena read-only and serve gets one-sided: lease,
  // copy out with the checksum verified in the same pass, release (FORESIGHT_UCX_ONE_SIDED=0
  // turns it off).
  bool one_sided_gets = true;
  // Gets that arrive as messages (TCP; shared memory without the arena) are verified on the
  // progress thread as each lands, while its bytes are still in that core's cache; false: by the
  // thread in Wait(), which then hashes them from another core (FORESIGHT_UCX_VERIFY_ON_PROGRESS=0).
  bool verify_on_progress_thread = true;
  // The progress thread copies one-sided gets itself only when this many wait, so that a thread
  // in Wait() that keeps up is not held behind its copies (FORESIGHT_UCX_COPY_BACKLOG; below 1 is
  // taken as 1).
  size_t copy_backlog = 2;
};

// The tuning with the FORESIGHT_UCX_* variables above applied. For a program's main(): the library
// itself never reads the environment.
UcxTuning UcxTuningFromEnvironment();

}  // namespace foresight
