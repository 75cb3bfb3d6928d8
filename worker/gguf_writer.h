// GgufWriter: builds a GGUF (version 3) file, for tests and tools that need checkpoints with
// chosen geometry and encodings (e.g. synthetic models). Not a streaming writer: the whole file is
// assembled in memory, so it suits small models.
//
//   GgufWriter w;
//   w.SetString("general.architecture", "llama");
//   w.SetU32("llama.block_count", 2);
//   w.AddTensor("output_norm.weight", TensorType::kF32, {64}, bytes);
//   Status s = w.Write(path);
//
// Thread-safety: none; one writer per thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/gguf_file.h"

namespace foresight::worker {

class GgufWriter {
 public:
  void SetString(const std::string& key, const std::string& value);
  void SetU32(const std::string& key, uint32_t value);
  void SetF32(const std::string& key, float value);
  void SetBool(const std::string& key, bool value);
  void SetStringArray(const std::string& key, const std::vector<std::string>& values);
  void SetI32Array(const std::string& key, const std::vector<int32_t>& values);
  void SetF32Array(const std::string& key, const std::vector<float>& values);

  // `dims` fastest-varying first (GGUF order); `data` holds the encoded bytes.
  void AddTensor(const std::string& name, TensorType type, std::vector<int64_t> dims, std::vector<uint8_t> data);
  // Encodes float32 values (row-major, rows of dims[0]) as `type` and adds them.
  Status AddFloatTensor(const std::string& name, TensorType type, std::vector<int64_t> dims,
                        const std::vector<float>& values);

  Status Write(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    TensorType type;
    std::vector<int64_t> dims;
    std::vector<uint8_t> data;
  };
  std::vector<uint8_t> kv_bytes_;
  uint64_t kv_count_ = 0;
  std::vector<Tensor> tensors_;
};

}  // namespace foresight::worker
