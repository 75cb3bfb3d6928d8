// The churn table: scaling a measured row to another budget, capping at the context, refusals,
// and the shipped table parsing.
#include "planner/churn_table.h"

#include <gtest/gtest.h>

namespace foresight::planner {
namespace {

ChurnTable Table() {
  ChurnTable t;
  // Fetched with reuse: the pool misses (4, 6, 15), not the blocks new against the previous step.
  t.rows = {{"ap", 512, 8000, 40.0, 5.0, 112, 4.0, 0.9},
            {"ap", 1024, 8000, 76.0, 9.0, 208, 6.0, 0.95},
            {"quest", 1024, 8000, 90, 20, 208, 15, 0.9}};
  return t;
}

TEST(ChurnTableTest, EstimateScalesTheNearestRowByBudget) {
  auto exact = EstimateChurn(Table(), "ap", 1024, 8192);
  ASSERT_TRUE(exact.ok());
  EXPECT_DOUBLE_EQ(exact->union_blocks, 76.0);
  EXPECT_DOUBLE_EQ(exact->new_blocks, 6.0);
  auto scaled = EstimateChurn(Table(), "ap", 2048, 131072);  // nearest row: 1024, twice the budget
  ASSERT_TRUE(scaled.ok());
  EXPECT_EQ(scaled->measured_budget, 1024);
  EXPECT_DOUBLE_EQ(scaled->union_blocks, 152.0);
  EXPECT_DOUBLE_EQ(scaled->new_blocks, 12.0);
  auto low = EstimateChurn(Table(), "ap", 600, 8192);  // 600/512 = 1.17 < 1024/600 = 1.71
  ASSERT_TRUE(low.ok());
  EXPECT_EQ(low->measured_budget, 512);
}

TEST(ChurnTableTest, ABudgetThatCoversTheContextFetchesOnlyTheNewBlock) {
  auto all = EstimateChurn(Table(), "ap", 1024, 1024);  // 64 blocks; the row's 76 exceeds them
  ASSERT_TRUE(all.ok());
  EXPECT_DOUBLE_EQ(all->union_blocks, 64.0);
  EXPECT_DOUBLE_EQ(all->new_blocks, 1.0 / 16);
}

TEST(ChurnTableTest, UnknownPolicyIsRefusedByName) {
  auto e = EstimateChurn(Table(), "h2o", 1024, 8192);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("--policy"), std::string::npos);
  EXPECT_NE(e.status().message().find("quest"), std::string::npos) << e.status().message();
}

TEST(ChurnTableTest, RoundTripsAndTheShippedTableParses) {
  auto back = ParseChurnTable(ChurnTableToJson(Table()), "mem");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_EQ(back->rows.size(), 3u);
  EXPECT_DOUBLE_EQ(back->rows[1].kv_new_blocks, 9.0);
  EXPECT_DOUBLE_EQ(back->rows[1].kv_pool_misses, 6.0);
  EXPECT_EQ(back->rows[1].pool_blocks, 208);
  auto shipped = ShippedChurnTable();
  ASSERT_TRUE(shipped.ok()) << shipped.status().ToString();
  EXPECT_TRUE(EstimateChurn(*shipped, "ap", 1024, 8192).ok());
  std::string bad = ChurnTableToJson(Table());
  bad.replace(bad.find("\"kv_pool_misses\": 4.0"), 21, "\"kv_pool_misses\": 99.0");
  auto b = ParseChurnTable(bad, "mem");
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("rows[0]"), std::string::npos) << b.status().message();
}

}  // namespace
}  // namespace foresight::planner
