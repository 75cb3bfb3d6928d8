#include "worker/tensor_type.h"

namespace foresight::worker {
namespace {

struct Entry {
  uint32_t id;
  TensorTypeInfo info;
};

constexpr Entry kTypes[] = {
    {0, {"F32", 1, 4, true}},        {1, {"F16", 1, 2, true}},        {2, {"Q4_0", 32, 18, true}},
    {3, {"Q4_1", 32, 20, true}},     {6, {"Q5_0", 32, 22, true}},     {7, {"Q5_1", 32, 24, true}},
    {8, {"Q8_0", 32, 34, true}},     {9, {"Q8_1", 32, 36, false}},    {10, {"Q2_K", 256, 84, false}},
    {11, {"Q3_K", 256, 110, false}}, {12, {"Q4_K", 256, 144, false}}, {13, {"Q5_K", 256, 176, false}},
    {14, {"Q6_K", 256, 210, false}}, {15, {"Q8_K", 256, 292, false}}, {30, {"BF16", 1, 2, true}},
};

}  // namespace

StatusOr<TensorTypeInfo> GetTensorTypeInfo(uint32_t type_id) {
  for (const Entry& e : kTypes) {
    if (e.id == type_id) return e.info;
  }
  return InvalidArgument("unknown tensor type id " + std::to_string(type_id));
}

const char* TensorTypeName(TensorType type) {
  auto info = GetTensorTypeInfo(static_cast<uint32_t>(type));
  return info.ok() ? info->name : "unknown";
}

uint64_t TensorTypeBytes(TensorType type, uint64_t elems) {
  auto info = GetTensorTypeInfo(static_cast<uint32_t>(type));
  if (!info.ok()) return 0;
  return elems / info->block_elems * info->block_bytes;
}

}  // namespace foresight::worker
