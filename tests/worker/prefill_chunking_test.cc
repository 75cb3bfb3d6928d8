// A token's KV bytes do not depend on how the prompt was cut into prefill chunks, on how long the
// prompt is, or on whether the token came in a prefill or a decode step, for the weight encodings
// whose products go through the integer Q8 kernels (Q4_0, Q4_1, Q8_0: the GGUF models we serve).
// A shared prefix imported from the cache service therefore holds exactly the bytes a cold prefill
// of the consumer's own prompt would compute, and greedy output after an import matches a cold
// start. (Float weights do not have this property: their prefill products go through sgemm,
// whose last bits depend on the chunk's shape; docs/worker.md.)
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "tests/worker/test_tokens.h"
#include "worker/backend.h"
#include "worker/synthetic_model.h"

namespace foresight::worker {
namespace {

// Prefills the first `n` tokens in chunks of `chunk`; chunk 0 feeds them one decode step each.
std::unique_ptr<BackendSequence> Fill(Backend& cpu, const std::vector<TokenId>& tokens, int64_t n, int32_t chunk) {
  std::unique_ptr<BackendSequence> seq = *cpu.NewSequence(chunk == 0 ? 64 : chunk);
  std::vector<float> logits;
  if (chunk == 0) {
    for (int64_t i = 0; i < n; ++i) EXPECT_TRUE(seq->Decode(tokens[i], &logits).ok());
  } else {
    EXPECT_TRUE(seq->Prefill(std::vector<TokenId>(tokens.begin(), tokens.begin() + n), &logits).ok());
  }
  return seq;
}

// The full blocks among the first `tokens` positions whose bytes differ, as "layer L block B".
std::vector<std::string> DifferentBlocks(const BackendSequence& a, const BackendSequence& b, int32_t layers,
                                         int64_t tokens) {
  const KvCache& ka = *a.host_kv();
  const KvCache& kb = *b.host_kv();
  const BlockLayout& layout = ka.layout();
  std::vector<std::string> differ;
  for (int32_t l = 0; l < layers; ++l) {
    for (int64_t block = 0; block < tokens / layout.block_tokens(); ++block) {
      if (std::memcmp(ka.block_data(l, block), kb.block_data(l, block), layout.block_bytes()) != 0) {
        differ.push_back("layer " + std::to_string(l) + " block " + std::to_string(block));
      }
    }
  }
  return differ;
}

// Every prefill attention row an observer hears, per (layer, query head), in the order heard.
class RowRecorder final : public PrefillAttentionObserver {
 public:
  void OnRow(int32_t layer, int32_t q_head, int64_t query, const float* probs) override {
    std::lock_guard<std::mutex> lock(mu_);  // heads may come from several threads at once
    rows[{layer, q_head}].emplace_back(query, std::vector<float>(probs, probs + query + 1));
  }
  std::map<std::pair<int32_t, int32_t>, std::vector<std::pair<int64_t, std::vector<float>>>> rows;

 private:
  std::mutex mu_;
};

// The tiled prefill attention (tasks of a KV head and several positions) hands the observer the
// very rows the one-row kernel computes, each head's in position order, and the same output.
TEST(PrefillObserverTest, TiledRowsEqualRowAtATimeInEachHeadsOrder) {
  SyntheticModelSpec spec;
  spec.type = TensorType::kQ4_1;
  spec.n_layers = 2;
  auto model = MakeSyntheticModel(spec);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const std::vector<TokenId> tokens = testing::TestTokens(300);
  std::unique_ptr<Backend> cpu = NewCpuBackend(**model);
  std::unique_ptr<BackendSequence> tiled = *cpu->NewSequence(64), one_row = *cpu->NewSequence(64);
  ASSERT_TRUE(one_row->TEST_SetRowAtATimePrefill(true).ok());
  RowRecorder heard_tiled, heard_one_row;
  std::vector<float> logits_tiled, logits_one_row;
  ASSERT_TRUE(tiled->Prefill(tokens, &logits_tiled, false, &heard_tiled).ok());
  ASSERT_TRUE(one_row->Prefill(tokens, &logits_one_row, false, &heard_one_row).ok());
  ASSERT_EQ(heard_tiled.rows.size(), static_cast<size_t>(spec.n_layers) * (*model)->config().n_heads);
  for (const auto& [key, rows] : heard_tiled.rows) {
    ASSERT_EQ(rows.size(), tokens.size()) << "layer " << key.first << " head " << key.second;
    for (size_t i = 0; i < rows.size(); ++i) {
      ASSERT_EQ(rows[i].first, static_cast<int64_t>(i)) << "layer " << key.first << " head " << key.second;
    }
  }
  EXPECT_TRUE(heard_tiled.rows == heard_one_row.rows) << "the tiled rows differ from the one-row kernel's";
  EXPECT_EQ(logits_tiled, logits_one_row);
  EXPECT_TRUE(DifferentBlocks(*tiled, *one_row, spec.n_layers, 288).empty());
}

class PrefillChunkingTest : public ::testing::TestWithParam<TensorType> {};

TEST_P(PrefillChunkingTest, KvBytesAreTheSameHoweverThePromptWasCut) {
  SyntheticModelSpec spec;
  spec.type = GetParam();
  spec.n_layers = 2;
  auto model = MakeSyntheticModel(spec);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const std::vector<TokenId> tokens = testing::TestTokens(302);
  const int64_t checked = 288;  // the 18 blocks full in every run
  std::unique_ptr<Backend> cpu = NewCpuBackend(**model);
  auto reference = Fill(*cpu, tokens, 300, 64);
  struct Case {
    const char* what;
    int64_t n;
    int32_t chunk;
  };
  for (const Case& c : {Case{"a longer prompt (last chunk 46 rows, not 44)", 302, 64}, Case{"chunks of 37", 300, 37},
                        Case{"chunks of 3 (the few-row kernels)", 300, 3}, Case{"one decode step per token", 300, 0}}) {
    auto other = Fill(*cpu, tokens, c.n, c.chunk);
    std::vector<std::string> differ = DifferentBlocks(*reference, *other, spec.n_layers, checked);
    EXPECT_TRUE(differ.empty()) << c.what << ": " << differ.size() << " blocks differ, first " << differ.front();
  }
}

INSTANTIATE_TEST_SUITE_P(QuantizedWeights, PrefillChunkingTest, ::testing::Values(TensorType::kQ8_0, TensorType::kQ4_1),
                         [](const auto& info) { return std::string(TensorTypeName(info.param)); });

}  // namespace
}  // namespace foresight::worker
