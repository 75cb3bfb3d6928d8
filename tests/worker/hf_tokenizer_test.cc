#include "worker/hf_tokenizer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "tests/worker/reference_env.h"
#include "worker/default_model.h"
#include "worker/gguf_file.h"

namespace foresight::worker {
namespace {

using nlohmann::json;

class HfTokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/hf_tokenizer_" + ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  void WriteText(const std::string& name, const std::string& text) {
    std::ofstream out(dir_ + "/" + name);
    out << text;
  }
  void Write(const std::string& name, const json& j) { WriteText(name, j.dump()); }

  // The tiny vocabulary of tokenizer_test.cc: bytes of "abc " plus merges a+b, ab+c, Ġ+a.
  static json TinyTokenizerJson() {
    json vocab = {{"a", 0},
                  {"b", 1},
                  {"c", 2},
                  {"\xC4\xA0", 3},
                  {"ab", 4},
                  {"abc", 5},
                  {"\xC4\xA0"
                   "a",
                   6}};
    return {
        {"version", "1.0"},
        {"added_tokens", json::array({{{"id", 7}, {"content", "<|end|>"}, {"special", true}}})},
        {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
        {"decoder", {{"type", "ByteLevel"}}},
        {"model",
         {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array({json::array({"a", "b"}), "ab c", "\xC4\xA0 a"})}}},
    };
  }

  std::string dir_;
};

TEST_F(HfTokenizerTest, LoadsVocabularyMergesAndSpecialTokens) {
  Write("tokenizer.json", TinyTokenizerJson());
  Write("tokenizer_config.json", json{{"eos_token", {{"content", "<|end|>"}}}, {"bos_token", nullptr}});
  auto tok = LoadHfTokenizer(dir_);
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  const Tokenizer& t = **tok;
  EXPECT_EQ(t.pre(), "gpt2");
  EXPECT_EQ(t.vocab_size(), 8);
  // Merge ranks as listed, whichever of the two merge notations is used.
  EXPECT_EQ(t.Encode("abc ab", false, false), (std::vector<TokenId>{5, 3, 4}));
  EXPECT_EQ(t.Encode("abc a", false, false), (std::vector<TokenId>{5, 6}));
  EXPECT_EQ(t.Encode("a<|end|>b", false, true), (std::vector<TokenId>{0, 7, 1}));
  EXPECT_EQ(t.Decode({0, 7, 1}, false), "ab");
  EXPECT_EQ(t.eos(), 7);
  EXPECT_TRUE(t.IsEndOfGeneration(7));
  EXPECT_EQ(t.bos(), -1);
}

