// CudaBackend: CudaSequence behind the Backend interface, an item at a time.
#include "worker/cuda/cuda_backend.h"

#include <string>
#include <utility>

namespace foresight::worker {
namespace {

Status NotOnCuda(const std::string& feature) {
  return Unimplemented("cuda backend: " + feature + " is not supported on this backend; use the cpu backend");
}

class CudaBackendSequence : public BackendSequence {
 public:
  CudaBackendSequence(Backend& backend, std::unique_ptr<CudaSequence> seq, int32_t prefill_chunk)
      : BackendSequence(backend, prefill_chunk), seq_(std::move(seq)) {}

  CudaSequence& sequence() { return *seq_; }

  int64_t position() const override { return seq_->position(); }
  void Rewind(int64_t position) override { seq_->Rewind(position); }
  const SequenceStats& stats() const override { return seq_->stats(); }
  void ResetStats() override { seq_->ResetStats(); }
  Status ImportKv(int64_t, const std::function<Status(int32_t, const std::vector<uint8_t*>&)>&) override {
    return NotOnCuda("importing KV (shared prefixes)");
  }
  const KvCache* host_kv() const override { return nullptr; }
  Status DropBlocks(int64_t, int64_t) override { return NotOnCuda("dropping KV blocks (offload)"); }
  Status TEST_FillRandomKv(int64_t, uint32_t) override { return NotOnCuda("random KV fill"); }
  Status TEST_SetRowAtATimePrefill(bool) override { return NotOnCuda("row-at-a-time prefill attention"); }

 private:
  std::unique_ptr<CudaSequence> seq_;
};

class CudaBackend : public Backend {
 public:
  CudaBackend(const CudaModel& model, std::unique_ptr<CudaModel> owned) : model_(model), owned_(std::move(owned)) {}

  std::string_view name() const override { return "cuda"; }
  const Model& model() const override { return model_.model(); }
  Status SupportsOffload() const override {
    return NotOnCuda("offload (the KV lives on the GPU, and decode cannot read blocks from a KvBlockSource)");
  }

  StatusOr<std::unique_ptr<BackendSequence>> NewSequence(int32_t prefill_chunk) override {
    FS_ASSIGN_OR_RETURN(std::unique_ptr<CudaSequence> seq, CudaSequence::Create(model_, prefill_chunk));
    return std::unique_ptr<BackendSequence>(
        std::make_unique<CudaBackendSequence>(*this, std::move(seq), prefill_chunk));
  }

  void Run(std::vector<StepItem>* items) override {
    for (size_t i = 0; i < items->size(); ++i) {
      StepItem& it = (*items)[i];
      it.status = RunOne(it, i);
    }
  }

 private:
  Status RunOne(const StepItem& it, size_t i) {
    if (it.sequence == nullptr || &it.sequence->backend() != this) {
      return InvalidArgument("cuda backend: the step's item " + std::to_string(i) +
                             " names no sequence of this backend");
    }
    const bool decode = it.n == 1 && it.observer == nullptr;
    if (it.source != nullptr) {
      return NotOnCuda("a KvBlockSource (KV blocks offloaded to the cache service)");
    }
    if (decode && it.hook != nullptr && it.hook->WantsLookaheadQueries()) {
      return NotOnCuda("lookahead queries (DecodeAttentionHook::WantsLookaheadQueries, offload's prefetch)");
    }
    CudaSequence& seq = static_cast<CudaBackendSequence*>(it.sequence)->sequence();
    return seq.Step(it.tokens, it.n, it.logits, it.all_logits, it.hook, it.observer, it.prefill);
  }

  const CudaModel& model_;
  std::unique_ptr<CudaModel> owned_;  // null when the caller owns the weights
};

}  // namespace

StatusOr<std::unique_ptr<Backend>> NewCudaBackend(const Model& model, int device) {
  FS_ASSIGN_OR_RETURN(std::unique_ptr<CudaModel> uploaded, CudaModel::Upload(model, device));
  const CudaModel& ref = *uploaded;
  return std::unique_ptr<Backend>(std::make_unique<CudaBackend>(ref, std::move(uploaded)));
}

std::unique_ptr<Backend> NewCudaBackend(const CudaModel& model) {
  return std::make_unique<CudaBackend>(model, nullptr);
}

}  // namespace foresight::worker
