#include "worker/service/openai_protocol.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <vector>

#include <nlohmann/json.hpp>

#include "worker/serving_options.h"

namespace foresight::worker::openai {
namespace {

using Json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;

// Most stop strings a request may give (OpenAI allows 4; vLLM any number).
constexpr size_t kMaxStopStrings = 16;

// A field the request got wrong. Thrown by the readers below and caught in ParseRequest, so the
// many checks read one per line; it never leaves this file.
struct BadField {
  std::string param;
  std::string message;
};

[[noreturn]] void Refuse(std::string param, std::string message) {
  throw BadField{std::move(param), std::move(message)};
}

std::string TypeOf(const Json& v) {
  if (v.is_number_integer()) return "an integer";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_boolean()) return "a boolean";
  if (v.is_array()) return "a list";
  if (v.is_object()) return "an object";
  return "null";
}

// Reads the fields of one JSON object. Every field asked for is known; FinishAndRefuseUnknown then
// refuses the others by name, as OpenAI's API refuses arguments it does not recognise.
class ObjectReader {
 public:
  ObjectReader(const Json& object, std::string path) : object_(object), path_(std::move(path)) {
    if (!object_.is_object()) {
      Refuse(path_, (path_.empty() ? "the request body" : path_) + " must be an object (got " + TypeOf(object_) + ")");
    }
  }

