// Runs a fuzz target without libFuzzer (tests/fuzz/fuzz_target.h): its seeds, the inputs named on
// the command line (files, or folders of files), then deterministic mutations of the seeds.
//
//   gguf_fuzz [--mutations N] [--write-seeds DIR] [FILE|DIR ...]
//
// --write-seeds writes the seeds as files (a starting corpus for the libFuzzer build) and exits.
// A failing input crashes the process, which names it on stderr (a seed, a file, or a mutation
// number; mutations are the same on every run).
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>

#include "tests/fuzz/fuzz_target.h"

namespace {

namespace fs = std::filesystem;

// The input running now, which the crash handler names and saves (to g_crash_path, in the
// working folder) so that it can be replayed, or added to the corpus once fixed.
char g_current[256] = "";
const std::string* g_input = nullptr;
char g_crash_path[512] = "";

void Say(const char* text) { (void)!write(2, text, strlen(text)); }

void OnCrash(int sig) {
  Say("\nfuzz replay: crashed on ");
  Say(g_current);
  if (g_input != nullptr) {
    const int fd = open(g_crash_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      (void)!write(fd, g_input->data(), g_input->size());
      close(fd);
      Say(", saved as ");
      Say(g_crash_path);
    }
  }
  Say("\n");
  signal(sig, SIG_DFL);
  raise(sig);
}

void Run(const std::string& input, const std::string& name) {
  std::snprintf(g_current, sizeof(g_current), "%s", name.c_str());
  g_input = &input;
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  g_input = nullptr;
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// One mutation of the kinds libFuzzer starts with: flip bits, overwrite bytes with boundary
// values, truncate, duplicate or delete a span, insert random bytes.
std::string Mutate(std::string s, std::mt19937_64& rng) {
  auto pick = [&](size_t n) { return n == 0 ? size_t{0} : static_cast<size_t>(rng() % n); };
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits; ++e) {
    switch (rng() % 6) {
      case 0:
        if (!s.empty()) s[pick(s.size())] ^= static_cast<char>(1u << (rng() % 8));
        break;
      case 1:
        if (!s.empty()) {
          static const uint8_t kBoundary[] = {0x00, 0x01, 0x7f, 0x80, 0xff, 0xfe};
          s[pick(s.size())] = static_cast<char>(kBoundary[rng() % sizeof(kBoundary)]);
        }
        break;
      case 2:
        s.resize(pick(s.size() + 1));
        break;
      case 3:
        if (!s.empty()) {
          const size_t at = pick(s.size());
          const size_t len = std::min<size_t>(1 + pick(64), s.size() - at);
          s.insert(pick(s.size()), s.substr(at, len));
        }
        break;
      case 4:
        if (!s.empty()) {
          const size_t at = pick(s.size());
          s.erase(at, std::min<size_t>(1 + pick(64), s.size() - at));
        }
        break;
      default: {
        std::string bytes(1 + pick(16), '\0');
        for (char& c : bytes) c = static_cast<char>(rng());
        s.insert(pick(s.size() + 1), bytes);
        break;
      }
    }
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  long mutations = 2000;
  std::string write_seeds;
  std::vector<std::string> inputs;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--mutations" && i + 1 < argc) {
      mutations = std::strtol(argv[++i], nullptr, 10);
    } else if (arg == "--write-seeds" && i + 1 < argc) {
      write_seeds = argv[++i];
    } else if (!arg.empty() && arg[0] == '-') {
      std::cerr << "usage: " << argv[0] << " [--mutations N] [--write-seeds DIR] [FILE|DIR ...]\n";
      return 2;
    } else {
      inputs.push_back(arg);
    }
  }
  const std::string crash_file = (fs::current_path() / (fs::path(argv[0]).filename().string() + "-crash.bin")).string();
  std::snprintf(g_crash_path, sizeof(g_crash_path), "%s", crash_file.c_str());
  for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL}) signal(sig, OnCrash);
  const std::vector<std::string> seeds = foresight::fuzz::Seeds();
  if (!write_seeds.empty()) {
    fs::create_directories(write_seeds);
    for (size_t i = 0; i < seeds.size(); ++i) {
      std::ofstream(fs::path(write_seeds) / ("seed-" + std::to_string(i)), std::ios::binary) << seeds[i];
    }
    std::cout << "wrote " << seeds.size() << " seeds to " << write_seeds << "\n";
    return 0;
  }
  size_t runs = 0;
  for (size_t i = 0; i < seeds.size(); ++i, ++runs) Run(seeds[i], "seed " + std::to_string(i));
  for (const std::string& input : inputs) {
    if (fs::is_directory(input)) {
      std::vector<fs::path> files;
      for (const auto& entry : fs::directory_iterator(input)) {
        if (entry.is_regular_file()) files.push_back(entry.path());
      }
      std::sort(files.begin(), files.end());
      for (const fs::path& f : files) Run(ReadFile(f), f.string()), ++runs;
    } else if (fs::is_regular_file(input)) {
      Run(ReadFile(input), input), ++runs;
    } else {
      std::cerr << "no such input: " << input << "\n";
      return 2;
    }
  }
  std::mt19937_64 rng(20261125);
  for (long m = 0; m < mutations && !seeds.empty(); ++m, ++runs) {
    const size_t from = static_cast<size_t>(rng() % seeds.size());
    Run(Mutate(seeds[from], rng), "mutation " + std::to_string(m) + " of seed " + std::to_string(from));
  }
  std::cout << "ran " << runs << " inputs, no failure\n";
  return 0;
}
