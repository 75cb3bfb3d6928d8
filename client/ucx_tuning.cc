#include "client/ucx_tuning.h"

#include <algorithm>
#include <cstdlib>

namespace foresight {

UcxTuning UcxTuningFromEnvironment() {
  UcxTuning t;
  if (const char* spin = std::getenv("FORESIGHT_UCX_SPIN_US")) t.spin_us = std::atof(spin);
  if (const char* one = std::getenv("FORESIGHT_UCX_ONE_SIDED")) t.one_sided_gets = std::atoi(one) != 0;
  if (const char* v = std::getenv("FORESIGHT_UCX_VERIFY_ON_PROGRESS")) t.verify_on_progress_thread = std::atoi(v) != 0;
  if (const char* backlog = std::getenv("FORESIGHT_UCX_COPY_BACKLOG")) {
    t.copy_backlog = static_cast<size_t>(std::max(1, std::atoi(backlog)));
  }
  return t;
}

}  // namespace foresight
