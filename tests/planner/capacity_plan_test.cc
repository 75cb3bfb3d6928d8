// The plan's arithmetic against hand computation (SmolLM2 and Llama-3.1-8B), nodes_needed under
// each of its three constraints, and refusals that name the flag.
#include "planner/capacity_plan.h"

#include <gtest/gtest.h>

namespace foresight::planner {
namespace {

constexpr uint64_t kGiB = 1ull << 30;

// A profile with round figures: 1 GB/s for 4 KiB gets, 0.5 GB/s for puts of any size, 0.2 GB/s
// for promotions from NVMe.
MachineProfile RoundProfile() {
  MachineProfile p;
  p.measurements = {{"ram-tcp", "get", 4096, 1, 16, 1.0, 100, 300, 1, 1},
                    {"ram-tcp", "get", 4096, 1, 1, 0.3, 40, 90, 1, 1},
                    {"ram-tcp", "put", 16384, 1, 16, 0.5, 100, 300, 1, 1},
                    {"nvme", "get", 4096, 1, 16, 0.2, 500, 900, 1, 1}};
  return p;
}

ChurnTable RoundChurn() {
  ChurnTable t;
  t.rows = {{"ap", 1024, 8000, 76.0, 9.0, 208, 6.0, 0.95}};
  return t;
}

PlanRequest SmolLM2At8K() {
  PlanRequest r;
  r.model = *ResolveKvGeometry("smollm2-135m");
  r.context = 8192;
  r.budget = 1024;
  r.node_ram = 1 * kGiB;
  r.node_nvme = 10 * kGiB;
  return r;
}

TEST(CapacityPlanTest, SmolLM2MatchesHandComputation) {
  auto plan = MakeCapacityPlan(SmolLM2At8K(), RoundProfile(), RoundChurn());
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->kv_bytes_per_token, 23040u);
  EXPECT_EQ(plan->kv_bytes_per_sequence, 23040u * 8192);
  EXPECT_EQ(plan->block_bytes, 12288u);  // 16 tokens x 3 heads x 64 x 2 (K, V) x 2 bytes
  EXPECT_EQ(plan->head_block_bytes, 4096u);
  // 512 full blocks; a 12,288-byte block takes a 12,800-byte slot, 327 of them to a 4 MiB page
  // (12,827 bytes of arena each); the 744-byte manifest (24 + 8 x 30 x 3) a 4,096-byte slot.
  EXPECT_EQ(plan->ram_bytes_per_sequence, 512u * (30 * 12827 + 4096));  // 199,119,872
  EXPECT_EQ(plan->nvme_bytes_per_sequence, 512u * (30 * 12288 + 744));  // 189,124,608
  EXPECT_EQ(plan->ram_sequences_per_node, 5);                           // 0.95 x 1 GiB / 199,119,872 = 5.12
  EXPECT_EQ(plan->nvme_sequences_per_node, 56);                         // 10 GiB / 189,124,608 = 56.8
  // 30 layers x 3 KV heads x 6 new blocks x 4,096 bytes.
  EXPECT_DOUBLE_EQ(plan->fetch_bytes_per_token, 30.0 * 3 * 6 * 4096);
  EXPECT_DOUBLE_EQ(plan->fetch_bytes_per_second_per_worker, 30.0 * 3 * 6 * 4096 * 10);
  PlanRequest no_reuse = SmolLM2At8K();
  no_reuse.reuse = false;
  auto whole = MakeCapacityPlan(no_reuse, RoundProfile(), RoundChurn());
  ASSERT_TRUE(whole.ok());
  EXPECT_DOUBLE_EQ(whole->fetch_bytes_per_token, 30.0 * 3 * 76 * 4096);
}

TEST(CapacityPlanTest, Llama8BAt128KMatchesHandComputation) {
  PlanRequest r;
  r.model = *ResolveKvGeometry("llama-3.1-8b");
  r.context = 131072;
  r.budget = 2048;
  r.node_ram = 512 * kGiB;
  r.node_nvme = 4'000'000'000'000ull;
  auto plan = MakeCapacityPlan(r, RoundProfile(), RoundChurn());
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->kv_bytes_per_token, 131072u);
  EXPECT_EQ(plan->kv_bytes_per_sequence, 131072ull * 131072);  // 16 GiB
  // 8,192 blocks; a 65,536-byte block takes a 77,824-byte slot (the 1.25x classes jump from
  // 62,208), 53 to a page: 79,138 bytes of arena each; the manifest (24 + 8 x 32 x 8 = 2,072 B)
  // takes 4,096.
  EXPECT_EQ(plan->ram_bytes_per_sequence, 8192ull * (32 * 79138 + 4096));   // 20,779,106,304
  EXPECT_EQ(plan->nvme_bytes_per_sequence, 8192ull * (32 * 65536 + 2072));  // 17,196,843,008
  EXPECT_EQ(plan->ram_sequences_per_node, 25);                              // 0.95 x 512 GiB / 20,779,106,304 = 25.13
  EXPECT_EQ(plan->nvme_sequences_per_node, 232);                            // 4 TB / 17,196,843,008 = 232.6
  // The table's 1024 row scaled to 2048: 12 new blocks per KV head; 32 x 8 x 12 x 8,192 bytes.
  EXPECT_DOUBLE_EQ(plan->fetch_bytes_per_token, 32.0 * 8 * 12 * 8192);
}

