// Test helpers for the comparisons against llama.cpp: the golden files that
// tools/reference/make_golden.py made once with llama-cpp-python (tests/worker/data/, format in
// docs/worker.md, "Golden files from llama.cpp"), the default model they were made from, and a
// per-process temporary folder.
#pragma once

#include <openssl/evp.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "worker/default_model.h"
#include "worker/tokenizer.h"

namespace foresight::worker::testing {

// The golden file tests/worker/data/<name>, parsed; a missing or damaged file is an error, not a
// skip (the files are committed).
inline StatusOr<nlohmann::json> LoadGolden(const std::string& name) {
  const std::string path = std::string(FORESIGHT_SOURCE_DIR) + "/tests/worker/data/" + name;
  std::ifstream in(path);
  if (!in) return Status(StatusCode::kNotFound, "golden file " + path + " is missing (tools/reference/make_golden.py)");
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("format") || !j.contains("model")) {
    return Status(StatusCode::kDataLoss, "golden file " + path + " is not a make_golden.py JSON file");
  }
  return j;
}

// A token case's text: "text" (a JSON string), or "hex" for bytes that are not valid UTF-8.
inline std::string GoldenCaseText(const nlohmann::json& c) {
  if (!c.contains("hex")) return c["text"].get<std::string>();
  const std::string hex = c["hex"].get<std::string>();
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

// The tokens golden file's vocabulary sweep against `tok`: every token's own text (special tokens
// not parsed) must encode as llama.cpp encoded it ([id], or the listed exception). Returns how
// many tokens were swept; the first mismatches go to `failures`.
struct SweepResult {
  int swept = 0, same = 0;
  std::vector<std::string> failures;
};
inline SweepResult SweepVocabulary(const Tokenizer& tok, const nlohmann::json& sweep) {
  SweepResult r;
  std::vector<bool> skip(sweep["vocab"].get<size_t>());
  for (int64_t id : sweep["not_swept"]) skip.at(id) = true;
  for (TokenId id = 0; id < static_cast<TokenId>(skip.size()); ++id) {
    if (skip[id]) continue;
    const std::string key = std::to_string(id);
    const std::vector<TokenId> want = sweep["exceptions"].contains(key)
                                          ? sweep["exceptions"][key].get<std::vector<TokenId>>()
                                          : std::vector<TokenId>{id};
    const std::string text = tok.Decode({id}, false);
    const std::vector<TokenId> got = tok.Encode(text, false, false);
    ++r.swept;
    if (got == want) {
      ++r.same;
    } else if (r.failures.size() < 5) {
      r.failures.push_back("token " + key + " " + nlohmann::json(text).dump() + ": llama.cpp " +
                           nlohmann::json(want).dump() + ", ours " + nlohmann::json(got).dump());
    }
  }
  return r;
}

// Lowercase hex SHA-256 of a file; empty if it cannot be read.
inline std::string FileSha256(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  std::string buf(1 << 20, '\0');
  while (in.read(buf.data(), static_cast<std::streamsize>(buf.size())) || in.gcount() > 0) {
    EVP_DigestUpdate(ctx, buf.data(), static_cast<size_t>(in.gcount()));
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(ctx, md, &n);
  EVP_MD_CTX_free(ctx);
  static const char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < n; ++i) {
    hex.push_back(kHex[md[i] >> 4]);
    hex.push_back(kHex[md[i] & 15]);
  }
  return hex;
}

// The default model's path when it is the very file `golden` was made from. NOT_FOUND (the model
// is not fetched: the caller skips, which CI's skip check refuses) says how to fetch it;
// FAILED_PRECONDITION (another file under that name: the caller fails) names both hashes.
inline StatusOr<std::string> GoldenModel(const nlohmann::json& golden) {
  auto path = FindDefaultModel();
  if (!path.ok()) return path.status();
  const std::string want = golden["model"]["sha256"].get<std::string>();
  const std::string got = FileSha256(*path);
  if (got != want) {
    return Status(StatusCode::kFailedPrecondition,
                  *path + " has SHA-256 " + got + ", but the golden files were made from " +
                      golden["model"]["file"].get<std::string>() + " with SHA-256 " + want +
                      ": fetch the default model again (deploy/fetch-model.sh) or remake the golden files");
  }
  return *path;
}

// What a test suite makes once from the model the golden files were made from: `open(path)`
// (returning StatusOr<std::unique_ptr<T>>) on its file. NOT_FOUND: the model is not fetched.
template <typename Open>
auto OpenGoldenModel(Open open) -> decltype(open(std::string())) {
  auto golden = LoadGolden("llama_cpp_tokens.json");
  if (!golden.ok()) return golden.status();
  auto path = GoldenModel(*golden);
  if (!path.ok()) return path.status();
  return open(*path);
}

// Skips the test when the default model is not fetched; fails it when the file is another one.
#define FORESIGHT_GOLDEN_MODEL_OR_SKIP(golden, path_var)                                    \
  std::string path_var;                                                                     \
  {                                                                                         \
    auto model_or = ::foresight::worker::testing::GoldenModel(golden);                      \
    if (!model_or.ok() && model_or.status().code() == ::foresight::StatusCode::kNotFound) { \
      GTEST_SKIP() << model_or.status().message();                                          \
    }                                                                                       \
    ASSERT_TRUE(model_or.ok()) << model_or.status().message();                              \
    path_var = *model_or;                                                                   \
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
  static const Dir dir{std::filesystem::temp_directory_path() /
                       ("foresight_worker_test_" + std::to_string(::getpid()))};
  std::filesystem::create_directories(dir.path);
  return dir.path.string();
}

}  // namespace foresight::worker::testing
