// Helpers shared by the `foresight` command groups of client/cli: error printing and the files a
// command reads or writes (block contents, the token file), with the operating system's reason
// in every error.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace foresight::cli {

// Prints "foresight: <message> [<CODE>]" to stderr; returns the exit code 1.
int Fail(const Status& s);

// The whole file. `what` names it in errors ("--token-file /x"); defaults to the path.
StatusOr<std::string> ReadWholeFile(const std::string& path, const std::string& what = "");

// Replaces `path` with `data`; "-" writes to stdout.
Status WriteWholeFile(const std::string& path, std::string_view data);

// A token file's contents without trailing newlines or spaces.
StatusOr<std::string> ReadTokenFile(const std::string& path);

}  // namespace foresight::cli
