// The HTTP API (worker/service/http_api.h) over real sockets on loopback, in front of a fake
// scheduler that releases scripted text: routes, authentication, errors, streaming, a client that
// disconnects mid-stream (its request is cancelled), metrics, and stopping with streams open.
#include "worker/service/http_api.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>

#include <nlohmann/json.hpp>

namespace foresight::worker {
namespace {

using Json = nlohmann::json;
using namespace std::chrono_literals;

// Plays the scheduler: each request releases `pieces` (then forever, when `endless`), one every
// 5 ms, on its own thread, and finishes with `finish_reason`; Cancel ends it with ABORTED. While
// held (HoldSubmits), Submit waits inside, as a scheduler busy with its admission would.
class FakeBackend final : public ServeBackend {
 public:
  ~FakeBackend() override {
    {
      MutexLock lock(mu_);  // a request nobody cancelled must not keep the test from ending
      for (auto& [id, on] : running_) on = false;
    }
    for (auto& t : threads_) t.join();
  }

  StatusOr<uint64_t> Submit(ServeRequest request, std::shared_ptr<ServeObserver> observer) override {
    MutexLock lock(mu_);
    ++submitting_;
    cv_.SignalAll();
    while (hold_submits_) cv_.Wait(mu_);
    if (!refuse_with_.ok()) return refuse_with_;
    const uint64_t id = ++next_id_;
    last_request_ = request;
    running_[id] = true;
    threads_.emplace_back(
        [this, id, request = std::move(request), observer = std::move(observer)] { Run(id, request, observer); });
    return id;
  }

  void Cancel(uint64_t id) override {
    MutexLock lock(mu_);
    cancelled_.push_back(id);
    if (running_.count(id)) running_[id] = false;
  }

  Scheduler::Counts counts() const override {
    MutexLock lock(mu_);
    Scheduler::Counts c;
    for (const auto& [id, on] : running_) c.running += on ? 1 : 0;
    c.waiting = 3;
    return c;
  }

  void HoldSubmits(bool hold) {
    {
      MutexLock lock(mu_);
      hold_submits_ = hold;
    }
    cv_.SignalAll();
  }
  // True once `n` calls of Submit have begun (held or not) within `timeout`.
  bool WaitSubmitting(int n, std::chrono::milliseconds timeout) const {
    MutexLock lock(mu_);
    return cv_.WaitFor(mu_, timeout, [&]() FS_REQUIRES(mu_) { return submitting_ >= n; });
  }

  void RefuseWith(Status s) {
    MutexLock lock(mu_);
    refuse_with_ = std::move(s);
  }
  void Script(std::vector<std::string> pieces, std::string finish_reason, bool endless = false) {
    MutexLock lock(mu_);
    pieces_ = std::move(pieces);
    finish_reason_ = std::move(finish_reason);
    endless_ = endless;
  }
  std::vector<uint64_t> cancelled() const {
    MutexLock lock(mu_);
    return cancelled_;
  }
  ServeRequest last_request() const {
    MutexLock lock(mu_);
    return last_request_;
  }
  bool WaitCancelled(uint64_t id, std::chrono::milliseconds timeout) const {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      for (uint64_t c : cancelled()) {
        if (c == id) return true;
      }
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }

 private:
  void Run(uint64_t id, const ServeRequest& request, const std::shared_ptr<ServeObserver>& observer) {
    std::vector<std::string> pieces;
    std::string reason;
    bool endless;
    {
      MutexLock lock(mu_);
      pieces = pieces_;
      reason = finish_reason_;
      endless = endless_;
    }
    v1::GenerateStats stats;
    stats.set_prompt_tokens(static_cast<int64_t>(request.prompt.size()));
    stats.set_prefix_hit_tokens(16);
    stats.set_policy("dense");
    for (size_t i = 0; endless || i < pieces.size(); ++i) {
      std::this_thread::sleep_for(5ms);
      {
        MutexLock lock(mu_);
        if (!running_[id]) break;
      }
      stats.set_generated_tokens(stats.generated_tokens() + 1);
      if (!observer->OnToken(1, pieces.empty() ? "x" : pieces[i % pieces.size()])) {
        MutexLock lock(mu_);
        running_[id] = false;
      }
    }
    bool cancelled;
    {
      MutexLock lock(mu_);
      cancelled = !running_[id];
      running_[id] = false;
    }
    if (cancelled) {
      observer->OnFinish(Aborted("cancelled"), stats, "");
      return;
    }
    stats.set_finish_reason(reason);
    observer->OnFinish(Status::OK(), stats, "!");
  }

