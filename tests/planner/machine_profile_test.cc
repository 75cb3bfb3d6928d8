// The machine profile: a round trip, refusals naming the field, and the lookup the planner uses.
#include "planner/machine_profile.h"

#include <gtest/gtest.h>

namespace foresight::planner {
namespace {

MachineProfile TwoSizes() {
  MachineProfile p;
  p.host = "test";
  p.cpus = 2;
  p.measurements = {{"ram-tcp", "get", 4096, 1, 0.10, 50, 90, 1.5, 1.2},
                    {"ram-tcp", "get", 4096, 16, 0.40, 150, 400, 1.1, 0.9},
                    {"ram-tcp", "get", 1 << 20, 16, 4.2, 3000, 9000, 0.25, 0.24},
                    {"ram-tcp", "put", 1 << 20, 16, 3.6, 4000, 9000, 0.3, 0.3}};
  return p;
}

TEST(MachineProfileTest, RoundTripsThroughJson) {
  const MachineProfile p = TwoSizes();
  auto back = ParseMachineProfile(MachineProfileToJson(p), "mem");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_EQ(back->measurements.size(), p.measurements.size());
  EXPECT_EQ(back->host, "test");
  EXPECT_EQ(back->measurements[2].block_bytes, 1u << 20);
  EXPECT_DOUBLE_EQ(back->measurements[1].gbps, 0.40);
  EXPECT_DOUBLE_EQ(back->measurements[3].node_cpu_s_per_gb, 0.3);
}

TEST(MachineProfileTest, RefusesAnotherVersionAndBadFieldsByName) {
  std::string text = MachineProfileToJson(TwoSizes());
  std::string other = text;
  other.replace(other.find("\"version\": 1"), 12, "\"version\": 2");
  auto v2 = ParseMachineProfile(other, "p.json");
  ASSERT_FALSE(v2.ok());
  EXPECT_NE(v2.status().message().find("\"version\" is 2"), std::string::npos) << v2.status().message();
  EXPECT_NE(v2.status().message().find("p.json"), std::string::npos);
  std::string bad = text;
  bad.replace(bad.find("\"gbps\": 0.1"), 11, "\"gbps\": \"x\"");
  auto b = ParseMachineProfile(bad, "p.json");
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("gbps"), std::string::npos) << b.status().message();
  EXPECT_NE(b.status().message().find("measurements[0]"), std::string::npos) << b.status().message();
  EXPECT_FALSE(ParseMachineProfile("{\"format\": \"something\"}", "p.json").ok());
}

TEST(MachineProfileTest, FastestNearTakesTheNearestSizeAndItsBestInflight) {
  const MachineProfile p = TwoSizes();
  auto small = FastestNear(p, "ram-tcp", "get", 12288);  // 3x from 4 KiB, 85x from 1 MiB
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(small->block_bytes, 4096u);
  EXPECT_EQ(small->inflight, 16);
  auto large = FastestNear(p, "ram-tcp", "get", 300000);  // 3.5x from 1 MiB, 73x from 4 KiB
  ASSERT_TRUE(large.ok());
  EXPECT_EQ(large->block_bytes, 1u << 20);
  auto none = FastestNear(p, "nvme", "get", 4096);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("nvme"), std::string::npos);
}

}  // namespace
}  // namespace foresight::planner
