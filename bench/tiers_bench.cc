#include "bench/commands.h"

namespace foresight::bench {
void AddTiersBench(CLI::App& app, int* exit_code) {}
}  // namespace foresight::bench
