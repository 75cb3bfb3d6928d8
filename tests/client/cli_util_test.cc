// The CLI's file helpers (client/cli/cli_util.h): every failure names the file and the reason, and
// nothing the user can point them at (a directory, a missing path) throws or crashes.
#include "client/cli/cli_util.h"

#include <unistd.h>

#include <filesystem>
#include <string>

#include <gtest/gtest.h>

namespace foresight::cli {
namespace {

class CliUtilTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/cli_util_" + std::to_string(::getpid());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(CliUtilTest, BinaryContentsRoundTrip) {
  std::string data(200000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 31 + (i >> 9));
  const std::string path = dir_ + "/block.bin";
  ASSERT_TRUE(WriteWholeFile(path, data).ok());
  auto back = ReadWholeFile(path);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, data);
  ASSERT_TRUE(WriteWholeFile(path, "short").ok());  // replaces, does not keep the old tail
  EXPECT_EQ(*ReadWholeFile(path), "short");
  ASSERT_TRUE(WriteWholeFile(dir_ + "/empty", "").ok());
  EXPECT_EQ(*ReadWholeFile(dir_ + "/empty"), "");
}

TEST_F(CliUtilTest, AMissingFileIsNotFoundWithTheReason) {
  auto r = ReadWholeFile(dir_ + "/nope");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(r.status().message(), "cannot read " + dir_ + "/nope: No such file or directory");

  Status w = WriteWholeFile(dir_ + "/no-such-dir/out", "x");
  EXPECT_EQ(w.code(), StatusCode::kNotFound);
  EXPECT_EQ(w.message(), "cannot write " + dir_ + "/no-such-dir/out: No such file or directory");
}

TEST_F(CliUtilTest, ADirectoryIsABadArgumentNotACrash) {
  auto r = ReadWholeFile(dir_);  // std::ifstream + istreambuf_iterator threw here
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "cannot read " + dir_ + ": Is a directory");
  Status w = WriteWholeFile(dir_, "x");
  EXPECT_EQ(w.code(), StatusCode::kInvalidArgument) << w.ToString();
  EXPECT_NE(w.message().find("Is a directory"), std::string::npos) << w.ToString();
}

TEST_F(CliUtilTest, TokenFileIsTrimmedAndNamedByItsFlag) {
  ASSERT_TRUE(WriteWholeFile(dir_ + "/token", "s3cret \r\n\n").ok());
  auto token = ReadTokenFile(dir_ + "/token");
  ASSERT_TRUE(token.ok());
  EXPECT_EQ(*token, "s3cret");
  auto missing = ReadTokenFile(dir_ + "/none");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().message(), "cannot read --token-file " + dir_ + "/none: No such file or directory");
}

}  // namespace
}  // namespace foresight::cli
