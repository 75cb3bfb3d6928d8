// RecordTrace: runs a model densely over a prompt and `decode_steps` greedy decode steps and writes
// the attention trace of predictor/trace.h (docs/trace-format.md): per layer the prefill's pooled
// rows, every decode step's pooled dense row and post-RoPE queries, and the key digests. The
// traces feed `foresight predictor eval` and the predictor's training.
//
// Thread-safety: one call per thread; the Model may be shared.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/model.h"

namespace foresight::worker {

struct TraceSummary {
  int64_t prompt_tokens = 0;
  int64_t decode_steps = 0;
  std::vector<TokenId> generated;
  double seconds = 0;
};

StatusOr<TraceSummary> RecordTrace(const Model& model, const std::vector<TokenId>& prompt, int32_t decode_steps,
                                   const std::string& out_path, std::map<std::string, std::string> metadata = {});

}  // namespace foresight::worker
