// The churn table: scaling a measured row to another budget, capping at the context, refusals,
// and the shipped table parsing.
#include "planner/churn_table.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

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

// The rows `foresight-bench decode --modes cross-token --no-reuse --greedy --json` prints (the
// fields the table reads, and one it does not).
std::string DecodeBenchRows(const std::string& policy, int budget, double reuse_units, double no_reuse_units,
                            bool greedy = true) {
  auto row = [&](bool reuse, double units) {
    return "{\"mode\": \"cross-token\", \"reuse\": " + std::string(reuse ? "true" : "false") + ", \"policy\": \"" +
           policy + "\", \"budget\": " + std::to_string(budget) +
           ", \"context\": 7500, \"warmup\": 31, \"steps\": 128, \"greedy\": " + (greedy ? "true" : "false") +
           ", \"heads_fetched_per_token\": " + std::to_string(units) + ", \"bytes_per_token\": 1.0}";
  };
  return "[" + row(true, reuse_units) + ", " + row(false, no_reuse_units) + "]";
}

class ChurnServedDecodeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("served-decode-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& text) {
    const std::string file = (dir_ / name).string();
    std::ofstream(file) << text;
    return file;
  }
  std::filesystem::path dir_;
};

TEST_F(ChurnServedDecodeTest, LoadsUnitsWithAndWithoutReuseAndTheMeasuredSteps) {
  auto d = LoadServedDecode(Write("a.json", DecodeBenchRows("ap", 1024, 45.0, 6000.0)));
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->policy, "ap");
  EXPECT_EQ(d->budget, 1024);
  EXPECT_EQ(d->context, 7500);
  EXPECT_EQ(d->from_step, 32);  // --warmup 31, then an untimed step
  EXPECT_EQ(d->steps, 128);
  EXPECT_DOUBLE_EQ(d->units_per_token_reuse, 45.0);
  EXPECT_DOUBLE_EQ(d->units_per_token_no_reuse, 6000.0);
}

TEST_F(ChurnServedDecodeTest, RefusesADecodeThatCannotGiveBothColumns) {
  auto not_greedy = LoadServedDecode(Write("b.json", DecodeBenchRows("ap", 1024, 45.0, 6000.0, false)));
  ASSERT_FALSE(not_greedy.ok());
  EXPECT_NE(not_greedy.status().message().find("--greedy"), std::string::npos) << not_greedy.status().message();
  std::string one_row = DecodeBenchRows("ap", 1024, 45.0, 6000.0);
  one_row = one_row.substr(0, one_row.find("}, {") + 1) + "]";
  auto reuse_only = LoadServedDecode(Write("c.json", one_row));
  ASSERT_FALSE(reuse_only.ok());
  EXPECT_NE(reuse_only.status().message().find("--no-reuse"), std::string::npos) << reuse_only.status().message();
  EXPECT_FALSE(LoadServedDecode(Write("d.json", "{}")).ok());
}

TEST(ChurnTableTest, ServedRowsAverageTheDecodesPerKvHeadAndStep) {
  // SmolLM2: 30 layers x 3 KV heads = 90 units per step.
  std::vector<ServedDecode> decodes = {{"a", "ap", 1024, 7500, 32, 128, 45.0, 6000.0},
                                       {"b", "ap", 1024, 7400, 32, 128, 63.0, 6200.0},
                                       {"c", "quest", 512, 7500, 32, 128, 90.0, 3600.0}};
  const std::vector<ChurnRow> rows = ServedChurnRows(decodes, 30, 3, 9);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].policy, "ap");
  EXPECT_EQ(rows[0].source, "served");
  EXPECT_DOUBLE_EQ(rows[0].kv_pool_misses, (45.0 / 90 + 63.0 / 90) / 2);       // 0.6
  EXPECT_DOUBLE_EQ(rows[0].kv_union_blocks, (6000.0 / 90 + 6200.0 / 90) / 2);  // 67.78
  EXPECT_EQ(rows[0].context, (7500 + 32 + 64 + 7400 + 32 + 64) / 2);           // mid-window: 7546
  EXPECT_EQ(rows[0].pool_blocks, 208);                                         // as the replayed rows
  EXPECT_EQ(rows[1].policy, "quest");
  EXPECT_DOUBLE_EQ(rows[1].kv_pool_misses, 1.0);
  EXPECT_DOUBLE_EQ(rows[1].kv_union_blocks, 40.0);
  // A served row round-trips without the replay-only columns, and the estimate says where it came from.
  ChurnTable t;
  t.rows = rows;
  t.served_decodes = decodes;
  const std::string json = ChurnTableToJson(t);
  EXPECT_EQ(json.find("kv_new_blocks"), std::string::npos) << json;
  auto back = ParseChurnTable(json, "mem");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_EQ(back->served_decodes.size(), 3u);
  EXPECT_EQ(back->served_decodes[1].context, 7400);
  auto e = EstimateChurn(*back, "ap", 1024, 8192);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->source, "served");
  EXPECT_DOUBLE_EQ(e->new_blocks, 0.6);
  std::string bad = json;
  bad.replace(bad.find("\"served\""), 8, "\"guess\"");
  auto b = ParseChurnTable(bad, "mem");
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("source"), std::string::npos) << b.status().message();
}

TEST(ChurnTableTest, RamHitRateFollowsTheCurveAndRoundTrips) {
  RamHitRateCurve c{"ap", 1024, 4, {{0.2, 0.4}, {0.6, 0.8}}};
  EXPECT_DOUBLE_EQ(RamHitRateAt(c, 0.1), 0.2);                  // below the first point: scaled with the share
  EXPECT_DOUBLE_EQ(RamHitRateAt(c, 0.4), 0.6);                  // halfway between the points
  EXPECT_DOUBLE_EQ(RamHitRateAt(c, 0.8), 0.8);                  // past the last point: its rate
  EXPECT_DOUBLE_EQ(RamHitRateAt(c, 1.2), 0.8);                  // the caller knows when everything fits
  EXPECT_DOUBLE_EQ(RamHitRateAt(RamHitRateCurve{}, 0.3), 0.3);  // no curve: the share itself
  EXPECT_DOUBLE_EQ(RamHitRateAt(RamHitRateCurve{}, 2.0), 1.0);
  ChurnTable t = Table();
  t.ram_hit_rates = c;
  auto back = ParseChurnTable(ChurnTableToJson(t), "mem");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_EQ(back->ram_hit_rates.points.size(), 2u);
  EXPECT_EQ(back->ram_hit_rates.sequences, 4);
  EXPECT_DOUBLE_EQ(back->ram_hit_rates.points[1].hit_rate, 0.8);
  std::string bad = ChurnTableToJson(t);
  bad.replace(bad.find("\"ram_share\": 0.6"), 16, "\"ram_share\": 0.1");  // not ascending
  auto b = ParseChurnTable(bad, "mem");
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("ram_hit_rates"), std::string::npos) << b.status().message();
}

}  // namespace
}  // namespace foresight::planner