TEST(CapacityPlanTest, NodesNeededHonoursCapacityAndReplication) {
  PlanRequest r;
  r.model = *ResolveKvGeometry("llama-3.1-8b");
  r.context = 131072;
  r.budget = 1024;
  r.node_ram = 512 * kGiB;
  r.sequences = 64;
  r.decode_tps = 0.001;  // bandwidth is no constraint here
  MachineProfile fast = RoundProfile();
  r.replication = 1;
  auto one = MakeCapacityPlan(r, fast, RoundChurn());
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_EQ(one->nodes_for_capacity, 3);  // 64 / 25.13 sequences per node
  EXPECT_EQ(one->nodes_needed, 3);
  r.replication = 2;
  auto two = MakeCapacityPlan(r, fast, RoundChurn());
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(two->nodes_for_capacity, 6);  // 128 copies / 25.13
  EXPECT_EQ(two->nodes_needed, 6);
  EXPECT_EQ(two->bottleneck.name, "RAM capacity");
  // One small sequence with three copies: three distinct nodes, whatever else fits on one.
  PlanRequest small = SmolLM2At8K();
  small.replication = 3;
  auto three = MakeCapacityPlan(small, fast, RoundChurn());
  ASSERT_TRUE(three.ok());
  EXPECT_EQ(three->nodes_for_capacity, 1);
  EXPECT_EQ(three->nodes_for_bandwidth, 1);
  EXPECT_EQ(three->nodes_needed, 3);
}

TEST(CapacityPlanTest, NodesNeededHonoursBandwidth) {
  PlanRequest r = SmolLM2At8K();
  r.node_ram = 64 * kGiB;  // everything in RAM: every fetch is a RAM get
  r.node_nvme = 0;
  r.sequences = 100;
  r.decode_tps = 20;
  r.replication = 2;
  auto plan = MakeCapacityPlan(r, RoundProfile(), RoundChurn());
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  // Fetches: 100 x 20 x 2,211,840 B = 4.42 GB/s over 1 GB/s gets; writes: 100 x 20 x 2 copies x
  // (23,040 + 744 / 16) B = 92.3 MB/s over 0.5 GB/s puts: 4.61 node-seconds per second.
  EXPECT_DOUBLE_EQ(plan->fetch_bytes_per_second, 100.0 * 20 * 2211840);
  EXPECT_DOUBLE_EQ(plan->write_bytes_per_second, 100.0 * 20 * 2 * (23040 + 744.0 / 16));
  EXPECT_EQ(plan->nodes_for_capacity, 1);
  EXPECT_EQ(plan->nodes_for_bandwidth, 5);
  EXPECT_EQ(plan->nodes_needed, 5);
  EXPECT_NE(plan->bottleneck.name.find("node data path"), std::string::npos) << plan->bottleneck.name;
  EXPECT_NEAR(plan->bottleneck.utilisation(), 4.608372 / 5, 1e-6);
}

TEST(CapacityPlanTest, FetchesBeyondRamPromoteFromNvme) {
  PlanRequest r = SmolLM2At8K();  // 1 GiB RAM holds 5.12 sequences
  r.sequences = 20;
  r.decode_tps = 1;
  auto plan = MakeCapacityPlan(r, RoundProfile(), RoundChurn());
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  ASSERT_EQ(plan->nodes_needed, 1);
  EXPECT_NEAR(plan->ram_hit_rate, 0.95 * kGiB / (20.0 * 199119872), 1e-9);
  // Past the high watermark the arena's slots sit midway between the watermarks (0.90 GiB), which
  // hold blocks of 189,124,608 / 199,119,872 = 95.0% of their slots' bytes (what the node reports
  // as used); NVMe holds the share of the 20 sequences that RAM does not.
  EXPECT_NEAR(plan->ram_used_bytes_per_node, 0.90 * kGiB * 189124608 / 199119872, 1);
  EXPECT_NEAR(plan->ram_used_bytes_per_node, 917'858'673, 1);
  EXPECT_NEAR(plan->nvme_used_bytes_per_node, 20.0 * 189124608 * (1 - 0.90 * kGiB / (20.0 * 199119872)), 1);
  // With the churn table's simulated LRU curve, the hit rate is the curve's at RAM's share of the
  // stored KV (1 GiB / 20 x 199,119,872 B = 0.2696: between the points (0.2, 0.4) and (0.6, 0.8)).
  ChurnTable with_curve = RoundChurn();
  with_curve.ram_hit_rates = {"ap", 1024, 4, {{0.2, 0.4}, {0.6, 0.8}}};
  auto lru = MakeCapacityPlan(r, RoundProfile(), with_curve);
  ASSERT_TRUE(lru.ok());
  EXPECT_NEAR(lru->ram_hit_rate, 0.4 + (kGiB / (20.0 * 199119872) - 0.2), 1e-9);
  PlanRequest few = SmolLM2At8K();
  few.sequences = 3;
  auto fits = MakeCapacityPlan(few, RoundProfile(), RoundChurn());
  ASSERT_TRUE(fits.ok());
  EXPECT_DOUBLE_EQ(fits->ram_used_bytes_per_node, 3.0 * 189124608);
  EXPECT_DOUBLE_EQ(fits->nvme_used_bytes_per_node, 0);
}

