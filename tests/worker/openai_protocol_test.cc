// The OpenAI-compatible API's wire format (worker/service/openai_protocol.h): requests parsed into
// ServeRequests, errors with their statuses and named fields, responses and stream events in
// OpenAI's shapes.
#include "worker/service/openai_protocol.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace foresight::worker::openai {
namespace {

using Json = nlohmann::json;

// A tokenizer with a ChatML template: single-letter tokens, the chat markers, BOS.
std::unique_ptr<Tokenizer> ChatTokenizer() {
  TokenizerSpec spec;
  for (char c = 'a'; c <= 'z'; ++c) spec.tokens.push_back(std::string(1, c));
  spec.tokens.push_back("\xC4\xA0");  // GPT-2's space
  spec.tokens.push_back("\xC4\x8A");  // GPT-2's newline
  spec.tokens.push_back("<|im_start|>");
  spec.tokens.push_back("<|im_end|>");
  spec.tokens.push_back("<s>");
  spec.kinds.assign(spec.tokens.size(), TokenKind::kNormal);
  for (size_t i = spec.tokens.size() - 3; i < spec.tokens.size(); ++i) spec.kinds[i] = TokenKind::kControl;
  spec.bos = static_cast<TokenId>(spec.tokens.size() - 1);
  spec.add_bos = true;
  spec.chat_template = "{{ '<|im_start|>system\nbe kind<|im_end|>\n' }}{% for m in messages %}<|im_start|>...";
  auto t = Tokenizer::FromSpec(spec);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return std::move(*t);
}

class OpenAiProtocolTest : public ::testing::Test {
 protected:
  OpenAiProtocolTest() : tokenizer_(ChatTokenizer()) {
    model_.name = "tiny";
    model_.tokenizer = tokenizer_.get();
    model_.vocab_size = tokenizer_->vocab_size();
    model_.max_context = 128;
  }

  ParsedRequest Parse(Endpoint endpoint, const Json& body) {
    auto r = ParseRequest(endpoint, body.dump(), model_, 99);
    if (auto* e = std::get_if<ApiError>(&r)) {
      ADD_FAILURE() << "refused: " << e->Body();
      return {};
    }
    return std::get<ParsedRequest>(r);
  }

  ApiError Refused(Endpoint endpoint, const std::string& body) {
    auto r = ParseRequest(endpoint, body, model_, 99);
    if (auto* e = std::get_if<ApiError>(&r)) return *e;
    ADD_FAILURE() << "accepted: " << body;
    return {};
  }

