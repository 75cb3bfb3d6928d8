#include "worker/service/http_api.h"

#include <strings.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <string_view>
#include <thread>

#include <httplib.h>
#include <spdlog/spdlog.h>

#include "common/constant_time.h"

namespace foresight::worker {
namespace {

using openai::ApiError;
using openai::Endpoint;

// How long a stream may go without a write: then it carries an SSE comment, which also finds a
// client that went away while its request waited or prefilled.
constexpr auto kHeartbeatInterval = std::chrono::seconds(1);
constexpr const char* kHeartbeat = ": keep-alive\n\n";
// How often a thread waiting for a non-streamed request checks whether the server stops.
constexpr auto kStopCheckInterval = std::chrono::milliseconds(200);
constexpr const char* kJson = "application/json";

Status Loading() { return Unavailable("the worker is loading its model; retry when GET /health answers 200"); }

}  // namespace

// One submitted request: the scheduler's thread appends its output (as its ServeObserver, wrapped
// by the metrics), the connection's thread writes it out. The observer never waits on the client.
struct HttpApi::Request final : public ServeObserver {
  explicit Request(ServeBackend* b) : backend(b) {}

  bool OnToken(TokenId, const std::string& piece) override {
    {
      MutexLock lock(mu);
      text += piece;
    }
    cv.SignalAll();
    return !client_gone;  // false: the scheduler cancels (OnFinish with ABORTED follows)
  }

  void OnFinish(const Status& s, const v1::GenerateStats& st, const std::string& held) override {
    {
      MutexLock lock(mu);
      finished = true;
      status = s;
      stats = st;
      tail = held;
    }
    cv.SignalAll();
  }

  // The client is gone (or the server stops): the scheduler frees the sequence at its next step.
  void Cancel() {
    client_gone = true;
    backend->Cancel(id);
  }

