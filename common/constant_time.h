// Comparison of secrets (tokens) in time that does not depend on where they first differ.
//
// Thread-safety: a pure function.
#pragma once

#include <cstddef>
#include <string_view>

namespace foresight {

// Whether a and b hold the same bytes. Reads every byte of `expected` whatever `given` holds, so the
// time taken reveals at most the secret's length.
inline bool ConstantTimeEquals(std::string_view expected, std::string_view given) {
  unsigned char diff = expected.size() == given.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    const unsigned char g = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
    diff |= static_cast<unsigned char>(static_cast<unsigned char>(expected[i]) ^ g);
  }
  return diff == 0;
}

}  // namespace foresight
