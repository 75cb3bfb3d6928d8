// Continuous batching in foresight-worker (worker/service/scheduler.h), end to end: a real cache
// node and worker on loopback serving the default model (SmolLM2-135M, Q4_1: each activation row
// is multiplied on its own, worker/weight_matrix.h, so a sequence's arithmetic is the same whatever
// else runs in its step), requests through WorkerClient from several threads at once. A synthetic
// model would not do: its random weights repeat one token whatever the attention reads.
#include <algorithm>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "testing/local_node.h"
#include "worker/default_model.h"
#include "worker/service/worker_client.h"

namespace foresight::worker {
namespace {

// Distinct prompts of about 250 tokens: a few sentences on a topic, repeated with variations.
std::string Prompt(int i) {
  static const char* kTopics[] = {"the harbour",    "a mountain village", "the old library", "a night train",
                                  "the lighthouse", "a desert road",      "the river mill",  "a winter market"};
  static const char* kVerbs[] = {"remembers", "hides", "welcomes", "forgets", "guards", "watches"};
  std::string text = "Write a short story about " + std::string(kTopics[i % 8]) + ".\n";
  for (int k = 0; k < 14; ++k) {
    text += "Everyone in " + std::string(kTopics[(i + k) % 8]) + " " + kVerbs[(i * 3 + k) % 6] +
            " something different on day " + std::to_string(k + 1) + ". ";
  }
  return text + "\nThe story begins:";
}

struct Outcome {
  Status status;
  v1::GenerateStats stats;
  std::vector<int32_t> tokens;
};

Outcome Generate(const std::string& address, const v1::GenerateRequest& r) {
  Outcome run;
  WorkerClientOptions o;
  o.address = address;
  auto client = WorkerClient::Connect(o);
  if (!client.ok()) {
    run.status = client.status();
    return run;
  }
  auto stats = (*client)->Generate(r, [&](const v1::Token& t) { run.tokens.push_back(t.id()); });
  run.status = stats.ok() ? Status::OK() : stats.status();
  if (stats.ok()) run.stats = *stats;
  return run;
}

struct Mode {
  const char* policy;
  const char* kv_mode;
};

void PrintTo(const Mode& mode, std::ostream* os) { *os << mode.policy << " " << mode.kv_mode; }

class WorkerBatchingTest : public ::testing::TestWithParam<Mode> {};

TEST_P(WorkerBatchingTest, EightConcurrentRequestsGetTheTokensEachGetsAlone) {
  const Mode mode = GetParam();
  auto model = FindDefaultModel();
  if (!model.ok()) GTEST_SKIP() << model.status().ToString();
  auto node = LocalNode::Start({"--ram-bytes", "256MiB"});
  ASSERT_TRUE(node.ok()) << node.status().ToString();
  // A small step (128 rows) so that prompts are prefilled in chunks between decode steps, and no
  // bound on prompt rows beside decodes, so that the eight overlap.
  auto worker = LocalWorker::Start({"--cache",
                                    (*node)->address(),
                                    "--model",
                                    *model,
                                    "--threads",
                                    "2",
                                    "--policy",
                                    mode.policy,
                                    "--budget",
                                    "64",
                                    "--sink",
                                    "16",
                                    "--local",
                                    "16",
                                    "--kv-mode",
                                    mode.kv_mode,
                                    "--max-seqs",
                                    "8",
                                    "--step-tokens",
                                    "128",
                                    "--max-decode-slowdown",
                                    "100",
                                    "--cache-timeout-ms",
                                    "5000"});
  ASSERT_TRUE(worker.ok()) << worker.status().ToString();
  const std::string address = (*worker)->address();

  constexpr int kRequests = 8;
  std::vector<v1::GenerateRequest> requests(kRequests);
  for (int i = 0; i < kRequests; ++i) {
    requests[i].set_prompt_text(Prompt(i));
    requests[i].set_max_tokens(16);
    requests[i].set_greedy(true);
    requests[i].set_no_prefix_reuse(true);  // each one prefilled, alone and together
  }
  std::vector<Outcome> alone(kRequests), together(kRequests);
  for (int i = 0; i < kRequests; ++i) {
    alone[i] = Generate(address, requests[i]);
    ASSERT_TRUE(alone[i].status.ok()) << alone[i].status.ToString();
    EXPECT_EQ(alone[i].stats.max_batch(), 1);
    EXPECT_EQ(alone[i].tokens.size(), 16u);
  }
  std::vector<std::thread> threads;
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([&, i] { together[i] = Generate(address, requests[i]); });
  }
  for (auto& t : threads) t.join();
  int widest = 0;
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(together[i].status.ok()) << together[i].status.ToString();
    EXPECT_EQ(together[i].tokens, alone[i].tokens) << "request " << i;
    EXPECT_GE(together[i].stats.max_batch(), 2) << "request " << i << " never shared a step";
    widest = std::max(widest, together[i].stats.max_batch());
    if (std::string(mode.policy) != "dense") {
      EXPECT_LT(together[i].stats.blocks_attended_per_step(), together[i].stats.blocks_total_per_step());
    }
  }
  EXPECT_GE(widest, kRequests / 2) << "the requests hardly overlapped";
  EXPECT_EQ((*worker)->Stop(), 0);
}

