// foresight-bench decode: time per decode token, dense vs each selection policy, on SmolLM2 (or any
// model) and on the synthetic Llama-3.1-8B-geometry model at long contexts.
//
// Speed only. Contexts are filled by a real dense prefill (--prefill) or, by default for the
// synthetic model, with random KV (prefilling 128K tokens on a CPU takes hours); policies then get
// no prefill history, which changes what they select but not what selecting and attending cost.
//
// With --modes (issue 5): KV offload to a cache node started here (LocalNode), one policy
// (--policy), per context, transport (--transport shm,tcp: UCX shared memory or UCX TCP) and mode
// (resident, on-demand, cross-layer, cross-token; --no-reuse adds each offloaded mode moving its
// whole selected set every step; --compare-coalescing adds each offloaded variant with one get per
// (block, KV head) instead of coalesced gets): time per token, stall per token, bytes fetched and
// gets sent per token.
// Random KV contexts are published to the node before decoding.
#include <omp.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "bench/commands.h"
#include "client/cache_client.h"
#include "common/file_io.h"
#include "common/units.h"
#include "predictor/cnn_weights.h"
#include "predictor/selection_policy.h"
#include "predictor/shipped_weights.h"
#include "testing/local_node.h"
#include "worker/backend.h"
#include "worker/default_model.h"
#include "worker/model.h"
#include "worker/offload/kv_publisher.h"
#include "worker/offload/offloaded_sequence.h"
#include "worker/policy_attention.h"
#include "worker/serving_flags.h"
#include "worker/synthetic_model.h"