TEST(CapacityPlanTest, NodeLimitsUseTheProfileRowOfTheWorkersClientCount) {
  MachineProfile profile = RoundProfile();
  // 16 clients with one get each sustain less than one client with 16 in flight.
  profile.measurements.push_back({"ram-tcp", "get", 4096, 16, 1, 0.25, 130, 500, 1, 1});
  PlanRequest r = SmolLM2At8K();
  r.node_nvme = 0;
  r.node_ram = 64 * kGiB;
  r.sequences = 16;
  r.decode_tps = 1;  // 16 x 2.2 MB/s of fetches: one node
  auto sixteen = MakeCapacityPlan(r, profile, RoundChurn());
  ASSERT_TRUE(sixteen.ok()) << sixteen.status().ToString();
  ASSERT_EQ(sixteen->nodes_needed, 1);
  EXPECT_EQ(sixteen->workers, 16);
  EXPECT_EQ(sixteen->link_get.clients, 16);
  EXPECT_DOUBLE_EQ(sixteen->link_get.gbps, 0.25);
  EXPECT_EQ(sixteen->worker_get.clients, 1);  // one worker is one client
  EXPECT_DOUBLE_EQ(sixteen->worker_get.gbps, 1.0);
  const PlanLimit* node_get = nullptr;
  for (const PlanLimit& l : sixteen->limits)
    if (l.name == "node link (ram-tcp get)") node_get = &l;
  ASSERT_NE(node_get, nullptr);
  EXPECT_DOUBLE_EQ(node_get->available, 0.25e9);
  // Four workers (four sequences each): 4x from 1 client and 4x from 16, a tie: the smaller.
  r.sequences_per_worker = 4;
  auto four = MakeCapacityPlan(r, profile, RoundChurn());
  ASSERT_TRUE(four.ok());
  EXPECT_EQ(four->workers, 4);
  EXPECT_EQ(four->link_get.clients, 1);
  EXPECT_DOUBLE_EQ(four->link_get.gbps, 1.0);
  r.sequences_per_worker = 2;  // 8 workers: 2x from 16, 8x from 1
  auto eight = MakeCapacityPlan(r, profile, RoundChurn());
  ASSERT_TRUE(eight.ok());
  EXPECT_EQ(eight->link_get.clients, 16);
}

TEST(CapacityPlanTest, RefusesBadRequestsNamingTheFlag) {
  auto expect_refused = [](PlanRequest r, const std::string& flag) {
    auto plan = MakeCapacityPlan(r, RoundProfile(), RoundChurn());
    ASSERT_FALSE(plan.ok()) << flag;
    EXPECT_NE(plan.status().message().find(flag), std::string::npos) << plan.status().message();
  };
  PlanRequest r = SmolLM2At8K();
  r.budget = 9000;
  expect_refused(r, "--budget 9000 is larger than --context 8192");
  r = SmolLM2At8K();
  r.context = 0;
  expect_refused(r, "--context");
  r = SmolLM2At8K();
  r.replication = 0;
  expect_refused(r, "--replication");
  r = SmolLM2At8K();
  r.sequences = 0;
  expect_refused(r, "--sequences");
  r = SmolLM2At8K();
  r.decode_tps = 0;
  expect_refused(r, "--decode-tps");
  r = SmolLM2At8K();
  r.node_ram = 0;
  expect_refused(r, "--node-ram");
  r = SmolLM2At8K();
  r.policy = "h2o";
  expect_refused(r, "--policy");
  r = SmolLM2At8K();
  r.link = "carrier-pigeon";
  expect_refused(r, "--link");
  r = SmolLM2At8K();
  r.link = "ram-shm";  // not in the profile
  expect_refused(r, "ram-shm");
}

}  // namespace
}  // namespace foresight::planner