// Sampling and stop strings through the worker's scheduler: a seed gives the same tokens, alone or
// beside other requests; a stop string ends generation ("stop") and is never streamed.
TEST(WorkerSamplingTest, SeededSamplingRepeatsAndStopStringsEndGeneration) {
  auto model = FindDefaultModel();
  if (!model.ok()) GTEST_SKIP() << model.status().ToString();
  auto node = LocalNode::Start({"--ram-bytes", "256MiB"});
  ASSERT_TRUE(node.ok()) << node.status().ToString();
  auto worker = LocalWorker::Start(
      {"--cache", (*node)->address(), "--model", *model, "--threads", "2", "--policy", "dense", "--max-seqs", "4"});
  ASSERT_TRUE(worker.ok()) << worker.status().ToString();
  const std::string address = (*worker)->address();

  v1::GenerateRequest sampled;
  sampled.set_prompt_text("Write a poem about the sea.");
  sampled.set_chat(true);
  sampled.set_max_tokens(24);
  sampled.set_ignore_eos(true);
  sampled.set_temperature(0.9f);
  sampled.set_top_p(0.95f);
  sampled.set_seed(1234);
  v1::GenerateRequest greedy = sampled;
  greedy.set_greedy(true);
  Outcome first = Generate(address, sampled);
  ASSERT_TRUE(first.status.ok()) << first.status.ToString();
  EXPECT_EQ(first.tokens.size(), 24u);
  std::vector<Outcome> together(3);
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&, i] { together[i] = Generate(address, i == 1 ? greedy : sampled); });
  }
  for (auto& t : threads) t.join();
  ASSERT_TRUE(together[0].status.ok() && together[1].status.ok() && together[2].status.ok());
  EXPECT_EQ(together[0].tokens, first.tokens);
  EXPECT_EQ(together[2].tokens, first.tokens);
  EXPECT_NE(together[1].tokens, first.tokens) << "temperature 0.9 sampled exactly the greedy tokens";
  v1::GenerateRequest other_seed = sampled;
  other_seed.set_seed(99);
  Outcome other = Generate(address, other_seed);
  ASSERT_TRUE(other.status.ok()) << other.status.ToString();
  EXPECT_NE(other.tokens, first.tokens);

  // A stop string taken from the greedy answer: generation ends there, and the text streamed
  // (pieces plus the final text) is the answer up to it.
  std::string text;
  WorkerClientOptions o;
  o.address = address;
  auto client = WorkerClient::Connect(o);
  ASSERT_TRUE(client.ok());
  v1::GenerateRequest plain = greedy;
  plain.set_max_tokens(40);
  auto full = (*client)->Generate(plain, [&](const v1::Token& t) { text += t.piece(); });
  ASSERT_TRUE(full.ok()) << full.status().ToString();
  text += full->final_text();
  ASSERT_GT(text.size(), 30u) << text;
  const std::string stop = text.substr(20, 6);
  v1::GenerateRequest stopping = plain;
  stopping.add_stop(stop);
  std::string stopped_text;
  auto stopped = (*client)->Generate(stopping, [&](const v1::Token& t) { stopped_text += t.piece(); });
  ASSERT_TRUE(stopped.ok()) << stopped.status().ToString();
  stopped_text += stopped->final_text();
  EXPECT_EQ(stopped->finish_reason(), "stop");
  EXPECT_EQ(stopped_text, text.substr(0, text.find(stop))) << "stop string " << stop;
  EXPECT_LT(stopped->generated_tokens(), full->generated_tokens());
  EXPECT_EQ((*worker)->Stop(), 0);
}

