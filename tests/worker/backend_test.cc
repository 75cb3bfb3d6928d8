// The engine's backend interface (worker/backend.h) on the CPU: a step over several sequences gives
// each the logits, KV and statistics it gets alone (a batch of one each), bit for bit on the
// quantised weights the engine serves; items of another backend fail alone; Generate runs on
// the backend it is given; offload refuses, at Create, a backend that cannot offload.
#include "worker/backend.h"

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tests/worker/test_tokens.h"
#include "worker/generator.h"
#include "worker/offload/offloaded_sequence.h"
#include "worker/synthetic_model.h"

namespace foresight::worker {
namespace {

// Q8_0 matrices: every row's products are independent of the other rows of its step.
std::unique_ptr<Model> QuantizedModel() {
  SyntheticModelSpec spec;
  spec.type = TensorType::kQ8_0;
  spec.seed = 5;
  auto model = MakeSyntheticModel(spec);
  EXPECT_TRUE(model.ok()) << model.status().ToString();
  return model.ok() ? std::move(*model) : nullptr;
}

// Selects the first and the last block per KV head (decode made sparse).
class EndsHook : public DecodeAttentionHook {
 public:
  bool SelectBlocks(int32_t layer, int64_t position, const float* queries, const KvCache& kv,
                    std::vector<std::vector<int32_t>>* blocks) override {
    const int32_t last = static_cast<int32_t>(kv.blocks() - 1);
    for (auto& b : *blocks) b = last > 0 ? std::vector<int32_t>{0, last} : std::vector<int32_t>{0};
    return true;
  }
};

bool SameKv(const KvCache& a, const KvCache& b) {
  if (a.tokens() != b.tokens()) return false;
  for (int32_t l = 0; l < a.n_layers(); ++l) {
    for (int64_t blk = 0; blk < a.blocks(); ++blk) {
      if (std::memcmp(a.block_data(l, blk), b.block_data(l, blk), a.layout().block_bytes()) != 0) return false;
    }
  }
  return true;
}

TEST(CpuBackendTest, AStepOverSeveralSequencesEqualsEachAlone) {
  std::unique_ptr<Model> model = QuantizedModel();
  ASSERT_NE(model, nullptr);
  const int64_t vocab = model->config().vocab_size;
  const std::vector<TokenId> tokens = testing::TestTokens(120);
  auto part = [&](int64_t from, int64_t to) {
    return std::vector<TokenId>(tokens.begin() + from, tokens.begin() + to);
  };

  std::unique_ptr<Backend> cpu = NewCpuBackend(*model);
  EXPECT_EQ(cpu->name(), "cpu");
  EXPECT_TRUE(cpu->SupportsOffload().ok());
  // Four sequences stepped alone, four stepped together.
  std::vector<std::unique_ptr<BackendSequence>> alone, seqs;
  for (int i = 0; i < 8; ++i) {
    auto s = cpu->NewSequence(64);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    (i < 4 ? alone : seqs).push_back(std::move(*s));
  }

  // Alone: a decoding sequence (40 tokens in), a sparse-decoding one (70 in), one prefilling a
  // second chunk (20 in, 30 more) and a fresh one prefilling 17 tokens (each chunk whole).
  BackendSequence &a = *alone[0], &b = *alone[1], &c = *alone[2], &d = *alone[3];
  EndsHook hook;
  std::vector<float> la, lb, lc, ld, scratch;
  ASSERT_TRUE(a.Prefill(part(0, 40), &scratch).ok());
  ASSERT_TRUE(b.Prefill(part(0, 70), &scratch).ok());
  ASSERT_TRUE(c.Prefill(part(0, 20), &scratch).ok());
  ASSERT_TRUE(a.Decode(tokens[40], &la).ok());
  ASSERT_TRUE(b.Decode(tokens[70], &lb, &hook).ok());
  ASSERT_TRUE(c.Prefill(part(20, 50), &lc).ok());
  ASSERT_TRUE(d.Prefill(part(100, 117), &ld).ok());

  // The same together, the last four steps as one.
  ASSERT_TRUE(seqs[0]->Prefill(part(0, 40), &scratch).ok());
  ASSERT_TRUE(seqs[1]->Prefill(part(0, 70), &scratch).ok());
  ASSERT_TRUE(seqs[2]->Prefill(part(0, 20), &scratch).ok());
  std::vector<float> ba(vocab), bb(vocab), bc(vocab), bd(vocab);
  const std::vector<TokenId> c_more = part(20, 50), d_all = part(100, 117);
  std::vector<StepItem> step(4);
  step[0].sequence = seqs[0].get();
  step[0].tokens = &tokens[40];
  step[0].n = 1;
  step[0].logits = ba.data();
  step[1].sequence = seqs[1].get();
  step[1].tokens = &tokens[70];
  step[1].n = 1;
  step[1].logits = bb.data();
  step[1].hook = &hook;
  step[2].sequence = seqs[2].get();
  step[2].tokens = c_more.data();
  step[2].n = static_cast<int64_t>(c_more.size());
  step[2].logits = bc.data();
  step[2].prefill = true;
  step[3].sequence = seqs[3].get();
  step[3].tokens = d_all.data();
  step[3].n = static_cast<int64_t>(d_all.size());
  step[3].logits = bd.data();
  step[3].prefill = true;
  cpu->Run(&step);
  for (const StepItem& item : step) ASSERT_TRUE(item.status.ok()) << item.status.ToString();

  EXPECT_EQ(ba, la);
  EXPECT_EQ(bb, lb);
  EXPECT_EQ(bc, lc);
  EXPECT_EQ(bd, ld);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(seqs[i]->position(), alone[i]->position()) << "sequence " << i;
    ASSERT_NE(seqs[i]->host_kv(), nullptr);
    ASSERT_NE(alone[i]->host_kv(), nullptr);
    EXPECT_TRUE(SameKv(*seqs[i]->host_kv(), *alone[i]->host_kv())) << "sequence " << i;
    EXPECT_EQ(seqs[i]->stats().prefill_tokens, alone[i]->stats().prefill_tokens) << "sequence " << i;
    EXPECT_EQ(seqs[i]->stats().decode_tokens, alone[i]->stats().decode_tokens) << "sequence " << i;
    EXPECT_EQ(seqs[i]->stats().blocks_attended, alone[i]->stats().blocks_attended) << "sequence " << i;
    EXPECT_EQ(seqs[i]->stats().blocks_total, alone[i]->stats().blocks_total) << "sequence " << i;
  }
  EXPECT_LT(seqs[1]->stats().blocks_attended, seqs[1]->stats().blocks_total);  // the hook made it sparse

