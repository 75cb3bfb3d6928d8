// The `foresight` command line is assembled from command groups, each owned by its module.
// A group adds subcommands to the root app; a subcommand's callback stores its exit code in
// *exit_code (0 on success) and prints errors to stderr itself.
#pragma once

#include <CLI/CLI.hpp>

namespace foresight::cli {

// put/get/stat/ls/evict/health against a cache node (client/cli/cache_commands.cc).
void AddCacheCommands(CLI::App& app, int* exit_code);
// `predictor cnn|eval` (predictor/cli/predictor_commands.cc).
void AddPredictorCommands(CLI::App& app, int* exit_code);
// generate/trace/eval quality (worker/cli/worker_commands.cc).
void AddWorkerCommands(CLI::App& app, int* exit_code);
// cluster status|repair across the nodes listed in etcd (client/cli/cluster_commands.cc).
void AddClusterCommands(CLI::App& app, int* exit_code);

}  // namespace foresight::cli
