#include "worker/generator.h"

#include <algorithm>

namespace foresight::worker {
namespace {

class CpuGenerationSequence : public GenerationSequence {
 public:
  CpuGenerationSequence(const Model& model, int32_t prefill_chunk) : seq_(model, prefill_chunk) {}
  Status Prefill(const std::vector<TokenId>& tokens, std::vector<float>* logits,
                 PrefillAttentionObserver* observer) override {
    return seq_.Prefill(tokens, logits, false, observer);
  }
  Status Decode(TokenId token, std::vector<float>* logits, DecodeAttentionHook* hook) override {
    return seq_.Decode(token, logits, hook);
  }
  int64_t position() const override { return seq_.position(); }
  const SequenceStats& stats() const override { return seq_.stats(); }

 private:
  Sequence seq_;
};

}  // namespace

std::string StopReason(const Tokenizer* tokenizer, bool stop_at_eos, TokenId next, int32_t emitted, int32_t max_tokens,
                       int64_t position, int64_t max_context) {
  if (stop_at_eos && tokenizer != nullptr && tokenizer->IsEndOfGeneration(next)) return "eos";
  if (emitted >= max_tokens) return "max_tokens";
  if (max_context > 0 && position + 1 >= max_context) return "context";
  return "";
}

StatusOr<GenerateResult> Generate(const Model& model, const std::vector<TokenId>& prompt,
                                  const GenerateOptions& options) {
  if (prompt.empty()) return InvalidArgument("the prompt is empty (no tokens)");
  const int64_t limit = model.config().max_context;
  if (limit > 0 && static_cast<int64_t>(prompt.size()) >= limit) {
    return OutOfRange("the prompt has " + std::to_string(prompt.size()) + " tokens; the model's context is " +
                      std::to_string(limit));
  }
  std::unique_ptr<GenerationSequence> seq;
  if (options.make_sequence) {
    FS_ASSIGN_OR_RETURN(seq, options.make_sequence());
  } else {
    seq = std::make_unique<CpuGenerationSequence>(model, options.prefill_chunk);
  }
  std::vector<float> logits;
  FS_RETURN_IF_ERROR(seq->Prefill(prompt, &logits, options.prefill_observer));
  if (options.after_prefill) FS_RETURN_IF_ERROR(options.after_prefill());
  GenerateResult result;
  const Tokenizer* tok = model.tokenizer();
  for (int32_t i = 0; i < options.max_tokens; ++i) {
    const TokenId next = static_cast<TokenId>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    result.tokens.push_back(next);
    if (options.on_token) options.on_token(next);
    result.finish_reason =
        StopReason(tok, options.stop_at_end_of_generation, next, i + 1, options.max_tokens, seq->position(), limit);
    if (!result.finish_reason.empty()) break;
    FS_RETURN_IF_ERROR(seq->Decode(next, &logits, options.hook));
    if (options.after_step) FS_RETURN_IF_ERROR(options.after_step());
  }
  result.stats = seq->stats();
  return result;
}

}  // namespace foresight::worker
