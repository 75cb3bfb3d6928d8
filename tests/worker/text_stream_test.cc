// TextStream (worker/text_stream.h) with SmolLM2's real tokenizer: characters split across tokens
// come out whole, stop strings are never shown (split across tokens or inside one), a stop-string
// prefix that does not complete is released later, and special tokens add no text. Skips when the
// default model is not fetched (as the other tests on it do).
#include "worker/text_stream.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "tests/worker/reference_env.h"
#include "worker/gguf_file.h"
#include "worker/unicode_text.h"

namespace foresight::worker {
namespace {

// Valid UTF-8, judged without the code under test: decoding (invalid bytes become U+FFFD) and
// encoding again gives the same bytes.
bool IsValidUtf8(const std::string& s) {
  std::string again;
  for (uint32_t cp : DecodeUtf8(s)) AppendUtf8(cp, &again);
  return again == s;
}

std::string Hex(const std::string& s) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
    out += ' ';
  }
  return out;
}

class TextStreamTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto tok = testing::OpenGoldenModel([](const std::string& path) -> StatusOr<std::unique_ptr<Tokenizer>> {
      FS_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> gguf, GgufFile::Open(path));
      return Tokenizer::FromGguf(*gguf);
    });
    if (!tok.ok()) {
      error_ = new Status(tok.status());
      return;
    }
    tokenizer_ = tok->release();
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
    delete error_;
    error_ = nullptr;
  }
  void SetUp() override {
    if (error_ != nullptr && error_->code() == StatusCode::kNotFound) GTEST_SKIP() << error_->message();
    ASSERT_EQ(error_, nullptr) << error_->ToString();
    ASSERT_NE(tokenizer_, nullptr);
  }

  const Tokenizer& tok() const { return *tokenizer_; }
  std::vector<TokenId> Ids(const std::string& text) const { return tok().Encode(text, false, false); }
  // The token for one raw byte (byte-level vocabularies have all 256).
  TokenId ByteToken(uint8_t byte) const {
    std::string text;
    AppendUtf8(ByteLevelCodepoint(byte), &text);
    const TokenId id = tok().Find(text);
    EXPECT_GE(id, 0) << "no token for byte " << static_cast<int>(byte);
    return id;
  }

  struct Run {
    std::vector<std::string> pieces;  // one per token added
    int stopped_at = -1;              // index of the token that completed a stop string
    std::string finish;
    std::string all;  // every released piece and Finish, concatenated
  };
  Run Stream(const std::vector<TokenId>& ids, std::vector<std::string> stop) const {
    TextStream stream(&tok(), std::move(stop));
    Run r;
    for (size_t i = 0; i < ids.size(); ++i) {
      TextStream::Piece p = stream.Add(ids[i]);
      EXPECT_TRUE(IsValidUtf8(p.text)) << "piece " << i << ": " << Hex(p.text);
      r.pieces.push_back(p.text);
      r.all += p.text;
      if (p.stopped) {
        r.stopped_at = static_cast<int>(i);
        break;
      }
    }
    r.finish = stream.Finish();
    EXPECT_TRUE(IsValidUtf8(r.finish)) << Hex(r.finish);
    r.all += r.finish;
    EXPECT_EQ(stream.text(), r.all);
    return r;
  }
  // Whether one token's own bytes end inside a character (so a stream must hold them).
  bool SomeTokenSplitsACharacter(const std::vector<TokenId>& ids) const {
    for (TokenId id : ids) {
      if (!IsValidUtf8(tok().TokenPiece(id, false))) return true;
    }
    return false;
  }

  static const Tokenizer* tokenizer_;
  static Status* error_;
};

const Tokenizer* TextStreamTest::tokenizer_ = nullptr;
Status* TextStreamTest::error_ = nullptr;