  // After a batched step, a sequence goes on alone as if it had run alone throughout.
  std::vector<float> next_alone, next_backend;
  ASSERT_TRUE(a.Decode(tokens[41], &next_alone).ok());
  ASSERT_TRUE(seqs[0]->Decode(tokens[41], &next_backend).ok());
  EXPECT_EQ(next_backend, next_alone);
  // Rewind forgets.
  seqs[0]->Rewind(30);
  EXPECT_EQ(seqs[0]->position(), 30);
  EXPECT_EQ(seqs[0]->host_kv()->tokens(), 30);
}

TEST(CpuBackendTest, AnItemThatFailsFailsAlone) {
  std::unique_ptr<Model> model = QuantizedModel();
  ASSERT_NE(model, nullptr);
  std::unique_ptr<Backend> cpu = NewCpuBackend(*model), other = NewCpuBackend(*model);
  auto mine = cpu->NewSequence();
  auto theirs = other->NewSequence();
  auto bad = cpu->NewSequence();
  ASSERT_TRUE(mine.ok() && theirs.ok() && bad.ok());
  const std::vector<TokenId> prompt = testing::TestTokens(10);
  const TokenId out_of_vocabulary = model->config().vocab_size;
  std::vector<StepItem> step(4);
  step[0].sequence = (*theirs).get();  // another backend's sequence
  step[0].tokens = prompt.data();
  step[0].n = 10;
  step[1].sequence = nullptr;
  step[2].sequence = (*bad).get();
  step[2].tokens = &out_of_vocabulary;
  step[2].n = 1;
  step[3].sequence = (*mine).get();
  step[3].tokens = prompt.data();
  step[3].n = 10;
  cpu->Run(&step);
  EXPECT_EQ(step[0].status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(step[0].status.message().find("cpu backend"), std::string::npos) << step[0].status.ToString();
  EXPECT_EQ(step[1].status.code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(step[2].status.ok());
  EXPECT_TRUE(step[3].status.ok()) << step[3].status.ToString();
  EXPECT_EQ((*theirs)->position(), 0);
  EXPECT_EQ((*bad)->position(), 0);
  EXPECT_EQ((*mine)->position(), 10);
}

TEST(CpuBackendTest, GenerateRunsOnTheBackendItIsGiven) {
  std::unique_ptr<Model> model = QuantizedModel();
  ASSERT_NE(model, nullptr);
  const std::vector<TokenId> prompt = testing::TestTokens(24);
  GenerateOptions o;
  o.max_tokens = 8;
  o.ignore_eos = true;
  o.prefill_chunk = 16;
  auto by_default = Generate(*model, prompt, o);
  ASSERT_TRUE(by_default.ok()) << by_default.status().ToString();
  std::unique_ptr<Backend> cpu = NewCpuBackend(*model);
  o.backend = cpu.get();
  auto given = Generate(*model, prompt, o);
  ASSERT_TRUE(given.ok()) << given.status().ToString();
  EXPECT_EQ(given->tokens, by_default->tokens);
  EXPECT_EQ(given->stats.prefill_tokens, 24);
  EXPECT_EQ(given->stats.decode_tokens, 7);

  // A backend of another model is refused, not run.
  std::unique_ptr<Model> other = QuantizedModel();
  ASSERT_NE(other, nullptr);
  auto refused = Generate(*other, prompt, o);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
}

// A backend that keeps its KV off the host, as the CUDA one: the CPU's forward pass, but no
// offload.
class NoOffloadBackend : public Backend {
 public:
  explicit NoOffloadBackend(const Model& model) : inner_(NewCpuBackend(model)) {}
  std::string_view name() const override { return "test"; }
  const Model& model() const override { return inner_->model(); }
  Status SupportsOffload() const override { return Unimplemented("test backend: offload is not supported"); }
  StatusOr<std::unique_ptr<BackendSequence>> NewSequence(int32_t prefill_chunk) override {
    return inner_->NewSequence(prefill_chunk);
  }
  void Run(std::vector<StepItem>* items) override { inner_->Run(items); }

 private:
  std::unique_ptr<Backend> inner_;
};

TEST(OffloadedSequenceBackendTest, CreateRefusesABackendThatCannotOffload) {
  std::unique_ptr<Model> model = QuantizedModel();
  ASSERT_NE(model, nullptr);
  OffloadOptions o;
  o.mode = OffloadMode::kResident;
  o.publish = false;
  o.import_prefix = false;
  NoOffloadBackend no(*model);
  auto refused = OffloadedSequence::Create(no, nullptr, std::nullopt, o);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(refused.status().message().find("offloaded sequence"), std::string::npos) << refused.status().ToString();
  EXPECT_NE(refused.status().message().find("test backend"), std::string::npos) << refused.status().ToString();

  // On the CPU backend the same request runs, and gives what a plain backend sequence gives.
  std::unique_ptr<Backend> cpu = NewCpuBackend(*model);
  auto seq = OffloadedSequence::Create(*cpu, nullptr, std::nullopt, o);
  ASSERT_TRUE(seq.ok()) << seq.status().ToString();
  EXPECT_EQ(&(*seq)->backend(), cpu.get());
  const std::vector<TokenId> prompt = testing::TestTokens(40);
  std::vector<float> offloaded, plain;
  ASSERT_TRUE((*seq)->Prefill(prompt, &offloaded).ok());
  auto alone = cpu->NewSequence(o.prefill_chunk);
  ASSERT_TRUE(alone.ok()) << alone.status().ToString();
  ASSERT_TRUE((*alone)->Prefill(prompt, &plain).ok());
  EXPECT_EQ(offloaded, plain);
  ASSERT_TRUE((*seq)->Decode(prompt[3], &offloaded).ok());
  ASSERT_TRUE((*alone)->Decode(prompt[3], &plain).ok());
  EXPECT_EQ(offloaded, plain);
  EXPECT_EQ((*seq)->position(), 41);
}

}  // namespace
}  // namespace foresight::worker
