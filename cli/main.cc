// foresight: the operator's command line (cache node, predictor tools, generation).
#include <cstdio>

#include "client/cli/commands.h"
#include "cluster/cli/cluster_commands.h"
#include "planner/cli/plan_commands.h"
#include "predictor/cli/predictor_commands.h"
#include "worker/cli/worker_commands.h"

int main(int argc, char** argv) {
  CLI::App app{"foresight: KV cache service for long-context LLM inference"};
  app.require_subcommand(1);
  int exit_code = 0;
  foresight::cli::AddCacheCommands(app, &exit_code);
  foresight::cli::AddPredictorCommands(app, &exit_code);
  foresight::cli::AddWorkerCommands(app, &exit_code);
  foresight::cli::AddClusterCommands(app, &exit_code);
  foresight::cli::AddPlanCommands(app, &exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