  std::unique_ptr<Tokenizer> tokenizer_;
  ModelInfo model_;
};

TEST_F(OpenAiProtocolTest, CompletionFieldsBecomeAServeRequest) {
  ParsedRequest p = Parse(Endpoint::kCompletions, {{"model", "tiny"},
                                                   {"prompt", "abc"},
                                                   {"max_tokens", 7},
                                                   {"temperature", 0.5},
                                                   {"top_p", 0.9},
                                                   {"top_k", 40},
                                                   {"seed", 1234},
                                                   {"stop", {"x", "yz"}},
                                                   {"stream", true},
                                                   {"stream_options", {{"include_usage", true}}},
                                                   {"ignore_eos", true},
                                                   {"min_tokens", 3},
                                                   {"n", 1},
                                                   {"logprobs", nullptr},
                                                   {"best_of", 1},
                                                   {"user", "someone"},
                                                   {"foresight", {{"policy", "quest"}, {"budget", 256}}}});
  EXPECT_EQ(p.endpoint, Endpoint::kCompletions);
  EXPECT_TRUE(p.stream);
  EXPECT_TRUE(p.include_usage);
  const ServeRequest& s = p.serve;
  // BOS, then one token per letter (special tokens in the text would be parsed).
  EXPECT_EQ(s.prompt, (std::vector<TokenId>{tokenizer_->bos(), 0, 1, 2}));
  EXPECT_EQ(s.max_tokens, 7);
  EXPECT_EQ(s.min_tokens, 3);
  EXPECT_TRUE(s.ignore_eos);
  EXPECT_EQ(s.stop, (std::vector<std::string>{"x", "yz"}));
  EXPECT_FLOAT_EQ(s.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(s.sampling.top_p, 0.9f);
  EXPECT_EQ(s.sampling.top_k, 40);
  EXPECT_EQ(s.sampling.seed, 1234u);
  EXPECT_EQ(s.policy, "quest");
  EXPECT_EQ(s.budget, 256);
  EXPECT_TRUE(s.prefix_reuse);
}

TEST_F(OpenAiProtocolTest, DefaultsFollowOpenAi) {
  ParsedRequest c = Parse(Endpoint::kCompletions, {{"prompt", "ab"}});
  EXPECT_FALSE(c.stream);
  EXPECT_EQ(c.serve.max_tokens, 16);
  EXPECT_FLOAT_EQ(c.serve.sampling.temperature, 1.0f);
  EXPECT_FLOAT_EQ(c.serve.sampling.top_p, 1.0f);
  EXPECT_EQ(c.serve.sampling.seed, 99u);  // drawn by the caller when absent
  EXPECT_EQ(c.serve.policy, "");          // the worker's default
  EXPECT_EQ(c.serve.budget, 0);
  EXPECT_TRUE(c.serve.stop.empty());
  // Chat: until the model ends its turn, so the rest of the context.
  ParsedRequest chat = Parse(Endpoint::kChat, {{"messages", {{{"role", "user"}, {"content", "hi"}}}}});
  EXPECT_EQ(chat.serve.max_tokens, 128 - static_cast<int32_t>(chat.serve.prompt.size()));
  // -1 is vLLM's "every token" for top_k.
  EXPECT_EQ(Parse(Endpoint::kCompletions, {{"prompt", "a"}, {"top_k", -1}}).serve.sampling.top_k, 0);
  EXPECT_EQ(Parse(Endpoint::kCompletions, {{"prompt", "a"}, {"seed", -1}}).serve.sampling.seed, ~uint64_t{0});
}

TEST_F(OpenAiProtocolTest, PromptsAsTokenIdsAndSingleElementLists) {
  EXPECT_EQ(Parse(Endpoint::kCompletions, {{"prompt", {3, 4, 5}}}).serve.prompt, (std::vector<TokenId>{3, 4, 5}));
  EXPECT_EQ(Parse(Endpoint::kCompletions, {{"prompt", {{3, 4}}}}).serve.prompt, (std::vector<TokenId>{3, 4}));
  EXPECT_EQ(Parse(Endpoint::kCompletions, {{"prompt", {"b"}}}).serve.prompt,
            (std::vector<TokenId>{tokenizer_->bos(), 1}));

  ApiError batch = Refused(Endpoint::kCompletions, R"({"prompt": ["a", "b"]})");
  EXPECT_EQ(batch.http_status, 400);
  EXPECT_EQ(batch.param, "prompt");
  EXPECT_NE(batch.message.find("batch of 2 prompts"), std::string::npos) << batch.message;
  ApiError outside = Refused(Endpoint::kCompletions, R"({"prompt": [1, 2, 100000]})");
  EXPECT_EQ(outside.http_status, 400);
  EXPECT_EQ(outside.param, "prompt[2]");
  EXPECT_NE(outside.message.find("between 0 and 30"), std::string::npos) << outside.message;
  EXPECT_EQ(Refused(Endpoint::kCompletions, R"({"prompt": []})").param, "prompt");
  EXPECT_EQ(Refused(Endpoint::kCompletions, R"({"max_tokens": 3})").message, "prompt is required");
}

TEST_F(OpenAiProtocolTest, ChatMessagesUseTheTemplate) {
  ParsedRequest p = Parse(Endpoint::kChat, {{"model", "tiny"},
                                            {"messages",
                                             {{{"role", "system"}, {"content", "be brief"}},
                                              {{"role", "user"}, {"content", {{{"type", "text"}, {"text", "hi"}}}}},
                                              {{"role", "assistant"}, {"content", "yo"}},
                                              {{"role", "user"}, {"content", "ok"}, {"name", "me"}}}},
                                            {"max_completion_tokens", 5}});
  EXPECT_EQ(p.endpoint, Endpoint::kChat);
  EXPECT_EQ(p.serve.max_tokens, 5);
  auto formatted = tokenizer_->FormatChat(
      std::vector<ChatMessage>{{"system", "be brief"}, {"user", "hi"}, {"assistant", "yo"}, {"user", "ok"}});
  ASSERT_TRUE(formatted.ok());
  EXPECT_EQ(p.serve.prompt, tokenizer_->Encode(*formatted, true, true));
  EXPECT_EQ(tokenizer_->Decode(p.serve.prompt, true),
            "<s><|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo"
            "<|im_end|>\n<|im_start|>user\nok<|im_end|>\n<|im_start|>assistant\n");

  ApiError role = Refused(Endpoint::kChat, R"({"messages": [{"role": "tool", "content": "x"}]})");
  EXPECT_EQ(role.http_status, 400);
  EXPECT_EQ(role.param, "messages[0].role");
  ApiError image = Refused(Endpoint::kChat, R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})");
  EXPECT_EQ(image.param, "messages[0].content[0].type");
  EXPECT_EQ(Refused(Endpoint::kChat, R"({"messages": []})").param, "messages");
  EXPECT_EQ(Refused(Endpoint::kChat, R"({"prompt": "x"})").param, "messages");
  EXPECT_EQ(Refused(Endpoint::kChat, R"({"messages": [{"role": "user"}]})").param, "messages[0].content");
  EXPECT_EQ(Refused(Endpoint::kChat, R"({"messages": [{"role": "user", "content": "x", "tool_calls": []}]})").param,
            "messages[0].tool_calls");
  EXPECT_EQ(Refused(Endpoint::kChat, R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 2,
                                   "max_completion_tokens": 2})")
                .param,
            "max_completion_tokens");
}

