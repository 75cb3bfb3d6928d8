// Helpers shared by the command groups of the `foresight` command line (each module's cli/).
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace foresight::cli {

// Prints "foresight: <message> [<CODE>]" to stderr; returns the exit code 1.
int Fail(const Status& s);

// A block's bytes to FILE, or to stdout for "-".
Status WriteOutput(const std::string& file, std::string_view data);

}  // namespace foresight::cli
