// Integration tests of foresight-worker: real cache node and worker processes on loopback, a small
// synthetic GGUF model (byte tokenizer), requests through WorkerClient (what `foresight generate
// --worker` uses).
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "client/cache_client.h"
#include "testing/local_node.h"
#include "tests/cluster/local_etcd.h"
#include "worker/service/worker_client.h"
#include "worker/synthetic_model.h"

namespace foresight::worker {
namespace {

// A model big enough that a prompt spans many blocks and decode takes a moment, small enough for
// a test: 4 layers, 2 KV heads.
std::string WriteModel(const TempDir& dir) {
  SyntheticModelSpec spec;
  spec.n_layers = 4;
  spec.d_model = 128;
  spec.n_heads = 4;
  spec.n_kv_heads = 2;
  spec.head_dim = 32;
  spec.ffn_dim = 256;
  spec.max_context = 4096;
  spec.seed = 7;
  const std::string path = dir.path() + "/model.gguf";
  Status s = WriteSyntheticGguf(spec, path);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return path;
}

std::unique_ptr<LocalWorker> StartWorker(const std::string& cache, const std::string& model,
                                         std::vector<std::string> extra = {}) {
  // Dense by default (the worker's own default is ap): the tests count prefilled and fetched blocks.
  std::vector<std::string> args = {"--cache", cache,      "--model", model, "--threads", "1", "--cache-timeout-ms",
                                   "2000",    "--policy", "dense"};
  args.insert(args.end(), extra.begin(), extra.end());
  auto w = LocalWorker::Start(args);
  EXPECT_TRUE(w.ok()) << w.status().ToString();
  return w.ok() ? std::move(*w) : nullptr;
}

std::unique_ptr<WorkerClient> Client(const LocalWorker& w) {
  WorkerClientOptions o;
  o.address = w.address();
  auto c = WorkerClient::Connect(o);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? std::move(*c) : nullptr;
}

// Text the byte tokenizer turns into `n` tokens (plus BOS).
std::string Text(int n, int seed) {
  std::string s;
  for (int i = 0; i < n; ++i) s.push_back(static_cast<char>('a' + (i * 7 + seed * 13 + i / 5) % 26));
  return s;
}

v1::GenerateRequest Request(const std::string& text, int max_tokens) {
  v1::GenerateRequest r;
  r.set_prompt_text(text);
  r.set_max_tokens(max_tokens);
  r.set_greedy(true);
  return r;
}

struct Outcome {
  Status status;
  v1::GenerateStats stats;
  std::vector<int32_t> tokens;
};

Outcome Generate(WorkerClient& client, const v1::GenerateRequest& r) {
  Outcome run;
  auto stats = client.Generate(r, [&](const v1::Token& t) { run.tokens.push_back(t.id()); });
  run.status = stats.ok() ? Status::OK() : stats.status();
  if (stats.ok()) run.stats = *stats;
  return run;
}

TEST(WorkerServiceTest, SecondWorkerImportsTheSharedPrefixAndGeneratesTheSameTokens) {
  TempDir dir("worker-prefix");
  const std::string model = WriteModel(dir);
  auto node = LocalNode::Start({"--ram-bytes", "256MiB"});
  ASSERT_TRUE(node.ok()) << node.status().ToString();
  auto w1 = StartWorker((*node)->address(), model);
  auto w2 = StartWorker((*node)->address(), model);
  ASSERT_TRUE(w1 && w2);
  EXPECT_EQ(w1->fingerprint(), w2->fingerprint());
  EXPECT_EQ(w1->fingerprint().size(), 32u);
  auto c1 = Client(*w1);
  auto c2 = Client(*w2);
  ASSERT_TRUE(c1 && c2);

  const std::string shared = Text(900, 1);
  // First request: nothing published yet, so a cold prefill; it publishes its blocks.
  Outcome first = Generate(*c1, Request(shared + "first question", 24));
  ASSERT_TRUE(first.status.ok()) << first.status.ToString();
  EXPECT_EQ(first.stats.prefix_hit_tokens(), 0);
  EXPECT_GE(first.stats.prompt_tokens(), 900 + 14);  // + BOS where the tokenizer has one
  EXPECT_EQ(first.stats.prefill_tokens(), first.stats.prompt_tokens());
  EXPECT_EQ(static_cast<int64_t>(first.tokens.size()), first.stats.generated_tokens());
  EXPECT_EQ(first.stats.generated_tokens(), 24);
  EXPECT_EQ(first.stats.finish_reason(), "max_tokens");
  // Every full block of prompt + generated tokens (the last generated token has no KV yet), all layers.
  EXPECT_EQ(first.stats.blocks_published(), (first.stats.prompt_tokens() + 23) / 16 * 4);
  EXPECT_GT(first.stats.time_to_first_token_seconds(), 0);

  // Second request, on the other worker, sharing the first 901 tokens: the whole blocks of the
  // shared part are imported, the rest prefilled.
  const auto second_req = Request(shared + "a different question", 24);
  Outcome second = Generate(*c2, second_req);
  ASSERT_TRUE(second.status.ok()) << second.status.ToString();
  EXPECT_EQ(second.stats.prefix_hit_tokens(), 901 / 16 * 16);
  EXPECT_EQ(second.stats.prefill_tokens(), second.stats.prompt_tokens() - 901 / 16 * 16);
  EXPECT_EQ(second.stats.blocks_fetched(), 901 / 16 * (4 + 1));  // every layer + the manifest
  EXPECT_GT(second.stats.bytes_fetched(), 0);

  // The same request prefilled cold gives the same tokens: imported KV equals computed KV.
  auto cold_req = second_req;
  cold_req.set_no_prefix_reuse(true);
  Outcome cold = Generate(*c2, cold_req);
  ASSERT_TRUE(cold.status.ok()) << cold.status.ToString();
  EXPECT_EQ(cold.stats.prefix_hit_tokens(), 0);
  EXPECT_EQ(cold.tokens, second.tokens);

  // A sparse policy on an imported prefix works the same way.
  auto sparse_req = second_req;
  sparse_req.set_policy("quest");
  sparse_req.set_budget(256);
  Outcome sparse = Generate(*c1, sparse_req);
  ASSERT_TRUE(sparse.status.ok()) << sparse.status.ToString();
  // The last 64 prompt tokens are prefilled: the policy is seeded from their attention rows.
  EXPECT_EQ(sparse.stats.prefix_hit_tokens(), (sparse.stats.prompt_tokens() - 64) / 16 * 16);
  sparse_req.set_no_prefix_reuse(true);
  Outcome sparse_cold = Generate(*c1, sparse_req);
  ASSERT_TRUE(sparse_cold.status.ok()) << sparse_cold.status.ToString();
  EXPECT_EQ(sparse.tokens, sparse_cold.tokens);
  EXPECT_LT(sparse.stats.blocks_attended_per_step(), sparse.stats.blocks_total_per_step());

  auto info = c2->Info();
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->fingerprint(), w2->fingerprint());
  EXPECT_EQ(info->requests_served(), 2);
  EXPECT_EQ(w1->Stop(), 0);
  EXPECT_EQ(w2->Stop(), 0);
}

TEST(WorkerServiceTest, BadRequestsGetErrorsThatNameTheProblem) {
  TempDir dir("worker-errors");
  const std::string model = WriteModel(dir);
  auto node = LocalNode::Start({"--ram-bytes", "64MiB"});
  ASSERT_TRUE(node.ok()) << node.status().ToString();
  auto w = StartWorker((*node)->address(), model);
  ASSERT_TRUE(w);
  auto c = Client(*w);
  ASSERT_TRUE(c);
  auto expect_error = [&](v1::GenerateRequest r, StatusCode code, const std::string& words) {
    Outcome run = Generate(*c, r);
    EXPECT_EQ(run.status.code(), code) << run.status.ToString();
    EXPECT_NE(run.status.message().find(words), std::string::npos) << run.status.ToString();
    EXPECT_TRUE(run.tokens.empty());
  };
  expect_error(Request("hello", 0), StatusCode::kInvalidArgument, "max_tokens");
  auto r = Request("hello", 4);
  r.set_policy("nonsense");
  expect_error(r, StatusCode::kInvalidArgument, "unknown policy 'nonsense'");
  r = Request("", 4);
  r.add_prompt_tokens(999);
  expect_error(r, StatusCode::kInvalidArgument, "outside the vocabulary");
  r = Request("", 4);
  expect_error(r, StatusCode::kInvalidArgument, "exactly one of prompt_text and prompt_tokens");
  expect_error(Request(Text(5000, 2), 4), StatusCode::kOutOfRange, "context is 4096");
  r = Request("hello", 4);
  r.set_greedy(false);
  r.set_temperature(-1);
  expect_error(r, StatusCode::kInvalidArgument, "temperature");
  r = Request("hello", 4);
  r.set_min_tokens(5);
  expect_error(r, StatusCode::kInvalidArgument, "min_tokens");
  auto health = c->Health();
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(*health, "SERVING");

  // A worker whose cache node is not there refuses to start, saying which.
  RefusingLoopbackPort nobody;  // bound, never listening: connections are refused
  auto bad = LocalWorker::Start({"--cache", "127.0.0.1:" + std::to_string(nobody.port()), "--model", model});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("cache node"), std::string::npos) << bad.status().ToString();
}