TEST_F(OpenAiProtocolTest, BadInputsNameTheirField) {
  struct Case {
    std::string body, param, words;
  };
  const std::vector<Case> cases = {
      {R"({"prompt": "a", "max_tokens": 0})", "max_tokens", "between 1 and"},
      {R"({"prompt": "a", "max_tokens": "5"})", "max_tokens", "must be an integer (got a string)"},
      {R"({"prompt": "a", "max_tokens": 2.5})", "max_tokens", "must be an integer"},
      {R"({"prompt": "a", "max_tokens": 99999999999})", "max_tokens", "between 1 and 2147483647"},
      {R"({"prompt": "a", "temperature": -1})", "temperature", ">= 0"},
      {R"({"prompt": "a", "temperature": "hot"})", "temperature", "must be a number"},
      {R"({"prompt": "a", "top_p": 0})", "top_p", "(0, 1]"},
      {R"({"prompt": "a", "top_p": 1.5})", "top_p", "(0, 1]"},
      {R"({"prompt": "a", "top_k": -2})", "top_k", "between -1 and"},
      {R"({"prompt": "a", "seed": 1.5})", "seed", "integer"},
      {R"({"prompt": "a", "stop": 3})", "stop", "string or a list of strings"},
      {R"({"prompt": "a", "stop": ["x", 3]})", "stop[1]", "must be a string"},
      {R"({"prompt": "a", "stream": "yes"})", "stream", "true or false"},
      {R"({"prompt": "a", "stream_options": {"include_usage": true}})", "stream_options", "stream: true"},
      {R"({"prompt": "a", "stream": true, "stream_options": {"x": 1}})", "stream_options.x", "unrecognized"},
      {R"({"prompt": "a", "n": 2})", "n", "n must be 1 (got 2)"},
      {R"({"prompt": "a", "min_tokens": 20, "max_tokens": 10})", "min_tokens", "larger than max_tokens"},
      {R"({"prompt": "a", "logprobs": 3})", "logprobs", "not supported"},
      {R"({"prompt": "a", "presence_penalty": 0.5})", "presence_penalty", "not supported"},
      {R"({"prompt": "a", "tools": [{"type": "function"}]})", "tools", "not supported"},
      {R"({"prompt": "a", "foresight": {"policy": "magic"}})", "foresight.policy", "magic"},
      {R"({"prompt": "a", "foresight": {"policy": "oracle"}})", "foresight.policy", "offline-only"},
      {R"({"prompt": "a", "foresight": {"budget": 0}})", "foresight.budget", "between 1 and"},
      {R"({"prompt": "a", "foresight": {"bugdet": 10}})", "foresight.bugdet", "unrecognized field"},
      {R"({"prompt": "a", "foresight": 3})", "foresight", "must be an object"},
      {R"({"prompt": "a", "max_token": 10})", "max_token", "unrecognized field 'max_token'"},
      {R"({"prompt": "a", "model": 7})", "model", "must be a string"},
  };
  for (const Case& c : cases) {
    ApiError e = Refused(Endpoint::kCompletions, c.body);
    EXPECT_EQ(e.http_status, 400) << c.body;
    EXPECT_EQ(e.type, "invalid_request_error") << c.body;
    EXPECT_EQ(e.param, c.param) << c.body;
    EXPECT_NE(e.message.find(c.words), std::string::npos) << c.body << " -> " << e.message;
  }
  // Neutral values of unsupported fields are accepted.
  Parse(Endpoint::kCompletions, {{"prompt", "a"},
                                 {"logprobs", 0},
                                 {"echo", false},
                                 {"presence_penalty", 0.0},
                                 {"frequency_penalty", 0},
                                 {"logit_bias", Json::object()},
                                 {"suffix", nullptr}});
}

