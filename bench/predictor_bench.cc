// `foresight-bench predictor`: what the AttentionPredictor costs per decode step, per layer of 32
// query heads, at 256 to 8192 key blocks (4K to 128K tokens):
//   full_us         the CNN recomputed over all 64 history rows (RunCnnBatch)
//   incremental_us  push one row into each head's history and update the CNN (IncrementalCnn)
//   select_us       top-k of the scores (the budget's blocks) plus sink and local, per head
// single-threaded and with all cores (heads spread over OpenMP threads). Histories hold random
// attention-like rows (mostly small values, a few large): the kernels' cost does not depend on
// the values.
#include <omp.h>

#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bench/commands.h"
#include "common/units.h"
#include "predictor/attention_history.h"
#include "predictor/block_ranking.h"
#include "predictor/cnn_cpu.h"
#include "predictor/cnn_weights.h"
#include "predictor/incremental_cnn.h"
#include "predictor/selection_policy.h"
#include "predictor/shipped_weights.h"

namespace foresight::bench {
namespace {

using namespace foresight::predictor;
using Clock = std::chrono::steady_clock;

struct PredictorBenchArgs {
  std::string blocks = "256,512,1024,2048,4096,8192";
  int heads = 32;
  std::string threads;  // default "1,<all cores>"
  int64_t budget = 2048;
  double min_seconds = 0.3;  // per measurement, at least one repetition
  std::string weights;
  bool json = false;
  bool variants = false;
  int kv_heads = 8;
  float prune_threshold = 1e-3f;
};

// --threads (default: 1 and every core) and --blocks as numbers; false after printing the error.
bool ParseCounts(const PredictorBenchArgs& a, std::vector<int64_t>* threads, std::vector<int64_t>* blocks) {
  auto t =
      ParseIntList(a.threads.empty() ? "1," + std::to_string(omp_get_num_procs()) : a.threads, "--threads", 1, 4096);
  auto b = ParseIntList(a.blocks, "--blocks", 1, 1 << 24);
  for (const Status& s : {t.status(), b.status()}) {
    if (!s.ok()) {
      std::fprintf(stderr, "predictor bench: %s\n", s.message().c_str());
      return false;
    }
  }
  *threads = *t;
  *blocks = *b;
  return true;
}

std::vector<float> RandomRow(std::mt19937& rng, int64_t columns) {
  std::vector<float> row(columns);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  for (auto& v : row) {
    const float r = u(rng);
    v = r < 0.95f ? 0.001f * r : r;
  }
  return row;
}

double ProcessCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Fastest wall-clock microseconds of one call of `fn`, over at least 3 calls and min_seconds
// (the minimum, because on a shared machine the slow calls are the ones that waited for a core).
// When `cpu_us` is given it receives the mean process CPU time per call (all threads).
// With `mean`, the wall-clock mean over at least `min_reps` calls instead (for work that differs
// from call to call, such as a prediction reused for k steps).
template <typename Fn>
double TimeMicros(double min_seconds, Fn fn, double* cpu_us = nullptr, bool mean = false, int min_reps = 3) {
  int reps = 0;
  const auto t0 = Clock::now();
  const double c0 = ProcessCpuSeconds();
  double best = 1e300;
  do {
    const auto t = Clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t).count());
    ++reps;
  } while (reps < min_reps || std::chrono::duration<double>(Clock::now() - t0).count() < min_seconds);
  if (cpu_us) *cpu_us = (ProcessCpuSeconds() - c0) * 1e6 / reps;
  if (mean) return std::chrono::duration<double>(Clock::now() - t0).count() * 1e6 / reps;
  return best * 1e6;
}

