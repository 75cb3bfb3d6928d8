// foresight-worker: one model behind a gRPC generation service (proto/worker.proto) and, with
// --http, an OpenAI-compatible HTTP API (worker/service/http_api.h), its KV blocks shared through
// the cache service. See README.md ("The main job") and docs/worker.md.
#include <omp.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <limits>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "common/file_io.h"
#include "worker/default_model.h"
#include "worker/service/cache_connection.h"
#include "worker/service/http_api.h"
#include "worker/service/serving_metrics.h"
#include "worker/service/worker_service.h"
#include "worker/serving_flags.h"

namespace {

// Integer checks whose errors read "Value 0 not in range 1 to 2147483647" (CLI11's PositiveNumber
// prints its range as doubles up to 1.8e308).
const CLI::Range kPositive(1, std::numeric_limits<int>::max());
const CLI::Range kNonNegative(0, std::numeric_limits<int>::max());

using namespace foresight;

struct Flags {
  std::string omp_waiting;  // how OpenMP threads wait (ChooseOpenMpWaiting), for the startup line
  std::string listen = "127.0.0.1:7700";
  std::string http;  // the OpenAI-compatible API's HOST:PORT; empty: none
  std::string cache;
  std::string etcd;
  int replication = 1;
  std::string model;
  std::string token_file;
  // --policy, --budget, --sink, --local, --dense-layers, --query-refine, --weights
  // (worker/serving_flags.h), --namespace, --prefill-chunk.
  worker::ServingOptions serving;
  int threads = 0;
  std::string ucx_transports = "auto";
  int cache_timeout_ms = 10000;
  std::string kv_mode = "cross-token";
  bool no_prefix_reuse = false;
  bool no_publish = false;
  int max_seqs = 8;
  int max_waiting = 64;
  int step_tokens = 512;
  float max_decode_slowdown = 3.0f;
  int kv_budget_mib = 0;
  int seed_cache_mib = 512;
  std::string log_level = "info";
};

int g_signal_pipe[2] = {-1, -1};

void OnTerminate(int sig) {
  const int saved = errno;
  (void)!write(g_signal_pipe[1], &sig, sizeof(sig));
  errno = saved;
}

int Run(const Flags& f) {
  spdlog::set_default_logger(spdlog::stderr_color_mt("foresight-worker"));
  spdlog::set_level(spdlog::level::from_str(f.log_level));
  signal(SIGPIPE, SIG_IGN);
  auto fail = [](const Status& s) {
    spdlog::error("{}", s.ToString());
    std::cerr << "foresight-worker: " << s.message() << "\n";
    return 2;
  };
  if (f.cache.empty() == f.etcd.empty()) {
    return fail(InvalidArgument("give exactly one of --cache HOST:PORT (one node) and --etcd URL (a cluster)"));
  }
  if (f.threads > 0) omp_set_num_threads(f.threads);

  std::string token;
  if (!f.token_file.empty()) {
    auto t = ReadSecretFile(f.token_file, "--token-file");
    if (!t.ok()) return fail(t.status());
    token = *t;
  }

  // SIGTERM/SIGINT: a handler writes to a pipe that one thread waits on. (Blocking the signals
  // and sigwait, as foresight-cached does, is not enough here: OpenBLAS starts its threads before
  // main with the default mask, and a signal delivered to one of them would kill the process.)
  if (pipe(g_signal_pipe) != 0) return fail(Internal("pipe failed"));
  struct sigaction sa {};
  sa.sa_handler = OnTerminate;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);

  // The HTTP API listens before the model loads, so that GET /health says when the worker is ready
  // (503 until then).
  worker::ServingMetrics metrics;
  std::unique_ptr<worker::HttpApi> http;
  std::string http_address;
  if (!f.http.empty()) {
    worker::HttpApiOptions ho;
    ho.token = token;
    // A streamed or waiting request holds a connection thread: every request the scheduler admits,
    // and a few for /health and /metrics.
    ho.threads = f.max_seqs + f.max_waiting + 8;
    http = std::make_unique<worker::HttpApi>(ho, &metrics);
    StatusOr<int> port = http->Start(f.http);
    if (!port.ok()) return fail(port.status());
    http_address = f.http.substr(0, f.http.rfind(':')) + ":" + std::to_string(*port);
  }

  std::string model_path = f.model;
  if (model_path.empty()) {
    auto found = worker::FindDefaultModel();
    if (!found.ok()) return fail(found.status().WithContext("--model not given"));
    model_path = *found;
  }
  auto model = worker::Model::Open(model_path);
  if (!model.ok()) return fail(model.status());