TEST_F(OpenAiProtocolTest, MalformedJsonUnknownModelAndTooLongPrompts) {
  ApiError json = Refused(Endpoint::kCompletions, R"({"prompt": "a",)");
  EXPECT_EQ(json.http_status, 400);
  EXPECT_NE(json.message.find("not valid JSON"), std::string::npos);
  EXPECT_EQ(Refused(Endpoint::kCompletions, "[1, 2]").message, "the request body must be an object (got a list)");
  // Strings must be valid UTF-8 (JSON requires it; the tokenizer never sees anything else).
  ApiError utf8 = Refused(Endpoint::kCompletions, "{\"prompt\": \"a\xff\xfe\"}");
  EXPECT_EQ(utf8.http_status, 400);
  EXPECT_NE(utf8.message.find("UTF-8"), std::string::npos) << utf8.message;
  ApiError surrogate = Refused(Endpoint::kCompletions, R"({"prompt": "\ud800"})");
  EXPECT_EQ(surrogate.http_status, 400);

  ApiError model = Refused(Endpoint::kCompletions, R"({"model": "gpt-4", "prompt": "a"})");
  EXPECT_EQ(model.http_status, 404);
  EXPECT_EQ(model.code, "model_not_found");
  EXPECT_EQ(model.param, "model");
  EXPECT_NE(model.message.find("'gpt-4' does not exist; this worker serves 'tiny'"), std::string::npos);

  ApiError too_long = Refused(Endpoint::kCompletions, Json{{"prompt", std::string(130, 'a')}}.dump());
  EXPECT_EQ(too_long.http_status, 400);
  EXPECT_EQ(too_long.code, "context_length_exceeded");
  EXPECT_EQ(too_long.param, "prompt");
  EXPECT_NE(too_long.message.find("the prompt has 131 tokens; the model's context is 128 tokens"), std::string::npos)
      << too_long.message;
  // 127 tokens leave one to generate.
  EXPECT_EQ(Parse(Endpoint::kCompletions, {{"prompt", std::string(126, 'a')}}).serve.prompt.size(), 127u);

  model_.tokenizer = nullptr;
  ApiError no_tokenizer = Refused(Endpoint::kCompletions, R"({"prompt": "abc"})");
  EXPECT_NE(no_tokenizer.message.find("token ids"), std::string::npos);
  EXPECT_EQ(Refused(Endpoint::kChat, R"({"messages": [{"role": "user", "content": "a"}]})").http_status, 400);
}

