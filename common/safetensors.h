// Reading and writing the safetensors format (predictor weights, reference vectors, traces,
// Hugging Face checkpoints): an 8-byte little-endian header length, a JSON header naming each
// tensor's dtype, shape and byte range, then the raw little-endian data.
//
// Thread-safety: a SafetensorsFile is immutable after Open; safe to read from many threads.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/mapped_file.h"
#include "common/status.h"

namespace foresight {

enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

// "F32" <-> DType; sizes in bytes.
StatusOr<DType> ParseDType(const std::string& name);
const char* DTypeName(DType dtype);
size_t DTypeSize(DType dtype);

struct TensorView {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // points into the mapped file
  size_t nbytes = 0;

  int64_t numel() const;
  // Converts any floating dtype to float32 / float64 (copies).
  std::vector<float> ToFloat32() const;
  std::vector<double> ToFloat64() const;
};

class SafetensorsFile {
 public:
  // Opens and validates the header: every byte range must lie inside the file and match its
  // dtype and shape. Errors name the file and the offending tensor.
  static StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  // The same over bytes already in memory (e.g. compiled into the binary); they must outlive the
  // returned object. `name` stands for the path in errors and path().
  static StatusOr<std::unique_ptr<SafetensorsFile>> FromBytes(std::string name, const uint8_t* data, size_t size);

  const std::string& path() const { return path_; }
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool Has(const std::string& name) const { return tensors_.count(name) != 0; }
  // NOT_FOUND names the file and the tensor.
  StatusOr<const TensorView*> Get(const std::string& name) const;

 private:
  SafetensorsFile(std::string path, std::unique_ptr<MappedFile> file)
      : path_(std::move(path)), file_(std::move(file)) {}
  // Validates the header of `size` bytes at `bytes` and fills tensors_ and metadata_.
  Status Parse(const uint8_t* bytes, size_t size);
  std::string path_;
  std::unique_ptr<MappedFile> file_;  // null for FromBytes
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// One tensor to write; `data` holds shape-product * DTypeSize(dtype) bytes.
struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;

  static TensorToWrite F32(std::string name, std::vector<int64_t> shape, const float* values);
};

Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                        const std::map<std::string, std::string>& metadata = {});

}  // namespace foresight
