#include "bench/commands.h"

namespace foresight::bench {
void AddPredictorBench(CLI::App& app, int* exit_code) {}
}  // namespace foresight::bench
