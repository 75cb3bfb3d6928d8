#include "predictor/shipped_weights.h"

#include <cstdio>
#include <cstdlib>

namespace foresight::predictor {
namespace internal {
// Generated from predictor/weights/foresight-smollm2.safetensors (predictor/CMakeLists.txt).
extern const unsigned char kShippedWeights[];
extern const size_t kShippedWeights_size;
}  // namespace internal

std::shared_ptr<const CnnWeights> ShippedCnnWeights() {
  static const std::shared_ptr<const CnnWeights> weights = [] {
    StatusOr<std::shared_ptr<const CnnWeights>> w =
        CnnWeights::FromBytes("predictor/weights/foresight-smollm2.safetensors (compiled in)",
                              internal::kShippedWeights, internal::kShippedWeights_size);
    if (!w.ok()) {
      std::fprintf(stderr,
                   "fatal: the shipped AttentionPredictor weights are corrupt (%s); rebuild from a clean "
                   "checkout\n",
                   w.status().ToString().c_str());
      std::abort();
    }
    return *std::move(w);
  }();
  return weights;
}

StatusOr<std::shared_ptr<const CnnWeights>> LoadCnnWeightsOrShipped(const std::string& path) {
  if (path.empty()) return ShippedCnnWeights();
  StatusOr<std::shared_ptr<const CnnWeights>> w = CnnWeights::Load(path);
  if (!w.ok()) return w.status().WithContext("AttentionPredictor weights");
  return w;
}

std::string CnnWeightsName(const std::string& path) { return path.empty() ? kShippedCnnWeightsName : path; }

}  // namespace foresight::predictor
