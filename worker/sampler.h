// Sampler: picks the next token from a step's logits. One sampler for every generation loop
// (Generate, the worker's scheduler, the bench): greedy, or temperature with top-k and top-p
// (nucleus) filtering, seeded so that a request with a seed always gets the same tokens.
//
//   FS_ASSIGN_OR_RETURN(Sampler sampler, Sampler::Create(params));
//   TokenId next = sampler.Sample(logits.data(), vocab);
//
// Greedy (temperature 0) returns the first maximum (ties go to the lowest id), as every argmax in
// this tree always did, so greedy output is unchanged by the sampler.
//
// With a temperature, the distribution is softmax(logits / temperature) restricted first to the
// top_k most likely tokens, then to the nucleus: the shortest run of those, most likely first,
// whose share of their probability reaches top_p; the token is drawn from what is left,
// renormalised. Ties in order go to the lower id, so top_k = 1 (or a tiny top_p) is greedy. NaN and
// -inf logits are never drawn. The draw is computed here from std::mt19937_64's raw output (one
// per token), not by a standard-library distribution, so a seed gives the same tokens with every
// standard library.
//
// Thread-safety: a Sampler holds its random state; one thread uses it at a time.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "common/status.h"
#include "worker/tokenizer.h"

namespace foresight::worker {

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy; otherwise softmax(logits / temperature)
  int32_t top_k = 0;         // keep the k most likely tokens (0: all)
  float top_p = 1.0f;        // keep the smallest set whose probability reaches top_p (1: all)
  uint64_t seed = 0;         // the random stream (used only when temperature > 0)
};

// The first index of the largest value (NaN never wins; 0 when every value is NaN); -1 when n == 0.
TokenId Argmax(const float* logits, int64_t n);

class Sampler {
 public:
  // INVALID_ARGUMENT naming the field: temperature < 0 or not finite, top_k < 0, top_p outside (0, 1].
  static StatusOr<Sampler> Create(const SamplingParams& params);

  TokenId Sample(const float* logits, int64_t vocab);
  const SamplingParams& params() const { return params_; }

 private:
  explicit Sampler(const SamplingParams& params);
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, TokenId>> candidates_;  // scratch
  std::vector<float> weights_;                         // scratch: exp((logit - max) / temperature)
};

}  // namespace foresight::worker
