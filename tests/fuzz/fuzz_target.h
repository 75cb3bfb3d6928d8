// A fuzz target: libFuzzer's entry point plus the well-formed inputs it starts from.
//
// Each tests/fuzz/<name>_fuzz.cc defines both. Built with clang and -DFORESIGHT_FUZZ=ON, a target
// links libFuzzer (with ASan and UBSan) and is run by hand (docs/fuzzing.md). In every other
// build it links replay_main.cc and runs under CTest: its seeds, the files of its corpus folder
// (tests/fuzz/corpus/<name>/, inputs that once failed), and a fixed number of deterministic
// mutations of the seeds.
//
// A target reports a bug by crashing: a sanitizer report, an uncaught exception, or FUZZ_CHECK
// (a broken property, such as a decode that does not round-trip).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace foresight::fuzz {

// Well-formed inputs for this target (a corpus to mutate from).
std::vector<std::string> Seeds();

// Writes `bytes` to a file private to this process (in /dev/shm when it exists) and returns its
// path; the same path each call, so a target that parses files rewrites one file per input.
std::string WriteScratchFile(const std::string& bytes, const std::string& suffix);

}  // namespace foresight::fuzz

#define FUZZ_CHECK(cond, what)                                                      \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "FUZZ_CHECK failed at %s:%d: %s (%s)\n", __FILE__, __LINE__, \
                   #cond, what);                                                    \
      std::abort();                                                                 \
    }                                                                               \
  } while (0)
