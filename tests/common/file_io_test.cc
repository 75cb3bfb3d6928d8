// common/file_io.h: every failure names the file and the reason, and nothing a user can point the
// programs at (a directory, a missing path) throws or crashes.
#include "common/file_io.h"

#include <unistd.h>

#include <filesystem>
#include <string>

#include <gtest/gtest.h>

namespace foresight {
namespace {

class FileIoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/file_io_" + std::to_string(::getpid());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(FileIoTest, BinaryContentsRoundTrip) {
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

TEST_F(FileIoTest, AMissingFileIsNotFoundWithTheReason) {
  auto r = ReadWholeFile(dir_ + "/nope");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(r.status().message(), "cannot read " + dir_ + "/nope: No such file or directory");

  Status w = WriteWholeFile(dir_ + "/no-such-dir/out", "x");
  EXPECT_EQ(w.code(), StatusCode::kNotFound);
  EXPECT_EQ(w.message(), "cannot write " + dir_ + "/no-such-dir/out: No such file or directory");
}

TEST_F(FileIoTest, ADirectoryIsABadArgumentNotACrash) {
  auto r = ReadWholeFile(dir_);  // std::ifstream + istreambuf_iterator threw here
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), "cannot read " + dir_ + ": Is a directory");
  Status w = WriteWholeFile(dir_, "x");
  EXPECT_EQ(w.code(), StatusCode::kInvalidArgument) << w.ToString();
  EXPECT_NE(w.message().find("Is a directory"), std::string::npos) << w.ToString();
}

TEST_F(FileIoTest, SecretFileIsTrimmedNamedByItsFlagAndNeverEmpty) {
  ASSERT_TRUE(WriteWholeFile(dir_ + "/token", "s3cret \r\n\n").ok());
  auto token = ReadSecretFile(dir_ + "/token", "--token-file");
  ASSERT_TRUE(token.ok());
  EXPECT_EQ(*token, "s3cret");
  auto missing = ReadSecretFile(dir_ + "/none", "--token-file");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().message(), "cannot read --token-file " + dir_ + "/none: No such file or directory");
  ASSERT_TRUE(WriteWholeFile(dir_ + "/blank", "\n").ok());
  auto blank = ReadSecretFile(dir_ + "/blank", "--token-file");
  EXPECT_EQ(blank.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(blank.status().message(), "--token-file " + dir_ + "/blank is empty");
}

}  // namespace
}  // namespace foresight
