// The capacity planner's command group of the `foresight` command line (cli/main.cc assembles it).
// A subcommand's callback stores its exit code in *exit_code (0 on success) and prints errors to
// stderr itself.
#pragma once

#include <CLI/CLI.hpp>

namespace foresight::cli {

// `plan`: a fleet plan from a machine profile, a model and a workload (docs/capacity.md).
// `plan-churn`: re-derive the planner's churn table from recorded traces.
void AddPlanCommands(CLI::App& app, int* exit_code);

}  // namespace foresight::cli
