// Internal: one factory per policy, each in its own file under predictor/policies/. The public
// entry point is MakeSelectionPolicy (predictor/selection_policy.h), which validates the spec and
// geometry before calling these.
#pragma once

#include <memory>

#include "predictor/selection_policy.h"

namespace foresight::predictor {

StatusOr<std::unique_ptr<SelectionPolicy>> MakeAttentionPredictorPolicy(const PolicySpec& spec, const LayerGeometry& g);
StatusOr<std::unique_ptr<SelectionPolicy>> MakeQuestPolicy(const PolicySpec& spec, const LayerGeometry& g);
StatusOr<std::unique_ptr<SelectionPolicy>> MakeH2OPolicy(const PolicySpec& spec, const LayerGeometry& g);
StatusOr<std::unique_ptr<SelectionPolicy>> MakeSnapKVPolicy(const PolicySpec& spec, const LayerGeometry& g);
StatusOr<std::unique_ptr<SelectionPolicy>> MakeStreamingLLMPolicy(const PolicySpec& spec, const LayerGeometry& g);
StatusOr<std::unique_ptr<SelectionPolicy>> MakeOraclePolicy(const PolicySpec& spec, const LayerGeometry& g);
StatusOr<std::unique_ptr<SelectionPolicy>> MakeDensePolicy(const PolicySpec& spec, const LayerGeometry& g);

}  // namespace foresight::predictor
