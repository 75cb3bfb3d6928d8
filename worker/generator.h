// Generate: text generation on a Model: prefill the prompt densely, then decode token by token
// (optionally with a DecodeAttentionHook restricting attention), each token picked by the Sampler
// (greedy unless GenerateOptions::sampling says otherwise) and its text streamed through a
// TextStream, stopping at max_tokens, an end-of-generation token or a stop string. The forward
// pass runs on a Backend (worker/backend.h): the model's CPU backend unless GenerateOptions::backend
// names another (e.g. worker/cuda/cuda_backend.h). One loop and one sampler for every backend.
//
// Thread-safety: one call per thread; the Model may be shared.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/backend.h"
#include "worker/model.h"
#include "worker/sampler.h"
#include "worker/sequence.h"

namespace foresight::worker {

struct GenerateOptions {
  int32_t max_tokens = 128;
  int32_t prefill_chunk = 512;
  // vLLM's ignore_eos: keep generating past the model's end-of-generation tokens (which then stay
  // in `tokens` and add no text) up to max_tokens.
  bool ignore_eos = false;
  // vLLM's min_tokens: the end-of-generation tokens are never picked as the first min_tokens
  // tokens, and a stop string completed before the min_tokens-th token is ordinary text.
  int32_t min_tokens = 0;
  SamplingParams sampling;  // default: greedy
  // Generation ends when the text contains one of these (finish_reason "stop"); the text stops
  // before it (OpenAI's `stop`). Empty strings are ignored.
  std::vector<std::string> stop;
  DecodeAttentionHook* hook = nullptr;  // null: dense decode
  PrefillAttentionObserver* prefill_observer = nullptr;
  // Called after the prefill (e.g. to seed selection policies) and after each decode step (to
  // surface a hook's error); a non-OK status ends generation with it.
  std::function<Status()> after_prefill;
  std::function<Status()> after_step;
  // Called with each new token as it is produced.
  std::function<void(TokenId)> on_token;
  // Called with each piece of text as it is released (valid UTF-8; never part of a stop string),
  // for streaming output: the pieces concatenate to GenerateResult::text.
  std::function<void(const std::string&)> on_text;
  // The backend to generate on, a backend of the Model passed to Generate; null: a CPU backend
  // (NewCpuBackend). The sequence is the backend's, prefilling in chunks of `prefill_chunk`.
  Backend* backend = nullptr;
};

struct GenerateResult {
  std::vector<TokenId> tokens;  // generated, not including the prompt (the one completing a stop string included)
  std::string text;             // the tokens' text, valid UTF-8, cut before a stop string
  SequenceStats stats;
  std::string finish_reason;  // see StopReason; "stop" for a stop string
};

// Why generation ends after emitting `next` as its `emitted`-th token (1-based) with the sequence
// at `position` tokens: "eos" (the model's end-of-generation token, when `stop_at_eos`),
// "max_tokens" (the caller's limit), "context" (the model's context, `max_context`, is full).
// Empty: go on. One rule for every generation loop (Generate, the worker service).
std::string StopReason(const Tokenizer* tokenizer, bool stop_at_eos, TokenId next, int32_t emitted, int32_t max_tokens,
                       int64_t position, int64_t max_context);

StatusOr<GenerateResult> Generate(const Model& model, const std::vector<TokenId>& prompt,
                                  const GenerateOptions& options);

}  // namespace foresight::worker
