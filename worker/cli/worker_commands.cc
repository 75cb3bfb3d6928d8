#include "client/cli/commands.h"

namespace foresight::cli {
void AddWorkerCommands(CLI::App& app, int* exit_code) {}
}  // namespace foresight::cli
