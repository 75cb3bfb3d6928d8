// Generate: greedy text generation on a Model: prefill the prompt densely, then decode token by
// token (optionally with a DecodeAttentionHook restricting attention), stopping at max_tokens or
// an end-of-generation token.
//
// Thread-safety: one call per thread; the Model may be shared.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/model.h"
#include "worker/sequence.h"

namespace foresight::worker {

struct GenerateOptions {
  int32_t max_tokens = 128;
  int32_t prefill_chunk = 512;
  bool stop_at_end_of_generation = true;
  DecodeAttentionHook* hook = nullptr;  // null: dense decode
  PrefillAttentionObserver* prefill_observer = nullptr;
  // Called after the prefill (e.g. to seed selection policies) and after each decode step (to
  // surface a hook's error); a non-OK status ends generation with it.
  std::function<Status()> after_prefill;
  std::function<Status()> after_step;
  // Called with each new token as it is produced (for streaming output).
  std::function<void(TokenId)> on_token;
};

struct GenerateResult {
  std::vector<TokenId> tokens;  // generated, not including the prompt
  SequenceStats stats;
};

StatusOr<GenerateResult> Generate(const Model& model, const std::vector<TokenId>& prompt, const GenerateOptions& options);

}  // namespace foresight::worker
