// `foresight-bench predictor`: what the AttentionPredictor costs per decode step, per layer of 32
// query heads, at 256 to 8192 key blocks (4K to 128K tokens):
//   full_us         the CNN recomputed over all 64 history rows (RunCnnBatch)
//   incremental_us  push one row into each head's history and update the CNN (IncrementalCnn)
//   select_us       top-k of the scores (the budget's blocks) plus sink and local, per head
// single-threaded and with all cores (heads spread over OpenMP threads). Histories hold random
// attention-like rows (mostly small values, a few large): the kernels' cost does not depend on
// the values.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bench/commands.h"
#include "predictor/attention_history.h"
#include "predictor/block_ranking.h"
#include "predictor/cnn_cpu.h"
#include "predictor/cnn_weights.h"
#include "predictor/incremental_cnn.h"

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
};

std::vector<int64_t> ParseList(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(std::stoll(item));
  }
  return out;
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

// Mean microseconds per call of `fn`, repeated until min_seconds have passed.
template <typename Fn>
double TimeMicros(double min_seconds, Fn fn) {
  int reps = 0;
  const auto t0 = Clock::now();
  double elapsed = 0.0;
  do {
    fn();
    ++reps;
    elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  } while (elapsed < min_seconds);
  return elapsed * 1e6 / reps;
}

int RunPredictorBench(const PredictorBenchArgs& a) {
  std::shared_ptr<const CnnWeights> weights;
  if (!a.weights.empty()) {
    auto w = CnnWeights::Load(a.weights);
    if (!w.ok()) {
      std::fprintf(stderr, "predictor bench: %s\n", w.status().ToString().c_str());
      return 1;
    }
    weights = *w;
  } else {
    weights = CnnWeights::Random(1);
  }
  std::vector<int64_t> thread_counts =
      a.threads.empty() ? std::vector<int64_t>{1, omp_get_num_procs()} : ParseList(a.threads);
  thread_counts.erase(std::unique(thread_counts.begin(), thread_counts.end()), thread_counts.end());
  const std::vector<int64_t> block_counts = ParseList(a.blocks);
  if (!a.json) {
    std::printf("predictor cost per decode step, %d heads, budget %lld tokens (sink 64, local 64)\n",
                a.heads, static_cast<long long>(a.budget));
    std::printf("%7s %7s %12s %15s %10s %9s\n", "blocks", "threads", "full_us", "incremental_us",
                "select_us", "speedup");
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
      const double full_us = TimeMicros(a.min_seconds, [&] { RunCnnBatch(*weights, images, outs, t); });
      // Incremental: push a row, update; one head per thread.
      std::vector<std::unique_ptr<IncrementalCnn>> cnns;
      for (int h = 0; h < a.heads; ++h) {
        cnns.push_back(std::make_unique<IncrementalCnn>(weights));
        cnns[h]->Reset(histories[h].Image(0, blocks), scores[h].data());
      }
      const double incremental_us = TimeMicros(a.min_seconds, [&] {
#pragma omp parallel for schedule(dynamic, 1) num_threads(t) if (t > 1)
        for (int h = 0; h < a.heads; ++h) {
          histories[h].Push(new_rows[h]);
          cnns[h]->Advance(histories[h].Image(0, blocks), scores[h].data());
        }
      });
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
        std::printf("{\"bench\": \"predictor\", \"blocks\": %lld, \"heads\": %d, \"threads\": %d, "
                    "\"full_us\": %.1f, \"incremental_us\": %.1f, \"select_us\": %.1f, "
                    "\"speedup\": %.2f}\n",
                    static_cast<long long>(blocks), a.heads, t, full_us, incremental_us, select_us, speedup);
      } else {
        std::printf("%7lld %7d %12.0f %15.0f %10.1f %8.1fx\n", static_cast<long long>(blocks), t,
                    full_us, incremental_us, select_us, speedup);
      }
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace

void AddPredictorBench(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<PredictorBenchArgs>();
  CLI::App* cmd = app.add_subcommand("predictor", "AttentionPredictor cost per decode step: full vs incremental CNN, top-k");
  cmd->add_option("--blocks", args->blocks, "key block counts (16 tokens each), comma-separated");
  cmd->add_option("--heads", args->heads, "query heads per step (a layer)");
  cmd->add_option("--threads", args->threads, "thread counts, comma-separated (default: 1 and all cores)");
  cmd->add_option("--budget", args->budget, "token budget for the selection timing");
  cmd->add_option("--min-seconds", args->min_seconds, "minimum time per measurement");
  cmd->add_option("--weights", args->weights, "CNN weights (default: random; the cost does not depend on them)");
  cmd->add_flag("--json", args->json, "one JSON object per row");
  cmd->callback([args, exit_code] { *exit_code = RunPredictorBench(*args); });
}

}  // namespace foresight::bench
