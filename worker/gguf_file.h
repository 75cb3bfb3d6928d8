// GgufFile: a read-only view of a GGUF model file (llama.cpp's format): the metadata key/values and
// the tensor directory, with tensor data left in the memory map (no copy).
//
// Layout (little-endian): "GGUF", version (2 or 3), tensor count, metadata count, the metadata
// (key string, type id, value), the tensor infos (name, dims with the fastest-varying first, type
// id, offset), padding to `general.alignment` (default 32), then the tensor data.
//
// Every size and offset is validated at Open: a truncated or malformed file is refused with an
// error that names the file, the key or tensor, and the problem.
//
// Thread-safety: immutable after Open; safe to read from many threads.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/mapped_file.h"
#include "common/status.h"
#include "worker/tensor_type.h"

namespace foresight::worker {

enum class GgufValueType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};

// One metadata value. Scalars fill one of the scalar fields; arrays fill the vector of their kind
// (integers and bools in `ints`, floats in `floats`, strings in `strings`).
struct GgufValue {
  GgufValueType type = GgufValueType::kU8;
  GgufValueType array_type = GgufValueType::kU8;  // for kArray
  int64_t i = 0;                                  // every integer and bool scalar (u64 values above 2^63 wrap)
  double f = 0;                                   // f32 / f64 scalar
  std::string s;                                  // string scalar
  std::vector<int64_t> ints;
  std::vector<double> floats;
  std::vector<std::string> strings;

  bool is_integer() const;
  bool is_float() const { return type == GgufValueType::kF32 || type == GgufValueType::kF64; }
};

struct GgufTensor {
  std::string name;
  TensorType type = TensorType::kF32;
  std::vector<int64_t> dims;  // dims[0] is the fastest-varying (a row's length)
  const uint8_t* data = nullptr;
  uint64_t nbytes = 0;

  int64_t numel() const;
  int64_t rows() const { return dims.empty() ? 0 : numel() / dims[0]; }
};

class GgufFile {
 public:
  static StatusOr<std::unique_ptr<GgufFile>> Open(const std::string& path);

  const std::string& path() const { return file_->path(); }
  uint32_t version() const { return version_; }
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const std::vector<GgufTensor>& tensors() const { return tensors_; }

  bool Has(const std::string& key) const { return metadata_.count(key) != 0; }
  // NOT_FOUND / INVALID_ARGUMENT (wrong type) name the file and the key.
  StatusOr<std::string> GetString(const std::string& key) const;
  StatusOr<int64_t> GetInt(const std::string& key) const;
  StatusOr<double> GetFloat(const std::string& key) const;  // accepts integers too
  StatusOr<const std::vector<std::string>*> GetStringArray(const std::string& key) const;
  StatusOr<const std::vector<int64_t>*> GetIntArray(const std::string& key) const;
  StatusOr<const std::vector<double>*> GetFloatArray(const std::string& key) const;
  // Defaults when the key is absent; a present key of the wrong type is still an error.
  StatusOr<int64_t> GetIntOr(const std::string& key, int64_t fallback) const;
  StatusOr<double> GetFloatOr(const std::string& key, double fallback) const;

  // nullptr when absent.
  const GgufTensor* FindTensor(const std::string& name) const;
  StatusOr<const GgufTensor*> GetTensor(const std::string& name) const;

 private:
  explicit GgufFile(std::unique_ptr<MappedFile> file) : file_(std::move(file)) {}
  Status ParseAll();
  Status KeyError(const std::string& key, const std::string& problem) const;

  std::unique_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

}  // namespace foresight::worker
