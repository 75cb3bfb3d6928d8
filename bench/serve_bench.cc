// foresight-bench serve: serving throughput and latency of OpenAI-compatible servers, side by side.
//
// Each target is an OpenAI-compatible HTTP server (foresight-worker --http, llama.cpp's
// llama-server, vLLM, ...). Every workload runs on every target in turn with the same prompts,
// through streaming POST /v1/completions (greedy, `ignore_eos` where the workload fixes the output
// length), and the client times each streamed chunk:
//
//   short          prompts of about 100 tokens, --short-tokens generated (default 128), at each
//                  --concurrency (closed loop: C clients, each sends its next request when its last
//                  one ends, 2 x C requests in all)
//   shared-prefix  one long document (--doc) and 8 distinct questions, 8 at once, 64 tokens each:
//                  a first round ("cold") and a second with other questions ("warm": the document
//                  was seen by the first)
//   long           8 distinct documents (--docs) at once, 64 tokens each; decode-phase tok/s
//   interference   4 short requests decoding (256 tokens) while one --doc prompt arrives: their
//                  inter-token p99 during its prefill against before it
//
// Every prompt starts with a tag new to this run, workload and target, so that no server (nor a
// cache node two targets share) has any of it cached from before: "cold" is cold. Only the warm
// round of shared-prefix reuses what its own cold round left.
//
// Figures per (target, workload): requests, output tokens, wall time, output tok/s, time to first
// token p50/p99, inter-token p50/p99, end-to-end p50, and decode-phase tok/s (output tokens after
// each request's first, over the time some request was past its first token). With two targets,
// a ratio row (first / second) follows each workload.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "bench/commands.h"
#include "common/status.h"

