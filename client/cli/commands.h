// The cache client's command group of the `foresight` command line (cli/main.cc assembles it).
// A subcommand's callback stores its exit code in *exit_code (0 on success) and prints errors to
// stderr itself.
#pragma once

#include <CLI/CLI.hpp>

namespace foresight::cli {

// put/get/stat/ls/evict/health against a cache node (client/cli/cache_commands.cc).
void AddCacheCommands(CLI::App& app, int* exit_code);

}  // namespace foresight::cli
