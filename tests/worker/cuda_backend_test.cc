// The CUDA backend behind the engine interface (worker/cuda/cuda_backend.h): a step over several
// sequences agrees with the CPU backend's (to cuda_sequence_test.cc's F32 tolerance), and what the
// backend cannot do (a KvBlockSource, lookahead queries, KV import, offload) is refused with an
// error naming the backend and the feature, leaving the sequence as it was. Skips where no GPU is
// usable; the "no device" error path runs there instead.
#include "worker/cuda/cuda_backend.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
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

std::unique_ptr<Model> F32Model() {
  SyntheticModelSpec spec;
  spec.seed = 11;
  auto model = MakeSyntheticModel(spec);
  EXPECT_TRUE(model.ok()) << model.status().ToString();
  return model.ok() ? std::move(*model) : nullptr;
}

// max |b - a| / max |a|.
double RelativeDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double scale = 0, diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, std::fabs(static_cast<double>(a[i])));
    diff = std::max(diff, std::fabs(static_cast<double>(b[i]) - a[i]));
  }
  return scale > 0 ? diff / scale : diff;
}

class NeverSource : public KvBlockSource {
 public:
  Status AcquireLayer(int32_t, int64_t, const std::vector<std::vector<int32_t>>&,
                      std::vector<std::vector<const uint16_t*>>*) override {
    ++calls;
    return Internal("never called");
  }
  void ReleaseLayer(int32_t, int64_t) override {}
  int calls = 0;
};

class LookaheadHook : public DecodeAttentionHook {
 public:
  bool SelectBlocks(int32_t, int64_t, const float*, const KvCache&, std::vector<std::vector<int32_t>>*) override {
    return false;
  }
  bool WantsLookaheadQueries() const override { return true; }
};

bool Mentions(const Status& s, const std::string& what) { return s.message().find(what) != std::string::npos; }

TEST(CudaBackendTest, AStepOverSeveralSequencesAgreesWithTheCpuBackend) {
  Status device = CudaDeviceStatus();
  if (!device.ok()) GTEST_SKIP() << "no usable GPU: " << device.message();
  std::unique_ptr<Model> model = F32Model();
  ASSERT_NE(model, nullptr);
  const int64_t vocab = model->config().vocab_size;
  auto gpu = NewCudaBackend(*model);
  ASSERT_TRUE(gpu.ok()) << gpu.status().ToString();
  EXPECT_EQ((*gpu)->name(), "cuda");
  std::unique_ptr<Backend> cpu = NewCpuBackend(*model);
  const std::vector<TokenId> tokens = testing::TestTokens(100);
  const std::vector<TokenId> first(tokens.begin(), tokens.begin() + 50), second(tokens.begin() + 50, tokens.end());

  // On each backend: sequence 0 prefilled, then one step decoding it and prefilling sequence 1.
  std::vector<std::vector<float>> logits;  // cpu decode, cpu prefill, gpu decode, gpu prefill
  for (Backend* backend : {cpu.get(), gpu->get()}) {
    auto s0 = backend->NewSequence(32);
    auto s1 = backend->NewSequence(32);
    ASSERT_TRUE(s0.ok() && s1.ok());
    std::vector<float> scratch;
    Status s = (*s0)->Prefill(first, &scratch);
    ASSERT_TRUE(s.ok()) << s.ToString();
    std::vector<float> decode(vocab), prefill(vocab);
    std::vector<StepItem> step(2);
    step[0].sequence = s0->get();
    step[0].tokens = &tokens[50];
    step[0].n = 1;
    step[0].logits = decode.data();
    step[1].sequence = s1->get();
    step[1].tokens = second.data();
    step[1].n = static_cast<int64_t>(second.size());  // more than a prefill chunk
    step[1].logits = prefill.data();
    step[1].prefill = true;
    backend->Run(&step);
    for (const StepItem& item : step)
      ASSERT_TRUE(item.status.ok()) << backend->name() << ": " << item.status.ToString();
    EXPECT_EQ((*s0)->position(), 51);
    EXPECT_EQ((*s1)->position(), 50);
    EXPECT_EQ((*s1)->stats().prefill_tokens, 50);
    EXPECT_EQ((*s0)->stats().decode_tokens, 1);
    logits.push_back(decode);
    logits.push_back(prefill);
  }
  EXPECT_LE(RelativeDiff(logits[0], logits[2]), 2e-3);
  EXPECT_LE(RelativeDiff(logits[1], logits[3]), 2e-3);

  // Generate drives either backend through the same loop.
  GenerateOptions o;
  o.max_tokens = 4;
  o.ignore_eos = true;
  o.backend = gpu->get();
  auto r = Generate(*model, first, o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->tokens.size(), 4u);
  EXPECT_EQ(r->stats.decode_tokens, 3);
}

