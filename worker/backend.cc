// BackendSequence's batch of one, and the CPU backend: Sequence and BatchForward behind Backend.
#include "worker/backend.h"

#include <algorithm>
#include <string>

namespace foresight::worker {

BackendSequence::BackendSequence(Backend& backend, int32_t prefill_chunk)
    : backend_(backend), prefill_chunk_(std::max(1, prefill_chunk)), alone_(1) {}

Status BackendSequence::Prefill(const std::vector<TokenId>& tokens, std::vector<float>* logits, bool all_logits,
                                PrefillAttentionObserver* observer) {
  if (tokens.empty()) return InvalidArgument("prefill needs at least one token");
  const int64_t vocab = backend_.model().config().vocab_size;
  if (logits != nullptr) logits->assign(all_logits ? tokens.size() * vocab : vocab, 0.0f);
  StepItem& item = alone_[0];
  for (size_t at = 0; at < tokens.size(); at += prefill_chunk_) {
    const int64_t n = std::min<int64_t>(prefill_chunk_, tokens.size() - at);
    item = StepItem{};
    item.sequence = this;
    item.tokens = tokens.data() + at;
    item.n = n;
    // Every chunk's rows with all_logits; otherwise the last token's, in the last chunk.
    if (logits != nullptr && all_logits) item.logits = logits->data() + at * vocab;
    if (logits != nullptr && !all_logits && at + n == tokens.size()) item.logits = logits->data();
    item.all_logits = all_logits;
    item.observer = observer;
    item.prefill = true;
    backend_.Run(&alone_);
    FS_RETURN_IF_ERROR(item.status);
  }
  return Status::OK();
}

Status BackendSequence::Decode(TokenId token, std::vector<float>* logits, DecodeAttentionHook* hook,
                               KvBlockSource* source) {
  if (logits != nullptr) logits->assign(backend_.model().config().vocab_size, 0.0f);
  StepItem& item = alone_[0];
  item = StepItem{};
  item.sequence = this;
  item.tokens = &token;
  item.n = 1;
  item.logits = logits != nullptr ? logits->data() : nullptr;
  item.hook = hook;
  item.source = source;
  backend_.Run(&alone_);
  return item.status;
}

namespace {

class CpuBackend;

class CpuBackendSequence : public BackendSequence {
 public:
  CpuBackendSequence(Backend& backend, const Model& model, int32_t prefill_chunk)
      : BackendSequence(backend, prefill_chunk), seq_(model) {}

  Sequence& sequence() { return seq_; }

  int64_t position() const override { return seq_.position(); }
  void Rewind(int64_t position) override { seq_.Rewind(position); }
  const SequenceStats& stats() const override { return seq_.stats(); }
  void ResetStats() override { seq_.ResetStats(); }
  Status ImportKv(int64_t n_blocks,
                  const std::function<Status(int32_t layer, const std::vector<uint8_t*>& dests)>& fill) override {
    return seq_.ImportKv(n_blocks, fill);
  }
  const KvCache* host_kv() const override { return &seq_.kv(); }
  Status DropBlocks(int64_t begin, int64_t end) override {
    KvCache& kv = seq_.mutable_kv();
    for (int64_t b = begin; b < end; ++b) {
      for (int32_t l = 0; l < kv.n_layers(); ++l) kv.DropBlock(l, b);
    }
    return Status::OK();
  }
  Status TEST_FillRandomKv(int64_t tokens, uint32_t seed) override {
    seq_.TEST_FillRandomKv(tokens, seed);
    return Status::OK();
  }
  Status TEST_SetRowAtATimePrefill(bool on) override {
    seq_.TEST_set_row_at_a_time_prefill(on);
    return Status::OK();
  }

 private:
  Sequence seq_;
};

class CpuBackend : public Backend {
 public:
  explicit CpuBackend(const Model& model) : model_(model), forward_(model) {}

  std::string_view name() const override { return "cpu"; }
  const Model& model() const override { return model_; }
  Status SupportsOffload() const override { return Status::OK(); }

  StatusOr<std::unique_ptr<BackendSequence>> NewSequence(int32_t prefill_chunk) override {
    return std::unique_ptr<BackendSequence>(std::make_unique<CpuBackendSequence>(*this, model_, prefill_chunk));
  }

  void Run(std::vector<StepItem>* items) override {
    forward_items_.clear();
    owners_.clear();
    for (size_t i = 0; i < items->size(); ++i) {
      StepItem& it = (*items)[i];
      if (it.sequence == nullptr || &it.sequence->backend() != this) {
        it.status =
            InvalidArgument("cpu backend: the step's item " + std::to_string(i) + " names no sequence of this backend");
        continue;
      }
      ForwardItem f;
      static_cast<StepWork&>(f) = it;
      f.status = Status::OK();
      f.sequence = &static_cast<CpuBackendSequence*>(it.sequence)->sequence();
      forward_items_.push_back(std::move(f));
      owners_.push_back(&it);
    }
    if (forward_items_.empty()) return;
    forward_.Run(&forward_items_);
    for (size_t i = 0; i < forward_items_.size(); ++i) owners_[i]->status = std::move(forward_items_[i].status);
  }

 private:
  const Model& model_;
  BatchForward forward_;
  std::vector<ForwardItem> forward_items_;  // the step's items as BatchForward takes them (reused)
  std::vector<StepItem*> owners_;
};

}  // namespace

std::unique_ptr<Backend> NewCpuBackend(const Model& model) { return std::make_unique<CpuBackend>(model); }

}  // namespace foresight::worker
