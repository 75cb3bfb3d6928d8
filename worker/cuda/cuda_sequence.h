// The worker engine's CUDA backend: the same Llama-family forward pass as Sequence (worker/sequence.h)
// on an NVIDIA GPU. CudaModel uploads a Model's weights once; any number of CudaSequences run on it.
//
//   auto gpu = CudaModel::Upload(model);       // UNAVAILABLE without a usable GPU, saying why
//   auto seq = CudaSequence::Create(**gpu);
//   (*seq)->Prefill(tokens, &logits);
//   (*seq)->Decode(next, &logits, hook);       // hook: DecodeAttentionHook, may pick blocks per KV head
//
// What runs on the GPU: embedding lookup, RMSNorm, RoPE (llama3 frequency factors included), SwiGLU,
// residual adds and attention are this folder's kernels (cuda_kernels.h); the matrix products are
// cuBLAS (cublasGemmEx, float accumulation). Precision: F32 matrices stay F32; every other encoding
// (F16, BF16, Q8_0, Q4_0, Q4_1, ...) is held as F16, dequantised on the host at upload, and its
// products take half activations. The KV cache is half precision in 16-token blocks, with the
// bytes of common/block_layout.h, as the CPU's KvCache. Attention rounds where the CPU path rounds
// (half queries, keys, values and probabilities). Logits agree with the CPU backend to the
// tolerance tests/worker/cuda_sequence_test.cc states, not bit for bit.
//
// Decode hooks: SelectBlocks gets the step's queries and a host copy of the KV cache (copied from
// the GPU on a hook's first use per layer, then one block per layer and step), so key-reading
// policies (Quest) work; OnAttention gets the per-block max and sum from the GPU.
//
// Prefill attention observers (selection policies are seeded from the prompt's rows): with one,
// each layer of each prefill chunk copies the chunk's queries and KV blocks to the host (one
// stream synchronisation per layer and chunk) and the rows are computed there from those copies
// by PrefillAttentionRow, the function the CPU prefill uses, while the GPU runs the rest of the
// layer. So the rows are exactly what the CPU would compute from the GPU's queries and keys; they
// differ from the CPU backend's rows only through those inputs. The cost is the CPU's own prefill
// score work (n_heads x prompt^2 / 2 half dot products of head_dim), on the host's cores: a
// prefill with an observer runs at about the CPU backend's attention speed, not the GPU's.
// Without an observer nothing is copied. KvBlockSource (offload) is not supported on this backend yet;
// nor are lookahead queries (DecodeAttentionHook::WantsLookaheadQueries), which only serve offload's
// prefetch. The engine drives this class through the Backend interface (worker/cuda/cuda_backend.h),
// which refuses both with an error naming the backend and the feature.
//
// Built only where nvcc exists (FORESIGHT_HAVE_CUDA; target foresight_worker_cuda). The header has
// no CUDA includes, so host-only code can hold these classes.
//
// Thread-safety: CudaModel is immutable after Upload and may be shared. One thread drives a
// CudaSequence (each owns a CUDA stream and a cuBLAS handle).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/kv_cache.h"
#include "worker/model.h"
#include "worker/sequence.h"

namespace foresight::worker {

// OK when CUDA device `device` is usable; otherwise UNAVAILABLE naming the reason, e.g.
// "cuda backend: no CUDA device: cudaErrorInsufficientDriver (CUDA driver version is insufficient
// for CUDA runtime version)".
Status CudaDeviceStatus(int device = 0);

// A weight matrix on the device, [rows x cols] row-major, float or half.
struct CudaMatrix {
  const void* data = nullptr;
  bool f16 = false;
  int64_t rows = 0, cols = 0;
};

class CudaModel {
 public:
  // Uploads every weight of `model` to `device`. `model` must outlive the CudaModel.
  static StatusOr<std::unique_ptr<CudaModel>> Upload(const Model& model, int device = 0);
  ~CudaModel();
  CudaModel(const CudaModel&) = delete;
  CudaModel& operator=(const CudaModel&) = delete;

  struct Layer {
    const float *attn_norm = nullptr, *ffn_norm = nullptr;
    CudaMatrix wq, wk, wv, wo, w_gate, w_up, w_down;
    const float *bq = nullptr, *bk = nullptr, *bv = nullptr;  // null without qkv bias
  };