// A request for AttentionPredictor whose whole context (prompt + max_tokens) fits its budget would
// select every block at every step: it runs dense, without the predictor, and its statistics say
// so; one token over the budget and AttentionPredictor runs.
TEST(WorkerPolicyTest, AnApRequestWhoseContextFitsItsBudgetRunsDenseAndSaysSo) {
  auto model = FindDefaultModel();
  if (!model.ok()) GTEST_SKIP() << model.status().ToString();
  auto node = LocalNode::Start({"--ram-bytes", "256MiB"});
  ASSERT_TRUE(node.ok()) << node.status().ToString();
  auto worker = LocalWorker::Start(
      {"--cache", (*node)->address(), "--model", *model, "--threads", "2", "--policy", "ap", "--budget", "1024"});
  ASSERT_TRUE(worker.ok()) << worker.status().ToString();
  const std::string address = (*worker)->address();

  v1::GenerateRequest r;
  for (int i = 0; i < 40; ++i) r.add_prompt_tokens(100 + i);
  r.set_max_tokens(24);
  r.set_greedy(true);
  r.set_no_prefix_reuse(true);
  r.set_budget(64);  // 40 + 24 tokens: fits
  Outcome fits = Generate(address, r);
  ASSERT_TRUE(fits.status.ok()) << fits.status.ToString();
  EXPECT_EQ(fits.stats.policy(), "dense");
  EXPECT_EQ(fits.stats.budget(), 0);
  EXPECT_EQ(fits.stats.weights(), "");
  EXPECT_EQ(fits.stats.kv_mode(), "resident");
  v1::GenerateRequest dense = r;
  dense.set_policy("dense");
  Outcome asked_dense = Generate(address, dense);
  ASSERT_TRUE(asked_dense.status.ok()) << asked_dense.status.ToString();
  EXPECT_EQ(fits.tokens, asked_dense.tokens);

  r.set_max_tokens(25);  // 65 tokens: one over
  Outcome over = Generate(address, r);
  ASSERT_TRUE(over.status.ok()) << over.status.ToString();
  EXPECT_EQ(over.stats.policy(), "ap");
  EXPECT_EQ(over.stats.budget(), 64);
  EXPECT_NE(over.stats.weights(), "");
  EXPECT_EQ((*worker)->Stop(), 0);
}

// In-flight prefix sharing: requests that arrive together and share a long prefix prefill it once.
// The first computes it; the others wait for its prefill, import what it published and compute
// only their own questions; each still gets the tokens it gets alone.
TEST(WorkerPrefixSharingTest, RequestsInFlightTogetherPrefillASharedPrefixOnce) {
  auto model = FindDefaultModel();
  if (!model.ok()) GTEST_SKIP() << model.status().ToString();
  auto node = LocalNode::Start({"--ram-bytes", "256MiB"});
  ASSERT_TRUE(node.ok()) << node.status().ToString();
  auto worker = LocalWorker::Start({"--cache", (*node)->address(), "--model", *model, "--threads", "2", "--policy",
                                    "dense", "--max-seqs", "4", "--step-tokens", "128", "--cache-timeout-ms", "5000"});
  ASSERT_TRUE(worker.ok()) << worker.status().ToString();
  const std::string address = (*worker)->address();

  const std::string document = Prompt(0) + "\n" + Prompt(1) + "\n" + Prompt(2) + "\n";  // ~600 tokens
  static const char* kQuestions[] = {"Who guards the harbour?", "What happens on day 3?", "Which village forgets?",
                                     "Summarise it in one line."};
  constexpr int kRequests = 4;
  std::vector<v1::GenerateRequest> requests(kRequests);
  std::vector<Outcome> alone(kRequests), together(kRequests);
  for (int i = 0; i < kRequests; ++i) {
    requests[i].set_prompt_text(document + "Question: " + kQuestions[i] + "\nAnswer:");
    requests[i].set_max_tokens(8);
    requests[i].set_greedy(true);
    v1::GenerateRequest isolated = requests[i];  // computes everything, leaves nothing behind
    isolated.set_no_prefix_reuse(true);
    isolated.set_no_publish(true);
    alone[i] = Generate(address, isolated);
    ASSERT_TRUE(alone[i].status.ok()) << alone[i].status.ToString();
    EXPECT_EQ(alone[i].stats.prefix_hit_tokens(), 0);
  }
  std::vector<std::thread> threads;
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([&, i] { together[i] = Generate(address, requests[i]); });
  }
  for (auto& t : threads) t.join();
  int leaders = 0;
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(together[i].status.ok()) << together[i].status.ToString();
    EXPECT_EQ(together[i].tokens, alone[i].tokens) << "request " << i;
    const v1::GenerateStats& st = together[i].stats;
    if (st.prefix_hit_tokens() == 0) {
      ++leaders;
      continue;
    }
    // A follower imported the whole shared document (all but its last partial block) and
    // computed only the rest of its prompt.
    EXPECT_GE(st.prefix_hit_tokens(), 512) << "request " << i;
    EXPECT_EQ(st.prefill_tokens(), st.prompt_tokens() - st.prefix_hit_tokens()) << "request " << i;
    EXPECT_LT(st.prefill_tokens(), 48) << "request " << i;
  }
  EXPECT_EQ(leaders, 1) << "the shared document was prefilled more than once";
  EXPECT_EQ((*worker)->Stop(), 0);
}

INSTANTIATE_TEST_SUITE_P(Modes, WorkerBatchingTest,
                         ::testing::Values(Mode{"dense", "resident"}, Mode{"ap", "cross-token"}, Mode{"ap", "resident"},
                                           Mode{"quest", "cross-token"}),
                         [](const ::testing::TestParamInfo<Mode>& info) {
                           std::string name = std::string(info.param.policy) + "_" + info.param.kv_mode;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace foresight::worker
