// ZeroedFloats (common/zeroed_floats.h): every element starts at zero, also when the memory comes
// back from an earlier allocation that was written.
#include "common/zeroed_floats.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <utility>

namespace foresight {
namespace {

TEST(ZeroedFloatsTest, StartsAtZeroAndKeepsWrites) {
  for (size_t n : {size_t{0}, size_t{1}, size_t{1000}, size_t{3} << 20}) {
    {
      ZeroedFloats dirty(n);
      std::fill(dirty.data(), dirty.data() + n, 7.0f);  // freed below; its memory may come back
    }
    ZeroedFloats a(n);
    ASSERT_EQ(a.size(), n);
    EXPECT_TRUE(std::all_of(a.span().begin(), a.span().end(), [](float v) { return v == 0.0f; })) << n;
    if (n > 0) {
      a[n - 1] = 2.5f;
      EXPECT_EQ(a.span()[n - 1], 2.5f);
    }
    ZeroedFloats b = std::move(a);
    EXPECT_EQ(b.size(), n);
    EXPECT_EQ(a.size(), 0u);  // NOLINT(bugprone-use-after-move): moved from is empty
  }
}

}  // namespace
}  // namespace foresight
