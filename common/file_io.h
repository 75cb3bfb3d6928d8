// Whole-file reads and writes for what users point the programs at (block contents, prompts,
// token and certificate files): every failure names the file, or the flag that gave it, and the
// operating system's reason; a directory or a missing path is an error, never an exception.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace foresight {

// The whole file. `what` names it in errors ("--token-file /x"); empty: the path.
StatusOr<std::string> ReadWholeFile(const std::string& path, const std::string& what = "");

// Replaces `path` with `data`.
Status WriteWholeFile(const std::string& path, std::string_view data);

// A secret (token, key, certificate): the file without trailing newlines or spaces; an empty one
// is an error. `flag` names it in errors ("--token-file").
StatusOr<std::string> ReadSecretFile(const std::string& path, const std::string& flag);

}  // namespace foresight
