// Fuzz target: request bodies of the worker's OpenAI-compatible HTTP API
// (worker/service/openai_protocol.h), which any client on the network sends. The first byte picks
// the endpoint (even: /v1/completions, odd: /v1/chat/completions); the rest is the body. Any bytes
// must give either a request that holds the API's promises (a prompt of ids inside the vocabulary
// that fits the context, positive max_tokens at least min_tokens, sampling parameters in range) or
// a 400/404 error object that is valid JSON; never an exception. The response builders are fed the
// same bytes as generated text, which may be invalid UTF-8: what they write must still parse.
#include <cmath>

#include <nlohmann/json.hpp>

#include "tests/fuzz/fuzz_target.h"
#include "worker/service/openai_protocol.h"
#include "worker/tokenizer.h"
#include "worker/unicode_text.h"

namespace foresight::fuzz {
namespace {

using worker::openai::ApiError;
using worker::openai::Endpoint;
using worker::openai::ParsedRequest;

// A byte-level tokenizer (every byte has a token, so any text encodes) with ChatML's markers and a
// template that names a default system message.
const worker::Tokenizer& TheTokenizer() {
  static const std::unique_ptr<worker::Tokenizer> tokenizer = [] {
    worker::TokenizerSpec spec;
    for (int b = 0; b < 256; ++b) {
      std::string piece;
      worker::AppendUtf8(worker::ByteLevelCodepoint(static_cast<uint8_t>(b)), &piece);
      spec.tokens.push_back(piece);
    }
    spec.tokens.push_back("<|im_start|>");
    spec.tokens.push_back("<|im_end|>");
    spec.kinds.assign(spec.tokens.size(), worker::TokenKind::kNormal);
    spec.kinds[256] = spec.kinds[257] = worker::TokenKind::kControl;
    spec.eos = 257;
    spec.chat_template = "{{ '<|im_start|>system\nYou are a fuzzer.<|im_end|>\n' }}";
    auto t = worker::Tokenizer::FromSpec(spec);
    FUZZ_CHECK(t.ok(), t.status().message().c_str());
    return std::move(t).value();
  }();
  return *tokenizer;
}

worker::openai::ModelInfo Model() {
  worker::openai::ModelInfo m;
  m.name = "fuzz-model";
  m.tokenizer = &TheTokenizer();
  m.vocab_size = TheTokenizer().vocab_size();
  m.max_context = 512;
  return m;
}

void CheckJson(const std::string& text, const char* what) { FUZZ_CHECK(nlohmann::json::accept(text), what); }

}  // namespace

std::vector<std::string> Seeds() {
  return {
      std::string("\0", 1) + R"({"model": "fuzz-model", "prompt": "Hello there", "max_tokens": 8})",
      std::string("\0", 1) +
          R"({"prompt": [1, 2, 3], "temperature": 0.7, "top_p": 0.9, "top_k": 40, "seed": 5, "stop": ["\n", "x"],
              "stream": true, "stream_options": {"include_usage": true}, "ignore_eos": true, "min_tokens": 2,
              "n": 1, "logprobs": null, "foresight": {"policy": "quest", "budget": 256, "prefix_reuse": false}})",
      std::string("\0", 1) + R"({"prompt": [[7, 8]], "echo": false, "best_of": 1, "user": "u"})",
      "\x01" + std::string(R"({"model": "fuzz-model", "messages": [{"role": "system", "content": "Be brief."},
              {"role": "user", "content": [{"type": "text", "text": "Hi"}]}, {"role": "assistant", "content": "Yo"},
              {"role": "user", "content": "\u00e9\ud83d\ude00", "name": "me"}], "max_completion_tokens": 4,
              "stop": "END", "stream": false, "tools": []})"),
      "\x01" + std::string(R"({"messages": [{"role": "developer", "content": "x"}], "temperature": 0})"),
  };
}

}  // namespace foresight::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace foresight;
  using namespace foresight::fuzz;
  if (size == 0) return 0;
  const Endpoint endpoint = (data[0] & 1) != 0 ? Endpoint::kChat : Endpoint::kCompletions;
  const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  const worker::openai::ModelInfo model = Model();

  auto parsed = worker::openai::ParseRequest(endpoint, body, model, 42);
  if (const ApiError* e = std::get_if<ApiError>(&parsed)) {
    FUZZ_CHECK(e->http_status == 400 || e->http_status == 404, e->message.c_str());
    FUZZ_CHECK(!e->message.empty(), "an error without a message");
    CheckJson(e->Body(), "an error body that is not JSON");
  } else {
    const ParsedRequest& p = std::get<ParsedRequest>(parsed);
    const worker::ServeRequest& s = p.serve;
    FUZZ_CHECK(!s.prompt.empty(), "an empty prompt accepted");
    FUZZ_CHECK(static_cast<int64_t>(s.prompt.size()) < model.max_context, "a prompt beyond the context accepted");
    for (worker::TokenId id : s.prompt) FUZZ_CHECK(id >= 0 && id < model.vocab_size, "a token outside the vocabulary");
    FUZZ_CHECK(s.max_tokens >= 1, "max_tokens below 1");
    FUZZ_CHECK(s.min_tokens >= 0 && s.min_tokens <= s.max_tokens, "min_tokens out of range");
    FUZZ_CHECK(std::isfinite(s.sampling.temperature) && s.sampling.temperature >= 0, "temperature out of range");
    FUZZ_CHECK(s.sampling.top_p > 0 && s.sampling.top_p <= 1, "top_p out of range");
    FUZZ_CHECK(s.sampling.top_k >= 0, "negative top_k");
    FUZZ_CHECK(s.budget >= 0, "negative budget");
    FUZZ_CHECK(p.stream || !p.include_usage, "include_usage without a stream");
  }

  // The response side, with the input's bytes as the generated text.
  worker::v1::GenerateStats stats;
  stats.set_finish_reason(size % 2 == 0 ? "eos" : "max_tokens");
  stats.set_prompt_tokens(static_cast<int64_t>(size));
  stats.set_policy(body.substr(0, 8));
  const worker::openai::ResponseContext context{endpoint, "cmpl-fuzz", 1, "fuzz-model", (size & 2) != 0};
  CheckJson(worker::openai::CompletionBody(context, body, stats), "a response that is not JSON");
  const worker::openai::StreamEncoder encoder(context);
  const std::string stream = encoder.Start() + encoder.Text(body) + encoder.Finish(body, stats);
  size_t at = 0;
  while (at < stream.size()) {
    FUZZ_CHECK(stream.compare(at, 6, "data: ") == 0, "an event that does not start with data:");
    const size_t end = stream.find("\n\n", at);
    FUZZ_CHECK(end != std::string::npos, "an event without its blank line");
    const std::string event = stream.substr(at + 6, end - at - 6);
    if (event != "[DONE]") CheckJson(event, "an event that is not JSON");
    at = end + 2;
  }
  return 0;
}