TEST_F(TextStreamTest, CharactersSplitAcrossTokensComeOutWhole) {
  for (const std::string text : {"日本語のテキストです", "emoji 😀🎉 and 👩‍💻 end", "naïve café, déjà vu"}) {
    const std::vector<TokenId> ids = Ids(text);
    Run r = Stream(ids, {});
    EXPECT_EQ(r.all, text);
    EXPECT_EQ(r.finish, "");
    if (text[0] != 'n') {
      EXPECT_TRUE(SomeTokenSplitsACharacter(ids)) << text << ": the tokenizer no longer splits it";
    }
    // A token that ends inside a character releases nothing of it; the token completing it does.
    for (size_t i = 0; i < ids.size(); ++i) EXPECT_TRUE(IsValidUtf8(r.pieces[i]));
  }
  // "é" as its two raw bytes, one token each: nothing until the second.
  std::vector<TokenId> cafe = Ids("caf");
  const size_t before = cafe.size();
  cafe.insert(cafe.end(), {ByteToken(0xC3), ByteToken(0xA9), Ids("!")[0]});
  Run e = Stream(cafe, {});
  ASSERT_EQ(e.pieces.size(), before + 3);
  EXPECT_EQ(e.pieces[before], "");
  EXPECT_EQ(e.pieces[before + 1], "é");
  EXPECT_EQ(e.pieces[before + 2], "!");
  EXPECT_EQ(e.all, "café!");
  // "日" (e6 97 a5) byte by byte, and 😀 (f0 9f 98 80).
  Run ri = Stream({ByteToken(0xE6), ByteToken(0x97), ByteToken(0xA5)}, {});
  EXPECT_EQ(ri.pieces, (std::vector<std::string>{"", "", "日"}));
  Run rs = Stream({ByteToken(0xF0), ByteToken(0x9F), ByteToken(0x98), ByteToken(0x80)}, {});
  EXPECT_EQ(rs.pieces, (std::vector<std::string>{"", "", "", "😀"}));
}

TEST_F(TextStreamTest, AnUnfinishedOrBrokenCharacterBecomesAReplacementCharacter) {
  Run r = Stream({Ids("ok")[0], ByteToken(0xE6), ByteToken(0x97)}, {});
  EXPECT_EQ(r.pieces, (std::vector<std::string>{"ok", "", ""}));
  EXPECT_EQ(r.finish, "\xEF\xBF\xBD");
  // A byte that cannot start a character is replaced at once, not held.
  Run bad = Stream({ByteToken(0x80), Ids("a")[0], ByteToken(0xBF)}, {});
  EXPECT_EQ(bad.pieces, (std::vector<std::string>{"\xEF\xBF\xBD", "a", "\xEF\xBF\xBD"}));
  // A character cut short by the next one: the cut part is replaced, the next comes out whole.
  Run cut = Stream({ByteToken(0xE6), ByteToken(0x97), ByteToken(0xC3), ByteToken(0xA9)}, {});
  EXPECT_EQ(cut.all,
            "\xEF\xBF\xBD"
            "é");
}

TEST_F(TextStreamTest, AStopStringSplitAcrossTwoTokensIsNeverShown) {
  const std::string text = "The answer is 42.\nUser: next question";
  const std::vector<TokenId> ids = Ids(text);
  for (TokenId id : ids) {
    ASSERT_EQ(tok().TokenPiece(id, false).find("User:"), std::string::npos) << "precondition: split across tokens";
  }
  Run r = Stream(ids, {"User:"});
  ASSERT_GE(r.stopped_at, 0);
  EXPECT_EQ(r.all, "The answer is 42.\n");
  EXPECT_EQ(r.finish, "");
  // The token completing it is the one holding ':'; "User" was held back before it, never shown.
  EXPECT_NE(tok().TokenPiece(ids[r.stopped_at], false).find(':'), std::string::npos);
  for (const std::string& p : r.pieces) EXPECT_EQ(p.find("User"), std::string::npos) << p;
}

TEST_F(TextStreamTest, AStopStringInsideOneTokenCutsThatToken) {
  const std::vector<TokenId> ids = Ids("Hello world and more");
  bool inside = false;
  for (TokenId id : ids) inside |= tok().TokenPiece(id, false) == " world";
  ASSERT_TRUE(inside) << "precondition: \" world\" is one token";
  Run r = Stream(ids, {"orl"});
  ASSERT_GE(r.stopped_at, 0);
  EXPECT_EQ(tok().TokenPiece(ids[r.stopped_at], false), " world");
  EXPECT_EQ(r.all, "Hello w");  // "d" after the stop string, in the same token, is dropped
  // The earliest of several stop strings wins, whichever is listed first.
  Run two = Stream(ids, {"and", "llo"});
  EXPECT_EQ(two.all, "He");
}