// --token-file: the worker presents the token to the cache node and requires it of its clients.
TEST(WorkerServiceTest, TokenIsRequiredOfClientsAndPresentedToTheNode) {
  TempDir dir("worker-token");
  const std::string model = WriteModel(dir);
  const std::string token_file = dir.path() + "/token";
  { std::ofstream(token_file) << "s3cret\n"; }
  auto node = LocalNode::Start({"--ram-bytes", "64MiB", "--token-file", token_file});
  ASSERT_TRUE(node.ok()) << node.status().ToString();
  auto without = LocalWorker::Start({"--cache", (*node)->address(), "--model", model});
  ASSERT_FALSE(without.ok()) << "a worker without the node's token started";
  auto w = StartWorker((*node)->address(), model, {"--token-file", token_file});
  ASSERT_TRUE(w);
  auto anonymous = Client(*w);
  ASSERT_TRUE(anonymous);
  Outcome refused = Generate(*anonymous, Request("hello", 4));
  EXPECT_EQ(refused.status.code(), StatusCode::kUnauthenticated) << refused.status.ToString();
  WorkerClientOptions o;
  o.address = w->address();
  o.token = "s3cret";
  auto c = WorkerClient::Connect(o);
  ASSERT_TRUE(c.ok());
  Outcome ok = Generate(**c, Request(Text(100, 4), 4));
  EXPECT_TRUE(ok.status.ok()) << ok.status.ToString();
  EXPECT_GT(ok.stats.blocks_published(), 0);
}