namespace foresight::bench {
namespace {

struct DecodeBenchFlags {
  std::string model;
  bool synthetic_8b = false;
  int synthetic_layers = 2;
  std::string contexts = "2048,4096,8192";
  std::string policies = "dense,streaming_llm,quest,h2o,snapkv";
  // --budget, --sink, --local, --dense-layers, --query-refine and --weights for every policy;
  // --policy is the offload runs' (default h2o). worker/serving_flags.h.
  worker::ServingOptions serving = [] {
    worker::ServingOptions o;
    o.default_policy = "h2o";
    return o;
  }();
  worker::ServingFlags serving_flags;
  int steps = 16;
  bool prefill = false;
  bool json = false;
  // Offload (issue 5).
  std::string modes;  // empty: the policy comparison above
  std::string transports = "shm,tcp";
  bool no_reuse = false;
  bool compare_coalescing = false;
  std::string ucx_rndv_thresh = "128K";
  int warmup = 4;
  bool greedy = false;  // offload with --text: decode the model's greedy continuation
  int margin = -1;
  std::string node_ram = "3GiB";
  std::string node_nvme;  // the node's NVMe tier (--nvme-bytes, in a temp dir); empty: none
  int seed_copies = 1;    // --text: sequences published (the first, and copies under other namespaces)
  std::string models;     // offload: several models in one run, paired with --contexts
  std::string calibration_text;
  std::string llama_cpp_python;   // runs llama.cpp (llama-cpp-python) beside dense, same threads
  int chunk = 5;                  // offload: steps per turn when variants take turns
  std::string speculative = "0";  // offload, ap: cross-token variants per speculative_blocks value
  std::string text;  // offload: real context from this text (models with a tokenizer)  // non-empty: measure
                     // compact-key calibration rows on this text
};

std::string LoadAverage() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

// Decode steps an offload run takes per variant (warmup, then `rounds` turns of `chunk` steps).
int OffloadSteps(const DecodeBenchFlags& f) {
  const int chunk = std::max(2, f.chunk);
  return f.warmup + (f.steps + chunk - 2) / (chunk - 1) * chunk;
}

std::vector<std::string> SplitList(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

// UCX's rendezvous threshold over TCP is 8 KiB here (ucx_info -e: `<rndv>` from 8192): a GET reply
// of two or more 4 KiB heads, or of one 8 KiB head of the 8B geometry, would pay a rendezvous
// (an extra round trip) instead of one eager send, which undoes coalescing (docs/perf-notes.md).
// The node started here inherits the setting; a user's UCX_RNDV_THRESH wins.
void ApplyUcxRendezvousThreshold(const DecodeBenchFlags& f) {
  if (!f.ucx_rndv_thresh.empty() && f.ucx_rndv_thresh != "auto")
    setenv("UCX_RNDV_THRESH", f.ucx_rndv_thresh.c_str(), 0);
}

std::string UcxRendezvousThreshold() {
  const char* v = std::getenv("UCX_RNDV_THRESH");
  return v != nullptr ? v : "auto";
}

// CPU seconds used so far by this process (every thread: decode, OpenMP, UCX progress) and by
// process `pid` (the node). On a shared machine wall time per token swings with other people's
// load; the CPU a fetch path burns on the same two cores does not.
double ProcessCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + 1e-6 * (u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

double ProcessCpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return 0;
  std::istringstream fields(line.substr(line.rfind(')') + 2));  // after "pid (comm) "
  std::string field;
  double ticks = 0;
  for (int i = 3; fields >> field && i <= 15; ++i) {
    if (i == 14 || i == 15) ticks += std::stod(field);  // utime, stime
  }
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// ap (ap_refined, its older name): AttentionPredictor as served (a quarter of the kept blocks
// chosen by the step's query against the compact key copy, calibration rows from that copy:
// attention never goes dense). attention_predictor: the published method (dense calibration steps).
bool IsServedAp(const std::string& policy) { return policy == "ap" || policy == "ap_refined"; }

// What a bench policy name runs (worker/serving_options.h), at `context` tokens and `steps` decode
// steps: ap as served (with --query-refine), attention_predictor the published method; an
// AttentionPredictor whose context and steps fit the budget runs dense, as served.
StatusOr<worker::ServingPlan> ResolveBenchPolicy(const worker::ServingOptions& serving, const std::string& name,
                                                 int64_t context, int32_t steps, const worker::ModelConfig& config,
                                                 bool kv_offloaded) {
  worker::ServingOptions o = serving;
  if (!IsServedAp(name) && name != "dense") o.query_refine = 0.0f;
  return worker::ResolveServing(o, IsServedAp(name) ? "ap" : name, 0, context, steps, config, kv_offloaded);
}

Status RunOffloadBench(const DecodeBenchFlags& f, const worker::Model& model, const std::string& model_name,
                       const std::vector<int64_t>& contexts, LocalNode* node, nlohmann::json* rows) {
  const worker::ModelConfig& c = model.config();
  std::vector<worker::OffloadMode> modes;
  for (const std::string& m : SplitList(f.modes)) {
    FS_ASSIGN_OR_RETURN(worker::OffloadMode mode, worker::ParseOffloadMode(m));
    modes.push_back(mode);
  }
  std::vector<std::string> transports = SplitList(f.transports);
  for (const std::string& t : transports) {
    if (t != "shm" && t != "tcp") return InvalidArgument("--transport: unknown '" + t + "' (shm, tcp)");
  }
  // ap as served: the query's quarter of the kept blocks is known only at the step.
  const std::string& policy = f.serving.default_policy;
  const bool refined = IsServedAp(policy);
  FS_ASSIGN_OR_RETURN(const worker::ServingPlan plan,
                      ResolveBenchPolicy(f.serving, policy, *std::min_element(contexts.begin(), contexts.end()),
                                         OffloadSteps(f), c, /*kv_offloaded=*/true));
  if (!plan.spec) {
    return InvalidArgument("--policy " + policy + " runs dense (" +
                           (plan.fits_budget ? "every context fits --budget" : "dense cannot offload") +
                           "); pick a sparse policy and contexts beyond --budget");
  }
  const predictor::PolicySpec& spec = *plan.spec;
  std::vector<int64_t> speculative;
  for (const std::string& v : SplitList(f.speculative)) {
    char* end = nullptr;
    const long long n = std::strtoll(v.c_str(), &end, 10);
    if (*end != '\0' || n < -1)
      return InvalidArgument("--speculative-blocks: '" + v + "' is not a count of blocks (or -1)");
    speculative.push_back(n);
  }
  if (speculative.empty()) speculative.push_back(0);
  const std::string fingerprint = worker::ModelFingerprint(model);
  if (!f.json) {
    std::printf("# %s\n", model_name.c_str());
    std::printf("%-12s %-4s %-6s %8s %7s %11s %11s %11s %12s %8s %8s  %s\n", "mode", "tr", "reuse", "context", "budget",
                "us/tok(med)", "us/tok(avg)", "stall_us", "bytes/token", "hit%", "gets/tok", "load");
  }
  for (int64_t ctx : contexts) {
    if (c.max_context > 0 && ctx + OffloadSteps(f) > c.max_context) {
      return OutOfRange("context " + std::to_string(ctx) + " + " + std::to_string(OffloadSteps(f)) +
                        " steps exceeds the model's " + std::to_string(c.max_context));
    }
    std::vector<worker::TokenId> ids(ctx);
    for (int64_t i = 0; i < ctx; ++i) ids[i] = static_cast<worker::TokenId>((i * 7919 + 13) % c.vocab_size);
    const bool real = !f.text.empty() && model.tokenizer() != nullptr;
    nlohmann::json occupancy;  // the node after the seed sequences were published (--text only)
    if (real) {
      // A real prefill, once: published by a seed sequence; every variant then imports that prefix
      // (the shared-prefix path) and prefills only the last 64 tokens, so policies see real rows.
      FS_ASSIGN_OR_RETURN(const std::string raw, ReadWholeFile(f.text, "--text " + f.text));
      std::vector<worker::TokenId> text = model.tokenizer()->Encode(raw, false, false);
      if (static_cast<int64_t>(text.size()) < ctx) {
        return InvalidArgument(f.text + " has " + std::to_string(text.size()) + " tokens; --contexts asks for " +
                               std::to_string(ctx));
      }
      ids.assign(text.begin(), text.begin() + ctx);
      CacheClientOptions co;
      co.ucx_tuning = UcxTuningFromEnvironment();
      co.address = node->address();
      FS_ASSIGN_OR_RETURN(auto client, CacheClient::Connect(co));
      worker::OffloadOptions o;
      o.mode = worker::OffloadMode::kResident;
      o.publish = true;
      o.fingerprint = fingerprint;
      o.name_space = "bench";
      FS_ASSIGN_OR_RETURN(auto seed, worker::OffloadedSequence::Create(model, client.get(), std::nullopt, o));
      std::vector<float> logits;
      FS_RETURN_IF_ERROR(seed->Prefill(ids, &logits));
      FS_RETURN_IF_ERROR(seed->Flush());
      // More sequences of the same size for the node to hold (capacity checks, docs/capacity.md):
      // the same KV under other namespaces is stored as distinct blocks.
      for (int copy = 1; copy < f.seed_copies; ++copy) {
        worker::KvPublisher publisher(client.get(), "bench-copy" + std::to_string(copy), fingerprint, c.n_layers,
                                      seed->kv().layout());
        FS_RETURN_IF_ERROR(publisher.Publish(ids, seed->kv()));
        FS_RETURN_IF_ERROR(publisher.Flush());
      }
      // Let the node's background write-down reach its low watermark before it is read.
      std::this_thread::sleep_for(std::chrono::seconds(2));
      FS_ASSIGN_OR_RETURN(const RemoteNodeStats stats, client->NodeStats());
      occupancy = {{"sequences_published", f.seed_copies},
                   {"tokens_per_sequence", ctx},
                   {"node_ram_capacity_bytes", stats.ram.capacity_bytes},
                   {"node_ram_used_bytes", stats.ram.used_bytes},
                   {"node_nvme_used_bytes", stats.nvme.used_bytes},
                   {"node_ram_items", stats.ram.items},
                   {"node_nvme_items", stats.nvme.items}};
      if (!f.json)
        std::printf("# prefilled and published %lld tokens of %s in %.1f s\n", static_cast<long long>(ctx),
                    f.text.c_str(), seed->stats().prefill_seconds);
    }
    for (const std::string& transport : transports) {
      CacheClientOptions co;
      co.ucx_tuning = UcxTuningFromEnvironment();
      co.address = node->address();
      co.data_path = DataPath::kUcx;
      co.ucx_transports = transport;
      FS_ASSIGN_OR_RETURN(auto client, CacheClient::Connect(co));
      struct Variant {
        worker::OffloadMode mode;
        bool reuse;
        bool coalesce = true;
        int64_t speculative = 0;
      };
      std::vector<Variant> variants;
      // Cross-token with the refined policy: one variant per --speculative-blocks value.
      auto add = [&](worker::OffloadMode m, bool reuse) {
        if (m != worker::OffloadMode::kCrossToken || !refined) {
          variants.push_back({m, reuse});
          return;
        }
        for (int64_t sb : speculative) variants.push_back({m, reuse, true, sb});
      };
      for (worker::OffloadMode m : modes) add(m, true);
      if (f.no_reuse) {
        for (worker::OffloadMode m : modes) {
          if (m != worker::OffloadMode::kResident) add(m, false);
        }
      }
      if (f.compare_coalescing) {
        const size_t n = variants.size();
        for (size_t i = 0; i < n; ++i) {
          if (variants[i].mode != worker::OffloadMode::kResident) {
            variants.push_back({variants[i].mode, variants[i].reuse, false, variants[i].speculative});
          }
        }
      }
      // Every variant lives at once and they take turns, `chunk` steps each, so that all see the
      // same machine load (a shared machine drifts by tens of percent within minutes). The first
      // step of each turn is not timed: prefetches issued before the turn had the other variants'
      // turns to arrive, which a real decode does not get.
      struct Live {
        Variant v;
        std::unique_ptr<worker::OffloadedSequence> seq;
        std::vector<double> us;
        double stall_s = 0, verify_s = 0;
        uint64_t bytes = 0;
        int64_t hits = 0, misses = 0, stalls = 0, requests = 0, heads = 0, timed = 0;
        double cpu_s = 0, node_cpu_s = 0;
        int step = 0;
        worker::TokenId next = 0;  // --greedy: the argmax of the last logits
        // The token this variant decodes next: its greedy continuation, or fixed synthetic ids.
        worker::TokenId Token(bool greedy, int vocab) {
          const int s = step++;
          return greedy ? next : static_cast<worker::TokenId>((s * 31 + 5) % vocab);
        }
      };
      std::vector<Live> live;
      std::vector<float> logits;
      const bool greedy = f.greedy && real;
      auto argmax = [&logits] {
        return static_cast<worker::TokenId>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      };
      for (const Variant& v : variants) {
        worker::OffloadOptions o;
        o.mode = v.mode;
        o.reuse = v.reuse;
        o.publish = v.mode != worker::OffloadMode::kResident;
        o.import_prefix = real;
        o.fingerprint = fingerprint;
        o.margin_blocks = f.margin;
        o.attention = plan.attention;
        if (!v.coalesce) o.staging_bytes = 0;
        o.attention.speculative_blocks = v.speculative;
        o.name_space = "bench";
        Live l;
        l.v = v;
        FS_ASSIGN_OR_RETURN(l.seq, worker::OffloadedSequence::Create(model, client.get(), spec, o));
        if (real) {
          FS_RETURN_IF_ERROR(l.seq->Prefill(ids, &logits));
          l.next = argmax();
        } else {
          FS_RETURN_IF_ERROR(l.seq->TEST_FillRandom(ids, 17));
        }
        for (int s = 0; s < f.warmup; ++s) {
          FS_RETURN_IF_ERROR(l.seq->Decode(l.Token(greedy, c.vocab_size), &logits));
          l.next = argmax();
        }
        live.push_back(std::move(l));
      }
      const std::string load = LoadAverage();
      const int chunk = std::max(2, f.chunk);
      const int rounds = (f.steps + chunk - 2) / (chunk - 1);
      for (int r = 0; r < rounds; ++r) {
        for (Live& l : live) {
          for (int k = 0; k < chunk; ++k) {
            const worker::OffloadStats before = l.seq->stats();
            const double cpu0 = ProcessCpuSeconds(), node_cpu0 = ProcessCpuSeconds(node->pid());
            FS_RETURN_IF_ERROR(l.seq->Decode(l.Token(greedy, c.vocab_size), &logits));
            l.next = argmax();
            if (k == 0) continue;
            l.cpu_s += ProcessCpuSeconds() - cpu0;
            l.node_cpu_s += ProcessCpuSeconds(node->pid()) - node_cpu0;
            const worker::OffloadStats after = l.seq->stats();
            l.us.push_back(1e6 * (after.decode_seconds - before.decode_seconds));
            l.stall_s += after.stall_seconds - before.stall_seconds;
            l.verify_s += after.verify_seconds - before.verify_seconds;
            l.bytes += after.bytes_fetched - before.bytes_fetched;
            l.hits += after.pool_hits - before.pool_hits;
            l.misses += after.pool_misses - before.pool_misses;
            l.stalls += after.stalls - before.stalls;
            l.requests += after.fetch_requests - before.fetch_requests;
            l.heads += after.heads_fetched - before.heads_fetched;
            l.timed++;
          }
        }
      }
      for (Live& l : live) {
        const double n = static_cast<double>(l.timed);
        std::vector<double> sorted = l.us;
        std::sort(sorted.begin(), sorted.end());
        const double median = sorted[sorted.size() / 2];
        double mean = 0;
        for (double u : l.us) mean += u / n;
        const double stall = 1e6 * l.stall_s / n;
        const double bytes = static_cast<double>(l.bytes) / n;
        const double hit = l.hits + l.misses > 0 ? 100.0 * l.hits / (l.hits + l.misses) : 0.0;
        if (f.json) {
          rows->push_back({{"mode", std::string(worker::OffloadModeName(l.v.mode))},
                           {"transport", transport},
                           {"reuse", l.v.reuse},
                           {"context", ctx},
                           {"budget", plan.budget},
                           {"policy", policy},
                           {"us_per_token", median},
                           {"us_per_token_mean", mean},
                           {"stall_us_per_token", stall},
                           {"bytes_per_token", bytes},
                           {"verify_us_per_token", 1e6 * l.verify_s / n},
                           {"stalled_layers_per_token", l.stalls / n},
                           {"pool_hit_rate", hit / 100},
                           {"gets_per_token", l.requests / n},
                           {"heads_fetched_per_token", l.heads / n},
                           {"coalesce", l.v.coalesce},
                           {"speculative_blocks", l.v.speculative},
                           {"ucx_rndv_thresh", UcxRendezvousThreshold()},
                           {"cpu_us_per_token", 1e6 * l.cpu_s / n},
                           {"node_cpu_us_per_token", 1e6 * l.node_cpu_s / n},
                           {"steps", l.timed},
                           {"warmup", f.warmup},
                           {"greedy", greedy},
                           {"model", model_name},
                           {"ucx_transport", client->stats().ucx_transport},
                           {"loadavg", load},
                           {"context_source", real ? "prefill of " + f.text : std::string("random KV")},
                           {"occupancy", occupancy}});
        } else {
          std::printf("%-12s %-4s %-6s %8lld %7d %11.0f %11.0f %11.0f %12.0f %7.1f%% %8.0f  %s\n",
                      (std::string(worker::OffloadModeName(l.v.mode)) + (l.v.coalesce ? "" : "/1") +
                       (l.v.speculative != 0 ? (l.v.speculative > 0 ? "+" : "") + std::to_string(l.v.speculative) : ""))
                          .c_str(),
                      transport.c_str(), l.v.reuse ? "yes" : "no", static_cast<long long>(ctx), plan.budget, median,
                      mean, stall, bytes, hit, l.requests / n, load.c_str());
          std::fflush(stdout);
        }
      }
    }
  }
  return Status::OK();
}

// Compact-key calibration (issue 5): how well dense rows scored against the int8 key copy stand in
// for exact dense rows. A real prefill of `text`, then dense decode steps; at every step, layer and
// query head, the exact pooled row (block_sum) against the compact one: the exact attention mass on
// the compact row's top-k blocks (recovery) vs on the exact row's own top-k (the ceiling), and the
// total variation distance between the two rows.
class CalibrationProbe : public worker::DecodeAttentionHook {
 public:
  CalibrationProbe(const worker::ModelConfig& c, const worker::KvCache* kv, std::vector<int64_t> budgets)
      : c_(c), kv_(kv), budgets_(std::move(budgets)), sums_(budgets_.size() * 2, 0.0) {
    for (int l = 0; l < c.n_layers; ++l) copies_.emplace_back(c.n_heads, c.n_kv_heads, c.head_dim);
  }
  bool SelectBlocks(int32_t, int64_t, const float*, const worker::KvCache&,
                    std::vector<std::vector<int32_t>>*) override {
    return false;  // dense: the exact row
  }
  void OnAttention(int32_t layer, int64_t position, const float* queries, bool, const float*, const float* block_sum,
                   int64_t n_blocks) override {
    worker::CompactKeyCopy& copy = copies_[layer];
    copy.Append(*kv_, layer, position + 1);
    copy.DenseRow(queries, position + 1, &max_, &sum_);
    std::vector<int32_t> order(n_blocks);
    for (int32_t h = 0; h < c_.n_heads; ++h) {
      const float* exact = block_sum + h * n_blocks;
      const float* compact = sum_.data() + h * n_blocks;
      double tv = 0;
      for (int64_t b = 0; b < n_blocks; ++b) tv += std::fabs(exact[b] - compact[b]);
      tv_ += tv / 2;
      for (size_t i = 0; i < budgets_.size(); ++i) {
        const int64_t k = std::min<int64_t>(n_blocks, budgets_[i] / 16);
        for (int pass = 0; pass < 2; ++pass) {
          const float* rank = pass == 0 ? compact : exact;
          for (int32_t b = 0; b < n_blocks; ++b) order[b] = b;
          std::partial_sort(order.begin(), order.begin() + k, order.end(),
                            [&](int32_t a, int32_t b) { return rank[a] > rank[b]; });
          double mass = 0;
          for (int64_t j = 0; j < k; ++j) mass += exact[order[j]];
          sums_[i * 2 + pass] += mass;
        }
      }
      rows_++;
    }
  }
  nlohmann::json Report() const {
    nlohmann::json out = nlohmann::json::array();
    for (size_t i = 0; i < budgets_.size(); ++i) {
      out.push_back({{"budget", budgets_[i]},
                     {"recovery_compact_topk", sums_[i * 2] / rows_},
                     {"recovery_exact_topk", sums_[i * 2 + 1] / rows_},
                     {"ratio", sums_[i * 2] / sums_[i * 2 + 1]},
                     {"total_variation", tv_ / rows_},
                     {"rows", rows_},
                     {"compact_bytes_per_token_layer", copies_.empty() ? 0.0
                                                                       : static_cast<double>(copies_[0].bytes()) /
                                                                             std::max<int64_t>(1, copies_[0].tokens())},
                     {"kv_bytes_per_token_layer", static_cast<double>(kv_->layout().block_bytes()) / 16}});
    }
    return out;
  }

 private:
  const worker::ModelConfig& c_;
  const worker::KvCache* kv_;
  std::vector<int64_t> budgets_;
  std::vector<double> sums_;
  std::vector<worker::CompactKeyCopy> copies_;
  std::vector<float> max_, sum_;
  double tv_ = 0;
  int64_t rows_ = 0;
};

Status RunCalibrationProbe(const DecodeBenchFlags& f, const worker::Model& model, int64_t context) {
  if (model.tokenizer() == nullptr) return InvalidArgument("--calibration-text needs a model with a tokenizer");
  FS_ASSIGN_OR_RETURN(const std::string raw,
                      ReadWholeFile(f.calibration_text, "--calibration-text " + f.calibration_text));
  std::vector<worker::TokenId> tokens = model.tokenizer()->Encode(raw, false, false);
  if (static_cast<int64_t>(tokens.size()) < context + f.steps) {
    return InvalidArgument(f.calibration_text + " has " + std::to_string(tokens.size()) + " tokens; need " +
                           std::to_string(context + f.steps));
  }
  std::unique_ptr<worker::Backend> cpu = worker::NewCpuBackend(model);
  FS_ASSIGN_OR_RETURN(std::unique_ptr<worker::BackendSequence> seq, cpu->NewSequence());
  std::vector<worker::TokenId> prompt(tokens.begin(), tokens.begin() + context);
  std::vector<float> logits;
  FS_RETURN_IF_ERROR(seq->Prefill(prompt, &logits));
  CalibrationProbe probe(model.config(), seq->host_kv(), {256, 512, 1024, 2048});
  for (int s = 0; s < f.steps; ++s) {
    FS_RETURN_IF_ERROR(seq->Decode(tokens[context + s], &logits, &probe));  // teacher forcing
  }
  nlohmann::json report = probe.Report();
  for (auto& r : report) {
    r["context"] = context;
    r["steps"] = f.steps;
    r["model"] = model.source();
    r["text"] = f.calibration_text;
  }
  std::printf("%s\n", report.dump(2).c_str());
  return Status::OK();
}

// --modes with --models: each model at its context (paired), one node, one JSON list.
Status RunOffloadSuite(const DecodeBenchFlags& f) {
  const std::vector<std::string> models = SplitList(f.models);
  FS_ASSIGN_OR_RETURN(const std::vector<int64_t> contexts, ParseIntList(f.contexts, "--contexts", 1, 1 << 30));
  if (models.size() != contexts.size()) {
    return InvalidArgument("--models needs one --contexts entry per model (" + std::to_string(models.size()) + " vs " +
                           std::to_string(contexts.size()) + ")");
  }
  FS_ASSIGN_OR_RETURN(auto node, LocalNode::Start({"--ram-bytes", f.node_ram}));
  nlohmann::json rows = nlohmann::json::array();
  for (size_t i = 0; i < models.size(); ++i) {
    const int64_t ctx = contexts[i];
    std::unique_ptr<worker::Model> model;
    std::string name = models[i];
    if (models[i] == "synthetic-8b") {
      FS_ASSIGN_OR_RETURN(model, worker::MakeSyntheticModel(worker::SyntheticModelSpec::Llama31_8BGeometry(
                                     f.synthetic_layers, static_cast<int32_t>(ctx + OffloadSteps(f) + 1))));
      name = "synthetic-llama3.1-8b-geometry";
    } else {
      std::string path = models[i];
      if (path == "default") {
        FS_ASSIGN_OR_RETURN(path, worker::FindDefaultModel());
      }
      FS_ASSIGN_OR_RETURN(model, worker::Model::Open(path));
      name = path;
    }
    FS_RETURN_IF_ERROR(RunOffloadBench(f, *model, name, {ctx}, node.get(), &rows));
  }
  if (f.json) std::printf("%s\n", rows.dump(2).c_str());
  return Status::OK();
}

// llama.cpp's dense decode time per token on `model_path` at `context` (tools/reference/
// llama_decode_speed.py under `python`, which must have llama-cpp-python), with `threads` threads.
StatusOr<double> LlamaCppDecodeMs(const std::string& python, const std::string& model_path, int64_t context, int steps,
                                  int threads) {
  const std::string script = ExecutableDir() + "/../../tools/reference/llama_decode_speed.py";
  if (!std::ifstream(script)) return NotFound("llama.cpp speed script not found at " + script);
  const std::string cmd = "'" + python + "' '" + script + "' --model '" + model_path + "' --context " +
                          std::to_string(context) + " --steps " + std::to_string(steps) + " --threads " +
                          std::to_string(threads) + " 2>/dev/null";
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return Unavailable("cannot run " + cmd);
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  const int status = pclose(pipe);
  const int rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  const size_t line = out.rfind('{');
  if (rc != 0 || line == std::string::npos) {
    return Unavailable("llama.cpp speed script failed (exit " + std::to_string(rc) + "): " + cmd +
                       " (is llama-cpp-python installed for " + python + "? tools/reference/setup-venv.sh)");
  }
  nlohmann::json j = nlohmann::json::parse(out.substr(line), nullptr, false);
  if (j.is_discarded() || !j.contains("decode_ms_per_token"))
    return DataLoss("unexpected output of " + script + ": " + out);
  return j["decode_ms_per_token"].get<double>();
}

Status RunDecodeBench(DecodeBenchFlags f) {
  if (!f.modes.empty()) ApplyUcxRendezvousThreshold(f);
  if (f.serving.default_policy == "ap_refined") f.serving.default_policy = "ap";
  FS_RETURN_IF_ERROR(worker::FinishServingFlags(&f.serving));
  if (!f.modes.empty() && !f.models.empty()) return RunOffloadSuite(f);
  std::unique_ptr<worker::Model> model;
  FS_ASSIGN_OR_RETURN(const std::vector<int64_t> contexts, ParseIntList(f.contexts, "--contexts", 1, 1 << 30));
  int64_t max_context = 0;
  for (int64_t c : contexts) max_context = std::max(max_context, c);
  if (f.synthetic_8b) {
    FS_ASSIGN_OR_RETURN(
        model, worker::MakeSyntheticModel(worker::SyntheticModelSpec::Llama31_8BGeometry(
                   f.synthetic_layers, static_cast<int32_t>(max_context + std::max(f.steps, OffloadSteps(f)) + 1))));
  } else {
    std::string path = f.model;
    if (path.empty()) {
      FS_ASSIGN_OR_RETURN(path, worker::FindDefaultModel());
    }
    FS_ASSIGN_OR_RETURN(model, worker::Model::Open(path));
  }
  const worker::ModelConfig& c = model->config();
  if (!f.json) std::printf("# AttentionPredictor weights: %s\n", f.serving.weights_name.c_str());
  if (!f.calibration_text.empty()) return RunCalibrationProbe(f, *model, contexts.front());
  if (!f.modes.empty()) {
    std::vector<std::string> node_args = {"--ram-bytes", f.node_ram};
    const std::filesystem::path nvme_dir =
        std::filesystem::temp_directory_path() / ("foresight-decode-nvme-" + std::to_string(getpid()));
    if (!f.node_nvme.empty()) {
      node_args.insert(node_args.end(), {"--nvme-dir", nvme_dir.string(), "--nvme-bytes", f.node_nvme});
    }
    struct RemoveDir {
      std::filesystem::path dir;
      ~RemoveDir() {
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
      }
    } remove_nvme_dir{f.node_nvme.empty() ? std::filesystem::path() : nvme_dir};
    FS_ASSIGN_OR_RETURN(auto node, LocalNode::Start(node_args));
    nlohmann::json offload_rows = nlohmann::json::array();
    FS_RETURN_IF_ERROR(RunOffloadBench(f, *model, f.synthetic_8b ? "synthetic-llama3.1-8b-geometry" : model->source(),
                                       contexts, node.get(), &offload_rows));
    if (f.json) std::printf("%s\n", offload_rows.dump(2).c_str());
    return Status::OK();
  }
  nlohmann::json rows = nlohmann::json::array();
  if (!f.json) {
    std::printf("%-27s %8s %8s %10s %10s %10s %10s %12s\n", "policy", "context", "budget", "ms/token", "attn_ms",
                "pred_ms", "pred_share", "blocks/step");
  }
  std::unique_ptr<worker::Backend> cpu = worker::NewCpuBackend(*model);
  for (int64_t ctx : contexts) {
    if (c.max_context > 0 && ctx + f.steps > c.max_context) {
      return OutOfRange("context " + std::to_string(ctx) + " + steps exceeds the model's " +
                        std::to_string(c.max_context));
    }
    FS_ASSIGN_OR_RETURN(std::unique_ptr<worker::BackendSequence> seq, cpu->NewSequence());
    if (f.prefill) {
      std::vector<worker::TokenId> tokens(ctx);
      for (int64_t i = 0; i < ctx; ++i) tokens[i] = static_cast<worker::TokenId>((i * 7919 + 13) % c.vocab_size);
      FS_RETURN_IF_ERROR(seq->Prefill(tokens, nullptr));
    } else {
      FS_RETURN_IF_ERROR(seq->TEST_FillRandomKv(ctx, 17));
    }
    for (const std::string& name : SplitList(f.policies)) {
      seq->Rewind(ctx);
      seq->ResetStats();
      std::unique_ptr<worker::PolicyDecodeAttention> policy;
      FS_ASSIGN_OR_RETURN(const worker::ServingPlan plan,
                          ResolveBenchPolicy(f.serving, name, ctx, f.steps, c, /*kv_offloaded=*/false));
      if (plan.spec) {
        FS_ASSIGN_OR_RETURN(policy, worker::PolicyDecodeAttention::Create(c, *plan.spec, ctx, plan.attention));
        policy->PrepareKeys(*seq->host_kv());
        FS_RETURN_IF_ERROR(policy->FinishPrefill());
      }
      // What ran when it is not what the name says (ap at a context within its budget runs dense).
      const std::string shown = name == "dense" || plan.spec ? name : name + "->" + plan.policy;
      std::vector<float> logits;
      for (int s = 0; s < f.steps; ++s) {
        FS_RETURN_IF_ERROR(
            seq->Decode(static_cast<worker::TokenId>((s * 31 + 5) % c.vocab_size), &logits, policy.get()));
        if (policy != nullptr) FS_RETURN_IF_ERROR(policy->status());
      }
      const worker::SequenceStats& st = seq->stats();
      const double ms = 1e3 * st.decode_seconds / st.decode_tokens;
      const double attn = 1e3 * st.attention_seconds / st.decode_tokens;
      const double pred = policy != nullptr ? 1e3 * policy->predictor_seconds() / st.decode_tokens : 0.0;
      const double blocks = static_cast<double>(st.blocks_attended) / st.decode_tokens;
      // The policies run inside the attention call (selection before, observation after); lookahead
      // queries are scored before it.
      const double in_attention = policy != nullptr ? pred - 1e3 * policy->lookahead_seconds() / st.decode_tokens : 0.0;
      const double attn_only = std::max(0.0, attn - in_attention);
      if (f.json) {
        rows.push_back({{"policy", name},
                        {"ran", plan.policy},
                        {"context", ctx},
                        {"budget", plan.budget},
                        {"ms_per_token", ms},
                        {"attention_ms_per_token", attn_only},
                        {"predictor_ms_per_token", pred},
                        {"predictor_share", ms > 0 ? pred / ms : 0},
                        {"blocks_per_step", blocks},
                        {"model", f.synthetic_8b ? "synthetic-llama3.1-8b-geometry" : model->source()},
                        {"weights", plan.weights}});
      } else {
        std::printf("%-27s %8lld %8d %10.2f %10.2f %10.2f %9.1f%% %12.1f\n", shown.c_str(), static_cast<long long>(ctx),
                    plan.budget, ms, attn_only, pred, ms > 0 ? 100 * pred / ms : 0.0, blocks);
      }
      if (name == "dense" && !f.llama_cpp_python.empty() && !f.synthetic_8b) {
        // The same model, context and threads in llama.cpp, right after our dense rows.
        FS_ASSIGN_OR_RETURN(double llama_ms,
                            LlamaCppDecodeMs(f.llama_cpp_python, model->source(), ctx, f.steps, omp_get_max_threads()));
        if (f.json) {
          rows.push_back({{"policy", "llama.cpp-dense"},
                          {"context", ctx},
                          {"ms_per_token", llama_ms},
                          {"engine_over_llama_cpp", ms / llama_ms},
                          {"threads", omp_get_max_threads()},
                          {"model", model->source()}});
        } else {
          std::printf("%-27s %8lld %8s %10.2f %10s %10s %10s %12s   (engine dense / llama.cpp = %.2f)\n",
                      "llama.cpp (dense)", static_cast<long long>(ctx), "-", llama_ms, "-", "-", "-", "-",
                      ms / llama_ms);
        }
      }
    }
  }
  if (f.json) std::printf("%s\n", rows.dump(2).c_str());
  return Status::OK();
}

}  // namespace

void AddDecodeBench(CLI::App& app, int* exit_code) {
  auto f = std::make_shared<DecodeBenchFlags>();
  CLI::App* cmd = app.add_subcommand("decode", "Decode time per token: dense vs selection policies");
  cmd->add_option("--model", f->model, "GGUF file or Hugging Face folder (default: SmolLM2)");
  cmd->add_flag("--synthetic-8b", f->synthetic_8b, "Synthetic model with Llama-3.1-8B attention geometry (speed only)");
  cmd->add_option("--synthetic-layers", f->synthetic_layers, "Layers of the synthetic model");
  cmd->add_option("--contexts", f->contexts, "Comma-separated context lengths");
  cmd->add_option("--policies", f->policies,
                  "Comma-separated: dense, ap (AttentionPredictor as served: query-refined, compact calibration; "
                  "ap_refined is the same), attention_predictor (the published method: dense calibration steps), "
                  "quest, h2o, snapkv, streaming_llm");
  cmd->add_option("--steps", f->steps, "Decode steps timed per policy");
  f->serving_flags = worker::AddServingFlags(cmd, &f->serving);
  f->serving_flags.policy->description(
      "KV offload: the selection policy (h2o, snapkv, streaming_llm, attention_predictor (published), ap (as served; "
      "ap_refined is the same), quest)");
  f->serving_flags.query_refine->description(
      "ap: share of the kept blocks chosen by the step's query against the int8 key copy (attention_predictor is "
      "the published method, 0)");
  cmd->add_flag("--prefill", f->prefill, "Fill the context by a real dense prefill instead of random KV");
  cmd->add_flag("--json", f->json, "JSON rows");
  cmd->add_option(
      "--llama-cpp", f->llama_cpp_python,
      "Python with llama-cpp-python (e.g. .venv/bin/python): also time llama.cpp's dense decode of the same "
      "model, context and threads, right after the dense rows");
  cmd->add_option("--modes", f->modes,
                  "KV offload: comma-separated resident,on-demand,cross-layer,cross-token (starts a cache node)");
  cmd->add_option("--transport", f->transports, "KV offload: comma-separated UCX transports shm,tcp");
  cmd->add_flag("--no-reuse", f->no_reuse,
                "KV offload: also each offloaded mode moving its whole selected set every step");
  cmd->add_option("--ucx-rndv-thresh", f->ucx_rndv_thresh,
                  "KV offload: UCX_RNDV_THRESH for the bench's client and node unless set in the environment "
                  "(auto: UCX's own, 8 KiB over TCP here)");
  cmd->add_flag("--compare-coalescing", f->compare_coalescing,
                "KV offload: also each offloaded variant with one get per (block, KV head) (mode shown as MODE/1)");
  cmd->add_option("--speculative-blocks", f->speculative,
                  "KV offload, --policy ap: comma-separated blocks per KV head that cross-token prefetches beyond "
                  "its guess at the query's share (one cross-token variant each; -1: no guess, the CNN's share only)");
  cmd->add_option("--warmup", f->warmup, "KV offload: decode steps before timing");
  cmd->add_flag("--greedy", f->greedy,
                "KV offload with --text: decode the model's greedy continuation (each step's argmax, as foresight "
                "trace records) instead of fixed synthetic token ids");
  cmd->add_option("--margin", f->margin,
                  "KV offload: resident pool margin, blocks per (layer, KV head); -1: room for a KV head's union of "
                  "its query heads' selections (OffloadOptions::margin_blocks)");
  cmd->add_option("--chunk", f->chunk,
                  "KV offload: variants take turns of this many steps (the first of each untimed)");
  cmd->add_option("--text", f->text,
                  "KV offload: real context from this text (prefilled once, imported by every variant)");
  cmd->add_option("--node-ram", f->node_ram, "KV offload: the cache node's RAM tier");
  cmd->add_option("--node-nvme", f->node_nvme, "KV offload: the cache node's NVMe tier, in a temp dir (default: none)");
  cmd->add_option("--seed-copies", f->seed_copies,
                  "KV offload with --text: sequences of the context published before the variants run (each "
                  "row's \"occupancy\" reports the node's tiers after them; default 1)");
  cmd->add_option("--calibration-text", f->calibration_text,
                  "Measure compact-key calibration rows against exact ones on this text (first --contexts entry)");
  cmd->add_option("--models", f->models,
                  "KV offload: several models in one run (synthetic-8b, default, or a path), each at the --contexts "
                  "entry in the same position");
  cmd->callback([f, exit_code] {
    Status s = RunDecodeBench(*f);
    if (!s.ok()) std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
    *exit_code = s.ok() ? 0 : 1;
  });
}

}  // namespace foresight::bench
