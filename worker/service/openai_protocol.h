// The wire format of foresight-worker's OpenAI-compatible HTTP API (worker/service/http_api.h;
// docs/worker.md, "OpenAI-compatible API"): request bodies in, response bodies and stream events
// out, and errors as OpenAI error objects. Pure functions: no sockets, no scheduler, no clock.
//
//   auto parsed = openai::ParseRequest(openai::Endpoint::kChat, body, model, seed);
//   if (auto* e = std::get_if<openai::ApiError>(&parsed)) return Reply(e->http_status, e->Body());
//   ServeRequest r = std::get<openai::ParsedRequest>(parsed).serve;
//
// Requests: POST /v1/completions (`prompt`: a string or a list of token ids, or a list holding one
// of those) and POST /v1/chat/completions (`messages`, formatted with the model's chat template),
// with max_tokens (chat: also max_completion_tokens), temperature, top_p, top_k, seed, stop,
// stream, stream_options.include_usage, ignore_eos, min_tokens, n (1 only) and Foresight's own
// `foresight: {policy, budget, prefix_reuse, publish}`. Fields OpenAI defines that this server
// cannot honour (logprobs, echo, best_of > 1, penalties, logit_bias, tools, ...) are accepted only
// at their neutral value; any other field is refused by name, as OpenAI's own API does.
//
// Thread-safety: pure functions; StreamEncoder is a value used by one thread.
#pragma once

#include <cstdint>
#include <string>
#include <variant>

#include "common/status.h"
#include "proto/worker.pb.h"
#include "worker/service/scheduler.h"
#include "worker/tokenizer.h"

namespace foresight::worker::openai {

// The one model a worker serves, as requests are checked against it.
struct ModelInfo {
  std::string name;                      // the only `model` accepted (the GGUF file's stem)
  const Tokenizer* tokenizer = nullptr;  // null: prompts must be token ids, and chat is refused
  int32_t vocab_size = 0;
  int32_t max_context = 0;  // 0: unknown (not checked)
};

enum class Endpoint {
  kCompletions,  // POST /v1/completions
  kChat,         // POST /v1/chat/completions
};

// The HTTP status of a foresight status code: INVALID_ARGUMENT, OUT_OF_RANGE and
// FAILED_PRECONDITION 400, UNAUTHENTICATED 401, PERMISSION_DENIED 403, NOT_FOUND 404,
// ALREADY_EXISTS 409, RESOURCE_EXHAUSTED 429, UNIMPLEMENTED 501, UNAVAILABLE and ABORTED 503
// (ABORTED: the worker is stopping), DEADLINE_EXCEEDED 504, the others 500; OK 200.
int HttpStatus(StatusCode code);

// An error as the API reports it: {"error": {"message", "type", "code", "param"}}.
struct ApiError {
  int http_status = 500;
  std::string message;
  std::string type;   // OpenAI's error type, from the HTTP status (invalid_request_error, ...)
  std::string code;   // a machine-readable reason (context_length_exceeded, ...); "": null
  std::string param;  // the request field at fault; "": null
  StatusCode status_code = StatusCode::kInternal;  // the foresight code it stands for (metrics)

  // The status's HTTP status (HttpStatus) and message.
  static ApiError FromStatus(const Status& status, std::string param = "", std::string code = "");
  // An error with this HTTP status (413 for a body too large, 404 for an unknown path, ...).
  static ApiError WithHttpStatus(int http_status, std::string message, std::string code = "");
  std::string Body() const;
};

// A request, checked and tokenised, and how to answer it.
struct ParsedRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  ServeRequest serve;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a usage chunk before [DONE]
};

// Parses and checks a request body against the model. `seed_if_absent` seeds a sampled request
// that gives no seed (the caller draws it). Errors: malformed JSON and bad fields 400 (the message
// and `param` name the field), an unknown model 404 (model_not_found), a prompt that does not fit
// the model's context 400 (context_length_exceeded, with both numbers).
std::variant<ParsedRequest, ApiError> ParseRequest(Endpoint endpoint, const std::string& body, const ModelInfo& model,
                                                   uint64_t seed_if_absent);

// OpenAI's finish_reason for the scheduler's: eos and stop are "stop", max_tokens and context
// "length"; anything else is returned unchanged.
std::string FinishReason(const std::string& foresight_reason);

// What identifies one response: every chunk of a stream carries the same.
struct ResponseContext {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string id;       // "cmpl-..." or "chatcmpl-..."
  int64_t created = 0;  // Unix seconds
  std::string model;
  bool include_usage = false;
};

// The usage object: prompt_tokens, completion_tokens, total_tokens and
// prompt_tokens_details.cached_tokens (the prefix imported from the cache service).
std::string UsageJson(const v1::GenerateStats& stats);

// A non-streamed response ("text_completion" or "chat.completion"): the whole text, the finish
// reason, usage, and Foresight's statistics of the request under "foresight".
std::string CompletionBody(const ResponseContext& context, const std::string& text, const v1::GenerateStats& stats);

// A streamed response as server-sent events (`data: {chunk}\n\n`), in OpenAI's order: for chat a
// first chunk carrying the role; one chunk per piece of text (`choices[].delta.content` for chat,
// `choices[].text` for completions); a chunk carrying finish_reason (and Foresight's statistics);
// with include_usage, a usage chunk with `choices: []` (every other chunk then has
// `"usage": null`); then `data: [DONE]\n\n`.
class StreamEncoder {
 public:
  explicit StreamEncoder(ResponseContext context) : context_(std::move(context)) {}
  // The first event: the role chunk for chat, nothing for completions.
  std::string Start() const;
  // A chunk with this text; nothing when it is empty.
  std::string Text(const std::string& text) const;
  // The held-back `tail` text (if any), the finish chunk, the usage chunk, [DONE].
  std::string Finish(const std::string& tail, const v1::GenerateStats& stats) const;
  // A request that failed after its stream began: an error event, then [DONE].
  std::string Fail(const ApiError& error) const;

 private:
  std::string Chunk(const std::string& text, bool role, const std::string& finish_reason,
                    const v1::GenerateStats* stats) const;
  ResponseContext context_;
};

// GET /v1/models: the one model, owned_by "foresight".
std::string ModelListBody(const ModelInfo& model, int64_t created);

}  // namespace foresight::worker::openai
