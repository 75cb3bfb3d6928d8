#include "worker/tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>

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
  spec.tokens = {"a",
                 "b",
                 "c",
                 "\xC4\xA0",
                 "ab",
                 "abc",
                 "\xC4\xA0"
                 "a",
                 "<|end|>"};  // \xC4\xA0 is 'Ġ' (space)
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

// llama.cpp's ids for a few thousand strings (English, code, scripts, whitespace runs, digits,
// emoji, special tokens with and without parsing, invalid UTF-8), from the committed golden file
// (tools/reference/make_golden.py): every id must be the same.
// ChatML conversations: the template's default system message unless the conversation brings
// its own, every turn in order, the assistant's turn opened at the end.
TEST(TokenizerTest, FormatsChatConversations) {
  TokenizerSpec spec;
  spec.tokens = {"a", "<|im_start|>", "<|im_end|>"};
  spec.kinds = {TokenKind::kNormal, TokenKind::kControl, TokenKind::kControl};
  spec.chat_template =
      "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
      "{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + "
      "'\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}";
  auto tok = Tokenizer::FromSpec(spec);
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  auto one = (*tok)->FormatChat("hi");
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_EQ(*one,
            "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
            "<|im_start|>assistant\n");
  auto own_system = (*tok)->FormatChat(
      std::vector<ChatMessage>{{"system", "Be brief."}, {"user", "q1"}, {"assistant", "a1"}, {"user", "q2"}});
  ASSERT_TRUE(own_system.ok()) << own_system.status().ToString();
  EXPECT_EQ(*own_system,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\na1"
            "<|im_end|>\n<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\n");
  auto bad_role = (*tok)->FormatChat(std::vector<ChatMessage>{{"user", "q"}, {"tool", "x"}});
  EXPECT_EQ(bad_role.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad_role.status().message().find("message 1 has role 'tool'"), std::string::npos);
  EXPECT_EQ((*tok)->FormatChat(std::vector<ChatMessage>{}).status().code(), StatusCode::kInvalidArgument);

  spec.chat_template = "{{ messages }}";
  auto plain = Tokenizer::FromSpec(spec);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ((*plain)->FormatChat("hi").status().code(), StatusCode::kUnimplemented);
}

TEST(TokenizerReferenceTest, MatchesLlamaCppGoldenIds) {
  auto golden = testing::LoadGolden("llama_cpp_tokens.json");
  ASSERT_TRUE(golden.ok()) << golden.status().message();
  ASSERT_EQ((*golden)["format"], "foresight-llama-cpp-tokens/1");
  ASSERT_EQ((*golden)["add_bos"], false);
  FORESIGHT_GOLDEN_MODEL_OR_SKIP(*golden, model);
  auto gguf = GgufFile::Open(model);
  ASSERT_TRUE(gguf.ok()) << gguf.status().ToString();
  auto tok = Tokenizer::FromGguf(**gguf);
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();

  int total = 0, matched = 0, round_trip_cases = 0, round_trips = 0;
  std::map<std::string, int> per_category;
  std::vector<std::string> failures;
  for (const auto& c : (*golden)["cases"]) {
    const bool hex = c.contains("hex");
    const std::string text = testing::GoldenCaseText(c);
    const bool special = c["special"];
    const std::vector<TokenId> want = c["ids"].get<std::vector<TokenId>>();
    const std::vector<TokenId> got = (*tok)->Encode(text, false, special);
    ++total;
    ++per_category[c["category"].get<std::string>()];
    if (got == want) {
      ++matched;
    } else if (failures.size() < 5) {
      failures.push_back(c.dump() + "\n  ours: " + ::testing::PrintToString(got));
    }
    // Decoding gives the text back where every byte has a token (not invalid UTF-8, not the C0
    // controls SmolLM2 lacks; the fuzz target checks those).
    const bool representable = !hex && std::none_of(text.begin(), text.end(), [](char ch) {
      return static_cast<unsigned char>(ch) < 0x20 && ch != '\t' && ch != '\n' && ch != '\r';
    });
    if (representable) {
      ++round_trip_cases;
      round_trips += (*tok)->Decode(got, true) == text;
    }
  }
  std::printf("tokenizer vs llama.cpp (%s, golden): %d/%d cases identical, %d/%d round-trip\n",
              (*golden)["generator"]["llama_cpp_python"].get<std::string>().c_str(), matched, total, round_trips,
              round_trip_cases);
  EXPECT_GE(total, 3000);
  for (const char* category :
       {"english", "code", "unicode", "whitespace", "digits", "emoji", "mixed", "edge", "invalid_utf8"}) {
    EXPECT_GE(per_category[category], 10) << category;
  }
  EXPECT_EQ(matched, total) << "first mismatches (llama.cpp's ids, then ours):\n" << ::testing::PrintToString(failures);
  EXPECT_EQ(round_trips, round_trip_cases);
}

// Every token of the vocabulary: its own text encodes as llama.cpp encodes it (the golden file's
// vocabulary sweep), so each BPE merge that builds a token is exercised, not only those the
// strings above happen to reach.
TEST(TokenizerReferenceTest, EveryVocabularyTokenEncodesAsLlamaCpp) {
  auto golden = testing::LoadGolden("llama_cpp_tokens.json");
  ASSERT_TRUE(golden.ok()) << golden.status().message();
  FORESIGHT_GOLDEN_MODEL_OR_SKIP(*golden, model);
  auto gguf = GgufFile::Open(model);
  ASSERT_TRUE(gguf.ok()) << gguf.status().ToString();
  auto tok = Tokenizer::FromGguf(**gguf);
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  const auto& sweep = (*golden)["vocabulary_sweep"];
  ASSERT_EQ(sweep["vocab"].get<int>(), (*tok)->vocab_size());
  const testing::SweepResult r = testing::SweepVocabulary(**tok, sweep);
  std::printf("vocabulary sweep vs llama.cpp: %d/%d tokens encode the same\n", r.same, r.swept);
  EXPECT_GE(r.swept, (*tok)->vocab_size() - 1000);
  EXPECT_EQ(r.same, r.swept) << "first mismatches:\n" << ::testing::PrintToString(r.failures);
}

}  // namespace
}  // namespace foresight::worker
