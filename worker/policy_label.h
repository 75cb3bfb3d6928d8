// PolicyLabel: the name of the decode attention a PolicySpec runs, as generate, foresight-worker
// (statistics, Info, startup log) and the demo report it. Asking for attention_predictor (ap) gets
// the served form unless --query-refine 0, so the label says which ran.
//
// Thread-safety: a pure function.
#pragma once

#include <string>

#include "predictor/selection_policy.h"

namespace foresight::worker {

// The kind's name (dense, quest, snapkv, ...), except AttentionPredictor:
//   "ap"                    as served: query_refine == PolicySpec::kServingQueryRefine
//   "attention_predictor"   the published method: query_refine 0
//   "ap(query_refine=0.50)" any other share
std::string PolicyLabel(const predictor::PolicySpec& spec);

}  // namespace foresight::worker