TEST_F(HfTokenizerTest, RecognisesPreTokenizersAndTheLlama3Bos) {
  json tok = TinyTokenizerJson();
  tok["pre_tokenizer"] = {{"type", "Sequence"},
                          {"pretokenizers", json::array({{{"type", "Digits"}, {"individual_digits", true}},
                                                         {{"type", "ByteLevel"}, {"use_regex", true}}})}};
  Write("tokenizer.json", tok);
  auto smol = LoadHfTokenizer(dir_);
  ASSERT_TRUE(smol.ok()) << smol.status().ToString();
  EXPECT_EQ((*smol)->pre(), "smollm");

  const std::string llama3 =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
      "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  tok["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers", json::array({{{"type", "Split"}, {"pattern", {{"Regex", llama3}}}, {"behavior", "Isolated"}},
                                     {{"type", "ByteLevel"}, {"use_regex", false}}})}};
  tok["added_tokens"].push_back({{"id", 8}, {"content", "<|begin_of_text|>"}, {"special", true}});
  tok["post_processor"] = {
      {"type", "Sequence"},
      {"processors",
       json::array({{{"type", "ByteLevel"}},
                    {{"type", "TemplateProcessing"},
                     {"single", json::array({{{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}},
                                             {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})}}})}};
  Write("tokenizer.json", tok);
  auto l3 = LoadHfTokenizer(dir_);
  ASSERT_TRUE(l3.ok()) << l3.status().ToString();
  EXPECT_EQ((*l3)->pre(), "llama-bpe");
  EXPECT_EQ((*l3)->bos(), 8);
  EXPECT_EQ((*l3)->Encode("ab", true, false), (std::vector<TokenId>{8, 4}));

  std::string qwen2 = llama3;
  qwen2.replace(qwen2.find("\\p{N}{1,3}"), 10, "\\p{N}");
  tok["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = qwen2;
  Write("tokenizer.json", tok);
  auto q = LoadHfTokenizer(dir_);
  ASSERT_TRUE(q.ok()) << q.status().ToString();
  EXPECT_EQ((*q)->pre(), "qwen2");
}

TEST_F(HfTokenizerTest, RefusesWhatItCannotUseNamingTheFile) {
  EXPECT_EQ(LoadHfTokenizer(dir_).status().code(), StatusCode::kNotFound);

  WriteText("tokenizer.json", "{\"model\": ");
  auto truncated = LoadHfTokenizer(dir_);
  EXPECT_EQ(truncated.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(truncated.status().message().find("tokenizer.json"), std::string::npos) << truncated.status().ToString();

  json tok = TinyTokenizerJson();
  tok["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"}};
  Write("tokenizer.json", tok);
  auto metaspace = LoadHfTokenizer(dir_);
  EXPECT_EQ(metaspace.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(metaspace.status().message().find("Metaspace"), std::string::npos) << metaspace.status().ToString();

  tok = TinyTokenizerJson();
  tok["model"].erase("merges");
  Write("tokenizer.json", tok);
  auto no_merges = LoadHfTokenizer(dir_);
  EXPECT_EQ(no_merges.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(no_merges.status().message().find("merges"), std::string::npos);

  tok = TinyTokenizerJson();
  Write("tokenizer.json", tok);
  Write("tokenizer_config.json", json{{"eos_token", "<|missing|>"}});
  auto bad_eos = LoadHfTokenizer(dir_);
  EXPECT_EQ(bad_eos.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(bad_eos.status().message().find("tokenizer_config.json"), std::string::npos);
}

// Fields of the wrong type are errors naming the field, not exceptions (these once threw).
TEST_F(HfTokenizerTest, FieldsOfTheWrongTypeAreRefusedNamingTheField) {
  const std::pair<std::function<void(json&)>, std::string> cases[] = {
      {[](json& t) { t["pre_tokenizer"]["type"] = 5; }, "\"type\" is number"},
      {[](json& t) { t["pre_tokenizer"]["use_regex"] = "yes"; }, "\"use_regex\" is string"},
      {[](json& t) { t["model"]["type"] = json::array({"BPE"}); }, "\"type\" is array"},
      {[](json& t) { t["model"]["byte_fallback"] = 1; }, "\"byte_fallback\" is number"},
      {[](json& t) { t["added_tokens"][0]["special"] = "true"; }, "\"special\" is string"},
  };
  for (const auto& [edit, expect] : cases) {
    json tok = TinyTokenizerJson();
    edit(tok);
    Write("tokenizer.json", tok);
    auto loaded = LoadHfTokenizer(dir_);
    ASSERT_FALSE(loaded.ok()) << tok.dump();
    EXPECT_EQ(loaded.status().code(), StatusCode::kDataLoss) << loaded.status().ToString();
    EXPECT_NE(loaded.status().message().find("tokenizer.json"), std::string::npos) << loaded.status().ToString();
    EXPECT_NE(loaded.status().message().find(expect), std::string::npos) << loaded.status().ToString();
  }
}

// The default model's real 49,152-token vocabulary written out the way the `tokenizers` library
// serialises SmolLM2's tokenizer, loaded back, must encode exactly as the GGUF tokenizer does, and
// as llama.cpp does on the golden file's few thousand strings.
TEST_F(HfTokenizerTest, SmolLM2VocabularyEncodesAsFromGguf) {
  auto golden = worker::testing::LoadGolden("llama_cpp_tokens.json");
  ASSERT_TRUE(golden.ok()) << golden.status().message();
  FORESIGHT_GOLDEN_MODEL_OR_SKIP(*golden, path);
  auto gguf = GgufFile::Open(path);
  ASSERT_TRUE(gguf.ok()) << gguf.status().ToString();
  auto reference = Tokenizer::FromGguf(**gguf);
  ASSERT_TRUE(reference.ok()) << reference.status().ToString();

  const auto* tokens = *(*gguf)->GetStringArray("tokenizer.ggml.tokens");
  const auto* types = *(*gguf)->GetIntArray("tokenizer.ggml.token_type");
  const auto* merges = *(*gguf)->GetStringArray("tokenizer.ggml.merges");
  json vocab = json::object(), added = json::array();
  for (size_t i = 0; i < tokens->size(); ++i) {
    vocab[(*tokens)[i]] = i;
    if ((*types)[i] == static_cast<int64_t>(TokenKind::kControl)) {
      added.push_back({{"id", i}, {"content", (*tokens)[i]}, {"special", true}});
    }
  }
  json merge_pairs = json::array();
  for (const std::string& m : *merges) {
    const size_t space = m.find(' ');
    merge_pairs.push_back(json::array({m.substr(0, space), m.substr(space + 1)}));
  }
  Write("tokenizer.json", json{{"added_tokens", added},
                               {"pre_tokenizer",
                                {{"type", "Sequence"},
                                 {"pretokenizers", json::array({{{"type", "Digits"}, {"individual_digits", true}},
                                                                {{"type", "ByteLevel"}, {"use_regex", true}}})}}},
                               {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merge_pairs}}}});
  Write("tokenizer_config.json", json{{"bos_token", (*reference)->TokenPiece((*reference)->bos(), true)},
                                      {"eos_token", (*reference)->TokenPiece((*reference)->eos(), true)},
                                      {"chat_template", *(*gguf)->GetString("tokenizer.chat_template")}});
  auto tok = LoadHfTokenizer(dir_);
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  EXPECT_EQ((*tok)->vocab_size(), (*reference)->vocab_size());
  EXPECT_EQ((*tok)->pre(), "smollm");

  const std::vector<std::string> texts = {
      "Hello, world! It's 2026-11-24 and the cache holds 8192 tokens.",
      "def f(x):\n    return x ** 2  # squares\n\n\tprint(f(12345))",
      "naïve café — Ünïcödé: 日本語のテキスト, emoji 🚀🔥, Ελληνικά, русский.",
      "   leading and trailing spaces   \n\n\n  ",
      "<|im_start|>user\nWhat is a KV cache?<|im_end|>\n<|im_start|>assistant\n",
  };
  for (const std::string& text : texts) {
    for (bool special : {false, true}) {
      EXPECT_EQ((*tok)->Encode(text, true, special), (*reference)->Encode(text, true, special)) << text;
    }
  }
  int golden_cases = 0, golden_same = 0;
  for (const auto& c : (*golden)["cases"]) {
    ++golden_cases;
    const std::vector<TokenId> got =
        (*tok)->Encode(worker::testing::GoldenCaseText(c), false, c["special"].get<bool>());
    const bool same = got == c["ids"].get<std::vector<TokenId>>();
    golden_same += same;
    if (!same && golden_cases - golden_same <= 5) {
      ADD_FAILURE() << "llama.cpp encodes differently: " << c.dump() << "\n  ours: " << ::testing::PrintToString(got);
    }
  }
  EXPECT_GE(golden_cases, 3000);
  EXPECT_EQ(golden_same, golden_cases) << "cases encoded as llama.cpp does (golden file)";
  const worker::testing::SweepResult sweep = worker::testing::SweepVocabulary(**tok, (*golden)["vocabulary_sweep"]);
  EXPECT_GE(sweep.swept, (*tok)->vocab_size() - 1000);
  EXPECT_EQ(sweep.same, sweep.swept) << ::testing::PrintToString(sweep.failures);
  auto chat = (*tok)->FormatChat("Summarise the GPL.");
  auto chat_ref = (*reference)->FormatChat("Summarise the GPL.");
  ASSERT_TRUE(chat.ok() && chat_ref.ok());
  EXPECT_EQ(*chat, *chat_ref);
  for (TokenId id = 0; id < (*reference)->vocab_size(); ++id) {
    ASSERT_EQ((*tok)->IsEndOfGeneration(id), (*reference)->IsEndOfGeneration(id)) << id;
  }
}

}  // namespace
}  // namespace foresight::worker