// deploy/local-deployment.sh: start brings up a node and two workers that serve, status says so,
// stop ends every process it started.
TEST(WorkerServiceTest, LocalDeploymentScriptStartsServesAndStops) {
  TempDir dir("local-deployment");
  const std::string model = WriteModel(dir);
  const std::string state = dir.path() + "/state";
  const std::string script = std::string(FORESIGHT_SOURCE_DIR) + "/deploy/local-deployment.sh";
  const std::string common = " --dir " + state + " --bin " + FORESIGHT_BIN_DIR;
  struct Stop {  // stops the deployment even when an assertion fails
    std::string command;
    ~Stop() { (void)std::system(command.c_str()); }
  } stop{"bash " + script + " stop" + common + " >/dev/null 2>&1"};
  // Bad input is refused before anything starts; a start that fails half way (the node is up, the
  // worker cannot open its model) stops the node again, so the good start below finds the NVMe
  // tier free (a node left behind would hold its lock).
  EXPECT_NE(std::system(("bash " + script + " start" + common + " --workers 0 2>/dev/null").c_str()), 0);
  EXPECT_FALSE(std::filesystem::exists(state + "/node.pid"));
  EXPECT_NE(std::system(("bash " + script + " start" + common + " --workers 1 --model " + dir.path() +
                         "/missing.gguf --ram 64MiB --nvme 128MiB >/dev/null 2>&1")
                            .c_str()),
            0);
  EXPECT_FALSE(std::filesystem::exists(state + "/node.pid")) << "the failed start left its node running";
  ASSERT_EQ(std::system(("bash " + script + " start" + common + " --model " + model +
                         " --policy snapkv --budget 256 --threads 1 --ram 64MiB --nvme 128MiB")
                            .c_str()),
            0);
  auto read = [](const std::string& path) {
    std::ifstream in(path);
    std::string s;
    in >> s;
    return s;
  };
  std::vector<pid_t> pids;
  for (const char* name : {"node", "worker1", "worker2"}) pids.push_back(std::stoi(read(state + "/" + name + ".pid")));
  for (const char* name : {"worker1", "worker2"}) {
    WorkerClientOptions o;
    o.address = read(state + "/" + name + ".addr");
    auto c = WorkerClient::Connect(o);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    Outcome run = Generate(**c, Request(Text(200, 6), 8));
    ASSERT_TRUE(run.status.ok()) << run.status.ToString();
    EXPECT_EQ(run.stats.policy(), "snapkv");
    if (std::string(name) == "worker2") {
      EXPECT_GT(run.stats.prefix_hit_tokens(), 0);  // worker1 published it
    }
  }
  // Each worker's OpenAI API, at the URL the script wrote, driven by the demo's client
  // (deploy/lib/demo_requests.py, as deploy/run-demo.sh runs it): worker 2 imports the document
  // that worker 1 published.
  const std::string document = dir.path() + "/document.txt";
  {
    std::ofstream out(document);
    for (int i = 0; i < 40; ++i) out << "Paragraph " << i << " of a document that both workers read. ";
  }
  const std::string client = "python3 " + std::string(FORESIGHT_SOURCE_DIR) + "/deploy/lib/demo_requests.py";
  for (const char* name : {"worker1", "worker2"}) {
    const std::string url = read(state + "/" + name + ".url");
    ASSERT_EQ(url.rfind("http://127.0.0.1:", 0), 0u) << name << ".url: " << url;
    const std::string out = dir.path() + "/" + name + ".json";
    ASSERT_EQ(
        std::system((client + " one --url " + url + " --name " + name + " --document " + document +
                     " --question 'Question from " + name + "?' --raw --max-tokens 4 --out " + out + " >/dev/null")
                        .c_str()),
        0)
        << "the demo's client against " << url;
    std::ifstream in(out);
    const nlohmann::json r = nlohmann::json::parse(in);
    EXPECT_EQ(r["usage"]["completion_tokens"], 4) << name;
    EXPECT_EQ(r["stats"]["policy"], "snapkv") << name;
    if (std::string(name) == "worker2") {
      EXPECT_GT(r["usage"]["prompt_tokens_details"]["cached_tokens"].get<int64_t>(), 0) << "worker1 published it";
    }
  }
  EXPECT_EQ(std::system(("bash " + script + " status" + common + " >/dev/null").c_str()), 0);
  EXPECT_EQ(std::system(("bash " + script + " stop" + common).c_str()), 0);
  for (pid_t pid : pids) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string id, comm, st;
    stat >> id >> comm >> st;
    EXPECT_TRUE(!stat || st == "Z") << "pid " << pid << " still runs after stop";
  }
}

