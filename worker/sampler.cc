#include "worker/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace foresight::worker {
namespace {

using Candidate = std::pair<float, TokenId>;

// The one order of candidates: higher logit first, lower id first among equal logits (so the
// first candidate is Argmax's token). A strict total order, so nth_element and sort give the same
// result in every standard library.
bool Before(const Candidate& a, const Candidate& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

// A uniform double in [0, 1) from the generator's raw 64-bit output (its top 53 bits), the same
// on every platform (std::uniform_real_distribution is not specified bit for bit).
double UniformUnit(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

}  // namespace

TokenId Argmax(const float* logits, int64_t n) {
  if (n <= 0) return -1;
  int64_t first = 0;
  while (first < n && std::isnan(logits[first])) ++first;
  if (first == n) return 0;  // all NaN: nothing to prefer, the first
  int64_t best = first;
  float best_value = logits[first];
  for (int64_t i = first + 1; i < n; ++i) {
    if (logits[i] > best_value) {  // false for NaN
      best = i;
      best_value = logits[i];
    }
  }
  return static_cast<TokenId>(best);
}

StatusOr<Sampler> Sampler::Create(const SamplingParams& params) {
  if (!std::isfinite(params.temperature) || params.temperature < 0.0f) {
    return InvalidArgument("sampling temperature must be a finite number >= 0 (0: greedy), got " +
                           std::to_string(params.temperature));
  }
  if (params.top_k < 0) {
    return InvalidArgument("sampling top_k must be >= 0 (0: every token), got " + std::to_string(params.top_k));
  }
  if (!(params.top_p > 0.0f && params.top_p <= 1.0f)) {
    return InvalidArgument("sampling top_p must be in (0, 1] (1: every token), got " + std::to_string(params.top_p));
  }
  return Sampler(params);
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}

TokenId Sampler::Sample(const float* logits, int64_t vocab) {
  if (params_.temperature == 0.0f || vocab <= 0) return Argmax(logits, vocab);
  const double draw = UniformUnit(rng_);  // one draw per token, whatever the filters keep
  const TokenId top = Argmax(logits, vocab);
  const float max_logit = logits[top];
  // Nothing with a finite weight (all NaN or -inf), or an infinite maximum: the top is certain.
  if (!std::isfinite(max_logit)) return top;
  // In double, 1 / temperature is finite for every positive float temperature.
  const double inverse_temperature = 1.0 / static_cast<double>(params_.temperature);
  const double top_logit = max_logit;
  // Weights relative to the top's (which is 1); NaN and -inf logits weigh 0.
  auto log_weight = [inverse_temperature, top_logit](float logit) {
    return (static_cast<double>(logit) - top_logit) * inverse_temperature;
  };
  auto weight = [&](float logit) {
    return std::isnan(logit) ? 0.0f : static_cast<float>(std::exp(log_weight(logit)));  // double exp: faster here
  };
  weights_.resize(static_cast<size_t>(vocab));  // allocates on the first call only
  candidates_.reserve(static_cast<size_t>(vocab));
  candidates_.clear();
  // Every sum below runs in a fixed order (id order, or the candidates' order after a sort by
  // Before), so that the same logits and seed give the same token everywhere.
  size_t n = 0;      // candidates_[0, n) with weights_[0, n), in the order the draw walks them
  double total = 0;  // their weight

  const size_t top_k = static_cast<size_t>(params_.top_k);
  const float top_p = params_.top_p;
  const bool by_top_k = top_k > 0 && top_k < static_cast<size_t>(vocab);
  if (by_top_k) {
    // The k best in one pass: a heap whose top is the worst kept, so most tokens cost one compare
    // (ids rise, so a tie with the worst loses; NaN and -inf never pass `>`).
    int64_t i = 0;
    for (; i < vocab && candidates_.size() < top_k; ++i) {
      if (logits[i] > -std::numeric_limits<float>::infinity())
        candidates_.emplace_back(logits[i], static_cast<TokenId>(i));
    }
    std::make_heap(candidates_.begin(), candidates_.end(), Before);
    for (; i < vocab; ++i) {
      if (!(logits[i] > candidates_.front().first)) continue;
      std::pop_heap(candidates_.begin(), candidates_.end(), Before);
      candidates_.back() = {logits[i], static_cast<TokenId>(i)};
      std::push_heap(candidates_.begin(), candidates_.end(), Before);
    }
    std::sort(candidates_.begin(), candidates_.end(), Before);
    n = candidates_.size();
    for (size_t j = 0; j < n; ++j) total += weights_[j] = weight(candidates_[j].first);
  } else if (top_p < 1.0f) {
    // Find the nucleus in one pass: the mass per band of log-weight (kBandsPerUnit bands per unit,
    // most likely first) says which bands it ends in; only those are kept and sorted.
    constexpr int kBandsPerUnit = 4, kBands = 128;
    double band_mass[kBands] = {};
    auto band = [&](float logit) {
      return static_cast<int>(std::min<double>(kBands - 1, std::floor(-log_weight(logit) * kBandsPerUnit)));
    };
    for (int64_t i = 0; i < vocab; ++i) {
      const float w = weight(logits[i]);
      if (w <= 0.0f) continue;
      total += w;
      band_mass[band(logits[i])] += w;
      candidates_.emplace_back(logits[i], static_cast<TokenId>(i));
    }
    const double target = static_cast<double>(top_p) * total;
    int last_band = 0;
    for (double mass = band_mass[0]; mass < target && last_band < kBands - 1;) mass += band_mass[++last_band];
    // One band more: the band sums round differently from the sorted walk below.
    last_band = std::min(kBands - 1, last_band + 1);
    auto kept = std::partition(candidates_.begin(), candidates_.end(),
                               [&](const Candidate& c) { return band(c.first) <= last_band; });
    std::sort(candidates_.begin(), kept, Before);
    const size_t in_bands = static_cast<size_t>(kept - candidates_.begin());
    double mass = 0;
    for (n = 0; n < in_bands && mass < target; ++n) mass += weights_[n] = weight(candidates_[n].first);
    total = mass;
  } else {
    // Everything: walk in id order, no candidates needed.
    for (int64_t i = 0; i < vocab; ++i) total += weights_[i] = weight(logits[i]);
    const double threshold = draw * total;
    double cumulative = 0;
    TokenId last_possible = top;
    for (int64_t i = 0; i < vocab; ++i) {
      if (weights_[i] <= 0.0f) continue;
      cumulative += weights_[i];
      last_possible = static_cast<TokenId>(i);
      if (threshold < cumulative) return last_possible;
    }
    return last_possible;  // rounding left the threshold at the very end
  }

  if (by_top_k && top_p < 1.0f) {  // the nucleus of the top k
    const double target = static_cast<double>(top_p) * total;
    double mass = 0;
    size_t kept = 0;
    while (kept < n && mass < target) mass += weights_[kept++];
    n = kept;
    total = mass;
  }
  // The candidate whose cumulative weight first passes draw * total.
  const double threshold = draw * total;
  double cumulative = 0;
  TokenId last_possible = top;
  for (size_t i = 0; i < n; ++i) {
    if (weights_[i] <= 0.0f) continue;
    cumulative += weights_[i];
    last_possible = candidates_[i].second;
    if (threshold < cumulative) return last_possible;
  }
  return last_possible;
}

}  // namespace foresight::worker
