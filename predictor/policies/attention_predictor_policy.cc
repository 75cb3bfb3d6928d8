#include "predictor/policies/policy_factories.h"

namespace foresight::predictor {
StatusOr<std::unique_ptr<SelectionPolicy>> MakeAttentionPredictorPolicy(const PolicySpec& spec,
                                                                        const LayerGeometry& g) {
  return Unimplemented("attention_predictor policy: not built yet");
}
}  // namespace foresight::predictor