  worker::SchedulerOptions sched;
  worker::ServingOptions& so = sched.serving;
  so = f.serving;
  sched.max_seqs = f.max_seqs;
  sched.max_waiting = f.max_waiting;
  sched.step_tokens = f.step_tokens;
  sched.max_decode_slowdown = f.max_decode_slowdown;
  sched.kv_budget_bytes = uint64_t{static_cast<uint32_t>(f.kv_budget_mib)} << 20;
  sched.seed_cache_bytes = uint64_t{static_cast<uint32_t>(f.seed_cache_mib)} << 20;
  so.prefix_reuse = !f.no_prefix_reuse;
  so.publish = !f.no_publish;
  {
    auto mode = worker::ParseOffloadMode(f.kv_mode);
    if (!mode.ok()) return fail(mode.status().WithContext("--kv-mode"));
    sched.kv_mode = *mode;
    if (sched.kv_mode != worker::OffloadMode::kResident && f.no_publish) {
      return fail(InvalidArgument("--no-publish needs --kv-mode resident (offloaded KV lives in the cache service)"));
    }
  }
  // The default policy checked, and the AttentionPredictor weights loaded whatever it is: a request
  // may ask for AttentionPredictor.
  if (Status s = worker::FinishServingFlags(&so); !s.ok()) return fail(s);

  worker::CacheConnectionOptions co;
  co.cache = f.cache;
  co.etcd = f.etcd;
  co.replication = f.replication;
  co.token = token;
  co.ucx_transports = f.ucx_transports;
  co.ucx_tuning = UcxTuningFromEnvironment();
  co.timeout = std::chrono::milliseconds(f.cache_timeout_ms);
  worker::CacheConnection cache(co);
  // The cache must answer at start (a typo in --cache should not wait for the first request);
  // later failures are per request, and the worker reconnects.
  if (auto c = cache.Get(); !c.ok()) return fail(c.status());

  worker::Scheduler scheduler(**model, &cache, sched);
  worker::WorkerService service(**model, model_path, &cache, &scheduler, token, &metrics);
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(f.listen, grpc::InsecureServerCredentials(), &bound_port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || bound_port == 0) {
    return fail(Unavailable("cannot listen on " + f.listen + " (address in use, or not a local address?)"));
  }
  const std::string host = f.listen.substr(0, f.listen.rfind(':'));
  scheduler.set_address(host + ":" + std::to_string(bound_port));
  spdlog::info(
      "foresight-worker serving {} on {}:{}, cache {}, KV {}, policy {} budget {}, AttentionPredictor weights {}, "
      "up to {} sequences per step ({} waiting), {} tokens per step",
      model_path, host, bound_port, cache.Describe(), f.kv_mode, scheduler.DefaultPolicyLabel(), so.default_budget,
      so.weights_name, f.max_seqs, f.max_waiting, f.step_tokens);
  spdlog::info("OpenMP: {} threads; idle threads wait as {}", omp_get_max_threads(), f.omp_waiting);
  worker::SchedulerBackend backend(&scheduler);
  if (http) {
    worker::openai::ModelInfo served = worker::ServedModelInfo(**model, model_path);
    spdlog::info("OpenAI-compatible API on http://{}/v1, model {}", http_address, served.name);
    http->Ready(std::move(served), &backend);
  }
  // One parseable line for launchers and tests.
  std::cout << "READY grpc=" << host << ":" << bound_port << " fingerprint=" << scheduler.fingerprint()
            << (http ? " http=" + http_address : "") << std::endl;

  std::atomic<bool> stopping{false};
  std::thread signal_thread([&] {
    int sig = 0;
    while (read(g_signal_pipe[0], &sig, sizeof(sig)) < 0 && errno == EINTR) {}
    if (!stopping) spdlog::info("signal {}: shutting down (a request in progress gets 5 s to finish)", sig);
    stopping = true;
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  });
  server->Wait();
  if (!stopping) {  // Wait() returned on its own: wake the signal thread.
    stopping = true;
    OnTerminate(0);
  }
  signal_thread.join();
  // Before the scheduler goes: the streams still open are cancelled, the server's threads joined.
  if (http) http->Stop();
  spdlog::info("stopped cleanly");
  return 0;
}

}  // namespace

// How idle OpenMP threads wait between parallel regions. libgomp reads it from the environment when
// it loads, before main, so a worker started with neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT set
// re-executes itself (same pid, same arguments) with GOMP_SPINCOUNT=10000: a short spin, then sleep.
// libgomp's default spins 300,000 rounds, which holds the cores against anything else on a shared box
// (decode rates became bimodal under load); OMP_WAIT_POLICY=passive sleeps at once, which made a lone
// short-context decode 3x slower (docs/benchmarks.md, "OpenMP wait policy"). Returns what the
// worker runs with, for its startup line.
std::string ChooseOpenMpWaiting(char** argv) {
  constexpr const char* kSpin = "10000";
  if (const char* policy = std::getenv("OMP_WAIT_POLICY")) return std::string("OMP_WAIT_POLICY=") + policy;
  if (const char* spin = std::getenv("GOMP_SPINCOUNT")) {
    return std::string("GOMP_SPINCOUNT=") + spin +
           (std::getenv("FORESIGHT_CHOSE_SPINCOUNT") ? " (the worker's choice)" : "");
  }
  setenv("GOMP_SPINCOUNT", kSpin, 1);
  setenv("FORESIGHT_CHOSE_SPINCOUNT", "1", 1);
  execv("/proc/self/exe", argv);
  const int err = errno;  // still here: the exec failed, and this process's OpenMP keeps its default
  unsetenv("GOMP_SPINCOUNT");
  return std::string("libgomp's default (re-executing with GOMP_SPINCOUNT=") + kSpin + " failed: " + strerror(err) +
         ")";
}

