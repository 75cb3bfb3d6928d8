// Backend: the engine's one interface to a forward pass, whichever device runs it (in the spirit of
// ggml-backend). A Backend belongs to one Model: it makes BackendSequences (one running generation
// each: its KV cache and position) and runs forward steps over several of them at once (Run: the
// continuous batching of worker/service/scheduler.h). Generation (worker/generator.h), offload
// (worker/offload/offloaded_sequence.h) and the scheduler drive a Backend without knowing which.
//
//   std::unique_ptr<Backend> cpu = NewCpuBackend(model);
//   FS_ASSIGN_OR_RETURN(std::unique_ptr<BackendSequence> seq, cpu->NewSequence(/*prefill_chunk=*/512));
//   FS_RETURN_IF_ERROR(seq->Prefill(prompt, &logits));     // Run, a chunk at a time
//   FS_RETURN_IF_ERROR(seq->Decode(next, &logits, hook));  // Run, a batch of one
//   std::vector<StepItem> step = {...};                    // or several sequences in one step
//   cpu->Run(&step);                                       // each item gets its own status
//
// Backends:
//   cpu  (NewCpuBackend, here): Sequence and BatchForward (worker/sequence.h), unchanged.
//        Everything: sparse decode hooks, lookahead queries, KvBlockSources (offload), KV import;
//        a sequence's logits are the same alone and batched (bit for bit on Q4/Q8 weights).
//   cuda (NewCudaBackend, worker/cuda/cuda_backend.h): CudaSequence on an NVIDIA GPU, an item at a
//        time. Hooks and prefill observers, but no KvBlockSource, no lookahead queries, no KV import
//        and no host KV (so no offload): those are refused with an error naming the backend and the
//        feature, never run some other way.
// What one backend can do that another cannot is refused by the backend that cannot, with an
// UNIMPLEMENTED status; SupportsOffload says up front whether offload can run on it.
//
// Thread-safety: one thread at a time calls Run and drives a backend's sequences (the CPU kernels
// use every core through OpenMP). NewSequence may be called from another thread concurrently.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "worker/kv_cache.h"
#include "worker/model.h"
#include "worker/sequence.h"

namespace foresight::worker {

class BackendSequence;

// One sequence's part of a forward step over any backend's sequences.
struct StepItem : StepWork {
  BackendSequence* sequence = nullptr;
};

class Backend {
 public:
  virtual ~Backend() = default;

  // "cpu", "cuda": what error messages name.
  virtual std::string_view name() const = 0;
  virtual const Model& model() const = 0;
  // OK when offload (worker/offload/offloaded_sequence.h) can run on this backend: its sequences
  // keep their KV in a host KvCache (host_kv) that can be published and dropped from, and decode
  // can read blocks from a KvBlockSource. Otherwise UNIMPLEMENTED, saying so.
  virtual Status SupportsOffload() const = 0;

  // A new empty sequence on this backend; prefills run in chunks of `prefill_chunk` tokens.
  virtual StatusOr<std::unique_ptr<BackendSequence>> NewSequence(int32_t prefill_chunk = 512) = 0;

  // Advances every item's sequence by its tokens. Items must name distinct sequences of this
  // backend. An item that fails (a bad token, the context full, a block its source cannot supply,
  // a feature this backend lacks) gets its error and leaves its sequence as it was; the others go
  // on.
  virtual void Run(std::vector<StepItem>* items) = 0;
};

class BackendSequence {
 public:
  virtual ~BackendSequence() = default;
  BackendSequence(const BackendSequence&) = delete;
  BackendSequence& operator=(const BackendSequence&) = delete;

  Backend& backend() const { return backend_; }
  int32_t prefill_chunk() const { return prefill_chunk_; }

  // A batch of one through backend().Run: how a sequence runs alone. Prefill appends `tokens`
  // (dense, in chunks of prefill_chunk()); `logits` (if not null) receives the last token's logits
  // [vocab], or every token's [n x vocab] when all_logits; `observer` hears every attention row.
  // Decode appends one token; logits [vocab] of the next. `hook` may restrict attention (null:
  // dense); `source` (null: the sequence's own KV) supplies blocks dropped from it.
  Status Prefill(const std::vector<TokenId>& tokens, std::vector<float>* logits, bool all_logits = false,
                 PrefillAttentionObserver* observer = nullptr);
  Status Decode(TokenId token, std::vector<float>* logits, DecodeAttentionHook* hook = nullptr,
                KvBlockSource* source = nullptr);

  virtual int64_t position() const = 0;
  // Forgets everything from `position` on.
  virtual void Rewind(int64_t position) = 0;
  virtual const SequenceStats& stats() const = 0;
  virtual void ResetStats() = 0;

  // Shared prefixes, as Sequence::ImportKv: makes the empty sequence `n_blocks` full blocks long
  // with KV it did not compute; `fill(layer, dests)` writes each layer's blocks.
  virtual Status ImportKv(int64_t n_blocks,
                          const std::function<Status(int32_t layer, const std::vector<uint8_t*>& dests)>& fill) = 0;
  // The KV cache in host memory (offload publishes from it; policies read its keys); null when the
  // backend keeps the KV elsewhere (the GPU).
  virtual const KvCache* host_kv() const = 0;
  // Offload: frees blocks [begin, end) of every layer, whose bytes live in the cache service now;
  // decode then reads them through a KvBlockSource.
  virtual Status DropBlocks(int64_t begin, int64_t end) = 0;
  // Benchmarks only: Sequence::TEST_FillRandomKv.
  virtual Status TEST_FillRandomKv(int64_t tokens, uint32_t seed) = 0;
  // Tests only: Sequence::TEST_set_row_at_a_time_prefill (the CPU's prefill attention a row at a
  // time, the bits the tiled kernels must reproduce).
  virtual Status TEST_SetRowAtATimePrefill(bool on) = 0;

 protected:
  BackendSequence(Backend& backend, int32_t prefill_chunk);

 private:
  Backend& backend_;
  const int32_t prefill_chunk_;
  std::vector<StepItem> alone_;  // Prefill and Decode's batch of one
};

// The CPU backend of `model` (which must outlive it): Sequence and BatchForward, unchanged.
std::unique_ptr<Backend> NewCpuBackend(const Model& model);

}  // namespace foresight::worker
