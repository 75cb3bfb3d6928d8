// foresight-bench: benchmarks that print figures (tables, or --json rows).
#include "bench/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"foresight-bench: Foresight benchmarks"};
  app.require_subcommand(1);
  int exit_code = 0;
  foresight::bench::AddTiersBench(app, &exit_code);
  foresight::bench::AddPredictorBench(app, &exit_code);
  foresight::bench::AddDecodeBench(app, &exit_code);
  foresight::bench::AddLoadBench(app, &exit_code);
  foresight::bench::AddServeBench(app, &exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