  // The field's value; null when absent or JSON null (OpenAI's "not given").
  const Json* Get(const std::string& name) {
    known_.insert(name);
    auto it = object_.find(name);
    if (it == object_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  // Fields OpenAI defines that this server cannot honour: accepted only at a neutral value.
  void AcceptOnlyNeutral(const std::string& name, const std::vector<Json>& neutral, const std::string& why) {
    const Json* v = Get(name);
    if (v == nullptr) return;
    for (const Json& n : neutral) {
      if (*v == n) return;
    }
    Refuse(Name(name), Name(name) + " is not supported: " + why);
  }

  void FinishAndRefuseUnknown() const {
    for (auto it = object_.begin(); it != object_.end(); ++it) {
      if (known_.count(it.key()) == 0) {
        Refuse(Name(it.key()), "unrecognized field '" + Name(it.key()) + "'");
      }
    }
  }

  // The field's name as the error reports it ("messages[2].role").
  std::string Name(const std::string& field) const {
    if (path_.empty()) return field;
    return field.empty() ? path_ : path_ + "." + field;
  }

 private:
  const Json& object_;
  const std::string path_;
  std::set<std::string> known_;
};

int64_t ReadInt(const Json& v, const std::string& param, int64_t lo, int64_t hi) {
  if (!v.is_number_integer()) Refuse(param, param + " must be an integer (got " + TypeOf(v) + ")");
  const bool too_big = v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi);
  const int64_t x = too_big ? hi : v.get<int64_t>();
  if (too_big || x < lo || x > hi) {
    Refuse(param,
           param + " must be between " + std::to_string(lo) + " and " + std::to_string(hi) + " (got " + v.dump() + ")");
  }
  return x;
}

double ReadNumber(const Json& v, const std::string& param) {
  if (!v.is_number()) Refuse(param, param + " must be a number (got " + TypeOf(v) + ")");
  const double x = v.get<double>();
  if (!std::isfinite(x)) Refuse(param, param + " must be finite");
  return x;
}

bool ReadBool(const Json& v, const std::string& param) {
  if (!v.is_boolean()) Refuse(param, param + " must be true or false (got " + TypeOf(v) + ")");
  return v.get<bool>();
}

std::string ReadString(const Json& v, const std::string& param) {
  if (!v.is_string()) Refuse(param, param + " must be a string (got " + TypeOf(v) + ")");
  return v.get<std::string>();
}

std::vector<TokenId> ReadTokenIds(const Json& list, const std::string& param, const ModelInfo& model) {
  std::vector<TokenId> ids;
  ids.reserve(list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string p = param + "[" + std::to_string(i) + "]";
    ids.push_back(static_cast<TokenId>(ReadInt(list[i], p, 0, std::max(0, model.vocab_size - 1))));
  }
  return ids;
}

bool AllIntegers(const Json& list) {
  return std::all_of(list.begin(), list.end(), [](const Json& v) { return v.is_number_integer(); });
}

// The prompt of a completion: text, or token ids.
struct Prompt {
  std::string text;
  std::vector<TokenId> ids;
  bool is_ids = false;
};

Prompt ReadPrompt(const Json& v, const ModelInfo& model) {
  Prompt p;
  if (v.is_string()) {
    p.text = v.get<std::string>();
    return p;
  }
  if (!v.is_array()) Refuse("prompt", "prompt must be a string or a list of token ids (got " + TypeOf(v) + ")");
  if (v.empty()) Refuse("prompt", "prompt is an empty list");
  if (AllIntegers(v)) {
    p.ids = ReadTokenIds(v, "prompt", model);
    p.is_ids = true;
    return p;
  }
  if (v.size() > 1) {
    Refuse("prompt", "prompt holds a batch of " + std::to_string(v.size()) +
                         " prompts; this server takes one prompt per request");
  }
  const Json& only = v[0];
  if (only.is_string()) {
    p.text = only.get<std::string>();
    return p;
  }
  if (only.is_array() && !only.empty() && AllIntegers(only)) {
    p.ids = ReadTokenIds(only, "prompt[0]", model);
    p.is_ids = true;
    return p;
  }
  Refuse("prompt", "prompt must be a string or a list of token ids");
}

// A message's content: a string, or a list of text parts (joined by newlines).
std::string ReadContent(const Json* v, const std::string& param) {
  if (v == nullptr) return "";
  if (v->is_string()) return v->get<std::string>();
  if (!v->is_array()) Refuse(param, param + " must be a string or a list of text parts (got " + TypeOf(*v) + ")");
  std::string text;
  for (size_t i = 0; i < v->size(); ++i) {
    ObjectReader part((*v)[i], param + "[" + std::to_string(i) + "]");
    const Json* type = part.Get("type");
    const std::string type_name = type == nullptr ? "" : ReadString(*type, part.Name("type"));
    if (type_name != "text") {
      Refuse(part.Name("type"), part.Name("type") + " is '" + type_name + "'; only text parts are supported");
    }
    const Json* t = part.Get("text");
    if (t == nullptr) Refuse(part.Name("text"), part.Name("text") + " is required");
    if (i > 0) text += "\n";
    text += ReadString(*t, part.Name("text"));
    part.FinishAndRefuseUnknown();
  }
  return text;
}

std::vector<ChatMessage> ReadMessages(const Json* v) {
  if (v == nullptr) Refuse("messages", "messages is required");
  if (!v->is_array()) Refuse("messages", "messages must be a list (got " + TypeOf(*v) + ")");
  if (v->empty()) Refuse("messages", "messages is empty");
  std::vector<ChatMessage> messages;
  for (size_t i = 0; i < v->size(); ++i) {
    ObjectReader m((*v)[i], "messages[" + std::to_string(i) + "]");
    const Json* role = m.Get("role");
    if (role == nullptr) Refuse(m.Name("role"), m.Name("role") + " is required");
    std::string r = ReadString(*role, m.Name("role"));
    if (r == "developer") r = "system";  // OpenAI's newer name for the system role
    if (r != "system" && r != "user" && r != "assistant") {
      Refuse(m.Name("role"), m.Name("role") + " is '" + r + "'; the roles are system, user and assistant");
    }
    const Json* content = m.Get("content");
    if (content == nullptr && r != "assistant") Refuse(m.Name("content"), m.Name("content") + " is required");
    std::string text = ReadContent(content, m.Name("content"));
    if (const Json* name = m.Get("name")) ReadString(*name, m.Name("name"));  // accepted, not used
    m.FinishAndRefuseUnknown();
    messages.push_back({std::move(r), std::move(text)});
  }
  return messages;
}

// The fields every request may carry besides its prompt.
void ReadCommon(ObjectReader& r, Endpoint endpoint, ParsedRequest* out, bool* max_tokens_given,
                uint64_t seed_if_absent) {
  ServeRequest& s = out->serve;
  const char* const max_name = "max_tokens";
  const Json* max_tokens = r.Get(max_name);
  std::string max_param = max_name;
  if (endpoint == Endpoint::kChat) {
    if (const Json* mct = r.Get("max_completion_tokens")) {
      if (max_tokens != nullptr) {
        Refuse("max_completion_tokens", "give one of max_tokens and max_completion_tokens, not both");
      }
      max_tokens = mct;
      max_param = "max_completion_tokens";
    }
  }
  *max_tokens_given = max_tokens != nullptr;
  if (max_tokens != nullptr) {
    s.max_tokens = static_cast<int32_t>(ReadInt(*max_tokens, max_param, 1, std::numeric_limits<int32_t>::max()));
  }
  if (const Json* v = r.Get("min_tokens")) {
    s.min_tokens = static_cast<int32_t>(ReadInt(*v, "min_tokens", 0, std::numeric_limits<int32_t>::max()));
  }
  // OpenAI's defaults: temperature 1, top_p 1.
  s.sampling.temperature = 1.0f;
  if (const Json* v = r.Get("temperature")) {
    const double t = ReadNumber(*v, "temperature");
    if (t < 0) Refuse("temperature", "temperature must be >= 0 (got " + v->dump() + ")");
    s.sampling.temperature = static_cast<float>(t);
  }
  if (const Json* v = r.Get("top_p")) {
    const double p = ReadNumber(*v, "top_p");
    if (p <= 0 || p > 1) Refuse("top_p", "top_p must be in (0, 1] (got " + v->dump() + ")");
    s.sampling.top_p = static_cast<float>(p);
  }
  if (const Json* v = r.Get("top_k")) {
    // -1 (vLLM's "all") and 0 both keep every token.
    s.sampling.top_k = static_cast<int32_t>(std::max<int64_t>(0, ReadInt(*v, "top_k", -1, 1 << 30)));
  }
  s.sampling.seed = seed_if_absent;
  if (const Json* v = r.Get("seed")) {
    if (!v->is_number_integer()) Refuse("seed", "seed must be an integer (got " + TypeOf(*v) + ")");
    s.sampling.seed = v->is_number_unsigned() ? v->get<uint64_t>() : static_cast<uint64_t>(v->get<int64_t>());
  }
  if (const Json* v = r.Get("stop")) {
    if (v->is_string()) {
      s.stop.push_back(v->get<std::string>());
    } else if (v->is_array()) {
      if (v->size() > kMaxStopStrings) {
        Refuse("stop", "stop has " + std::to_string(v->size()) + " strings; at most " +
                           std::to_string(kMaxStopStrings) + " are accepted");
      }
      for (size_t i = 0; i < v->size(); ++i) s.stop.push_back(ReadString((*v)[i], "stop[" + std::to_string(i) + "]"));
    } else {
      Refuse("stop", "stop must be a string or a list of strings (got " + TypeOf(*v) + ")");
    }
  }
  if (const Json* v = r.Get("stream")) out->stream = ReadBool(*v, "stream");
  if (const Json* v = r.Get("stream_options")) {
    if (!out->stream) Refuse("stream_options", "stream_options is only allowed with stream: true");
    ObjectReader so(*v, "stream_options");
    if (const Json* u = so.Get("include_usage")) out->include_usage = ReadBool(*u, "stream_options.include_usage");
    so.FinishAndRefuseUnknown();
  }
  if (const Json* v = r.Get("ignore_eos")) s.ignore_eos = ReadBool(*v, "ignore_eos");
  if (const Json* v = r.Get("n")) {
    if (!v->is_number_integer() || v->get<int64_t>() != 1) {
      Refuse("n", "n must be 1 (got " + v->dump() + "): this server returns one choice; send n requests instead");
    }
  }
  if (const Json* v = r.Get("foresight")) {
    ObjectReader f(*v, "foresight");
    if (const Json* p = f.Get("policy")) {
      std::string policy = ReadString(*p, "foresight.policy");
      if (Status known = ParseServingPolicy(policy).status(); !known.ok()) {
        Refuse("foresight.policy", "foresight.policy: " + known.message());
      }
      s.policy = std::move(policy);
    }
    if (const Json* b = f.Get("budget")) {
      s.budget = static_cast<int32_t>(ReadInt(*b, "foresight.budget", 1, std::numeric_limits<int32_t>::max()));
    }
    if (const Json* b = f.Get("prefix_reuse")) s.prefix_reuse = ReadBool(*b, "foresight.prefix_reuse");
    if (const Json* b = f.Get("publish")) s.publish = ReadBool(*b, "foresight.publish");
    f.FinishAndRefuseUnknown();
  }
  if (const Json* v = r.Get("user")) ReadString(*v, "user");  // accepted, not used
  for (const char* ignored : {"parallel_tool_calls", "service_tier", "store", "metadata"}) r.Get(ignored);

  // OpenAI's fields this server cannot honour, accepted at their neutral values.
  r.AcceptOnlyNeutral("logprobs", {false, 0}, "no log probabilities are returned");
  r.AcceptOnlyNeutral("top_logprobs", {0}, "no log probabilities are returned");
  r.AcceptOnlyNeutral("echo", {false}, "the prompt is not echoed");
  r.AcceptOnlyNeutral("best_of", {1}, "one sequence is generated per request");
  r.AcceptOnlyNeutral("suffix", {""}, "insertion is not supported");
  r.AcceptOnlyNeutral("presence_penalty", {0}, "penalties are not implemented");
  r.AcceptOnlyNeutral("frequency_penalty", {0}, "penalties are not implemented");
  r.AcceptOnlyNeutral("repetition_penalty", {1}, "penalties are not implemented");
  r.AcceptOnlyNeutral("logit_bias", {Json::object()}, "logit biases are not implemented");
  r.AcceptOnlyNeutral("response_format", {Json{{"type", "text"}}}, "only text responses are produced");
  r.AcceptOnlyNeutral("tools", {Json::array()}, "tool calls are not implemented");
  r.AcceptOnlyNeutral("tool_choice", {"none"}, "tool calls are not implemented");
  r.AcceptOnlyNeutral("functions", {Json::array()}, "function calls are not implemented");
  r.AcceptOnlyNeutral("function_call", {"none"}, "function calls are not implemented");
}

const char* ErrorType(int http_status) {
  switch (http_status) {
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 429:
      return "rate_limit_error";
    case 503:
      return "service_unavailable_error";
    default:
      return http_status < 500 ? "invalid_request_error" : "server_error";
  }
}

StatusCode StatusCodeForHttp(int http_status) {
  switch (http_status) {
    case 400:
    case 413:
      return StatusCode::kInvalidArgument;
    case 401:
      return StatusCode::kUnauthenticated;
    case 403:
      return StatusCode::kPermissionDenied;
    case 404:
      return StatusCode::kNotFound;
    case 409:
      return StatusCode::kAlreadyExists;
    case 429:
      return StatusCode::kResourceExhausted;
    case 501:
      return StatusCode::kUnimplemented;
    case 503:
      return StatusCode::kUnavailable;
    case 504:
      return StatusCode::kDeadlineExceeded;
    default:
      return http_status < 300 ? StatusCode::kOk : StatusCode::kInternal;
  }
}

Json NullOr(const std::string& s) { return s.empty() ? Json(nullptr) : Json(s); }

// JSON whose strings cannot fail to serialise: invalid UTF-8 (never expected: the scheduler's text
// is made safe by TextStream) becomes U+FFFD instead of an exception.
template <typename J>
std::string Dump(const J& j) {
  return j.dump(-1, ' ', false, J::error_handler_t::replace);
}

OrderedJson UsageObject(const v1::GenerateStats& stats) {
  OrderedJson usage;
  usage["prompt_tokens"] = stats.prompt_tokens();
  usage["completion_tokens"] = stats.generated_tokens();
  usage["total_tokens"] = stats.prompt_tokens() + stats.generated_tokens();
  usage["prompt_tokens_details"] = {{"cached_tokens", stats.prefix_hit_tokens()}};
  return usage;
}

// Foresight's statistics of one request (proto/worker.proto GenerateStats), beside OpenAI's fields.
OrderedJson StatsObject(const v1::GenerateStats& s) {
  OrderedJson j;
  j["policy"] = s.policy();
  j["budget"] = s.budget();
  j["kv_mode"] = s.kv_mode();
  j["finish_reason"] = s.finish_reason();
  j["prefix_hit_tokens"] = s.prefix_hit_tokens();
  j["seed_hit_tokens"] = s.seed_hit_tokens();
  j["prefix_import_seconds"] = s.prefix_import_seconds();
  j["prefill_tokens"] = s.prefill_tokens();
  j["time_to_first_token_seconds"] = s.time_to_first_token_seconds();
  j["prefill_tokens_per_second"] = s.prefill_tokens_per_second();
  j["decode_tokens_per_second"] = s.decode_tokens_per_second();
  j["blocks_fetched"] = s.blocks_fetched();
  j["bytes_fetched"] = s.bytes_fetched();
  j["blocks_published"] = s.blocks_published();
  j["bytes_published"] = s.bytes_published();
  j["stalls"] = s.stalls();
  j["stall_seconds"] = s.stall_seconds();
  j["blocks_attended_per_step"] = s.blocks_attended_per_step();
  j["blocks_total_per_step"] = s.blocks_total_per_step();
  j["max_batch"] = s.max_batch();
  if (!s.weights().empty()) j["weights"] = s.weights();
  if (!s.worker().empty()) j["worker"] = s.worker();
  return j;
}

OrderedJson Envelope(const ResponseContext& c, bool chunk) {
  OrderedJson j;
  j["id"] = c.id;
  if (c.endpoint == Endpoint::kChat) {
    j["object"] = chunk ? "chat.completion.chunk" : "chat.completion";
  } else {
    j["object"] = "text_completion";
  }
  j["created"] = c.created;
  j["model"] = c.model;
  return j;
}

std::string Event(const OrderedJson& j) { return "data: " + Dump(j) + "\n\n"; }

constexpr const char* kDone = "data: [DONE]\n\n";

}  // namespace

int HttpStatus(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return 200;
    case StatusCode::kInvalidArgument:
    case StatusCode::kOutOfRange:
    case StatusCode::kFailedPrecondition:
      return 400;
    case StatusCode::kUnauthenticated:
      return 401;
    case StatusCode::kPermissionDenied:
      return 403;
    case StatusCode::kNotFound:
      return 404;
    case StatusCode::kAlreadyExists:
      return 409;
    case StatusCode::kResourceExhausted:
      return 429;
    case StatusCode::kUnimplemented:
      return 501;
    case StatusCode::kAborted:
    case StatusCode::kUnavailable:
      return 503;
    case StatusCode::kDeadlineExceeded:
      return 504;
    case StatusCode::kInternal:
    case StatusCode::kDataLoss:
      return 500;
  }
  return 500;
}

