#include "worker/cpu_features.h"

#include <cstdlib>

namespace foresight::worker {

bool UseAvx512() {
  static const bool yes = [] {
    const char* off = std::getenv("FORESIGHT_NO_AVX512");
    if (off != nullptr && *off != '\0' && *off != '0') return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vnni");
  }();
  return yes;
}

}  // namespace foresight::worker
