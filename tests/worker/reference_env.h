// Test helpers for comparisons against llama.cpp: where the reference venv and the default model
// are, and running a tools/reference script. Tests skip (with the reason) when either is absent.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

#include "worker/default_model.h"

namespace foresight::worker::testing {

inline std::string VenvPython() {
  if (const char* v = std::getenv("FORESIGHT_REFERENCE_VENV"); v != nullptr && *v) return std::string(v) + "/bin/python";
  return std::string(FORESIGHT_SOURCE_DIR) + "/.venv/bin/python";
}

// Empty when the reference can run; otherwise why not (for GTEST_SKIP).
inline std::string ReferenceUnavailableReason() {
  if (!std::filesystem::exists(VenvPython())) {
    return "reference venv missing (" + VenvPython() + "); run tools/reference/setup-venv.sh";
  }
  if (std::system((VenvPython() + " -c 'import llama_cpp' >/dev/null 2>&1").c_str()) != 0) {
    return "llama_cpp is not importable in " + VenvPython();
  }
  if (!FindDefaultModel().ok()) return FindDefaultModel().status().message();
  return "";
}

// Runs tools/reference/<script> with `args`; true on exit status 0.
inline bool RunReferenceScript(const std::string& script, const std::string& args) {
  const std::string cmd = VenvPython() + " " + std::string(FORESIGHT_SOURCE_DIR) + "/tools/reference/" + script + " " + args;
  return std::system(cmd.c_str()) == 0;
}

// A folder for this test process's files, removed when the process exits.
inline std::string TestTempDir() {
  struct Dir {
    std::filesystem::path path;
    ~Dir() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  };
  static const Dir dir{std::filesystem::temp_directory_path() / ("foresight_worker_test_" + std::to_string(::getpid()))};
  std::filesystem::create_directories(dir.path);
  return dir.path.string();
}

}  // namespace foresight::worker::testing
