// The machine profile: a round trip, refusals naming the field, and the lookup the planner uses.
#include "planner/machine_profile.h"

#include <gtest/gtest.h>

namespace foresight::planner {
namespace {

MachineProfile TwoSizes() {
  MachineProfile p;
  p.host = "test";
  p.cpus = 2;
  p.measurements = {{"ram-tcp", "get", 4096, 1, 1, 0.10, 50, 90, 1.5, 1.2},
                    {"ram-tcp", "get", 4096, 1, 16, 0.40, 150, 400, 1.1, 0.9},
                    {"ram-tcp", "get", 1 << 20, 1, 16, 4.2, 3000, 9000, 0.25, 0.24},
                    {"ram-tcp", "put", 1 << 20, 1, 16, 3.6, 4000, 9000, 0.3, 0.3}};
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
  EXPECT_EQ(back->measurements[1].clients, 1);
  EXPECT_EQ(back->measurements[1].inflight, 16);
}

TEST(MachineProfileTest, RefusesAnotherVersionAndBadFieldsByName) {
  std::string text = MachineProfileToJson(TwoSizes());
  std::string other = text;
  // Version 1 (before concurrent clients were measured) is refused, saying how to measure again.
  other.replace(other.find("\"version\": 2"), 12, "\"version\": 1");
  auto v1 = ParseMachineProfile(other, "p.json");
  ASSERT_FALSE(v1.ok());
  EXPECT_NE(v1.status().message().find("\"version\" is 1"), std::string::npos) << v1.status().message();
  EXPECT_NE(v1.status().message().find("p.json"), std::string::npos);
  EXPECT_NE(v1.status().message().find("foresight-bench tiers --profile"), std::string::npos);
  std::string no_clients = text;
  no_clients.replace(no_clients.find("\"clients\": 1"), 12, "\"clients\": 0");
  auto c = ParseMachineProfile(no_clients, "p.json");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("clients"), std::string::npos) << c.status().message();
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

TEST(MachineProfileTest, FastestNearTakesTheNearestClientCountOfThatSize) {
  MachineProfile p = TwoSizes();
  // 16 clients with one get each are slower than one client pipelining 16.
  p.measurements.push_back({"ram-tcp", "get", 4096, 4, 1, 0.30, 60, 200, 1.3, 1.0});
  p.measurements.push_back({"ram-tcp", "get", 4096, 16, 1, 0.25, 130, 500, 1.8, 1.1});
  auto one = FastestNear(p, "ram-tcp", "get", 4096, 1);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->clients, 1);
  EXPECT_DOUBLE_EQ(one->gbps, 0.40);
  auto sixteen = FastestNear(p, "ram-tcp", "get", 4096, 16);
  ASSERT_TRUE(sixteen.ok());
  EXPECT_EQ(sixteen->clients, 16);
  EXPECT_DOUBLE_EQ(sixteen->gbps, 0.25);
  auto many = FastestNear(p, "ram-tcp", "get", 4096, 64);  // 4x from 16: the largest measured
  ASSERT_TRUE(many.ok());
  EXPECT_EQ(many->clients, 16);
  auto eight = FastestNear(p, "ram-tcp", "get", 4096, 8);  // 2x from 4 and from 16: the smaller
  ASSERT_TRUE(eight.ok());
  EXPECT_EQ(eight->clients, 4);
  EXPECT_DOUBLE_EQ(eight->gbps, 0.30);
  auto three = FastestNear(p, "ram-tcp", "get", 4096, 3);  // 1.33x from 4, 3x from 1
  ASSERT_TRUE(three.ok());
  EXPECT_EQ(three->clients, 4);
  // Only one client was measured at 1 MiB: every count gets that row.
  auto large = FastestNear(p, "ram-tcp", "get", 1 << 20, 16);
  ASSERT_TRUE(large.ok());
  EXPECT_EQ(large->clients, 1);
  EXPECT_DOUBLE_EQ(large->gbps, 4.2);
}

}  // namespace
}  // namespace foresight::planner
