#include "worker/model_config.h"

#include <cmath>

namespace foresight::worker {

std::vector<float> Llama3RopeFreqFactors(int head_dim, float theta, float factor, float low_freq_factor,
                                         float high_freq_factor, float original_context) {
  std::vector<float> out(head_dim / 2);
  const double low_wavelen = original_context / low_freq_factor;
  const double high_wavelen = original_context / high_freq_factor;
  for (int i = 0; i < head_dim / 2; ++i) {
    const double freq = std::pow(static_cast<double>(theta), -2.0 * i / head_dim);
    const double wavelen = 2 * M_PI / freq;
    double scaled;
    if (wavelen < high_wavelen) {
      scaled = freq;
    } else if (wavelen > low_wavelen) {
      scaled = freq / factor;
    } else {
      const double smooth = (original_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
      scaled = (1 - smooth) * freq / factor + smooth * freq;
    }
    out[i] = static_cast<float>(freq / scaled);
  }
  return out;
}

}  // namespace foresight::worker
