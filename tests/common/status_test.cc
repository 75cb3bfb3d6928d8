// StatusOr's two misuses are caught in the build type we ship (RelWithDebInfo defines NDEBUG, so
// an assert would not be): these tests run in that build.
#include "common/status.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

namespace foresight {
namespace {

TEST(StatusOrTest, HoldsAValueOrAnError) {
  StatusOr<std::string> value(std::string("blocks"));
  ASSERT_TRUE(value.ok());
  EXPECT_EQ(*value, "blocks");
  EXPECT_EQ(value->size(), 6u);

  StatusOr<std::string> error(NotFound("block 3f2a is not in any tier"));
  EXPECT_FALSE(error.ok());
  EXPECT_EQ(error.status().code(), StatusCode::kNotFound);
}

TEST(StatusOrTest, ConstructedFromAnOkStatusBecomesAnInternalError) {
  StatusOr<int> from_ok(Status::OK());
  EXPECT_FALSE(from_ok.ok());
  EXPECT_EQ(from_ok.status().code(), StatusCode::kInternal);
  EXPECT_NE(from_ok.status().message().find("OK status"), std::string::npos) << from_ok.status().ToString();
}

TEST(StatusOrDeathTest, ValueOfAnErrorAbortsWithTheErrorsMessage) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  StatusOr<int> error(NotFound("block 3f2a is not in any tier"));
  EXPECT_DEATH((void)error.value(), "value\\(\\) on an error: NOT_FOUND: block 3f2a is not in any tier");
  EXPECT_DEATH((void)*error, "NOT_FOUND: block 3f2a");
  StatusOr<std::unique_ptr<int>> moved(DataLoss("checksum mismatch"));
  EXPECT_DEATH((void)std::move(moved).value(), "DATA_LOSS: checksum mismatch");
  StatusOr<std::string> arrow(Unavailable("node down"));
  EXPECT_DEATH((void)arrow->size(), "UNAVAILABLE: node down");
}

}  // namespace
}  // namespace foresight
