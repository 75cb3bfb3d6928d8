#include "bench/commands.h"

namespace foresight::bench {
void AddDecodeBench(CLI::App& app, int* exit_code) {}
}  // namespace foresight::bench
