#include "worker/tokenizer.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/worker/reference_env.h"
#include "worker/pre_tokenizer.h"

namespace foresight::worker {
namespace {

std::vector<std::string> Split(const std::string& pre, const std::string& text) {
  auto p = PreTokenizer::Create(pre);
  EXPECT_TRUE(p.ok());
  return p->Split(text);
}

TEST(PreTokenizerTest, Gpt2Pieces) {
  using V = std::vector<std::string>;
  EXPECT_EQ(Split("gpt2", "Hello world's  end"), (V{"Hello", " world", "'s", " ", " end"}));
  EXPECT_EQ(Split("gpt2", "a   \n"), (V{"a", "   \n"}));
  EXPECT_EQ(Split("gpt2", "x += 12;"), (V{"x", " +=", " 12", ";"}));
  EXPECT_EQ(Split("smollm", "x 123"), (V{"x", " ", "1", "2", "3"}));
  EXPECT_EQ(Split("gpt2", "naïve café"), (V{"naïve", " café"}));
  EXPECT_EQ(Split("llama-bpe", "12345 I'M\n\nok"), (V{"123", "45", " I", "'M", "\n\n", "ok"}));
  EXPECT_FALSE(PreTokenizer::Create("nonexistent").ok());
}

// A tiny vocabulary: bytes of "abc " plus merges "a b" -> "ab", "ab c" -> "abc".
std::unique_ptr<Tokenizer> TinyTokenizer() {
  TokenizerSpec spec;
  spec.tokens = {"a", "b", "c", "\xC4\xA0", "ab", "abc", "\xC4\xA0" "a", "<|end|>"};  // \xC4\xA0 is 'Ġ' (space)
  spec.kinds = {TokenKind::kNormal, TokenKind::kNormal, TokenKind::kNormal, TokenKind::kNormal,
                TokenKind::kNormal, TokenKind::kNormal, TokenKind::kNormal, TokenKind::kControl};
  spec.merges = {"a b", "ab c", "\xC4\xA0 a"};
  spec.eos = 7;
  auto t = Tokenizer::FromSpec(spec);
  EXPECT_TRUE(t.ok());
  return std::move(*t);
}

TEST(TokenizerTest, MergesByRankAndRoundTrips) {
  auto tok = TinyTokenizer();
  EXPECT_EQ(tok->Encode("abc", false, false), (std::vector<TokenId>{5}));
  // "a b" (rank 0) merges before "Ġ a" (rank 2), so " ab" is Ġ + ab, while " a" is "Ġa".
  EXPECT_EQ(tok->Encode("abc ab", false, false), (std::vector<TokenId>{5, 3, 4}));
  EXPECT_EQ(tok->Encode("abc a", false, false), (std::vector<TokenId>{5, 6}));
  EXPECT_EQ(tok->Decode({5, 3, 4}), "abc ab");
  EXPECT_EQ(tok->Encode("a<|end|>b", false, true), (std::vector<TokenId>{0, 7, 1}));
  EXPECT_EQ(tok->Decode({0, 7, 1}, true), "a<|end|>b");
  EXPECT_EQ(tok->Decode({0, 7, 1}, false), "ab");
  EXPECT_TRUE(tok->IsEndOfGeneration(7));
}

TEST(TokenizerReferenceTest, MatchesLlamaCppOnThousandsOfStrings) {
  const std::string why = testing::ReferenceUnavailableReason();
  if (!why.empty()) GTEST_SKIP() << why;
  const std::string model = *FindDefaultModel();
  const std::string dump = testing::TestTempDir() + "/tokens.jsonl";
  ASSERT_TRUE(testing::RunReferenceScript("dump_tokens.py", "--model " + model + " --out " + dump + " --count 3000"));
  auto gguf = GgufFile::Open(model);
  ASSERT_TRUE(gguf.ok()) << gguf.status().ToString();
  auto tok = Tokenizer::FromGguf(**gguf);
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();

  std::ifstream in(dump);
  std::string line;
  int total = 0, matched = 0, round_trips = 0;
  std::vector<std::string> failures;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    const std::string text = j["text"];
    const bool special = j["special"];
    const std::vector<TokenId> want = j["ids"].get<std::vector<TokenId>>();
    const std::vector<TokenId> got = (*tok)->Encode(text, false, special);
    ++total;
    if (got == want) {
      ++matched;
    } else if (failures.size() < 5) {
      failures.push_back(line);
    }
    if ((*tok)->Decode(got, true) == text) ++round_trips;
  }
  std::printf("tokenizer vs llama.cpp: %d/%d strings identical, %d/%d round-trip\n", matched, total,
              round_trips, total);
  EXPECT_GE(total, 3000);
  EXPECT_EQ(matched, total) << "first mismatches:\n" << ::testing::PrintToString(failures);
  EXPECT_EQ(round_trips, total);
}

}  // namespace
}  // namespace foresight::worker