namespace foresight::bench {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

struct Target {
  std::string name;
  std::string host;
  int port = 0;
  std::string model;  // the id GET /v1/models lists first
};

struct ServeFlags {
  std::vector<std::string> targets;  // NAME=http://HOST:PORT
  std::vector<std::string> workloads = {"short"};
  std::vector<int> concurrency = {1, 8};
  int short_tokens = 128;
  std::string doc;                // shared-prefix and interference
  std::vector<std::string> docs;  // long
  int doc_bytes = 33000;          // about 7.3K SmolLM2 tokens, the demo's document
  int docs_bytes = 27000;         // about 6K tokens each
  std::string token_file;
  bool json_out = false;
};

// One streamed request, as the client saw it.
struct Timing {
  bool ok = false;
  std::string error;
  double start = 0, first = 0, last = 0;  // seconds since the workload began
  std::vector<double> chunks;             // arrival of each chunk carrying a choice
  int64_t prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;
};

StatusOr<Target> ParseTarget(const std::string& spec) {
  const size_t eq = spec.find('=');
  const std::string name = eq == std::string::npos ? spec : spec.substr(0, eq);
  std::string url = eq == std::string::npos ? spec : spec.substr(eq + 1);
  const std::string scheme = "http://";
  if (url.compare(0, scheme.size(), scheme) != 0) {
    return InvalidArgument("--target " + spec + ": want NAME=http://HOST:PORT");
  }
  url = url.substr(scheme.size());
  while (!url.empty() && url.back() == '/') url.pop_back();
  const size_t colon = url.rfind(':');
  Target t;
  t.name = name;
  t.host = url.substr(0, colon);
  try {
    t.port = colon == std::string::npos ? 80 : std::stoi(url.substr(colon + 1));
  } catch (const std::exception&) {
    return InvalidArgument("--target " + spec + ": the port is not a number");
  }
  return t;
}

httplib::Headers AuthHeaders(const std::string& token) {
  httplib::Headers h;
  if (!token.empty()) h.emplace("Authorization", "Bearer " + token);
  return h;
}

Status FindModel(Target* t, const std::string& token) {
  httplib::Client cli(t->host, t->port);
  cli.set_read_timeout(30, 0);
  auto res = cli.Get("/v1/models", AuthHeaders(token));
  if (!res) return Unavailable(t->name + ": GET /v1/models failed: " + httplib::to_string(res.error()));
  if (res->status != 200) {
    return Unavailable(t->name + ": GET /v1/models answered " + std::to_string(res->status) + ": " + res->body);
  }
  try {
    json j = json::parse(res->body);
    t->model = j.at("data").at(0).at("id").get<std::string>();
  } catch (const std::exception& e) {
    return Unavailable(t->name + ": GET /v1/models: unexpected answer (" + e.what() + ")");
  }
  return Status::OK();
}

// One streaming completion; times relative to `epoch`.
Timing Complete(const Target& t, const std::string& token, const std::string& prompt, int max_tokens, bool ignore_eos,
                Clock::time_point epoch) {
  auto since = [&] { return std::chrono::duration<double>(Clock::now() - epoch).count(); };
  Timing r;
  json body = {{"model", t.model}, {"prompt", prompt}, {"max_tokens", max_tokens},
               {"temperature", 0}, {"stream", true},   {"stream_options", {{"include_usage", true}}}};
  if (ignore_eos) body["ignore_eos"] = true;
  httplib::Client cli(t.host, t.port);
  cli.set_read_timeout(3600, 0);
  cli.set_write_timeout(60, 0);
  std::string pending;
  bool done = false;
  auto on_line = [&](const std::string& line) {
    if (line.rfind("data: ", 0) != 0) return;
    const std::string data = line.substr(6);
    if (data == "[DONE]") {
      done = true;
      return;
    }
    json chunk = json::parse(data, nullptr, false);
    if (chunk.is_discarded()) return;
    if (chunk.contains("choices") && chunk["choices"].is_array() && !chunk["choices"].empty()) {
      const double now = since();
      if (r.chunks.empty()) r.first = now;
      r.last = now;
      r.chunks.push_back(now);
    }
    if (chunk.contains("usage") && chunk["usage"].is_object()) {
      const json& u = chunk["usage"];
      r.prompt_tokens = u.value("prompt_tokens", int64_t{0});
      r.completion_tokens = u.value("completion_tokens", int64_t{0});
      if (u.contains("prompt_tokens_details") && u["prompt_tokens_details"].is_object()) {
        r.cached_tokens = u["prompt_tokens_details"].value("cached_tokens", int64_t{0});
      }
    }
  };
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.headers = AuthHeaders(token);
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  int status = 0;
  std::string error_body;
  req.response_handler = [&](const httplib::Response& res) {
    status = res.status;
    return true;
  };
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    if (status != 200) {
      error_body.append(data, n);
      return true;
    }
    pending.append(data, n);
    size_t at;
    while ((at = pending.find('\n')) != std::string::npos) {
      std::string line = pending.substr(0, at);
      pending.erase(0, at + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      on_line(line);
    }
    return true;
  };
  r.start = since();
  auto res = cli.send(req);
  if (!res) {
    r.error = "request failed: " + httplib::to_string(res.error());
    return r;
  }
  if (status != 200) {
    r.error = "HTTP " + std::to_string(status) + ": " + error_body.substr(0, 300);
    return r;
  }
  if (!done) {
    r.error = "the stream ended without data: [DONE]";
    return r;
  }
  if (r.completion_tokens == 0) r.completion_tokens = static_cast<int64_t>(r.chunks.size());
  r.ok = true;
  return r;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double at = p * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(at);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (at - static_cast<double>(lo));
}

struct Summary {
  std::string target, workload;
  int concurrency = 0;
  int requests = 0, failed = 0;
  int64_t output_tokens = 0, prompt_tokens = 0, cached_tokens = 0;
  double wall = 0, output_tps = 0, decode_tps = 0;
  double ttft_p50 = 0, ttft_p99 = 0, itl_p50 = 0, itl_p99 = 0, e2e_p50 = 0;
  std::string first_error;
};

Summary Summarise(const std::string& target, const std::string& workload, int concurrency,
                  const std::vector<Timing>& runs, double wall) {
  Summary s;
  s.target = target;
  s.workload = workload;
  s.concurrency = concurrency;
  s.wall = wall;
  std::vector<double> ttft, itl, e2e;
  std::vector<std::pair<double, double>> decoding;  // [first, last] per request
  int64_t decode_tokens = 0;
  for (const Timing& r : runs) {
    ++s.requests;
    if (!r.ok) {
      ++s.failed;
      if (s.first_error.empty()) s.first_error = r.error;
      continue;
    }
    s.output_tokens += r.completion_tokens;
    s.prompt_tokens += r.prompt_tokens;
    s.cached_tokens += r.cached_tokens;
    ttft.push_back(r.first - r.start);
    e2e.push_back(r.last - r.start);
    for (size_t i = 1; i < r.chunks.size(); ++i) itl.push_back(r.chunks[i] - r.chunks[i - 1]);
    if (r.completion_tokens > 1 && r.last > r.first) {
      decoding.emplace_back(r.first, r.last);
      decode_tokens += r.completion_tokens - 1;
    }
  }
  // The time some request was decoding: the union of the [first, last] intervals.
  std::sort(decoding.begin(), decoding.end());
  double covered = 0, end = -1;
  for (const auto& [a, b] : decoding) {
    if (a > end) {
      covered += b - a;
      end = b;
    } else if (b > end) {
      covered += b - end;
      end = b;
    }
  }
  s.output_tps = wall > 0 ? static_cast<double>(s.output_tokens) / wall : 0;
  s.decode_tps = covered > 0 ? static_cast<double>(decode_tokens) / covered : 0;
  s.ttft_p50 = Percentile(ttft, 0.5);
  s.ttft_p99 = Percentile(ttft, 0.99);
  s.itl_p50 = Percentile(itl, 0.5);
  s.itl_p99 = Percentile(itl, 0.99);
  s.e2e_p50 = Percentile(e2e, 0.5);
  return s;
}

// Runs `prompts` with at most `concurrency` in flight (each client takes the next prompt when its
// request ends).
std::vector<Timing> RunClosedLoop(const Target& t, const std::string& token, const std::vector<std::string>& prompts,
                                  int concurrency, int max_tokens, bool ignore_eos, Clock::time_point epoch) {
  std::vector<Timing> runs(prompts.size());
  std::atomic<size_t> next{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < concurrency; ++c) {
    clients.emplace_back([&] {
      for (size_t i; (i = next++) < prompts.size();)
        runs[i] = Complete(t, token, prompts[i], max_tokens, ignore_eos, epoch);
    });
  }
  for (auto& c : clients) c.join();
  return runs;
}

// About 100 tokens of plain English, distinct per `i`.
std::string ShortPrompt(int i) {
  static const char* kSubjects[] = {"a lighthouse keeper", "a young baker",       "an old sailor",
                                    "a city gardener",     "a night-shift nurse", "a travelling musician",
                                    "a mountain guide",    "a retired teacher"};
  static const char* kPlaces[] = {"a windy harbour town",     "a quiet village", "a busy market street",
                                  "a snowed-in mountain hut", "a river island",  "a desert crossroads"};
  std::ostringstream s;
  s << "Request " << i << ". Write a long, detailed story about " << kSubjects[i % 8] << " who lives in "
    << kPlaces[(i * 5) % 6] << ". Describe the morning routine, the people they meet, the weather, the sounds "
    << "and smells of the place, a small problem that grows during the day, and how it is solved by evening. "
    << "Use simple sentences, give every character a name, and end with a quiet scene at night.";
  return s.str();
}

StatusOr<std::string> ReadPrefix(const std::string& path, int bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("cannot read document " + path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (static_cast<int>(text.size()) > bytes) text.resize(bytes);
  return text;
}

void PrintHeader() {
  std::printf("%-10s %-14s %4s %5s %7s %8s %9s %9s %8s %8s %8s %8s %8s %9s\n", "target", "workload", "conc", "reqs",
              "out_tok", "wall_s", "out_tok/s", "dec_tok/s", "ttft_p50", "ttft_p99", "itl_p50", "itl_p99", "e2e_p50",
              "cached");
}

void PrintRow(const Summary& s) {
  std::printf("%-10s %-14s %4d %5d %7lld %8.2f %9.1f %9.1f %8.3f %8.3f %8.4f %8.4f %8.2f %9lld%s\n", s.target.c_str(),
              s.workload.c_str(), s.concurrency, s.requests, static_cast<long long>(s.output_tokens), s.wall,
              s.output_tps, s.decode_tps, s.ttft_p50, s.ttft_p99, s.itl_p50, s.itl_p99, s.e2e_p50,
              static_cast<long long>(s.cached_tokens),
              s.failed > 0 ? ("  FAILED " + std::to_string(s.failed) + ": " + s.first_error).c_str() : "");
}

void PrintRatio(const Summary& a, const Summary& b) {
  auto r = [](double x, double y) { return y > 0 ? x / y : 0.0; };
  std::printf("%-10s %-14s %4d %5s %7s %8.2fx %8.2fx %8.2fx %8.2fx %8.2fx %8.2fx %8.2fx %8.2fx\n",
              (a.target + "/" + b.target).substr(0, 10).c_str(), a.workload.c_str(), a.concurrency, "", "",
              r(a.wall, b.wall), r(a.output_tps, b.output_tps), r(a.decode_tps, b.decode_tps),
              r(a.ttft_p50, b.ttft_p50), r(a.ttft_p99, b.ttft_p99), r(a.itl_p50, b.itl_p50), r(a.itl_p99, b.itl_p99),
              r(a.e2e_p50, b.e2e_p50));
}

json ToJson(const Summary& s) {
  return {{"target", s.target},
          {"workload", s.workload},
          {"concurrency", s.concurrency},
          {"requests", s.requests},
          {"failed", s.failed},
          {"output_tokens", s.output_tokens},
          {"prompt_tokens", s.prompt_tokens},
          {"cached_tokens", s.cached_tokens},
          {"wall_seconds", s.wall},
          {"output_tokens_per_second", s.output_tps},
          {"decode_tokens_per_second", s.decode_tps},
          {"ttft_p50", s.ttft_p50},
          {"ttft_p99", s.ttft_p99},
          {"itl_p50", s.itl_p50},
          {"itl_p99", s.itl_p99},
          {"e2e_p50", s.e2e_p50},
          {"first_error", s.first_error}};
}

int RunServeBench(const ServeFlags& f) {
  auto fail = [](const Status& s) {
    std::fprintf(stderr, "foresight-bench serve: %s\n", s.ToString().c_str());
    return 1;
  };
  if (f.targets.empty()) return fail(InvalidArgument("give at least one --target NAME=http://HOST:PORT"));
  std::string token;
  if (!f.token_file.empty()) {
    std::ifstream in(f.token_file);
    if (!in) return fail(NotFound("cannot read --token-file " + f.token_file));
    std::getline(in, token);
  }
  std::vector<Target> targets;
  for (const std::string& spec : f.targets) {
    StatusOr<Target> t = ParseTarget(spec);
    if (!t.ok()) return fail(t.status());
    if (Status s = FindModel(&*t, token); !s.ok()) return fail(s);
    targets.push_back(*t);
  }
  std::string doc;
  std::vector<std::string> docs;
  for (const std::string& w : f.workloads) {
    if (w != "short" && w != "shared-prefix" && w != "long" && w != "interference") {
      return fail(InvalidArgument("unknown workload '" + w + "' (short, shared-prefix, long, interference)"));
    }
    if ((w == "shared-prefix" || w == "interference") && doc.empty()) {
      if (f.doc.empty()) return fail(InvalidArgument("workload " + w + " needs --doc FILE"));
      StatusOr<std::string> d = ReadPrefix(f.doc, f.doc_bytes);
      if (!d.ok()) return fail(d.status());
      doc = *d;
    }
    if (w == "long" && docs.empty()) {
      if (f.docs.size() < 8) return fail(InvalidArgument("workload long needs 8 files in --docs"));
      for (const std::string& path : f.docs) {
        StatusOr<std::string> d = ReadPrefix(path, f.docs_bytes);
        if (!d.ok()) return fail(d.status());
        docs.push_back(*d);
      }
    }
  }
  // See the file comment: a tag new to this run, target and workload opens every prompt.
  const std::string run_tag = [] {
    std::random_device rd;
    char hex[17];
    std::snprintf(hex, sizeof(hex), "%08x%08x", rd(), rd());
    return std::string(hex);
  }();
  auto tagged = [&](const Target& t, const std::string& scope, std::vector<std::string> prompts) {
    for (std::string& p : prompts) p = "[" + run_tag + " " + t.name + " " + scope + "]\n" + p;
    return prompts;
  };
  std::vector<Summary> all;
  if (!f.json_out) PrintHeader();
  auto report = [&](const std::vector<Summary>& rows) {
    for (const Summary& s : rows) {
      all.push_back(s);
      if (!f.json_out) PrintRow(s);
    }
    if (!f.json_out && rows.size() >= 2) PrintRatio(rows[0], rows[1]);
  };
  for (const std::string& w : f.workloads) {
    if (w == "short") {
      for (int c : f.concurrency) {
        std::vector<std::string> prompts;
        for (int i = 0; i < 2 * c; ++i) prompts.push_back(ShortPrompt(i));
        std::vector<Summary> rows;
        for (const Target& t : targets) {
          const auto epoch = Clock::now();
          auto runs =
              RunClosedLoop(t, token, tagged(t, "short" + std::to_string(c), prompts), c, f.short_tokens, true, epoch);
          rows.push_back(Summarise(t.name, w, c, runs, std::chrono::duration<double>(Clock::now() - epoch).count()));
        }
        report(rows);
      }
    } else if (w == "shared-prefix") {
      static const char* kQuestions[] = {"Summarise the document in one sentence.",
                                         "Who may copy the work, and on what terms?",
                                         "What must a distributor give to recipients?",
                                         "What does the document say about patents?",
                                         "What happens when the terms are violated?",
                                         "What does the document say about warranties?",
                                         "How can a later version of the terms apply?",
                                         "What must a modified version carry?",
                                         "List three duties of a distributor.",
                                         "What is a covered work?",
                                         "What is the purpose of the document?",
                                         "What is said about source code?",
                                         "What does the document say about fees?",
                                         "Who wrote the document?",
                                         "What does 'propagate' mean here?",
                                         "Name one right the document grants."};
      for (const char* phase : {"cold", "warm"}) {
        std::vector<std::string> prompts;
        for (int i = 0; i < 8; ++i) {
          prompts.push_back(doc + "\n\nQuestion: " + kQuestions[(phase[0] == 'w' ? 8 : 0) + i] + "\nAnswer:");
        }
        std::vector<Summary> rows;
        for (const Target& t : targets) {
          const auto epoch = Clock::now();
          auto runs = RunClosedLoop(t, token, tagged(t, "prefix", prompts), 8, 64, true, epoch);
          rows.push_back(Summarise(t.name, std::string("prefix-") + phase, 8, runs,
                                   std::chrono::duration<double>(Clock::now() - epoch).count()));
        }
        report(rows);
      }
    } else if (w == "long") {
      std::vector<std::string> prompts;
      for (const std::string& d : docs) prompts.push_back(d + "\n\nSummarise the text above.\nSummary:");
      std::vector<Summary> rows;
      for (const Target& t : targets) {
        const auto epoch = Clock::now();
        auto runs = RunClosedLoop(t, token, tagged(t, "long", prompts), 8, 64, true, epoch);
        rows.push_back(Summarise(t.name, w, 8, runs, std::chrono::duration<double>(Clock::now() - epoch).count()));
      }
      report(rows);
    } else {  // interference
      std::vector<Summary> rows;
      for (const Target& t : targets) {
        const auto epoch = Clock::now();
        std::vector<std::string> prompts;
        for (int i = 0; i < 4; ++i) prompts.push_back(ShortPrompt(100 + i));
        std::vector<Timing> decoders;
        prompts.push_back(doc + "\n\nSummarise the text above.\nSummary:");
        prompts = tagged(t, "interference", prompts);
        const std::string long_prompt = prompts.back();
        prompts.pop_back();
        std::thread background([&] { decoders = RunClosedLoop(t, token, prompts, 4, 256, true, epoch); });
        // The long prompt arrives once the four are decoding.
        std::this_thread::sleep_for(std::chrono::seconds(3));
        Timing big = Complete(t, token, long_prompt, 16, true, epoch);
        background.join();
        // Inter-token gaps of the four before the long prompt arrived, and while it prefilled.
        std::vector<double> before, during;
        for (const Timing& r : decoders) {
          for (size_t i = 1; i < r.chunks.size(); ++i) {
            const double at = r.chunks[i];
            const double gap = at - r.chunks[i - 1];
            if (at < big.start) before.push_back(gap);
            if (at > big.start && at <= big.first) during.push_back(gap);
          }
        }
        Summary s = Summarise(t.name, w, 4, decoders, 0);
        s.itl_p50 = Percentile(before, 0.99);  // reported as: p99 before, p99 during
        s.itl_p99 = Percentile(during, 0.99);
        s.ttft_p50 = big.first - big.start;
        if (!big.ok) {
          s.failed++;
          s.first_error = big.error;
        }
        if (!f.json_out) {
          std::printf(
              "%-10s interference: decode inter-token p99 %.4f s before the long prompt, %.4f s during its "
              "prefill (%.2fx; %zu and %zu gaps); its TTFT %.2f s (%lld prompt tokens)\n",
              t.name.c_str(), s.itl_p50, s.itl_p99, s.itl_p50 > 0 ? s.itl_p99 / s.itl_p50 : 0.0, before.size(),
              during.size(), s.ttft_p50, static_cast<long long>(big.prompt_tokens));
        }
        all.push_back(s);
      }
    }
  }
  if (f.json_out) {
    json out = json::array();
    for (const Summary& s : all) out.push_back(ToJson(s));
    std::printf("%s\n", out.dump(1).c_str());
  }
  for (const Summary& s : all) {
    if (s.failed > 0) return 1;
  }
  return 0;
}

}  // namespace

void AddServeBench(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<ServeFlags>();
  CLI::App* cmd = app.add_subcommand(
      "serve",
      "Serving throughput and latency of OpenAI-compatible servers (foresight-worker --http, llama-server), "
      "side by side");
  cmd->add_option("--target", flags->targets, "NAME=http://HOST:PORT (repeat to compare; the first is the numerator)")
      ->required();
  cmd->add_option("--workload", flags->workloads, "short, shared-prefix, long, interference (repeatable)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--concurrency", flags->concurrency, "Clients for the short workload (comma-separated)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--short-tokens", flags->short_tokens, "Tokens generated per short request")->capture_default_str();
  cmd->add_option("--doc", flags->doc, "The long document (shared-prefix, interference)");
  cmd->add_option("--doc-bytes", flags->doc_bytes, "Bytes of --doc used")->capture_default_str();
  cmd->add_option("--docs", flags->docs, "Eight documents for the long workload")->delimiter(',');
  cmd->add_option("--docs-bytes", flags->docs_bytes, "Bytes of each --docs file used")->capture_default_str();
  cmd->add_option("--token-file", flags->token_file, "Bearer token for the targets");
  cmd->add_flag("--json", flags->json_out, "Print one JSON array of rows");
  cmd->callback([flags, exit_code] { *exit_code = RunServeBench(*flags); });
}

}  // namespace foresight::bench