  mutable Mutex mu_;
  mutable CondVar cv_;
  bool hold_submits_ FS_GUARDED_BY(mu_) = false;
  int submitting_ FS_GUARDED_BY(mu_) = 0;
  Status refuse_with_ FS_GUARDED_BY(mu_);
  uint64_t next_id_ FS_GUARDED_BY(mu_) = 0;
  std::map<uint64_t, bool> running_ FS_GUARDED_BY(mu_);
  std::vector<uint64_t> cancelled_ FS_GUARDED_BY(mu_);
  ServeRequest last_request_ FS_GUARDED_BY(mu_);
  std::vector<std::string> pieces_ FS_GUARDED_BY(mu_) = {"Hel", "lo"};
  std::string finish_reason_ FS_GUARDED_BY(mu_) = "eos";
  bool endless_ FS_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;  // joined at destruction (Submit runs on the server's threads)
};

openai::ModelInfo Model() {
  openai::ModelInfo m;
  m.name = "tiny";
  m.vocab_size = 100;
  m.max_context = 64;
  return m;  // no tokenizer: prompts are token ids
}

class HttpApiTest : public ::testing::Test {
 protected:
  void SetUp() override { signal(SIGPIPE, SIG_IGN); }

  void StartApi(std::string token = "", size_t max_body = 1 << 20, bool ready = true) {
    HttpApiOptions o;
    o.token = std::move(token);
    o.max_body_bytes = max_body;
    o.threads = 8;
    api_ = std::make_unique<HttpApi>(o, &metrics_);
    auto port = api_->Start("127.0.0.1:0");
    ASSERT_TRUE(port.ok()) << port.status().ToString();
    port_ = *port;
    if (ready) api_->Ready(Model(), &backend_);
    client_ = std::make_unique<httplib::Client>("127.0.0.1", port_);
    client_->set_read_timeout(10, 0);
  }

  void TearDown() override {
    if (api_) api_->Stop();
  }

  // Checks an error response: status, an OpenAI error object, and words of its message.
  static void ExpectError(const httplib::Result& r, int status, const std::string& words) {
    ASSERT_TRUE(r) << "no response";
    EXPECT_EQ(r->status, status) << r->body;
    EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
    Json j = Json::parse(r->body, nullptr, false);
    ASSERT_TRUE(j.is_object()) << r->body;
    ASSERT_TRUE(j["error"].is_object()) << r->body;
    EXPECT_TRUE(j["error"]["message"].is_string());
    EXPECT_TRUE(j["error"]["type"].is_string());
    EXPECT_TRUE(j["error"].contains("code"));
    EXPECT_TRUE(j["error"].contains("param"));
    EXPECT_NE(j["error"]["message"].get<std::string>().find(words), std::string::npos) << r->body;
  }

