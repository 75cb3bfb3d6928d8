#include "common/units.h"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace foresight {

StatusOr<uint64_t> ParseByteSize(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
  if (i == 0) return InvalidArgument("bad size '" + text + "': expected a number with an optional unit, e.g. 512MiB");
  const std::string number = text.substr(0, i);
  std::string unit = text.substr(i);
  while (!unit.empty() && unit.front() == ' ') unit.erase(unit.begin());
  char* end = nullptr;
  const double value = std::strtod(number.c_str(), &end);
  if (end != number.c_str() + number.size())
    return InvalidArgument("bad size '" + text + "': '" + number + "' is not a number");
  std::string u;
  for (char c : unit) u.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  uint64_t scale = 0;
  if (u.empty() || u == "b")
    scale = 1;
  else if (u == "k" || u == "kib")
    scale = 1ull << 10;
  else if (u == "m" || u == "mib")
    scale = 1ull << 20;
  else if (u == "g" || u == "gib")
    scale = 1ull << 30;
  else if (u == "t" || u == "tib")
    scale = 1ull << 40;
  else if (u == "p" || u == "pib")
    scale = 1ull << 50;
  else if (u == "e" || u == "eib")
    scale = 1ull << 60;
  else if (u == "kb")
    scale = 1000;
  else if (u == "mb")
    scale = 1000 * 1000;
  else if (u == "gb")
    scale = 1000 * 1000 * 1000;
  else if (u == "tb")
    scale = 1000ull * 1000 * 1000 * 1000;
  else if (u == "pb")
    scale = 1000ull * 1000 * 1000 * 1000 * 1000;
  else if (u == "eb")
    scale = 1000ull * 1000 * 1000 * 1000 * 1000 * 1000;
  else
    return InvalidArgument("bad size '" + text + "': unknown unit '" + unit +
                           "' (use B, KiB, MiB, GiB, TiB, PiB, EiB, KB, MB, GB, TB, PB or EB)");
  if (number.find('.') == std::string::npos) {
    // Whole numbers exactly (a double would round above 2^53).
    errno = 0;
    const unsigned long long whole = std::strtoull(number.c_str(), nullptr, 10);
    uint64_t bytes = 0;
    if (errno == ERANGE || __builtin_mul_overflow(static_cast<uint64_t>(whole), scale, &bytes))
      return OutOfRange("size '" + text + "' is too large");
    return bytes;
  }
  const double bytes = value * static_cast<double>(scale);
  if (bytes > 1.8e19) return OutOfRange("size '" + text + "' is too large");
  if (bytes != std::floor(bytes)) return InvalidArgument("size '" + text + "' is not a whole number of bytes");
  return static_cast<uint64_t>(bytes);
}

std::string FormatByteSize(uint64_t bytes) {
  // Up to EiB, so that the number stays under 1024 (2^64 bytes is 16EiB) and "%.4g" never
  // switches to an exponent, which ParseByteSize would not read back.
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 6) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0)
    std::snprintf(buf, sizeof(buf), "%lluB", static_cast<unsigned long long>(bytes));
  else
    std::snprintf(buf, sizeof(buf), "%.4g%s", v, kUnits[u]);
  return buf;
}

StatusOr<std::vector<int64_t>> ParseIntList(const std::string& text, const std::string& what, int64_t min,
                                            int64_t max) {
  std::vector<int64_t> out;
  size_t begin = 0;
  for (;;) {
    const size_t comma = text.find(',', begin);
    const std::string item = text.substr(begin, comma == std::string::npos ? std::string::npos : comma - begin);
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || errno == ERANGE || v < min || v > max) {
      return InvalidArgument(what + ": \"" + item + "\" is not a whole number from " + std::to_string(min) + " to " +
                             std::to_string(max));
    }
    out.push_back(v);
    if (comma == std::string::npos) break;
    begin = comma + 1;
  }
  return out;
}

}  // namespace foresight
