#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

#include "tests/fuzz/fuzz_target.h"

namespace foresight::fuzz {
namespace {

// The scratch files written so far, removed when the process exits. Never destroyed: the exit
// handler runs after static destructors.
std::set<std::string>& ScratchFiles() {
  static auto* files = new std::set<std::string>;
  return *files;
}

}  // namespace

std::string PatternBytes(uint64_t size, uint8_t seed) {
  std::string s(size, '\0');
  uint32_t x = 0x9e3779b9u * (seed + 1u);
  for (char& c : s) {
    x = x * 1664525u + 1013904223u;
    c = static_cast<char>(x >> 24);
  }
  return s;
}

std::string ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "fuzz: cannot read %s\n", path.c_str());
    std::abort();
  }
  std::stringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

std::string WriteScratchFile(const std::string& bytes, const std::string& suffix) {
  static const std::string* dir = new std::string(access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
  const std::string path = *dir + "/foresight-fuzz-" + std::to_string(getpid()) + suffix;
  if (ScratchFiles().insert(path).second && ScratchFiles().size() == 1) {
    std::atexit([] {
      for (const std::string& p : ScratchFiles()) std::remove(p.c_str());
    });
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) {
    std::fprintf(stderr, "fuzz: cannot write the scratch file %s\n", path.c_str());
    std::abort();
  }
  return path;
}

}  // namespace foresight::fuzz
