// Token ids for engine tests on synthetic models: `n` byte tokens (ids below 256, which every
// synthetic vocabulary has), pseudo-random but the same on every run.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "worker/tokenizer.h"

namespace foresight::worker::testing {

inline std::vector<TokenId> TestTokens(int64_t n) {
  std::mt19937 rng(3);
  std::vector<TokenId> t(static_cast<size_t>(n));
  for (TokenId& x : t) x = static_cast<TokenId>(rng() % 256);
  return t;
}

}  // namespace foresight::worker::testing
