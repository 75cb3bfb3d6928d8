// TensorType: the element encodings a model's weights may use (ggml's numbering, so GGUF type ids
// map one to one), with their block geometry. Quantised types store `block_elems` values in
// `block_bytes` bytes; a row's length must be a multiple of block_elems.
//
// Thread-safety: pure functions and constants.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/status.h"

namespace foresight::worker {

enum class TensorType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kBF16 = 30,
};

struct TensorTypeInfo {
  const char* name;      // "Q4_1"
  uint32_t block_elems;  // 1 for plain types
  uint32_t block_bytes;
  bool supported;  // the engine can dequantise and multiply it
};

// INVALID_ARGUMENT for ids this build does not know (message carries the id).
StatusOr<TensorTypeInfo> GetTensorTypeInfo(uint32_t type_id);
const char* TensorTypeName(TensorType type);

// Bytes of `elems` values (elems must be a multiple of the block size; checked by callers).
uint64_t TensorTypeBytes(TensorType type, uint64_t elems);

}  // namespace foresight::worker
