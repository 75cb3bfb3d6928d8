// The two Prometheus endpoints, scraped from real processes after a little traffic: a
// foresight-cached (--metrics) and a foresight-worker (--http, GET /metrics) that publishes to it
// and imports a shared prefix back. promtool's linter must accept both (issue 20), and the Grafana
// dashboard (deploy/grafana/foresight.json) may query only metric names they export, in valid
// PromQL, so that it cannot drift from the code unnoticed.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "client/cache_client.h"
#include "testing/local_node.h"
#include "worker/synthetic_model.h"

namespace foresight {
namespace {

// A model small enough that loading it and generating a few tokens takes well under a second.
std::string WriteModel(const TempDir& dir) {
  worker::SyntheticModelSpec spec;
  spec.n_layers = 2;
  spec.d_model = 64;
  spec.n_heads = 2;
  spec.n_kv_heads = 1;
  spec.head_dim = 32;
  spec.ffn_dim = 128;
  spec.max_context = 512;
  spec.seed = 3;
  const std::string path = dir.path() + "/model.gguf";
  Status s = worker::WriteSyntheticGguf(spec, path);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return path;
}

std::string HttpGet(const std::string& host_port, const std::string& path) {
  const size_t colon = host_port.rfind(':');
  httplib::Client c(host_port.substr(0, colon), std::stoi(host_port.substr(colon + 1)));
  c.set_read_timeout(30, 0);
  auto r = c.Get(path);
  EXPECT_TRUE(r && r->status == 200) << "GET " << host_port << path << ": "
                                     << (r ? std::to_string(r->status) : httplib::to_string(r.error()));
  return r ? r->body : "";
}

int HttpPost(const std::string& host_port, const std::string& body) {
  const size_t colon = host_port.rfind(':');
  httplib::Client c(host_port.substr(0, colon), std::stoi(host_port.substr(colon + 1)));
  c.set_read_timeout(60, 0);
  auto r = c.Post("/v1/completions", body, "application/json");
  return r ? r->status : -1;
}

// The sample names in Prometheus' text format (histograms appear as NAME_bucket, _sum, _count).
std::set<std::string> SampleNames(const std::string& text) {
  std::set<std::string> names;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    names.insert(line.substr(0, line.find_first_of("{ ")));
  }
  return names;
}

// A real node and a real worker that has served a few requests, and both endpoints' text once
// every metric family has a sample (labelled families appear with their first sample).
struct ScrapedEndpoints {
  std::unique_ptr<TempDir> dir = std::make_unique<TempDir>("metrics-endpoints");
  std::unique_ptr<LocalNode> node;
  std::unique_ptr<LocalWorker> worker;
  std::string node_text, worker_text;
};

// Fails the calling test (ASSERT) when a process does not start or a request fails.
void StartAndScrape(ScrapedEndpoints& e) {
  const std::string model = WriteModel(*e.dir);
  // No huge pages: the huge-page tests running beside this one need the pool.
  auto node = LocalNode::Start({"--ram-bytes", "64MiB", "--max-block-bytes", "1MiB", "--nvme-dir",
                                e.dir->path() + "/nvme", "--huge-pages", "off", "--metrics", "127.0.0.1:0"});
  ASSERT_TRUE(node.ok()) << node.status().ToString();
  e.node = std::move(*node);
  ASSERT_GT(e.node->metrics_port(), 0);
  auto w = LocalWorker::Start({"--cache", e.node->address(), "--model", model, "--threads", "1", "--policy", "dense",
                               "--cache-timeout-ms", "5000", "--http", "127.0.0.1:0"});
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  e.worker = std::move(*w);
  ASSERT_FALSE(e.worker->http_address().empty()) << "the worker's READY line names no http address";

  // Two requests sharing four blocks of prompt (the byte tokenizer: a token a character): the
  // first publishes them to the node (puts), the second imports them (gets); both fill the
  // latency histograms. Then one refused request (the error counter).
  const std::string shared(64, 'k');
  ASSERT_EQ(HttpPost(e.worker->http_address(), R"({"prompt": ")" + shared + R"(first", "max_tokens": 3})"), 200);
  ASSERT_EQ(HttpPost(e.worker->http_address(), R"({"prompt": ")" + shared + R"(second", "max_tokens": 3})"), 200);
  ASSERT_EQ(HttpPost(e.worker->http_address(), "not json"), 400);

  // On the node: a block over gRPC, and a read of a block it does not hold (a failed request).
  CacheClientOptions o;
  o.address = e.node->address();
  o.data_path = DataPath::kGrpc;
  auto client = CacheClient::Connect(o);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  const std::vector<uint8_t> block(4096, 7);
  ASSERT_TRUE((*client)->Put(PlainKey("metrics", "present"), block.data(), block.size()).ok());
  std::vector<uint8_t> out(block.size());
  EXPECT_FALSE((*client)->Get(PlainKey("metrics", "absent"), out.data(), out.size()).ok());

  // The node copies its store's totals into the metrics about once a second: poll until they and
  // the requests above show.
  const std::string node_metrics = "127.0.0.1:" + std::to_string(e.node->metrics_port());
  const std::vector<std::string> node_needles = {"foresight_tier_hits_total{tier=\"ram\"}",
                                                 "foresight_request_errors_total{op=\"get\",path=\"grpc\"} 1",
                                                 "foresight_request_seconds_count{op=\"put\""};
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  auto all_there = [&] {
    for (const auto& n : node_needles)
      if (e.node_text.find(n) == std::string::npos) return false;
    return true;
  };
  for (;;) {
    e.node_text = HttpGet(node_metrics, "/metrics");
    if (all_there() || std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(all_there()) << "the node's metrics never showed the traffic:\n" << e.node_text;
  e.worker_text = HttpGet(e.worker->http_address(), "/metrics");
  ASSERT_NE(e.worker_text.find("foresight_worker_request_errors_total{code=\"INVALID_ARGUMENT\"} 1"), std::string::npos)
      << e.worker_text;
}

// The executable `name` on PATH; empty if there is none.
std::string FindOnPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path == nullptr ? "" : path);
  for (std::string d; std::getline(dirs, d, ':');) {
    const std::string candidate = (d.empty() ? "." : d) + "/" + name;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

CommandResult RunShell(const std::string& command) {
  CommandResult r;
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof(buf), p)) > 0;) r.output.append(buf, n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

TEST(MetricsEndpointsTest, PromtoolFindsNoProblemInEitherEndpoint) {
  const std::string promtool = FindOnPath("promtool");
  if (promtool.empty()) {
    GTEST_SKIP() << "promtool is not on PATH: install Debian's prometheus package (deploy/install-deps.sh does)";
  }
  ScrapedEndpoints e;
  ASSERT_NO_FATAL_FAILURE(StartAndScrape(e));
  for (const auto& [name, text] :
       {std::pair<std::string, const std::string*>{"node", &e.node_text}, {"worker", &e.worker_text}}) {
    const std::string file = e.dir->path() + "/" + name + ".prom";
    std::ofstream(file) << *text;
    // promtool prints each lint problem ("NAME non-counter metrics should not have "_total"
    // suffix") and exits non-zero; a clean text prints nothing.
    const CommandResult r = RunShell("'" + promtool + "' check metrics < '" + file + "'");
    EXPECT_EQ(r.exit_code, 0) << "promtool check metrics on the " << name << "'s /metrics:\n"
                              << r.output << "\n--- the text it checked:\n"
                              << *text;
    EXPECT_EQ(r.output, "") << "promtool on the " << name << "'s /metrics";
  }
}

// Every object under `j` (depth first), panels of collapsed rows included.
void ForEachObject(const nlohmann::json& j, const std::function<void(const nlohmann::json&)>& f) {
  if (j.is_object()) f(j);
  if (j.is_structured())
    for (const auto& child : j) ForEachObject(child, f);
}

TEST(MetricsEndpointsTest, DashboardQueriesOnlyMetricsTheEndpointsExport) {
  const std::string path = std::string(FORESIGHT_SOURCE_DIR) + "/deploy/grafana/foresight.json";
  std::ifstream in(path);
  ASSERT_TRUE(in) << "cannot read " << path;
  const nlohmann::json dashboard = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(dashboard.is_discarded()) << path << " is not valid JSON";

  ScrapedEndpoints e;
  ASSERT_NO_FATAL_FAILURE(StartAndScrape(e));
  std::set<std::string> exported = SampleNames(e.node_text);
  exported.merge(SampleNames(e.worker_text));

  // Our metrics all begin with foresight_; PromQL's functions, label names and Grafana's
  // variables do not.
  const std::regex metric_name("foresight_[a-zA-Z0-9_:]*");
  int panels = 0;
  auto check_query = [&](const std::string& where, const std::string& query) {
    int names = 0;
    for (std::sregex_iterator it(query.begin(), query.end(), metric_name), end; it != end; ++it, ++names) {
      EXPECT_TRUE(exported.count(it->str()))
          << where << " queries " << it->str() << ", which neither endpoint exports: " << query;
    }
    EXPECT_GT(names, 0) << where << " queries no foresight metric: " << query;
  };
  ForEachObject(dashboard, [&](const nlohmann::json& o) {
    if (!o.contains("gridPos") || o.value("type", "") == "row") return;  // not a panel
    ++panels;
    const std::string title = o.value("title", "");
    EXPECT_FALSE(title.empty()) << "a panel without a title: " << o.dump().substr(0, 200);
    const std::string where = "panel \"" + title + "\"";
    EXPECT_FALSE(o.value("/fieldConfig/defaults/unit"_json_pointer, "").empty()) << where << " has no unit";
    EXPECT_TRUE(o.value("/options/legend/showLegend"_json_pointer, false)) << where << " shows no legend";
    ASSERT_TRUE(o.contains("targets") && !o["targets"].empty()) << where << " has no query";
    for (const auto& t : o["targets"]) {
      check_query(where, t.value("expr", ""));
      EXPECT_FALSE(t.value("legendFormat", "").empty()) << where << " has a query without a legend: " << t.dump();
    }
  });
  for (const auto& v : dashboard["templating"]["list"]) {
    if (v.value("type", "") == "query") check_query("variable $" + v.value("name", ""), v["query"].dump());
  }
  EXPECT_GE(panels, 10);
  // Every metric family of both endpoints has a panel, except the node's page size (a constant)
  // and prometheus-cpp's own exposer_* metrics.
  auto family = [](const std::string& sample) {
    return std::regex_replace(sample, std::regex("_(bucket|sum|count)$"), "");
  };
  std::set<std::string> queried;
  ForEachObject(dashboard, [&](const nlohmann::json& o) {
    const std::string expr = o.value("expr", "");
    for (std::sregex_iterator it(expr.begin(), expr.end(), metric_name), end; it != end; ++it) {
      queried.insert(family(it->str()));
    }
  });
  for (const std::string& name : exported) {
    if (name.rfind("foresight_", 0) != 0 || name == "foresight_ram_page_bytes") continue;
    EXPECT_TRUE(queried.count(family(name))) << name << " is exported but no panel of " << path << " shows it";
  }
}

// Every query of the dashboard is valid PromQL: promtool checks them as recording rules (a rules
// file may be JSON, YAML's subset), with Grafana's variables replaced by what they expand to.
TEST(MetricsEndpointsTest, DashboardQueriesParseAsPromQL) {
  const std::string promtool = FindOnPath("promtool");
  if (promtool.empty()) {
    GTEST_SKIP() << "promtool is not on PATH: install Debian's prometheus package (deploy/install-deps.sh does)";
  }
  const std::string path = std::string(FORESIGHT_SOURCE_DIR) + "/deploy/grafana/foresight.json";
  std::ifstream in(path);
  ASSERT_TRUE(in) << "cannot read " << path;
  const nlohmann::json dashboard = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(dashboard.is_discarded()) << path << " is not valid JSON";

  nlohmann::json rules = nlohmann::json::array();
  ForEachObject(dashboard, [&](const nlohmann::json& o) {
    if (!o.contains("expr")) return;
    std::string expr = o["expr"].get<std::string>();
    expr = std::regex_replace(expr, std::regex(R"(\$__[a-z_]+)"), "1m");         // $__rate_interval
    expr = std::regex_replace(expr, std::regex(R"(\$\{?[A-Za-z_]+\}?)"), ".*");  // $instance
    rules.push_back({{"record", "dashboard:query_" + std::to_string(rules.size())}, {"expr", expr}});
  });
  ASSERT_FALSE(rules.empty());
  TempDir dir("dashboard-promql");
  const std::string file = dir.path() + "/rules.json";
  std::ofstream(file) << nlohmann::json{{"groups", {{{"name", "dashboard"}, {"rules", rules}}}}}.dump(2);
  const CommandResult r = RunShell("'" + promtool + "' check rules '" + file + "'");
  EXPECT_EQ(r.exit_code, 0) << "promtool check rules on the dashboard's queries:\n"
                            << r.output << "\n--- the rules it checked:\n"
                            << rules.dump(2);
}

}  // namespace
}  // namespace foresight
