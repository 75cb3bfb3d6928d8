// The cache client's command groups of the `foresight` command line (cli/main.cc assembles them).
// A subcommand's callback stores its exit code in *exit_code (0 on success) and prints errors to
// stderr itself.
#pragma once

#include <CLI/CLI.hpp>

namespace foresight::cli {

// put/get/stat/ls/evict/health against a cache node (client/cli/cache_commands.cc).
void AddCacheCommands(CLI::App& app, int* exit_code);
// cluster status|repair across the nodes listed in etcd (client/cli/cluster_commands.cc).
void AddClusterCommands(CLI::App& app, int* exit_code);

}  // namespace foresight::cli
