// The planner's plots (`foresight plan --plot DIR`), each a sweep of one input of a plan:
//   sequences-per-node.svg  sequences per node against context length, per tier
//   bandwidth.svg           fetch bandwidth required per node and per worker against what the
//                           profile's paths give, across decode rates
//   nodes-needed.svg        nodes needed against concurrent sequences (capacity, bandwidth, R)
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "planner/capacity_plan.h"

namespace foresight::planner {

struct PlotFile {
  std::string name;  // e.g. "bandwidth.svg"
  std::string svg;
};

StatusOr<std::vector<PlotFile>> MakeCapacityPlots(const PlanRequest& request, const MachineProfile& profile,
                                                  const ChurnTable& churn);

}  // namespace foresight::planner
