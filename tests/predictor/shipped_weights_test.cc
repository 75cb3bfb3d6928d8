// The weights compiled into the binaries are predictor/weights/foresight-smollm2.safetensors, bit
// for bit; LoadCnnWeightsOrShipped picks them for an empty path and names a missing file.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "predictor/shipped_weights.h"

namespace foresight::predictor {
namespace {

const std::string kSourceFile = FORESIGHT_SOURCE_DIR "/predictor/weights/foresight-smollm2.safetensors";

TEST(ShippedWeightsTest, EqualTheSourceFileBitForBit) {
  std::shared_ptr<const CnnWeights> shipped = ShippedCnnWeights();
  ASSERT_NE(shipped, nullptr);
  auto from_file = CnnWeights::Load(kSourceFile);
  ASSERT_TRUE(from_file.ok()) << from_file.status().ToString();
  // CnnWeights is plain float arrays: equal bytes are equal weights (NaN payloads included).
  EXPECT_EQ(std::memcmp(shipped.get(), from_file->get(), sizeof(CnnWeights)), 0);
  EXPECT_EQ(ShippedCnnWeights(), shipped) << "parsed once, then shared";
}

TEST(ShippedWeightsTest, EmptyPathLoadsTheShippedWeights) {
  auto w = LoadCnnWeightsOrShipped("");
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(*w, ShippedCnnWeights());
  EXPECT_EQ(CnnWeightsName(""), kShippedCnnWeightsName);
  EXPECT_EQ(CnnWeightsName(kSourceFile), kSourceFile);
}

TEST(ShippedWeightsTest, AFileIsLoadedAndAMissingOneIsNamed) {
  auto w = LoadCnnWeightsOrShipped(kSourceFile);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_NE(*w, ShippedCnnWeights());
  const std::string missing = "/nonexistent/foresight-weights.safetensors";
  auto bad = LoadCnnWeightsOrShipped(missing);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(missing), std::string::npos) << bad.status().ToString();
}

TEST(ShippedWeightsTest, FromBytesRefusesTruncatedDataAndNamesIt) {
  std::ifstream in(kSourceFile, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_GT(bytes.size(), 1000u);
  auto whole = CnnWeights::FromBytes("in-memory copy", bytes.data(), bytes.size());
  ASSERT_TRUE(whole.ok()) << whole.status().ToString();
  auto cut = CnnWeights::FromBytes("in-memory copy", bytes.data(), bytes.size() - 100);
  ASSERT_FALSE(cut.ok());
  EXPECT_NE(cut.status().message().find("in-memory copy"), std::string::npos) << cut.status().ToString();
}

}  // namespace
}  // namespace foresight::predictor