// kill -9 of the cache node during a decode: the request ends with an error naming the cache
// service, every token streamed before it equals the uninterrupted run's, and once the node is
// back (same address) the same worker serves new requests.
// Dense requests keep their KV resident (only publication sees the failure); SnapKV with a small
// budget runs offloaded (cross-token), so the failure hits block fetches. (SnapKV, not H2O: H2O is seeded
// from attention summed over every prompt query, which an imported prefix does not have.)
class WorkerKillTest : public ::testing::TestWithParam<std::string> {};

TEST_P(WorkerKillTest, CacheNodeKilledDuringDecodeEndsTheRequestWithAClearErrorThenServesAgain) {
  TempDir dir("worker-kill");
  const std::string model = WriteModel(dir);
  // Port 0: the node binds a free port itself; the restart below reuses the address it got.
  auto node = LocalNode::Start({"--ram-bytes", "256MiB"});
  ASSERT_TRUE(node.ok()) << node.status().ToString();
  const std::string address = (*node)->address();
  auto w = StartWorker(address, model);
  ASSERT_TRUE(w);
  auto c = Client(*w);
  ASSERT_TRUE(c);

  auto req = Request(Text(600, 3), 400);
  req.set_policy(GetParam());
  req.set_budget(256);
  Outcome reference = Generate(*c, req);
  ASSERT_TRUE(reference.status.ok()) << reference.status.ToString();
  ASSERT_EQ(reference.stats.generated_tokens(), 400);
  if (GetParam() == "dense") {
    EXPECT_EQ(reference.stats.kv_mode(), "resident");
  } else {
    EXPECT_EQ(reference.stats.kv_mode(), "cross-token") << reference.stats.policy() << " " << reference.stats.budget();
    EXPECT_GT(reference.stats.blocks_fetched(), 0);  // decode really reads from the cache service
  }

  std::vector<int32_t> got;
  auto killed = c->Generate(req, [&](const v1::Token& t) {
    got.push_back(t.id());
    if (got.size() == 40) (*node)->Kill9();
  });
  ASSERT_FALSE(killed.ok()) << "the request succeeded although its cache node died";
  std::printf("request after kill -9 of the cache node, %zu tokens in: %s\n", got.size(),
              killed.status().ToString().c_str());
  EXPECT_TRUE(killed.status().code() == StatusCode::kUnavailable ||
              killed.status().code() == StatusCode::kDeadlineExceeded || killed.status().code() == StatusCode::kAborted)
      << killed.status().ToString();
  EXPECT_NE(killed.status().message().find("node"), std::string::npos)
      << killed.status().ToString() << "\nworker log:\n"
      << w->Log();
  ASSERT_GE(got.size(), 40u);
  ASSERT_LE(got.size(), reference.tokens.size());
  EXPECT_TRUE(std::equal(got.begin(), got.end(), reference.tokens.begin())) << "output differs from the reference run";

  auto health = c->Health();
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(health->rfind("DEGRADED", 0), 0u) << *health;
  Outcome while_down = Generate(*c, Request("hello", 4));
  EXPECT_EQ(while_down.status.code(), StatusCode::kUnavailable) << while_down.status.ToString();

  auto back = LocalNode::Start({"--listen", address, "--ram-bytes", "256MiB"});
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  Outcome after = Generate(*c, req);
  ASSERT_TRUE(after.status.ok()) << after.status.ToString();
  EXPECT_EQ(after.tokens, reference.tokens);
  health = c->Health();
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(*health, "SERVING");
}

