#include "common/checksum.h"

#include <random>
#include <vector>

#include <gtest/gtest.h>
#include <xxhash.h>  // the shared library's build: an independent reference for the inline one

namespace foresight {
namespace {

TEST(ChecksumTest, EqualsTheSystemXxh3OnEverySize) {
  std::mt19937 rng(3);
  for (size_t size : {0, 1, 3, 16, 17, 128, 129, 240, 241, 1000, 4096, 65536, 1 << 20}) {
    std::vector<uint8_t> data(size);
    for (auto& b : data) b = static_cast<uint8_t>(rng());
    EXPECT_EQ(BlockChecksum(data.data(), size), XXH3_64bits(data.data(), size)) << size;
  }
}

TEST(ChecksumTest, OneFlippedBitChangesIt) {
  std::vector<uint8_t> data(4096, 7);
  const uint64_t before = BlockChecksum(data.data(), data.size());
  data[2049] ^= 0x10;
  EXPECT_NE(BlockChecksum(data.data(), data.size()), before);
}

}  // namespace
}  // namespace foresight