TEST(CudaBackendTest, RefusesWhatItCannotDoByName) {
  Status device = CudaDeviceStatus();
  if (!device.ok()) GTEST_SKIP() << "no usable GPU: " << device.message();
  std::unique_ptr<Model> model = F32Model();
  ASSERT_NE(model, nullptr);
  auto gpu = NewCudaBackend(*model);
  ASSERT_TRUE(gpu.ok()) << gpu.status().ToString();
  Backend& backend = **gpu;

  // Offload: refused up front, and by OffloadedSequence::Create.
  Status offload = backend.SupportsOffload();
  EXPECT_EQ(offload.code(), StatusCode::kUnimplemented);
  EXPECT_TRUE(Mentions(offload, "cuda backend") && Mentions(offload, "offload")) << offload.ToString();
  OffloadOptions oo;
  oo.mode = OffloadMode::kResident;
  oo.publish = false;
  oo.import_prefix = false;
  auto offloaded = OffloadedSequence::Create(backend, nullptr, std::nullopt, oo);
  ASSERT_FALSE(offloaded.ok());
  EXPECT_EQ(offloaded.status().code(), StatusCode::kUnimplemented);
  EXPECT_TRUE(Mentions(offloaded.status(), "cuda backend")) << offloaded.status().ToString();

  auto seq = backend.NewSequence(32);
  ASSERT_TRUE(seq.ok()) << seq.status().ToString();
  BackendSequence& s = **seq;
  EXPECT_EQ(s.host_kv(), nullptr);
  std::vector<float> logits;
  const std::vector<TokenId> prompt = testing::TestTokens(40);
  ASSERT_TRUE(s.Prefill(prompt, &logits).ok());

  // A KvBlockSource: the step fails, naming it; the source is never asked; the sequence stays.
  NeverSource source;
  Status st = s.Decode(prompt[0], &logits, nullptr, &source);
  EXPECT_EQ(st.code(), StatusCode::kUnimplemented);
  EXPECT_TRUE(Mentions(st, "cuda backend") && Mentions(st, "KvBlockSource")) << st.ToString();
  EXPECT_EQ(source.calls, 0);
  EXPECT_EQ(s.position(), 40);

  // Lookahead queries: refused, not run with each layer's own query.
  LookaheadHook lookahead;
  st = s.Decode(prompt[0], &logits, &lookahead);
  EXPECT_EQ(st.code(), StatusCode::kUnimplemented);
  EXPECT_TRUE(Mentions(st, "cuda backend") && Mentions(st, "lookahead")) << st.ToString();
  EXPECT_EQ(s.position(), 40);

  // KV import and dropping blocks (shared prefixes, offload).
  auto empty = backend.NewSequence(32);
  ASSERT_TRUE(empty.ok());
  st = (*empty)->ImportKv(1, [](int32_t, const std::vector<uint8_t*>&) { return Status::OK(); });
  EXPECT_EQ(st.code(), StatusCode::kUnimplemented);
  EXPECT_TRUE(Mentions(st, "cuda backend")) << st.ToString();
  st = s.DropBlocks(0, 1);
  EXPECT_EQ(st.code(), StatusCode::kUnimplemented);
  // The CPU's test-only prefill kernel.
  st = s.TEST_SetRowAtATimePrefill(true);
  EXPECT_EQ(st.code(), StatusCode::kUnimplemented);
  EXPECT_TRUE(Mentions(st, "cuda backend") && Mentions(st, "row-at-a-time")) << st.ToString();

  // And the sequence still decodes.
  st = s.Decode(prompt[0], &logits);
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(s.position(), 41);
}

TEST(CudaBackendTest, NoDeviceIsReportedAsUnavailable) {
  Status device = CudaDeviceStatus();
  if (device.ok()) GTEST_SKIP() << "a GPU is present";
  std::unique_ptr<Model> model = F32Model();
  ASSERT_NE(model, nullptr);
  auto gpu = NewCudaBackend(*model);
  ASSERT_FALSE(gpu.ok());
  EXPECT_EQ(gpu.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(gpu.status().message(), device.message());
}

}  // namespace
}  // namespace foresight::worker
