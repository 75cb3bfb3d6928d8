// The AttentionPredictor weights Foresight ships: predictor/weights/foresight-smollm2.safetensors,
// trained on SmolLM2 traces (docs/predictor.md, "Training"), compiled into every binary that links
// the predictor (cmake/embed_file.cmake). Every command that can run AttentionPredictor uses them
// unless given --weights FILE; nothing is looked up on disk, so the product works from any
// working directory.
//
//   FS_ASSIGN_OR_RETURN(auto weights, LoadCnnWeightsOrShipped(flags.weights));  // "" = shipped
//   std::printf("weights %s\n", CnnWeightsName(flags.weights).c_str());
//
// Thread-safety: all functions are safe to call from any thread; the weights are immutable.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "predictor/cnn_weights.h"

namespace foresight::predictor {

// How the shipped weights are named wherever a command reports which weights ran.
inline constexpr char kShippedCnnWeightsName[] = "foresight-smollm2 (shipped)";

// Parsed once, on first use. The bytes are compiled in, so a parse failure is a broken build:
// it aborts with a message naming the embedded file.
std::shared_ptr<const CnnWeights> ShippedCnnWeights();

// `path` empty: the shipped weights; else CnnWeights::Load(path) (errors name the file).
StatusOr<std::shared_ptr<const CnnWeights>> LoadCnnWeightsOrShipped(const std::string& path);

// kShippedCnnWeightsName for an empty `path`, else the path: what LoadCnnWeightsOrShipped(path) loads.
std::string CnnWeightsName(const std::string& path);

}  // namespace foresight::predictor