// AttentionPredictor policy per decode step (Observe the step's row, Select the next step's blocks)
// for the exact method and each cost-reduction option, one layer of `heads` query heads.
int RunVariantBench(const PredictorBenchArgs& a, std::shared_ptr<const CnnWeights> weights) {
  struct Variant {
    const char* name;
    bool per_kv_head;
    int reuse;
    float prune;
    bool full;
  };
  const Variant variants[] = {
      {"exact_incremental", false, 1, 0.0f, false}, {"exact_full", false, 1, 0.0f, true},
      {"per_kv_head", true, 1, 0.0f, false},        {"reuse4", false, 4, 0.0f, false},
      {"reuse16", false, 16, 0.0f, false},          {"prune", false, 1, a.prune_threshold, false}};
  std::vector<int64_t> thread_counts, block_counts;
  if (!ParseCounts(a, &thread_counts, &block_counts)) return 1;
  if (!a.json) {
    std::printf("AttentionPredictor policy per decode step (Observe + Select), %d query / %d KV heads\n", a.heads,
                a.kv_heads);
    std::printf("%-18s %7s %7s %12s %14s\n", "variant", "blocks", "threads", "policy_us", "policy_cpu_us");
  }
  std::mt19937 rng(11);
  const LayerGeometry geometry{a.heads, a.kv_heads, 128};
  for (int64_t blocks : block_counts) {
    const int64_t prompt = blocks * 16 - 8;
    const int64_t nb = (prompt + 15) / 16;
    std::vector<float> prefill_rows;
    for (int h = 0; h < a.heads * kCnnRows; ++h) {
      auto row = RandomRow(rng, nb);
      prefill_rows.insert(prefill_rows.end(), row.begin(), row.end());
    }
    std::vector<std::vector<float>> step_rows;
    for (int i = 0; i < 4; ++i) {
      std::vector<float> rows;
      for (int h = 0; h < a.heads; ++h) {
        auto row = RandomRow(rng, nb);
        rows.insert(rows.end(), row.begin(), row.end());
      }
      step_rows.push_back(std::move(rows));
    }
    for (int64_t threads : thread_counts) {
      for (const Variant& v : variants) {
        PolicySpec spec;
        spec.kind = PolicyKind::kAttentionPredictor;
        spec.budget.budget_tokens = a.budget;
        spec.weights = weights;
        spec.predict_per_kv_head = v.per_kv_head;
        spec.reuse_steps = v.reuse;
        spec.prune_threshold = v.prune;
        spec.full_cnn = v.full;
        spec.threads = static_cast<int>(threads);
        auto policy = MakeSelectionPolicy(spec, geometry, 0);
        if (!policy.ok()) {
          std::fprintf(stderr, "predictor bench: %s\n", policy.status().ToString().c_str());
          return 1;
        }
        PrefillObservation prefill{.prompt_tokens = prompt,
                                   .rows = kCnnRows,
                                   .block_max = prefill_rows,
                                   .block_sum = prefill_rows,
                                   .block_sum_total = {}};
        if (Status s = (*policy)->ObservePrefill(prefill); !s.ok()) {
          std::fprintf(stderr, "predictor bench: %s\n", s.ToString().c_str());
          return 1;
        }
        // The key length stays within one block so every step costs the same.
        BlockSelection selection;
        int step = 0;
        Status failed;
        double cpu_us = 0.0;
        const double us = TimeMicros(
            a.min_seconds,
            [&] {
              AttentionObservation obs{.key_tokens = prompt + 1,
                                       .dense = false,
                                       .block_max = step_rows[step % step_rows.size()],
                                       .block_sum = {}};
              Status s = (*policy)->Observe(obs);
              StepInputs in;
              in.key_tokens = prompt + 2;
              if (s.ok()) s = (*policy)->Select(in, &selection);
              if (!s.ok()) failed = s;
              ++step;
            },
            &cpu_us, /*mean=*/true, /*min_reps=*/std::max(3, 2 * v.reuse));
        if (!failed.ok()) {
          std::fprintf(stderr, "predictor bench: %s\n", failed.ToString().c_str());
          return 1;
        }
        if (a.json) {
          std::printf(
              "{\"bench\": \"predictor_variants\", \"variant\": \"%s\", \"blocks\": %lld, "
              "\"heads\": %d, \"kv_heads\": %d, \"threads\": %d, \"policy_us\": %.1f, \"policy_cpu_us\": %.1f}\n",
              v.name, static_cast<long long>(blocks), a.heads, a.kv_heads, static_cast<int>(threads), us, cpu_us);
        } else {
          std::printf("%-18s %7lld %7d %12.0f %14.0f\n", v.name, static_cast<long long>(blocks),
                      static_cast<int>(threads), us, cpu_us);
        }
        std::fflush(stdout);
      }
    }
  }
  return 0;
}

