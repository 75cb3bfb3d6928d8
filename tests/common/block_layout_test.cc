#include "common/block_layout.h"

#include <vector>

#include <gtest/gtest.h>

namespace foresight {
namespace {

TEST(BlockLayoutTest, SmolLM2Geometry) {
  BlockLayout l(16, 3, 64, 2);  // f16 K and V
  EXPECT_EQ(l.head_bytes(), 2u * 16 * 64 * 2);
  EXPECT_EQ(l.block_bytes(), 3u * 4096);
  EXPECT_EQ(l.head_range(2), (ByteRange{8192, 4096}));
  EXPECT_EQ(l.heads_range(1, 2), (ByteRange{4096, 8192}));
}

TEST(BlockLayoutTest, EveryElementHasOneDistinctOffsetInsideItsHeadRange) {
  BlockLayout l(16, 8, 128, 2);
  std::vector<int> hits(l.block_bytes() / l.elem_bytes(), 0);
  for (uint32_t h = 0; h < l.kv_heads(); ++h) {
    const ByteRange r = l.head_range(h);
    for (uint32_t t = 0; t < l.block_tokens(); ++t) {
      for (uint32_t d = 0; d < l.head_dim(); ++d) {
        for (uint64_t off : {l.k_offset(h, t) + d * l.elem_bytes(), l.v_offset(h, t) + d * l.elem_bytes()}) {
          ASSERT_GE(off, r.offset);
          ASSERT_LT(off, r.offset + r.length);
          hits[off / l.elem_bytes()]++;
        }
      }
    }
  }
  for (int h : hits) EXPECT_EQ(h, 1);
}

}  // namespace
}  // namespace foresight
