// `foresight-bench` is assembled from benchmark groups, each owned by its module, in the manner of
// the `foresight` command line (cli/main.cc). A subcommand's callback stores its exit code in *exit_code.
#pragma once

#include <CLI/CLI.hpp>

namespace foresight::bench {

void AddTiersBench(CLI::App& app, int* exit_code);      // bench/tiers_bench.cc
void AddPredictorBench(CLI::App& app, int* exit_code);  // bench/predictor_bench.cc
void AddDecodeBench(CLI::App& app, int* exit_code);     // bench/decode_bench.cc
void AddLoadBench(CLI::App& app, int* exit_code);       // bench/load_bench.cc
void AddServeBench(CLI::App& app, int* exit_code);      // bench/serve_bench.cc

}  // namespace foresight::bench