TEST_F(TextStreamTest, AStopPrefixThatDoesNotCompleteIsReleasedLater) {
  const std::string text = "Dear User, your User name is ready";
  const std::vector<TokenId> ids = Ids(text);
  Run r = Stream(ids, {"User:"});
  EXPECT_EQ(r.stopped_at, -1);
  EXPECT_EQ(r.all, text);
  // The token ending in "User" released nothing of "User"; the next one released it.
  size_t at = 0;
  auto ends_in_user = [](const std::string& p) { return p.size() >= 4 && p.compare(p.size() - 4, 4, "User") == 0; };
  while (at < ids.size() && !ends_in_user(tok().TokenPiece(ids[at], false))) ++at;
  ASSERT_LT(at + 1, ids.size()) << "precondition: a token ends in \"User\"";
  EXPECT_EQ(r.pieces[at].find("User"), std::string::npos) << r.pieces[at];
  EXPECT_EQ(r.pieces[at + 1].rfind("User", 0), 0u) << r.pieces[at + 1];

  // Still a possible stop string when generation ends: Finish releases it.
  Run tail = Stream(Ids("Ask the User"), {"User:"});
  EXPECT_EQ(tail.stopped_at, -1);
  EXPECT_EQ(tail.finish, "User");  // the space before it was not a possible stop string
  EXPECT_EQ(tail.all, "Ask the User");
}

TEST_F(TextStreamTest, AStopStringBeforeMinTokensIsText) {
  // min_tokens: the first "User:" completes while stopping is not allowed yet, the second stops.
  const std::string text = "User: hi. User: bye";
  const std::vector<TokenId> ids = Ids(text);
  TextStream stream(&tok(), {"User:"});
  std::string all;
  int stopped_at = -1;
  for (size_t i = 0; i < ids.size(); ++i) {
    const bool may_stop = all.find("hi") != std::string::npos;
    TextStream::Piece p = stream.Add(ids[i], may_stop);
    all += p.text;
    if (p.stopped) {
      stopped_at = static_cast<int>(i);
      break;
    }
  }
  ASSERT_GE(stopped_at, 0);
  EXPECT_EQ(all, "User: hi. ");
  EXPECT_EQ(stream.text(), all);
}

TEST_F(TextStreamTest, NoStopStringsReleaseEverythingAsItComes) {
  const std::string text = "Plain text, nothing held: 1 + 1 = 2.";
  const std::vector<TokenId> ids = Ids(text);
  for (const std::vector<std::string>& stop : {std::vector<std::string>{}, std::vector<std::string>{""}}) {
    Run r = Stream(ids, stop);
    EXPECT_EQ(r.stopped_at, -1);
    EXPECT_EQ(r.all, text);
    EXPECT_EQ(r.finish, "");
    for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(r.pieces[i], tok().TokenPiece(ids[i], false));
  }
}

TEST_F(TextStreamTest, SpecialTokensAddNoText) {
  const TokenId im_end = tok().Find("<|im_end|>");
  ASSERT_GE(im_end, 0);
  ASSERT_TRUE(tok().IsEndOfGeneration(im_end));
  Run r = Stream({Ids("Done")[0], tok().eos(), im_end}, {"<|im_end|>"});
  EXPECT_EQ(r.pieces, (std::vector<std::string>{"Done", "", ""}));
  EXPECT_EQ(r.stopped_at, -1);  // a special token's name is not its text
  EXPECT_EQ(r.all, "Done");
}

TEST(TextStreamWithoutTokenizerTest, GivesNoText) {
  TextStream stream(nullptr, {"x"});
  TextStream::Piece p = stream.Add(5);
  EXPECT_EQ(p.text, "");
  EXPECT_FALSE(p.stopped);
  EXPECT_EQ(stream.Finish(), "");
}

}  // namespace
}  // namespace foresight::worker
