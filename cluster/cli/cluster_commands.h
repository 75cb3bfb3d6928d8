// The cluster's command group of the `foresight` command line (cli/main.cc assembles it).
// A subcommand's callback stores its exit code in *exit_code (0 on success) and prints errors to
// stderr itself.
#pragma once

#include <CLI/CLI.hpp>

namespace foresight::cli {

// cluster status|repair across the nodes listed in etcd.
void AddClusterCommands(CLI::App& app, int* exit_code);

}  // namespace foresight::cli