TEST_F(OpenAiProtocolTest, ErrorsMapToHttpStatuses) {
  EXPECT_EQ(HttpStatus(StatusCode::kOk), 200);
  EXPECT_EQ(HttpStatus(StatusCode::kInvalidArgument), 400);
  EXPECT_EQ(HttpStatus(StatusCode::kOutOfRange), 400);
  EXPECT_EQ(HttpStatus(StatusCode::kFailedPrecondition), 400);
  EXPECT_EQ(HttpStatus(StatusCode::kUnauthenticated), 401);
  EXPECT_EQ(HttpStatus(StatusCode::kNotFound), 404);
  EXPECT_EQ(HttpStatus(StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(HttpStatus(StatusCode::kUnavailable), 503);
  EXPECT_EQ(HttpStatus(StatusCode::kAborted), 503);
  EXPECT_EQ(HttpStatus(StatusCode::kDataLoss), 500);
  EXPECT_EQ(HttpStatus(StatusCode::kDeadlineExceeded), 504);

  ApiError busy = ApiError::FromStatus(ResourceExhausted("64 requests already wait"));
  EXPECT_EQ(busy.http_status, 429);
  const Json body = Json::parse(busy.Body());
  EXPECT_EQ(body["error"]["message"], "64 requests already wait");
  EXPECT_EQ(body["error"]["type"], "rate_limit_error");
  EXPECT_TRUE(body["error"]["code"].is_null());
  EXPECT_TRUE(body["error"]["param"].is_null());
  EXPECT_EQ(Json::parse(ApiError::FromStatus(Unauthenticated("no token")).Body())["error"]["type"],
            "authentication_error");
  EXPECT_EQ(ApiError::FromStatus(Unavailable("loading")).type, "service_unavailable_error");
  EXPECT_EQ(ApiError::WithHttpStatus(413, "too big", "request_too_large").type, "invalid_request_error");
}

v1::GenerateStats Stats(const std::string& reason) {
  v1::GenerateStats s;
  s.set_prompt_tokens(20);
  s.set_generated_tokens(5);
  s.set_prefix_hit_tokens(16);
  s.set_finish_reason(reason);
  s.set_policy("dense");
  return s;
}

TEST_F(OpenAiProtocolTest, FinishReasonsAndUsage) {
  EXPECT_EQ(FinishReason("eos"), "stop");
  EXPECT_EQ(FinishReason("stop"), "stop");
  EXPECT_EQ(FinishReason("max_tokens"), "length");
  EXPECT_EQ(FinishReason("context"), "length");
  const Json usage = Json::parse(UsageJson(Stats("eos")));
  EXPECT_EQ(usage, Json::parse(R"({"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25,
                                   "prompt_tokens_details": {"cached_tokens": 16}})"));
}

TEST_F(OpenAiProtocolTest, NonStreamedResponses) {
  ResponseContext c{Endpoint::kCompletions, "cmpl-1", 1700000000, "tiny", false};
  Json j = Json::parse(CompletionBody(c, "hello", Stats("max_tokens")));
  EXPECT_EQ(j["id"], "cmpl-1");
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["created"], 1700000000);
  EXPECT_EQ(j["model"], "tiny");
  ASSERT_EQ(j["choices"].size(), 1u);
  EXPECT_EQ(j["choices"][0]["index"], 0);
  EXPECT_EQ(j["choices"][0]["text"], "hello");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["total_tokens"], 25);
  EXPECT_EQ(j["foresight"]["policy"], "dense");
  EXPECT_EQ(j["foresight"]["prefix_hit_tokens"], 16);

  c.endpoint = Endpoint::kChat;
  c.id = "chatcmpl-1";
  j = Json::parse(CompletionBody(c, "hi there", Stats("eos")));
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"], Json::parse(R"({"role": "assistant", "content": "hi there"})"));
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
}

// Splits "data: ...\n\n" events; every event must be framed exactly so.
std::vector<std::string> Events(const std::string& stream) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at < stream.size()) {
    EXPECT_EQ(stream.compare(at, 6, "data: "), 0) << stream.substr(at);
    const size_t end = stream.find("\n\n", at);
    EXPECT_NE(end, std::string::npos);
    if (end == std::string::npos) break;
    out.push_back(stream.substr(at + 6, end - at - 6));
    at = end + 2;
  }
  return out;
}

