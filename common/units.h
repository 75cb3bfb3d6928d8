// Parsing flags and config: byte sizes ("512MiB", "8GiB", "1.5GB", "4096") and lists of whole
// numbers ("256,512,1024").
// Binary suffixes (KiB, MiB, GiB, TiB; also K, M, G, T) are powers of 1024; decimal ones (KB, MB,
// GB, TB) are powers of 1000.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace foresight {

StatusOr<uint64_t> ParseByteSize(const std::string& text);
// 1536 -> "1.5KiB"
std::string FormatByteSize(uint64_t bytes);

// A comma-separated list of whole numbers, each in [min, max], at least one. Errors name `what`
// (the flag) and the offending item: --budget: "12x" is not a whole number from 1 to 2147483647.
StatusOr<std::vector<int64_t>> ParseIntList(const std::string& text, const std::string& what, int64_t min, int64_t max);

}  // namespace foresight
