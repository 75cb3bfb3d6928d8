#include "common/units.h"

#include <gtest/gtest.h>

namespace foresight {
namespace {

TEST(UnitsTest, ParsesBinaryAndDecimalSuffixes) {
  EXPECT_EQ(*ParseByteSize("4096"), 4096u);
  EXPECT_EQ(*ParseByteSize("512MiB"), 512ull << 20);
  EXPECT_EQ(*ParseByteSize("8GiB"), 8ull << 30);
  EXPECT_EQ(*ParseByteSize("8G"), 8ull << 30);
  EXPECT_EQ(*ParseByteSize("16KiB"), 16384u);
  EXPECT_EQ(*ParseByteSize("1.5KiB"), 1536u);
  EXPECT_EQ(*ParseByteSize("2GB"), 2000000000u);
  EXPECT_EQ(*ParseByteSize("1tib"), 1ull << 40);
  EXPECT_EQ(*ParseByteSize("10 MiB"), 10ull << 20);
}

TEST(UnitsTest, RejectsBadInputWithAMessageNamingIt) {
  for (const char* bad : {"", "MiB", "12XB", "1.2.3G", "0.3B", "-5"}) {
    auto r = ParseByteSize(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("'" + std::string(bad) + "'"), std::string::npos) << r.status().message();
  }
  EXPECT_FALSE(ParseByteSize("100000000TiB").ok());
}

TEST(UnitsTest, Formats) {
  EXPECT_EQ(FormatByteSize(512), "512B");
  EXPECT_EQ(FormatByteSize(1536), "1.5KiB");
  EXPECT_EQ(FormatByteSize(8ull << 30), "8GiB");
}

}  // namespace
}  // namespace foresight
