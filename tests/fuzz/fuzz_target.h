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

// Reads a structured input a byte at a time: the fuzzer's bytes choose calls and their fields.
// Past the end it reads zeros, so every prefix of an input is itself a valid input.
class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size) : p_(data), end_(data + size) {}
  bool empty() const { return p_ == end_; }
  uint8_t Next() { return p_ == end_ ? 0 : *p_++; }
  // `n` bytes (at most 8) as a little-endian number.
  uint64_t NextN(int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= uint64_t{Next()} << (8 * i);
    return v;
  }
  // Up to `n` bytes, fewer at the end.
  std::vector<uint8_t> Take(size_t n) {
    std::vector<uint8_t> out;
    while (n-- > 0 && p_ != end_) out.push_back(*p_++);
    return out;
  }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

// `size` pseudo-random bytes, the same for the same `seed`: block contents for the targets that
// put and get blocks.
std::string PatternBytes(uint64_t size, uint8_t seed);

// A whole file's bytes (aborts when it cannot be read: seeds are written by the target itself).
std::string ReadFileBytes(const std::string& path);

// Writes `bytes` to a file private to this process (in /dev/shm when it exists) and returns its
// path; the same path each call, so a target that parses files rewrites one file per input.
std::string WriteScratchFile(const std::string& bytes, const std::string& suffix);

}  // namespace foresight::fuzz

#define FUZZ_CHECK(cond, what)                                                                        \
  do {                                                                                                \
    if (!(cond)) {                                                                                    \
      std::fprintf(stderr, "FUZZ_CHECK failed at %s:%d: %s (%s)\n", __FILE__, __LINE__, #cond, what); \
      std::abort();                                                                                   \
    }                                                                                                 \
  } while (0)
