#include "common/json_fields.h"

#include <gtest/gtest.h>

namespace foresight {
namespace {

using nlohmann::json;

TEST(JsonFieldTest, ReadsEachTypeAndFallsBackWhenAbsentOrNull) {
  const json j = {{"s", "text"}, {"b", true}, {"i", -7}, {"u", 65535}, {"f", 0.5}, {"n", nullptr}};
  EXPECT_EQ(*JsonField<std::string>(j, "s", ""), "text");
  EXPECT_TRUE(*JsonField<bool>(j, "b", false));
  EXPECT_EQ(*JsonField<int64_t>(j, "i", 0), -7);
  EXPECT_EQ(*JsonField<uint16_t>(j, "u", 0), 65535);
  EXPECT_DOUBLE_EQ(*JsonField<double>(j, "f", 0), 0.5);
  EXPECT_FLOAT_EQ(*JsonField<float>(j, "i", 0), -7.0f) << "an integer is a number";
  EXPECT_EQ(*JsonField<std::string>(j, "missing", "fallback"), "fallback");
  EXPECT_EQ(*JsonField<int32_t>(j, "n", 42), 42) << "null reads as absent";
}

TEST(JsonFieldTest, WrongTypesAndOutOfRangeIntegersNameTheField) {
  const json j = {{"s", 5}, {"b", "true"}, {"i", 1.5}, {"big", 4294967296ll}, {"neg", -1}, {"f", "0.5"}};
  auto expect_error = [](const Status& s, const std::string& text) {
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
    EXPECT_NE(s.message().find(text), std::string::npos) << s.ToString();
  };
  expect_error(JsonField<std::string>(j, "s", "").status(), "field \"s\" is number 5, expected a string");
  expect_error(JsonField<bool>(j, "b", false).status(), "field \"b\" is string \"true\", expected true or false");
  expect_error(JsonField<int64_t>(j, "i", 0).status(), "field \"i\" is number 1.5, expected an integer");
  expect_error(JsonField<int32_t>(j, "big", 0).status(), "field \"big\" = 4294967296 is out of range");
  expect_error(JsonField<uint32_t>(j, "neg", 0).status(), "field \"neg\" = -1 is out of range");
  expect_error(JsonField<double>(j, "f", 0).status(), "field \"f\" is string \"0.5\", expected a number");
  expect_error(JsonField<int>(json::array({1}), "x", 0).status(), "field \"x\" is array");
  EXPECT_EQ(*JsonField<int64_t>(j, "big", 0), 4294967296ll);
}

TEST(JsonFieldTest, FileFieldsAreDataLossNamingTheFile) {
  const json j = {{"heads", "two"}};
  auto v = JsonFileField<int64_t>(j, "heads", 0, "/models/x/config.json");
  EXPECT_EQ(v.status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(v.status().message(), "/models/x/config.json: field \"heads\" is string \"two\", expected an integer");
}

}  // namespace
}  // namespace foresight
