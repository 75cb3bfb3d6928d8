// CnnWeights: the AttentionPredictor CNN's 4,833 parameters in the published safetensors layout
// (conv1.weight [16,1,3,3], conv1.bias [16], conv2.weight [32,16,3,3], conv2.bias [32],
// conv3.weight [1,32,1], conv3.bias [1]), as float32, row-major as PyTorch stores them.
//
// Thread-safety: immutable once loaded; share one instance (std::shared_ptr<const CnnWeights>)
// across threads and policies.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"

namespace foresight::predictor {

inline constexpr int kCnnRows = 64;                                             // history rows (time), the CNN's H
inline constexpr int kCnnChannels1 = 16;                                        // conv1 output channels
inline constexpr int kCnnChannels2 = 32;                                        // conv2 output channels
inline constexpr int kCnnParameters = 16 * 9 + 16 + 32 * 16 * 9 + 32 + 32 + 1;  // 4,833

struct CnnWeights {
  float conv1_weight[kCnnChannels1][9] = {};  // [out][dy * 3 + dx]
  float conv1_bias[kCnnChannels1] = {};
  float conv2_weight[kCnnChannels2][kCnnChannels1 * 9] = {};  // [out][in * 9 + dy * 3 + dx]
  float conv2_bias[kCnnChannels2] = {};
  float conv3_weight[kCnnChannels2] = {};
  float conv3_bias = 0.0f;

  // Loads the published layout; errors name the file and the tensor with the wrong shape.
  static StatusOr<std::shared_ptr<const CnnWeights>> Load(const std::string& path);
  // The same layout from bytes in memory (the shipped weights, predictor/shipped_weights.h);
  // `name` stands for the file in errors.
  static StatusOr<std::shared_ptr<const CnnWeights>> FromBytes(const std::string& name, const uint8_t* data,
                                                               size_t size);
  // Writes the same layout (what training produces).
  Status Save(const std::string& path, const std::string& description = "") const;
  // Deterministic pseudo-random weights in PyTorch's default init range (tests, benchmarks).
  static std::shared_ptr<CnnWeights> Random(uint64_t seed);
};

}  // namespace foresight::predictor