int RunPredictorBench(const PredictorBenchArgs& a) {
  auto w = LoadCnnWeightsOrShipped(a.weights);
  if (!w.ok()) {
    std::fprintf(stderr, "predictor bench: %s\n", w.status().ToString().c_str());
    return 1;
  }
  const std::shared_ptr<const CnnWeights> weights = *w;
  if (!a.json) std::printf("AttentionPredictor weights: %s\n", CnnWeightsName(a.weights).c_str());
  if (a.variants) return RunVariantBench(a, weights);
  std::vector<int64_t> thread_counts, block_counts;
  if (!ParseCounts(a, &thread_counts, &block_counts)) return 1;
  thread_counts.erase(std::unique(thread_counts.begin(), thread_counts.end()), thread_counts.end());
  if (!a.json) {
    std::printf("predictor cost per decode step, %d heads, budget %lld tokens (sink 64, local 64)\n", a.heads,
                static_cast<long long>(a.budget));
    std::printf("%7s %7s %12s %15s %10s %9s %12s %15s\n", "blocks", "threads", "full_us", "incremental_us", "select_us",
                "speedup", "full_cpu_us", "incremental_cpu_us");
  }
  std::mt19937 rng(7);
  for (int64_t blocks : block_counts) {
    // One history per head, already full (64 rows), and the CNN window = every column.
    std::vector<AttentionHistory> histories(a.heads);
    std::vector<std::vector<float>> new_rows(a.heads);
    for (int h = 0; h < a.heads; ++h) {
      std::vector<float> rows;
      for (int r = 0; r < kCnnRows; ++r) {
        auto row = RandomRow(rng, blocks);
        rows.insert(rows.end(), row.begin(), row.end());
      }
      histories[h].Reset(rows, kCnnRows, blocks);
      new_rows[h] = RandomRow(rng, blocks);
    }
    std::vector<std::vector<float>> scores(a.heads, std::vector<float>(blocks));
    for (int64_t threads : thread_counts) {
      const int t = static_cast<int>(threads);
      // Full: the whole CNN for every head.
      std::vector<HistoryImage> images;
      std::vector<float*> outs;
      for (int h = 0; h < a.heads; ++h) {
        images.push_back(histories[h].Image(0, blocks));
        outs.push_back(scores[h].data());
      }
      double full_cpu_us = 0.0, incremental_cpu_us = 0.0;
      const double full_us = TimeMicros(
          a.min_seconds, [&] { RunCnnBatch(*weights, images, outs, t); }, &full_cpu_us);
      // Incremental: push a row, update; one head per thread.
      std::vector<std::unique_ptr<IncrementalCnn>> cnns;
      for (int h = 0; h < a.heads; ++h) {
        cnns.push_back(std::make_unique<IncrementalCnn>(weights));
        cnns[h]->Reset(histories[h].Image(0, blocks), scores[h].data());
      }
      const double incremental_us = TimeMicros(
          a.min_seconds,
          [&] {
#pragma omp parallel for schedule(dynamic, 1) num_threads(t) if (t > 1)
            for (int h = 0; h < a.heads; ++h) {
              histories[h].Push(new_rows[h]);
              cnns[h]->Advance(histories[h].Image(0, blocks), scores[h].data());
            }
          },
          &incremental_cpu_us);
      // Selection: top-k of the candidates plus sink and local, per head.
      SelectionBudget budget;
      budget.budget_tokens = a.budget;
      const CandidateWindow window = CandidateWindow::For(blocks * 16, budget);
      std::vector<std::vector<int32_t>> selected(a.heads);
      const double select_us = TimeMicros(a.min_seconds, [&] {
#pragma omp parallel for schedule(static) num_threads(t) if (t > 1)
        for (int h = 0; h < a.heads; ++h) {
          SelectTopBlocks(std::span<const float>(scores[h]).subspan(window.candidate_begin(), window.num_candidates()),
                          window, &selected[h]);
        }
      });
      const double speedup = full_us / incremental_us;
      if (a.json) {
        std::printf(
            "{\"bench\": \"predictor\", \"blocks\": %lld, \"heads\": %d, \"threads\": %d, "
            "\"full_us\": %.1f, \"incremental_us\": %.1f, \"select_us\": %.1f, "
            "\"speedup\": %.2f, \"full_cpu_us\": %.1f, \"incremental_cpu_us\": %.1f}\n",
            static_cast<long long>(blocks), a.heads, t, full_us, incremental_us, select_us, speedup, full_cpu_us,
            incremental_cpu_us);
      } else {
        std::printf("%7lld %7d %12.0f %15.0f %10.1f %8.1fx %12.0f %15.0f\n", static_cast<long long>(blocks), t, full_us,
                    incremental_us, select_us, speedup, full_cpu_us, incremental_cpu_us);
      }
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace

void AddPredictorBench(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<PredictorBenchArgs>();
  CLI::App* cmd =
      app.add_subcommand("predictor", "AttentionPredictor cost per decode step: full vs incremental CNN, top-k");
  cmd->add_option("--blocks", args->blocks, "key block counts (16 tokens each), comma-separated");
  cmd->add_option("--heads", args->heads, "query heads per step (a layer)");
  cmd->add_option("--threads", args->threads, "thread counts, comma-separated (default: 1 and all cores)");
  cmd->add_option("--budget", args->budget, "token budget for the selection timing");
  cmd->add_option("--min-seconds", args->min_seconds, "minimum time per measurement");
  cmd->add_option("--weights", args->weights,
                  "CNN weights, a safetensors file (default: the shipped foresight-smollm2 weights)");
  cmd->add_flag("--json", args->json, "one JSON object per row");
  cmd->add_flag("--variants", args->variants,
                "time the AttentionPredictor policy per step: exact (incremental, full) and the "
                "cost-reduction options (per KV head, reuse, pruning)");
  cmd->add_option("--kv-heads", args->kv_heads, "KV heads for --variants");
  cmd->add_option("--prune-threshold", args->prune_threshold, "receptive-field threshold for --variants");
  cmd->callback([args, exit_code] { *exit_code = RunPredictorBench(*args); });
}

}  // namespace foresight::bench
