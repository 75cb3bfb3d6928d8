#include "worker/service/http_api.h"

namespace foresight::worker {

StatusOr<uint64_t> SchedulerBackend::Submit(ServeRequest request, std::shared_ptr<ServeObserver> observer) {
  return scheduler_->Submit(std::move(request), std::move(observer));
}

void SchedulerBackend::Cancel(uint64_t id) { scheduler_->Cancel(id); }

Scheduler::Counts SchedulerBackend::counts() const { return scheduler_->counts(); }

}  // namespace foresight::worker