  ServeBackend* const backend;
  uint64_t id = 0;  // set by the connection's thread after Submit; only it cancels
  std::atomic<bool> client_gone{false};
  std::atomic<bool> delivered{false};  // the whole response went out
  Mutex mu;
  CondVar cv;
  std::string text FS_GUARDED_BY(mu);  // released by the scheduler, not yet written
  std::string tail FS_GUARDED_BY(mu);  // what the stream held back until the end
  bool finished FS_GUARDED_BY(mu) = false;
  Status status FS_GUARDED_BY(mu);
  v1::GenerateStats stats FS_GUARDED_BY(mu);
};

openai::ModelInfo ServedModelInfo(const Model& model, const std::string& model_path) {
  std::filesystem::path path(model_path);
  if (!path.has_filename()) path = path.parent_path();  // "folder/"
  openai::ModelInfo info;
  info.name = std::filesystem::is_directory(path) ? path.filename().string() : path.stem().string();
  info.tokenizer = model.tokenizer();
  info.vocab_size = model.config().vocab_size;
  info.max_context = model.config().max_context;
  return info;
}

HttpApi::HttpApi(HttpApiOptions options, ServingMetrics* metrics)
    : options_(std::move(options)),
      metrics_(metrics),
      server_(std::make_unique<httplib::Server>()),
      random_(std::random_device{}()) {}

HttpApi::~HttpApi() { Stop(); }

const HttpApi::Serving* HttpApi::serving() const { return serving_.load(std::memory_order_acquire); }

uint64_t HttpApi::Random() {
  MutexLock lock(random_mu_);
  return random_();
}

std::string HttpApi::NewId(const char* prefix) {
  char hex[33];
  std::snprintf(hex, sizeof(hex), "%016llx%016llx", static_cast<unsigned long long>(Random()),
                static_cast<unsigned long long>(Random()));
  return std::string(prefix) + hex;
}

void HttpApi::Reply(httplib::Response& res, const ApiError& error) {
  res.status = error.http_status;
  res.set_content(error.Body(), kJson);
}

bool HttpApi::Authorized(const httplib::Request& req, httplib::Response& res) {
  if (options_.token.empty()) return true;
  const std::string header = req.get_header_value("Authorization");
  std::string_view given;
  // The scheme is case-insensitive (RFC 9110); the token is compared in constant time.
  if (header.size() > 7 && strncasecmp(header.c_str(), "Bearer ", 7) == 0) given = std::string_view(header).substr(7);
  if (!given.empty() && ConstantTimeEquals(options_.token, given)) return true;
  metrics_->RecordRefused(StatusCode::kUnauthenticated);
  res.set_header("WWW-Authenticate", "Bearer");
  const std::string why = header.empty() ? "missing header Authorization: Bearer <token> (this worker requires the "
                                           "token of its --token-file)"
                                         : "the Authorization header does not carry this worker's bearer token";
  Reply(res, ApiError::FromStatus(Unauthenticated(why), "", "invalid_api_key"));
  return false;
}

void HttpApi::Route() {
  httplib::Server& s = *server_;
  const int threads = std::max(4, options_.threads);
  s.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  s.set_payload_max_length(options_.max_body_bytes);
  s.set_tcp_nodelay(true);           // a stream's small chunks go out as they are written
  s.set_keep_alive_max_count(1000);  // clients (benchmarks) reuse their connections

  s.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    HandleGeneration(Endpoint::kCompletions, req, res);
  });
  s.Post("/v1/chat/completions",
         [this](const httplib::Request& req, httplib::Response& res) { HandleGeneration(Endpoint::kChat, req, res); });
  s.Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
    if (!Authorized(req, res)) return;
    const Serving* serving = this->serving();
    if (serving == nullptr) return Reply(res, ApiError::FromStatus(Loading()));
    res.set_content(openai::ModelListBody(serving->model, ready_time_), kJson);
  });
  s.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (serving() == nullptr) return Reply(res, ApiError::FromStatus(Loading()));
    res.set_content(R"({"status":"ok"})", kJson);
  });
  s.Get("/metrics", [this](const httplib::Request& req, httplib::Response& res) {
    if (!Authorized(req, res)) return;
    const Serving* serving = this->serving();
    const Scheduler::Counts counts = serving == nullptr ? Scheduler::Counts{} : serving->backend->counts();
    res.set_content(metrics_->Render(counts), "text/plain; version=0.0.4; charset=utf-8");
  });

  // Errors httplib answers itself (no route, a body over the limit) get an error object too.
  s.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;  // ours already
    std::string message = "HTTP " + std::to_string(res.status);
    std::string code;
    if (res.status == 404) {
      message = "no such endpoint: " + req.method + " " + req.path +
                " (this worker serves POST /v1/completions, POST /v1/chat/completions, GET /v1/models, "
                "GET /health and GET /metrics)";
      code = "unknown_url";
    } else if (res.status == 413) {
      message =
          "the request body is larger than this worker accepts (" + std::to_string(options_.max_body_bytes) + " bytes)";
      code = "request_too_large";
    }
    const int status = res.status;
    Reply(res, ApiError::WithHttpStatus(status, message, code));
    return httplib::Server::HandlerResponse::Handled;
  }));
  s.set_exception_handler([this](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown exception";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {}
    spdlog::error("HTTP {} {}: {}", req.method, req.path, what);
    Reply(res, ApiError::FromStatus(Internal("the worker failed to handle the request: " + what)));
  });
  s.set_logger([](const httplib::Request& req, const httplib::Response& res) {
    spdlog::debug("HTTP {} {} from {}:{}: {}", req.method, req.path, req.remote_addr, req.remote_port, res.status);
  });
}

void HttpApi::HandleGeneration(Endpoint endpoint, const httplib::Request& req, httplib::Response& res) {
  if (!Authorized(req, res)) return;
  const Serving* serving = this->serving();
  if (serving == nullptr) {
    metrics_->RecordRefused(StatusCode::kUnavailable);
    return Reply(res, ApiError::FromStatus(Loading()));
  }
  auto parsed = openai::ParseRequest(endpoint, req.body, serving->model, Random());
  if (const ApiError* e = std::get_if<ApiError>(&parsed)) {
    metrics_->RecordRefused(e->status_code);
    return Reply(res, *e);
  }
  openai::ParsedRequest& p = std::get<openai::ParsedRequest>(parsed);
  openai::ResponseContext context;
  context.endpoint = endpoint;
  context.id = NewId(endpoint == Endpoint::kChat ? "chatcmpl-" : "cmpl-");
  context.created = static_cast<int64_t>(std::time(nullptr));
  context.model = serving->model.name;
  context.include_usage = p.include_usage;

  auto request = std::make_shared<Request>(serving->backend);
  StatusOr<uint64_t> id = serving->backend->Submit(std::move(p.serve), metrics_->Observe(request));
  if (!id.ok()) {
    metrics_->RecordRefused(id.status().code());
    return Reply(res, ApiError::FromStatus(id.status()));
  }
  request->id = *id;
  if (p.stream) {
    Stream(request, openai::StreamEncoder(context), res);
  } else {
    WaitAndReply(request, context, res);
  }
}