ApiError ApiError::FromStatus(const Status& status, std::string param, std::string code) {
  ApiError e = WithHttpStatus(HttpStatus(status.code()), status.message(), std::move(code));
  e.param = std::move(param);
  e.status_code = status.code();
  return e;
}

ApiError ApiError::WithHttpStatus(int http_status, std::string message, std::string code) {
  ApiError e;
  e.http_status = http_status;
  e.message = std::move(message);
  e.type = ErrorType(http_status);
  e.code = std::move(code);
  e.status_code = StatusCodeForHttp(http_status);
  return e;
}

std::string ApiError::Body() const {
  OrderedJson j;
  j["error"] = {{"message", message}, {"type", type}, {"code", NullOr(code)}, {"param", NullOr(param)}};
  return Dump(j);
}

std::variant<ParsedRequest, ApiError> ParseRequest(Endpoint endpoint, const std::string& body, const ModelInfo& model,
                                                   uint64_t seed_if_absent) {
  Json doc;
  try {
    doc = Json::parse(body);
  } catch (const Json::exception& e) {
    // nlohmann's message says where ("parse error at line 1, column 12: ..."); it also refuses
    // strings that are not valid UTF-8.
    return ApiError::WithHttpStatus(400, std::string("the request body is not valid JSON: ") + e.what());
  }
  try {
    ParsedRequest out;
    out.endpoint = endpoint;
    ObjectReader r(doc, "");
    if (const Json* m = r.Get("model")) {
      const std::string name = ReadString(*m, "model");
      if (name != model.name) {
        ApiError e = ApiError::WithHttpStatus(
            404, "the model '" + name + "' does not exist; this worker serves '" + model.name + "'", "model_not_found");
        e.param = "model";
        return e;
      }
    }
    std::string prompt_param;
    Prompt prompt;
    std::vector<ChatMessage> messages;
    if (endpoint == Endpoint::kCompletions) {
      prompt_param = "prompt";
      const Json* p = r.Get("prompt");
      if (p == nullptr) Refuse("prompt", "prompt is required");
      prompt = ReadPrompt(*p, model);
    } else {
      prompt_param = "messages";
      messages = ReadMessages(r.Get("messages"));
    }
    bool max_tokens_given = false;
    ReadCommon(r, endpoint, &out, &max_tokens_given, seed_if_absent);
    r.FinishAndRefuseUnknown();

    ServeRequest& s = out.serve;
    if (prompt.is_ids) {
      s.prompt = std::move(prompt.ids);
    } else {
      if (model.tokenizer == nullptr) {
        Refuse(prompt_param, "the model has no tokenizer: send the prompt as token ids to /v1/completions");
      }
      std::string text = prompt.text;
      if (endpoint == Endpoint::kChat) {
        StatusOr<std::string> formatted = model.tokenizer->FormatChat(messages);
        if (!formatted.ok()) Refuse("messages", formatted.status().message());
        text = *formatted;
      }
      // Special tokens written in the text are parsed, as vLLM and llama.cpp's server do (a
      // ChatML prompt sent to /v1/completions reads as the chat endpoint would format it).
      s.prompt = model.tokenizer->Encode(text, /*add_bos=*/true, /*parse_special=*/true);
    }
    if (s.prompt.empty()) Refuse(prompt_param, "the prompt is empty (no tokens)");
    const int64_t n = static_cast<int64_t>(s.prompt.size());
    if (model.max_context > 0 && n >= model.max_context) {
      ApiError e = ApiError::WithHttpStatus(400,
                                            "the prompt has " + std::to_string(n) + " tokens; the model's context is " +
                                                std::to_string(model.max_context) +
                                                " tokens (the prompt must leave room for one generated token)",
                                            "context_length_exceeded");
      e.param = prompt_param;
      return e;
    }
    if (!max_tokens_given) {
      // OpenAI's defaults: 16 for completions; for chat, until the model ends its turn.
      s.max_tokens =
          endpoint == Endpoint::kChat && model.max_context > 0 ? static_cast<int32_t>(model.max_context - n) : 16;
    }
    if (s.min_tokens > s.max_tokens) {
      Refuse("min_tokens", "min_tokens (" + std::to_string(s.min_tokens) + ") is larger than max_tokens (" +
                               std::to_string(s.max_tokens) + ")");
    }
    return out;
  } catch (const BadField& e) {
    ApiError error = ApiError::WithHttpStatus(400, e.message);
    error.param = e.param;
    return error;
  } catch (const Json::exception& e) {
    return ApiError::WithHttpStatus(400, std::string("the request could not be read: ") + e.what());
  }
}