  const Model& model() const { return model_; }
  const ModelConfig& config() const { return model_.config(); }
  int device() const { return device_; }
  const CudaMatrix& token_embedding() const { return token_embedding_; }
  const CudaMatrix& output() const { return output_; }
  const float* output_norm() const { return output_norm_; }
  const Layer& layer(int32_t l) const { return layers_[l]; }
  // RoPE: head_dim / 2 frequency divisors (ones without llama3 scaling) and theta^(-2/head_dim).
  const float* rope_freq_factors() const { return rope_freq_factors_; }
  float rope_theta_scale() const { return rope_theta_scale_; }
  // Device bytes of the weights.
  uint64_t bytes() const { return bytes_; }

 private:
  CudaModel(const Model& model, int device) : model_(model), device_(device) {}
  StatusOr<const float*> UploadFloats(const std::vector<float>& values, const std::string& name);
  StatusOr<CudaMatrix> UploadMatrix(const WeightMatrix& m, const std::string& name);

  const Model& model_;
  int device_;
  CudaMatrix token_embedding_, output_;
  const float* output_norm_ = nullptr;
  std::vector<Layer> layers_;
  const float* rope_freq_factors_ = nullptr;
  float rope_theta_scale_ = 1.0f;
  uint64_t bytes_ = 0;
  std::vector<void*> allocations_;  // freed by the destructor
};

class CudaSequence {
 public:
  static StatusOr<std::unique_ptr<CudaSequence>> Create(const CudaModel& model, int32_t prefill_chunk = 512);
  ~CudaSequence();
  CudaSequence(const CudaSequence&) = delete;
  CudaSequence& operator=(const CudaSequence&) = delete;

  // As BackendSequence::Prefill; `observer` hears every row (see the cost above), concurrently for
  // different query heads, each head's rows in query order.
  Status Prefill(const std::vector<TokenId>& tokens, std::vector<float>* logits, bool all_logits = false,
                 PrefillAttentionObserver* observer = nullptr);
  // As BackendSequence::Decode, without a KvBlockSource.
  Status Decode(TokenId token, std::vector<float>* logits, DecodeAttentionHook* hook = nullptr);
  // One backend step (StepItem, worker/backend.h): appends tokens[0..n), in chunks of the prefill
  // chunk; `logits` [vocab] (every token's with all_logits; null: none). n == 1 without an observer
  // is a decode step (`hook` may make it sparse), anything else dense. Counted as prefill or decode
  // in stats() as `prefill` says.
  Status Step(const TokenId* tokens, int64_t n, float* logits, bool all_logits, DecodeAttentionHook* hook,
              PrefillAttentionObserver* observer, bool prefill);

  int64_t position() const { return tokens_; }
  // Forgets everything from `position` on.
  void Rewind(int64_t position);
  // attention_seconds stays 0: decode attention runs asynchronously among the other kernels.
  const SequenceStats& stats() const { return stats_; }
  void ResetStats() { stats_ = {}; }

 private:
  struct Impl;
  explicit CudaSequence(const CudaModel& model, int32_t prefill_chunk);
  Status Forward(const TokenId* tokens, int64_t n, float* logits, bool all_logits, DecodeAttentionHook* hook,
                 PrefillAttentionObserver* observer);
  // Layer `layer`'s attention for n queries from position p0 (the hook only when n == 1).
  Status Attend(int32_t layer, int64_t n, int64_t p0, DecodeAttentionHook* hook);
  // Copies the queries of the step's n tokens to the host (waits for them to be computed).
  Status CopyQueriesToHost(int64_t n);
  // Brings the host copy of layer `layer`'s KV cache up to `ctx` tokens (the stream must be idle
  // up to the layer's KV store).
  Status CopyKvToHost(int32_t layer, int64_t ctx);
  // The observer's rows of layer `layer` for the chunk's n queries from p0, from the host copies.
  void ReportPrefillRows(int32_t layer, int64_t n, int64_t p0, PrefillAttentionObserver* observer);

  const CudaModel& model_;
  const ModelConfig& c_;
  int32_t chunk_;
  int64_t tokens_ = 0;
  SequenceStats stats_;
  std::unique_ptr<Impl> impl_;  // device buffers, stream, cuBLAS handle
};

}  // namespace foresight::worker
