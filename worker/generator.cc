#include "worker/generator.h"

#include <limits>

#include "worker/text_stream.h"

namespace foresight::worker {

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
  FS_ASSIGN_OR_RETURN(Sampler sampler, Sampler::Create(options.sampling));
  if (options.min_tokens < 0) {
    return InvalidArgument("min_tokens must be >= 0, got " + std::to_string(options.min_tokens));
  }
  std::unique_ptr<Backend> cpu;
  Backend* backend = options.backend;
  if (backend == nullptr) {
    cpu = NewCpuBackend(model);
    backend = cpu.get();
  } else if (&backend->model() != &model) {
    return InvalidArgument(std::string(backend->name()) +
                           " backend: it runs another model than the one to generate on");
  }
  FS_ASSIGN_OR_RETURN(std::unique_ptr<BackendSequence> seq, backend->NewSequence(options.prefill_chunk));
  const Tokenizer* tok = model.tokenizer();
  // The tokens min_tokens keeps from being picked.
  std::vector<TokenId> end_of_generation;
  if (options.min_tokens > 0 && tok != nullptr) {
    for (TokenId id = 0; id < tok->vocab_size(); ++id) {
      if (tok->IsEndOfGeneration(id)) end_of_generation.push_back(id);
    }
  }
  const bool stop_at_eos = !options.ignore_eos;
  TextStream stream(tok, options.stop);

  std::vector<float> logits;
  FS_RETURN_IF_ERROR(seq->Prefill(prompt, &logits, /*all_logits=*/false, options.prefill_observer));
  if (options.after_prefill) FS_RETURN_IF_ERROR(options.after_prefill());
  GenerateResult result;
  for (int32_t i = 0; i < options.max_tokens; ++i) {
    if (i < options.min_tokens) {
      for (TokenId id : end_of_generation) {
        if (id < static_cast<TokenId>(logits.size())) logits[id] = -std::numeric_limits<float>::infinity();
      }
    }
    const TokenId next = sampler.Sample(logits.data(), static_cast<int64_t>(logits.size()));
    result.tokens.push_back(next);
    if (options.on_token) options.on_token(next);
    TextStream::Piece piece = stream.Add(next, /*may_stop=*/i + 1 >= options.min_tokens);
    if (options.on_text && !piece.text.empty()) options.on_text(piece.text);
    if (piece.stopped) {
      result.finish_reason = "stop";
      break;
    }
    result.finish_reason = StopReason(tok, stop_at_eos, next, i + 1, options.max_tokens, seq->position(), limit);
    if (!result.finish_reason.empty()) break;
    FS_RETURN_IF_ERROR(seq->Decode(next, &logits, options.hook));
    if (options.after_step) FS_RETURN_IF_ERROR(options.after_step());
  }
  const std::string rest = stream.Finish();
  if (options.on_text && !rest.empty()) options.on_text(rest);
  result.text = stream.text();
  result.stats = seq->stats();
  return result;
}

}  // namespace foresight::worker