std::string FinishReason(const std::string& foresight_reason) {
  if (foresight_reason == "eos" || foresight_reason == "stop") return "stop";
  if (foresight_reason == "max_tokens" || foresight_reason == "context") return "length";
  return foresight_reason;
}

std::string UsageJson(const v1::GenerateStats& stats) { return Dump(UsageObject(stats)); }

std::string CompletionBody(const ResponseContext& context, const std::string& text, const v1::GenerateStats& stats) {
  OrderedJson j = Envelope(context, /*chunk=*/false);
  OrderedJson choice;
  choice["index"] = 0;
  if (context.endpoint == Endpoint::kChat) {
    choice["message"] = {{"role", "assistant"}, {"content", text}};
  } else {
    choice["text"] = text;
  }
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = FinishReason(stats.finish_reason());
  j["choices"] = OrderedJson::array({choice});
  j["usage"] = UsageObject(stats);
  j["foresight"] = StatsObject(stats);
  return Dump(j);
}

std::string StreamEncoder::Chunk(const std::string& text, bool role, const std::string& finish_reason,
                                 const v1::GenerateStats* stats) const {
  OrderedJson j = Envelope(context_, /*chunk=*/true);
  OrderedJson choice;
  choice["index"] = 0;
  if (context_.endpoint == Endpoint::kChat) {
    OrderedJson delta = OrderedJson::object();
    if (role) delta["role"] = "assistant";
    if (role || !text.empty()) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = NullOr(finish_reason);
  j["choices"] = OrderedJson::array({choice});
  if (context_.include_usage) j["usage"] = nullptr;
  if (stats != nullptr) j["foresight"] = StatsObject(*stats);
  return Event(j);
}

std::string StreamEncoder::Start() const {
  if (context_.endpoint != Endpoint::kChat) return "";
  return Chunk("", /*role=*/true, "", nullptr);
}

std::string StreamEncoder::Text(const std::string& text) const {
  if (text.empty()) return "";
  return Chunk(text, /*role=*/false, "", nullptr);
}

std::string StreamEncoder::Finish(const std::string& tail, const v1::GenerateStats& stats) const {
  std::string out = Text(tail);
  out += Chunk("", /*role=*/false, FinishReason(stats.finish_reason()), &stats);
  if (context_.include_usage) {
    OrderedJson j = Envelope(context_, /*chunk=*/true);
    j["choices"] = OrderedJson::array();
    j["usage"] = UsageObject(stats);
    out += Event(j);
  }
  return out + kDone;
}

std::string StreamEncoder::Fail(const ApiError& error) const { return "data: " + error.Body() + "\n\n" + kDone; }

std::string ModelListBody(const ModelInfo& model, int64_t created) {
  OrderedJson m;
  m["id"] = model.name;
  m["object"] = "model";
  m["created"] = created;
  m["owned_by"] = "foresight";
  if (model.max_context > 0) m["max_model_len"] = model.max_context;
  OrderedJson j;
  j["object"] = "list";
  j["data"] = OrderedJson::array({m});
  return Dump(j);
}

}  // namespace foresight::worker::openai