INSTANTIATE_TEST_SUITE_P(Policies, WorkerKillTest, ::testing::Values("dense", "snapkv"));

// Issue 6 point 4: workers on a 3-node cluster (etcd) instead of one node: the first request
// publishes across the nodes, the second worker imports the shared prefix from them.
TEST(WorkerServiceTest, WorkersOnAThreeNodeClusterShareAPrefix) {
  if (LocalEtcd::Binary().empty())
    GTEST_SKIP() << "etcd not installed: apt-get install etcd-server (or set FORESIGHT_ETCD)";
  TempDir dir("worker-cluster");
  const std::string model = WriteModel(dir);
  auto etcd = LocalEtcd::Start();
  ASSERT_TRUE(etcd.ok()) << etcd.status().ToString();
  std::vector<std::unique_ptr<LocalNode>> nodes;
  for (int i = 0; i < 3; ++i) {
    const std::string id = "n" + std::to_string(i);
    auto node =
        LocalNode::Start({"--ram-bytes", "128MiB", "--etcd", (*etcd)->url(), "--node-id", id, "--etcd-ttl", "2"});
    ASSERT_TRUE(node.ok()) << node.status().ToString();
    nodes.push_back(std::move(*node));
  }
  std::vector<std::string> on_cluster = {"--etcd", (*etcd)->url(), "--model", model, "--threads", "1"};
  auto w1 = LocalWorker::Start(on_cluster);
  auto w2 = LocalWorker::Start(on_cluster);
  ASSERT_TRUE(w1.ok() && w2.ok()) << (w1.ok() ? w2.status() : w1.status()).ToString();
  auto c1 = Client(**w1);
  auto c2 = Client(**w2);
  ASSERT_TRUE(c1 && c2);
  const std::string shared = Text(700, 5);
  auto first_req = Request(shared + "first", 16);
  first_req.set_policy("snapkv");
  first_req.set_budget(256);
  Outcome first = Generate(*c1, first_req);
  ASSERT_TRUE(first.status.ok()) << first.status.ToString();
  EXPECT_EQ(first.stats.prefix_hit_tokens(), 0);
  EXPECT_EQ(first.stats.cache(), "etcd:" + (*etcd)->url());
  // The blocks spread over the nodes (rendezvous routing).
  int holding = 0;
  for (auto& n : nodes) {
    foresight::CacheClientOptions o;
    o.address = n->address();
    auto client = foresight::CacheClient::Connect(o);
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    auto listed = (*client)->List(10);
    ASSERT_TRUE(listed.ok());
    if (!listed->empty()) ++holding;
  }
  EXPECT_EQ(holding, 3);

  auto second_req = Request(shared + "second", 16);
  second_req.set_policy("snapkv");
  second_req.set_budget(256);
  Outcome second = Generate(*c2, second_req);
  ASSERT_TRUE(second.status.ok()) << second.status.ToString();
  EXPECT_EQ(second.stats.prefix_hit_tokens(), (second.stats.prompt_tokens() - 64) / 16 * 16);
  EXPECT_GT(second.stats.prefix_hit_tokens(), 0);
  second_req.set_no_prefix_reuse(true);
  Outcome cold = Generate(*c2, second_req);
  ASSERT_TRUE(cold.status.ok()) << cold.status.ToString();
  EXPECT_EQ(cold.tokens, second.tokens);
  std::printf("cluster: request 1 on %s published %lld blocks; request 2 on %s imported %lld of %lld prompt tokens\n",
              (*w1)->address().c_str(), static_cast<long long>(first.stats.blocks_published()),
              (*w2)->address().c_str(), static_cast<long long>(second.stats.prefix_hit_tokens()),
              static_cast<long long>(second.stats.prompt_tokens()));
}

}  // namespace
}  // namespace foresight::worker