  ServingMetrics metrics_;
  FakeBackend backend_;
  std::unique_ptr<HttpApi> api_;
  std::unique_ptr<httplib::Client> client_;
  int port_ = 0;
};

TEST_F(HttpApiTest, HealthIs503UntilReady) {
  StartApi("", 1 << 20, /*ready=*/false);
  ExpectError(client_->Get("/health"), 503, "loading its model");
  ExpectError(client_->Post("/v1/completions", R"({"prompt": [1]})", "application/json"), 503, "loading");
  api_->Ready(Model(), &backend_);
  auto r = client_->Get("/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(Json::parse(r->body), Json::parse(R"({"status": "ok"})"));
}

TEST_F(HttpApiTest, CompletionAndModels) {
  StartApi();
  auto r = client_->Post("/v1/completions", R"({"model": "tiny", "prompt": [1, 2, 3], "max_tokens": 5})",
                         "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const Json j = Json::parse(r->body);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["id"].get<std::string>().rfind("cmpl-", 0), 0u);
  EXPECT_EQ(j["choices"][0]["text"], "Hello!");  // the pieces, then the held-back tail
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 3);
  EXPECT_EQ(j["usage"]["completion_tokens"], 2);
  EXPECT_EQ(j["usage"]["prompt_tokens_details"]["cached_tokens"], 16);
  EXPECT_EQ(backend_.last_request().max_tokens, 5);

  auto m = client_->Get("/v1/models");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->status, 200);
  const Json models = Json::parse(m->body);
  EXPECT_EQ(models["data"][0]["id"], "tiny");
  EXPECT_EQ(models["data"][0]["owned_by"], "foresight");
}

// Reads a whole streamed response; events as the client saw them.
std::vector<std::string> SplitEvents(const std::string& body) {
  std::vector<std::string> events;
  size_t at = 0;
  while (true) {
    const size_t end = body.find("\n\n", at);
    if (end == std::string::npos) break;
    events.push_back(body.substr(at, end - at));
    at = end + 2;
  }
  return events;
}

TEST_F(HttpApiTest, StreamWithUsageIsNotCompressed) {
  StartApi();
  backend_.Script({"a", "b", "c"}, "max_tokens");
  // httpx (the openai client) offers gzip: an event stream must still go out as it is written.
  httplib::Headers headers = {{"Accept-Encoding", "gzip, deflate"}};
  client_->set_decompress(false);
  auto r = client_->Post("/v1/completions", headers,
                         R"({"prompt": [5, 6], "stream": true, "stream_options": {"include_usage": true}})",
                         "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/event-stream");
  EXPECT_EQ(r->get_header_value("Content-Encoding"), "");
  std::vector<Json> chunks;
  bool done = false;
  for (const std::string& e : SplitEvents(r->body)) {
    if (e[0] == ':') continue;  // a heartbeat comment
    ASSERT_EQ(e.rfind("data: ", 0), 0u) << e;
    ASSERT_FALSE(done) << "an event after [DONE]";
    if (e == "data: [DONE]") {
      done = true;
      continue;
    }
    chunks.push_back(Json::parse(e.substr(6)));
  }
  EXPECT_TRUE(done);
  std::string text;
  for (const Json& c : chunks) {
    if (!c["choices"].empty()) text += c["choices"][0]["text"].get<std::string>();
  }
  EXPECT_EQ(text, "abc!");
  ASSERT_GE(chunks.size(), 3u);
  EXPECT_EQ(chunks[chunks.size() - 2]["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(chunks.back()["choices"], Json::array());
  EXPECT_EQ(chunks.back()["usage"]["completion_tokens"], 3);
}

TEST_F(HttpApiTest, BearerTokenOnEveryPathButHealth) {
  StartApi("s3cret");
  const std::string body = R"({"prompt": [1]})";
  ExpectError(client_->Post("/v1/completions", body, "application/json"), 401, "missing header Authorization");
  ExpectError(client_->Post("/v1/completions", {{"Authorization", "Bearer wrong"}}, body, "application/json"), 401,
              "does not carry");
  ExpectError(client_->Post("/v1/completions", {{"Authorization", "Bearer s3cre"}}, body, "application/json"), 401,
              "does not carry");
  ExpectError(client_->Get("/v1/models"), 401, "Authorization");
  ExpectError(client_->Get("/metrics"), 401, "Authorization");
  auto ok = client_->Post("/v1/completions", {{"Authorization", "Bearer s3cret"}}, body, "application/json");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
  auto lower = client_->Get("/v1/models", {{"Authorization", "bearer s3cret"}});
  ASSERT_TRUE(lower);
  EXPECT_EQ(lower->status, 200);
  auto health = client_->Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
}

TEST_F(HttpApiTest, ErrorsAreOpenAiErrorObjects) {
  StartApi("", /*max_body=*/4096);
  ExpectError(client_->Post("/v1/completions", R"({"prompt": [1],)", "application/json"), 400, "not valid JSON");
  ExpectError(client_->Post("/v1/completions", R"({"prompt": [1], "top_p": 7})", "application/json"), 400, "top_p");
  ExpectError(client_->Post("/v1/completions", R"({"prompt": [1], "model": "gpt-4"})", "application/json"), 404,
              "'gpt-4' does not exist");
  ExpectError(client_->Post("/v1/completions", R"({"prompt": [1], "n": 2})", "application/json"), 400, "n must be 1");
  ExpectError(client_->Post("/v1/completions", Json{{"prompt", std::vector<int>(64, 1)}}.dump(), "application/json"),
              400, "the prompt has 64 tokens; the model's context is 64");
  // The model has no tokenizer: chat is refused by name, before any stream starts.
  ExpectError(client_->Post("/v1/chat/completions", R"({"messages": [{"role": "user", "content": "hi"}],
                                                      "stream": true})",
                            "application/json"),
              400, "token ids");
  ExpectError(client_->Get("/v1/nothing"), 404, "no such endpoint: GET /v1/nothing");
  ExpectError(client_->Get("/v1/completions"), 404, "no such endpoint");
  ExpectError(client_->Post("/v1/completions", std::string(5000, ' '), "application/json"), 413, "4096 bytes");
  ExpectError(client_->Post("/v1/completions", "{\"prompt\": \"\xff\"}", "application/json"), 400, "UTF-8");

  backend_.RefuseWith(ResourceExhausted("64 requests already wait"));
  ExpectError(client_->Post("/v1/completions", R"({"prompt": [1]})", "application/json"), 429,
              "64 requests already wait");
  backend_.RefuseWith(Status::OK());
  auto r = client_->Post("/v1/completions", R"({"prompt": [1]})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

// Connects, sends a streaming request, reads `bytes` of the response and hangs up.
void StreamAndHangUp(int port, const std::string& body, size_t bytes) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  const std::string request =
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Content-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body;
  ASSERT_EQ(write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
  std::string got;
  char buf[512];
  while (got.size() < bytes) {
    const ssize_t n = read(fd, buf, sizeof(buf));
    ASSERT_GT(n, 0);
    got.append(buf, static_cast<size_t>(n));
  }
  EXPECT_NE(got.find("data: "), std::string::npos) << got;
  close(fd);
}

TEST_F(HttpApiTest, ClientThatHangsUpMidStreamCancelsItsRequest) {
  StartApi();
  backend_.Script({"tok "}, "max_tokens", /*endless=*/true);
  StreamAndHangUp(port_, R"({"prompt": [1, 2], "stream": true, "max_tokens": 100000})", 2000);
  EXPECT_TRUE(backend_.WaitCancelled(1, 5000ms)) << "the request was not cancelled";
  // The worker still serves.
  backend_.Script({"a"}, "eos");
  auto r = client_->Post("/v1/completions", R"({"prompt": [1]})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(HttpApiTest, MetricsCountRequestsAndScrapeTheScheduler) {
  StartApi();
  ASSERT_TRUE(client_->Post("/v1/completions", R"({"prompt": [1, 2, 3]})", "application/json"));
  ASSERT_TRUE(client_->Post("/v1/completions", R"({"prompt": "x", "n": 3})", "application/json"));
  auto r = client_->Get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  const std::string& m = r->body;
  for (const char* line :
       {"foresight_worker_waiting_requests 3", "foresight_worker_prompt_tokens_total 3",
        "foresight_worker_generation_tokens_total 2", "foresight_worker_prefix_cache_hit_tokens_total 16",
        "foresight_worker_requests_total{finish_reason=\"eos\"} 1",
        "foresight_worker_request_errors_total{code=\"INVALID_ARGUMENT\"} 1",
        "foresight_worker_time_to_first_token_seconds_count 1", "foresight_worker_inter_token_latency_seconds_count 1",
        "foresight_worker_request_duration_seconds_count 1", "foresight_worker_running_sequences 0",
        "foresight_worker_transfer_buffer_bytes 0", "foresight_worker_kv_blocks_fetched_total 0",
        "foresight_worker_stalls_total 0"}) {
    EXPECT_NE(m.find(line), std::string::npos) << line << "\n" << m;
  }
}

// Posts `body` on its own thread with short timeouts, so that a server that never answers fails
// the test instead of hanging it.
std::thread PostInBackground(int port, std::string body) {
  return std::thread([port, body = std::move(body)] {
    httplib::Client c("127.0.0.1", port);
    c.set_connection_timeout(5, 0);
    c.set_read_timeout(10, 0);
    c.Post("/v1/completions", body, "application/json");
  });
}

// True once nothing accepts connections on `port` (the listening socket is closed).
bool WaitRefused(int port, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool refused = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0;
    close(fd);
    if (refused) return true;
    std::this_thread::sleep_for(1ms);
  }
  return false;
}

TEST_F(HttpApiTest, StopCancelsOpenStreams) {
  StartApi();
  backend_.Script({"tok "}, "max_tokens", /*endless=*/true);
  std::thread streaming = PostInBackground(port_, R"({"prompt": [1], "stream": true})");
  std::thread waiting = PostInBackground(port_, R"({"prompt": [1]})");
  ASSERT_TRUE(backend_.WaitSubmitting(2, 10s));
  const auto t0 = std::chrono::steady_clock::now();
  api_->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  streaming.join();
  waiting.join();
  EXPECT_TRUE(backend_.WaitCancelled(1, 1000ms));
  EXPECT_TRUE(backend_.WaitCancelled(2, 1000ms));
}

// The server stops while both requests are still being submitted: the stream's response never
// starts (httplib reports that as a success), and the request must still be cancelled.
TEST_F(HttpApiTest, StopWhileRequestsAreBeingSubmittedCancelsThem) {
  StartApi();
  backend_.Script({"tok "}, "max_tokens", /*endless=*/true);
  backend_.HoldSubmits(true);
  std::thread streaming = PostInBackground(port_, R"({"prompt": [1], "stream": true})");
  std::thread waiting = PostInBackground(port_, R"({"prompt": [1]})");
  ASSERT_TRUE(backend_.WaitSubmitting(2, 10s));
  std::thread stopper([this] { api_->Stop(); });
  const bool refused = WaitRefused(port_, 10s);
  backend_.HoldSubmits(false);
  stopper.join();
  streaming.join();
  waiting.join();
  ASSERT_TRUE(refused) << "the server still accepted connections after Stop()";
  EXPECT_TRUE(backend_.WaitCancelled(1, 1000ms));
  EXPECT_TRUE(backend_.WaitCancelled(2, 1000ms));
}

}  // namespace
}  // namespace foresight::worker