int main(int argc, char** argv) {
  const std::string omp_waiting = ChooseOpenMpWaiting(argv);
  CLI::App app{
      "foresight-worker: a model behind a gRPC generation service and an OpenAI-compatible HTTP API, KV shared "
      "through the cache service"};
  Flags f;
  app.set_config("--config", "", "Read flags from a TOML/INI file (keys are the long flag names)");
  app.allow_config_extras(CLI::config_extras_mode::error);  // a misspelt key is an error, not ignored
  app.add_option("--listen", f.listen, "gRPC address HOST:PORT (port 0: pick a free one)")->capture_default_str();
  app.add_option("--http", f.http,
                 "Also serve the OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, /v1/models, "
                 "/health, /metrics) on HOST:PORT (port 0: pick a free one)");
  app.add_option("--cache", f.cache, "The cache node's gRPC HOST:PORT");
  app.add_option("--etcd", f.etcd, "Use a cache cluster instead: etcd endpoints http://HOST:PORT[,...]");
  app.add_option("--replication", f.replication, "Cluster replication factor R (with --etcd)")
      ->check(kPositive)
      ->capture_default_str();
  app.add_option("--model", f.model,
                 "GGUF file or Hugging Face folder (default: SmolLM2-135M-Instruct in $FORESIGHT_MODELS or "
                 "~/.cache/foresight/models)");
  app.add_option("--token-file", f.token_file,
                 "Token presented to the cache service and required of this worker's clients");
  app.add_option("--namespace", f.serving.key_namespace, "Key namespace (tenant) of the KV blocks")
      ->capture_default_str();
  worker::ServingFlags serving = worker::AddServingFlags(&app, &f.serving);
  serving.policy->description(
      "Default decode attention: ap (AttentionPredictor as served: query-refined, see --query-refine), "
      "attention_predictor (the same), dense, quest, h2o, snapkv, streaming_llm; an AttentionPredictor request "
      "whose prompt and max_tokens fit its budget runs dense");
  serving.budget->description("Default tokens attended per KV head by sparse policies, sink and local included");
  app.add_option("--prefill-chunk", f.serving.prefill_chunk, "Tokens per prefill chunk")->check(kPositive);
  app.add_option("--threads", f.threads, "OpenMP threads (default: all cores)")->check(kPositive);
  app.add_option("--ucx-transports", f.ucx_transports, "auto, shm or tcp (the cache client's UCX_TLS)")
      ->capture_default_str();
  app.add_option("--cache-timeout-ms", f.cache_timeout_ms,
                 "Per-call timeout towards the cache service (a dead node fails a request after this)")
      ->check(kPositive)
      ->capture_default_str();
  app.add_option("--kv-mode", f.kv_mode,
                 "Where decode KV lives: resident (all on the worker), on-demand, cross-layer, cross-token (a budget's "
                 "worth on the worker, the predictor's next blocks prefetched from the cache service)")
      ->capture_default_str();
  app.add_flag("--no-prefix-reuse", f.no_prefix_reuse, "Never import published prefixes (always prefill)");
  app.add_flag("--no-publish", f.no_publish, "Never publish KV blocks to the cache service");
  app.add_option("--max-seqs", f.max_seqs, "Requests run together, batched in each forward step")
      ->check(kPositive)
      ->capture_default_str();
  app.add_option("--max-waiting", f.max_waiting, "Requests queued beyond those; more are refused (RESOURCE_EXHAUSTED)")
      ->check(kNonNegative)
      ->capture_default_str();
  app.add_option("--step-tokens", f.step_tokens,
                 "Token rows per forward step: the running decodes, then prompt chunks (a long prompt delays "
                 "running decodes by at most one such step)")
      ->check(kPositive)
      ->capture_default_str();
  app.add_option("--max-decode-slowdown", f.max_decode_slowdown,
                 "While requests decode, a step takes at most (F - 1) prompt tokens per decoding request (at least "
                 "one), so a long prompt slows their tokens by about F at most")
      ->check(CLI::Range(1.0f, 1000.0f))
      ->capture_default_str();
  app.add_option("--kv-budget-mib", f.kv_budget_mib,
                 "KV the running requests may hold on the worker (MiB; 0: no limit); requests beyond it wait")
      ->check(kNonNegative)
      ->capture_default_str();
  app.add_option("--seed-cache-mib", f.seed_cache_mib,
                 "Prefill attention rows kept to seed the policy of later requests sharing a prefix (MiB; 0: none): "
                 "a warm request then prefills only the prompt after the shared published blocks, not its last 64 "
                 "tokens")
      ->check(kNonNegative)
      ->capture_default_str();
  app.add_option("--log-level", f.log_level, "trace|debug|info|warn|error")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  f.omp_waiting = omp_waiting;
  return Run(f);
}