void HttpApi::Stream(const std::shared_ptr<Request>& request, openai::StreamEncoder encoder, httplib::Response& res) {
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");  // proxies: do not buffer the stream
  // httplib calls the provider until it calls done() or returns false; each call writes what the
  // scheduler released since the last one, waiting at most a heartbeat interval.
  auto provider = [this, request, encoder, started = false](size_t, httplib::DataSink& sink) mutable {
    // (An empty write would end httplib's loop: never write nothing.)
    auto write = [&sink](const std::string& bytes) { return bytes.empty() || sink.write(bytes.data(), bytes.size()); };
    if (!started) {
      started = true;
      if (!write(encoder.Start())) return false;
    }
    std::string text, tail;
    bool finished = false;
    Status status;
    v1::GenerateStats stats;
    {
      Request& r = *request;
      MutexLock lock(r.mu);
      r.cv.WaitFor(r.mu, kHeartbeatInterval, [&]() FS_REQUIRES(r.mu) { return !r.text.empty() || r.finished; });
      text.swap(r.text);
      finished = r.finished;
      if (finished) {
        status = r.status;
        stats = r.stats;
        tail = r.tail;
      }
    }
    if (stopping_) return false;
    if (!finished) return write(text.empty() ? std::string(kHeartbeat) : encoder.Text(text));
    const std::string end =
        encoder.Text(text) + (status.ok() ? encoder.Finish(tail, stats) : encoder.Fail(ApiError::FromStatus(status)));
    if (!write(end)) return false;
    request->delivered = true;
    sink.done();
    return true;
  };
  // Called when the response is over: unless all of it went out, the client is gone or the server
  // stops, and the request is cancelled so that its sequence is freed. (httplib reports success
  // for a stream it never started because the server was stopping, so `success` alone is not
  // enough.)
  auto releaser = [request](bool) {
    if (!request->delivered) request->Cancel();
  };
  res.set_chunked_content_provider("text/event-stream", std::move(provider), std::move(releaser));
}

void HttpApi::WaitAndReply(const std::shared_ptr<Request>& request, const openai::ResponseContext& context,
                           httplib::Response& res) {
  Request& r = *request;
  std::string body;
  Status status;
  {
    MutexLock lock(r.mu);
    while (!r.finished && !stopping_) {
      r.cv.WaitFor(r.mu, kStopCheckInterval, [&]() FS_REQUIRES(r.mu) { return r.finished; });
    }
    if (r.finished) {
      status = r.status;
      if (status.ok()) body = openai::CompletionBody(context, r.text + r.tail, r.stats);
    }
  }
  if (!body.empty()) return res.set_content(body, kJson);
  if (status.ok()) {  // the server stops before the request finished
    r.Cancel();
    status = Unavailable("the worker is stopping");
  }
  Reply(res, ApiError::FromStatus(status));
}

StatusOr<int> HttpApi::Start(const std::string& host_port) {
  const size_t colon = host_port.rfind(':');
  int port = -1;
  if (colon != std::string::npos && colon + 1 < host_port.size() && colon + 6 >= host_port.size()) {
    port = 0;
    for (char c : host_port.substr(colon + 1)) port = c >= '0' && c <= '9' ? port * 10 + (c - '0') : 1 << 20;
  }
  if (port < 0 || port > 65535) return InvalidArgument("--http " + host_port + ": expected HOST:PORT (port 0: any)");
  std::string host = host_port.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  Route();
  const int bound = port == 0 ? server_->bind_to_any_port(host) : (server_->bind_to_port(host, port) ? port : -1);
  if (bound <= 0) {
    return Unavailable("cannot listen on " + host_port + " for HTTP (address in use, or not a local address?)");
  }
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  // Stop() before the thread listens would find nothing to stop.
  while (!server_->is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return bound;
}

void HttpApi::Ready(openai::ModelInfo model, ServeBackend* backend) {
  serving_storage_ = std::make_unique<Serving>(Serving{std::move(model), backend});
  ready_time_ = static_cast<int64_t>(std::time(nullptr));
  serving_.store(serving_storage_.get(), std::memory_order_release);
}

void HttpApi::Stop() {
  stopping_ = true;
  if (thread_.joinable()) {
    server_->stop();
    thread_.join();
  }
}

}  // namespace foresight::worker
