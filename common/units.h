// Parsing and printing byte sizes for flags and config: "512MiB", "8GiB", "1.5GB", "4096".
// Binary suffixes (KiB, MiB, GiB, TiB; also K, M, G, T) are powers of 1024; decimal ones (KB, MB,
// GB, TB) are powers of 1000.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace foresight {

StatusOr<uint64_t> ParseByteSize(const std::string& text);
// 1536 -> "1.5KiB"
std::string FormatByteSize(uint64_t bytes);

}  // namespace foresight