TEST_F(OpenAiProtocolTest, ChatStreamFollowsOpenAiOrder) {
  StreamEncoder enc({Endpoint::kChat, "chatcmpl-7", 1700000001, "tiny", /*include_usage=*/true});
  const std::string stream =
      enc.Start() + enc.Text("Hel") + enc.Text("") + enc.Text("lo") + enc.Finish(" you", Stats("stop"));
  const std::vector<std::string> events = Events(stream);
  ASSERT_EQ(events.size(), 7u) << stream;
  std::vector<Json> chunks;
  for (size_t i = 0; i + 1 < events.size(); ++i) chunks.push_back(Json::parse(events[i]));
  EXPECT_EQ(events.back(), "[DONE]");
  for (const Json& ch : chunks) {
    EXPECT_EQ(ch["id"], "chatcmpl-7");
    EXPECT_EQ(ch["object"], "chat.completion.chunk");
    EXPECT_EQ(ch["created"], 1700000001);
    EXPECT_EQ(ch["model"], "tiny");
  }
  EXPECT_EQ(chunks[0]["choices"][0]["delta"], Json::parse(R"({"role": "assistant", "content": ""})"));
  EXPECT_TRUE(chunks[0]["choices"][0]["finish_reason"].is_null());
  EXPECT_TRUE(chunks[0]["usage"].is_null());
  EXPECT_TRUE(chunks[0].contains("usage"));
  EXPECT_EQ(chunks[1]["choices"][0]["delta"], Json::parse(R"({"content": "Hel"})"));
  EXPECT_EQ(chunks[2]["choices"][0]["delta"], Json::parse(R"({"content": "lo"})"));
  EXPECT_EQ(chunks[3]["choices"][0]["delta"], Json::parse(R"({"content": " you"})"));
  EXPECT_EQ(chunks[4]["choices"][0]["delta"], Json::object());
  EXPECT_EQ(chunks[4]["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(chunks[4]["foresight"]["finish_reason"], "stop");
  EXPECT_EQ(chunks[5]["choices"], Json::array());
  EXPECT_EQ(chunks[5]["usage"]["completion_tokens"], 5);
  EXPECT_EQ(chunks[5]["usage"]["prompt_tokens_details"]["cached_tokens"], 16);
}

TEST_F(OpenAiProtocolTest, CompletionStreamWithoutUsage) {
  StreamEncoder enc({Endpoint::kCompletions, "cmpl-8", 1, "tiny", /*include_usage=*/false});
  EXPECT_EQ(enc.Start(), "");
  const std::vector<std::string> events = Events(enc.Start() + enc.Text("ab") + enc.Finish("", Stats("max_tokens")));
  ASSERT_EQ(events.size(), 3u);
  const Json first = Json::parse(events[0]);
  EXPECT_EQ(first["object"], "text_completion");
  EXPECT_EQ(first["choices"][0]["text"], "ab");
  EXPECT_FALSE(first.contains("usage"));
  EXPECT_EQ(Json::parse(events[1])["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(Json::parse(events[1])["choices"][0]["text"], "");
  EXPECT_EQ(events[2], "[DONE]");

  const std::vector<std::string> failed = Events(enc.Fail(ApiError::FromStatus(Unavailable("node lost"))));
  ASSERT_EQ(failed.size(), 2u);
  EXPECT_EQ(Json::parse(failed[0])["error"]["message"], "node lost");
  EXPECT_EQ(failed[1], "[DONE]");
}

TEST_F(OpenAiProtocolTest, ModelList) {
  const Json j = Json::parse(ModelListBody(model_, 5));
  EXPECT_EQ(j["object"], "list");
  ASSERT_EQ(j["data"].size(), 1u);
  EXPECT_EQ(j["data"][0]["id"], "tiny");
  EXPECT_EQ(j["data"][0]["object"], "model");
  EXPECT_EQ(j["data"][0]["owned_by"], "foresight");
}

}  // namespace
}  // namespace foresight::worker::openai
