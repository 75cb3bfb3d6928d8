#include "common/units.h"

#include <vector>

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
  EXPECT_EQ(ParseByteSize("16777216TiB").status().code(), StatusCode::kOutOfRange) << "2^64 bytes";
  EXPECT_EQ(ParseByteSize("99999999999999999999").status().code(), StatusCode::kOutOfRange);
}

TEST(UnitsTest, WholeNumbersAreExactBeyondADoublesPrecision) {
  EXPECT_EQ(*ParseByteSize("9007199254740993"), 9007199254740993ull) << "2^53 + 1";
  EXPECT_EQ(*ParseByteSize("18446744073709551615"), 18446744073709551615ull);
  EXPECT_EQ(*ParseByteSize("16777215TiB"), 16777215ull << 40);
}

TEST(UnitsTest, IntListsAreWholeNumbersInRange) {
  auto ok = ParseIntList("256,512,2048", "--budget", 1, 4096);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(*ok, (std::vector<int64_t>{256, 512, 2048}));
  EXPECT_EQ(*ParseIntList("0", "--sink", 0, 10), std::vector<int64_t>{0});
  for (const char* bad : {"", "12x", "1,,2", "abc", "5000", "0", "-3", "99999999999999999999999", "1,"}) {
    auto r = ParseIntList(bad, "--budget", 1, 4096);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(r.status().message().rfind("--budget: \"", 0), 0u) << r.status().message();
    EXPECT_NE(r.status().message().find("from 1 to 4096"), std::string::npos) << r.status().message();
  }
  EXPECT_EQ(ParseIntList("256,12x", "--budget", 1, 4096).status().message(),
            "--budget: \"12x\" is not a whole number from 1 to 4096");
}

TEST(UnitsTest, Formats) {
  EXPECT_EQ(FormatByteSize(512), "512B");
  EXPECT_EQ(FormatByteSize(1536), "1.5KiB");
  EXPECT_EQ(FormatByteSize(8ull << 30), "8GiB");
  // Never an exponent (text_fuzz): 2.2e18 bytes once printed as "2.021e+06TiB".
  EXPECT_EQ(FormatByteSize(2222222222222222222ull), "1.927EiB");
  EXPECT_EQ(FormatByteSize(UINT64_MAX), "16EiB");
  EXPECT_EQ(*ParseByteSize("3PiB"), 3ull << 50);
  EXPECT_EQ(*ParseByteSize("2EB"), 2000000000000000000ull);
}

}  // namespace
}  // namespace foresight
