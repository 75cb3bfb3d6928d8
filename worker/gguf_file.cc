#include "worker/gguf_file.h"

#include <cstring>

namespace foresight::worker {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint64_t kMaxStringBytes = 1ull << 30;
constexpr uint64_t kMaxArrayElems = 1ull << 32;
constexpr uint32_t kMaxDims = 4;
constexpr uint64_t kMaxTensorElems = 1ull << 48;
// The fewest bytes a tensor info takes: name length, dimension count, one dimension, type, offset.
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;

// Bounds-checked little-endian reader over the mapped bytes.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  template <typename T>
  bool Read(T* out) {
    if (size_ - pos_ < sizeof(T)) return false;
    std::memcpy(out, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return true;
  }
  bool ReadString(std::string* out) {
    uint64_t len;
    if (!Read(&len) || len > kMaxStringBytes || size_ - pos_ < len) return false;
    out->assign(reinterpret_cast<const char*>(data_ + pos_), len);
    pos_ += len;
    return true;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

bool IsIntegerType(GgufValueType t) {
  switch (t) {
    case GgufValueType::kU8:
    case GgufValueType::kI8:
    case GgufValueType::kU16:
    case GgufValueType::kI16:
    case GgufValueType::kU32:
    case GgufValueType::kI32:
    case GgufValueType::kU64:
    case GgufValueType::kI64:
    case GgufValueType::kBool:
      return true;
    default:
      return false;
  }
}

// Reads one scalar of `type` into value->i / value->f / value->s.
bool ReadScalar(Reader& r, GgufValueType type, int64_t* i, double* f, std::string* s) {
  switch (type) {
    case GgufValueType::kU8: {
      uint8_t v;
      if (!r.Read(&v)) return false;
      *i = v;
      return true;
    }
    case GgufValueType::kI8: {
      int8_t v;
      if (!r.Read(&v)) return false;
      *i = v;
      return true;
    }
    case GgufValueType::kU16: {
      uint16_t v;
      if (!r.Read(&v)) return false;
      *i = v;
      return true;
    }
    case GgufValueType::kI16: {
      int16_t v;
      if (!r.Read(&v)) return false;
      *i = v;
      return true;
    }
    case GgufValueType::kU32: {
      uint32_t v;
      if (!r.Read(&v)) return false;
      *i = v;
      return true;
    }
    case GgufValueType::kI32: {
      int32_t v;
      if (!r.Read(&v)) return false;
      *i = v;
      return true;
    }
    case GgufValueType::kU64: {
      uint64_t v;
      if (!r.Read(&v)) return false;
      *i = static_cast<int64_t>(v);
      return true;
    }
    case GgufValueType::kI64: {
      int64_t v;
      if (!r.Read(&v)) return false;
      *i = v;
      return true;
    }
    case GgufValueType::kBool: {
      uint8_t v;
      if (!r.Read(&v)) return false;
      *i = v != 0;
      return true;
    }
    case GgufValueType::kF32: {
      float v;
      if (!r.Read(&v)) return false;
      *f = v;
      return true;
    }
    case GgufValueType::kF64: {
      double v;
      if (!r.Read(&v)) return false;
      *f = v;
      return true;
    }
    case GgufValueType::kString:
      return r.ReadString(s);
    default:
      return false;
  }
}

bool KnownScalarType(uint32_t t) { return t <= 12 && t != 9; }

// The fewest bytes one array element of a known scalar type takes (a string: its length).
uint64_t MinScalarBytes(GgufValueType t) {
  switch (t) {
    case GgufValueType::kU8:
    case GgufValueType::kI8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kU16:
    case GgufValueType::kI16:
      return 2;
    case GgufValueType::kU32:
    case GgufValueType::kI32:
    case GgufValueType::kF32:
      return 4;
    default:
      return 8;
  }
}

}  // namespace

bool GgufValue::is_integer() const { return IsIntegerType(type); }

int64_t GgufTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  FS_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> mapped, MappedFile::Open(path));
  std::unique_ptr<GgufFile> file(new GgufFile(std::move(mapped)));
  FS_RETURN_IF_ERROR(file->ParseAll());
  return file;
}

Status GgufFile::ParseAll() {
  const std::string& p = file_->path();
  auto truncated = [&](const std::string& where) {
    return DataLoss("GGUF file " + p + " is truncated or malformed: " + where + " runs past the end of the file (" +
                    std::to_string(file_->size()) + " bytes)");
  };
  Reader r(file_->data(), file_->size());
  uint32_t magic = 0;
  if (!r.Read(&magic) || magic != kMagic) {
    return InvalidArgument("file " + p + " is not a GGUF file (bad magic; expected \"GGUF\")");
  }
  if (!r.Read(&version_)) return truncated("the header");
  if (version_ < 2 || version_ > 3) {
    return Unimplemented("GGUF file " + p + " has version " + std::to_string(version_) +
                         "; supported versions are 2 and 3");
  }
  uint64_t n_tensors = 0, n_kv = 0;
  if (!r.Read(&n_tensors) || !r.Read(&n_kv)) return truncated("the header");
  if (n_tensors > (1u << 24) || n_kv > (1u << 24)) {
    return DataLoss("GGUF file " + p + " is malformed: implausible counts (" + std::to_string(n_tensors) +
                    " tensors, " + std::to_string(n_kv) + " keys)");
  }

  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key;
    if (!r.ReadString(&key)) return truncated("metadata entry " + std::to_string(k));
    uint32_t type_id;
    if (!r.Read(&type_id)) return truncated("metadata key " + key);
    GgufValue value;
    value.type = static_cast<GgufValueType>(type_id);
    if (type_id == static_cast<uint32_t>(GgufValueType::kArray)) {
      uint32_t elem_type;
      uint64_t count;
      if (!r.Read(&elem_type) || !r.Read(&count)) return truncated("metadata key " + key);
      if (!KnownScalarType(elem_type)) {
        return DataLoss("GGUF file " + p + " is malformed: metadata key " + key +
                        " is an array of unsupported type id " + std::to_string(elem_type));
      }
      if (count > kMaxArrayElems) return DataLoss("GGUF file " + p + ": array " + key + " is implausibly long");
      value.array_type = static_cast<GgufValueType>(elem_type);
      // Before reserving: a count the rest of the file cannot hold is a malformed file, not a
      // request for gigabytes.
      if (count > r.remaining() / MinScalarBytes(value.array_type)) return truncated("metadata array " + key);
      const bool is_str = value.array_type == GgufValueType::kString;
      const bool is_float = value.array_type == GgufValueType::kF32 || value.array_type == GgufValueType::kF64;
      if (is_str)
        value.strings.reserve(count);
      else if (is_float)
        value.floats.reserve(count);
      else
        value.ints.reserve(count);
      for (uint64_t e = 0; e < count; ++e) {
        int64_t iv = 0;
        double fv = 0;
        std::string sv;
        if (!ReadScalar(r, value.array_type, &iv, &fv, &sv)) return truncated("metadata array " + key);
        if (is_str)
          value.strings.push_back(std::move(sv));
        else if (is_float)
          value.floats.push_back(fv);
        else
          value.ints.push_back(iv);
      }
    } else {
      if (!KnownScalarType(type_id)) {
        return DataLoss("GGUF file " + p + " is malformed: metadata key " + key + " has unknown value type id " +
                        std::to_string(type_id));
      }
      if (!ReadScalar(r, value.type, &value.i, &value.f, &value.s)) return truncated("metadata key " + key);
    }
    metadata_[key] = std::move(value);
  }

  struct Pending {
    uint64_t offset;
  };
  std::vector<Pending> offsets;
  if (n_tensors > r.remaining() / kMinTensorInfoBytes) {
    return truncated("the tensor directory (" + std::to_string(n_tensors) + " tensors)");
  }
  tensors_.reserve(n_tensors);
  for (uint64_t t = 0; t < n_tensors; ++t) {
    GgufTensor tensor;
    if (!r.ReadString(&tensor.name)) return truncated("tensor info " + std::to_string(t));
    uint32_t n_dims;
    if (!r.Read(&n_dims)) return truncated("tensor info " + tensor.name);
    if (n_dims == 0 || n_dims > kMaxDims) {
      return DataLoss("GGUF file " + p + " is malformed: tensor " + tensor.name + " has " + std::to_string(n_dims) +
                      " dimensions (1 to 4 allowed)");
    }
    uint64_t elems = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t dim;
      if (!r.Read(&dim)) return truncated("tensor info " + tensor.name);
      if (dim == 0 || dim > kMaxTensorElems / elems) {
        return DataLoss("GGUF file " + p + " is malformed: tensor " + tensor.name + " has dimension " +
                        std::to_string(dim) + (d > 0 ? " (too many elements in all)" : ""));
      }
      elems *= dim;
      tensor.dims.push_back(static_cast<int64_t>(dim));
    }
    uint32_t type_id;
    uint64_t offset;
    if (!r.Read(&type_id) || !r.Read(&offset)) return truncated("tensor info " + tensor.name);
    auto info = GetTensorTypeInfo(type_id);
    if (!info.ok()) {
      return Unimplemented("GGUF file " + p + ": tensor " + tensor.name + " has " + info.status().message());
    }
    tensor.type = static_cast<TensorType>(type_id);
    if (tensor.dims[0] % info->block_elems != 0) {
      return DataLoss("GGUF file " + p + " is malformed: tensor " + tensor.name + " of type " + info->name +
                      " has rows of " + std::to_string(tensor.dims[0]) + " values, not a multiple of " +
                      std::to_string(info->block_elems));
    }
    tensor.nbytes = TensorTypeBytes(tensor.type, tensor.numel());
    offsets.push_back({offset});
    tensors_.push_back(std::move(tensor));
  }

  uint64_t alignment = 32;
  if (Has("general.alignment")) {
    FS_ASSIGN_OR_RETURN(int64_t a, GetInt("general.alignment"));
    if (a <= 0 || (a & (a - 1)) != 0) {
      return DataLoss("GGUF file " + p + " is malformed: general.alignment " + std::to_string(a) +
                      " is not a power of two");
    }
    alignment = static_cast<uint64_t>(a);
  }
  const uint64_t data_start = (r.pos() + alignment - 1) / alignment * alignment;
  for (size_t t = 0; t < tensors_.size(); ++t) {
    GgufTensor& tensor = tensors_[t];
    const uint64_t off = offsets[t].offset;
    if (off % alignment != 0) {
      return DataLoss("GGUF file " + p + " is malformed: tensor " + tensor.name + " offset " + std::to_string(off) +
                      " is not aligned to " + std::to_string(alignment));
    }
    if (data_start > file_->size() || off > file_->size() - data_start ||
        file_->size() - data_start - off < tensor.nbytes) {
      return DataLoss("GGUF file " + p + " is truncated: tensor " + tensor.name + " needs bytes [" +
                      std::to_string(data_start + off) + ", " + std::to_string(data_start + off + tensor.nbytes) +
                      ") but the file has " + std::to_string(file_->size()) + " bytes");
    }
    tensor.data = file_->data() + data_start + off;
    if (!tensor_index_.emplace(tensor.name, t).second) {
      return DataLoss("GGUF file " + p + " is malformed: tensor " + tensor.name + " appears twice");
    }
  }
  return Status::OK();
}

Status GgufFile::KeyError(const std::string& key, const std::string& problem) const {
  if (!Has(key)) return NotFound("GGUF file " + path() + " has no metadata key " + key);
  return InvalidArgument("GGUF file " + path() + ": metadata key " + key + " " + problem);
}

StatusOr<std::string> GgufFile::GetString(const std::string& key) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end() || it->second.type != GgufValueType::kString) return KeyError(key, "is not a string");
  return it->second.s;
}

StatusOr<int64_t> GgufFile::GetInt(const std::string& key) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end() || !it->second.is_integer()) return KeyError(key, "is not an integer");
  return it->second.i;
}

StatusOr<double> GgufFile::GetFloat(const std::string& key) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) return KeyError(key, "");
  if (it->second.is_float()) return it->second.f;
  if (it->second.is_integer()) return static_cast<double>(it->second.i);
  return KeyError(key, "is not a number");
}

StatusOr<int64_t> GgufFile::GetIntOr(const std::string& key, int64_t fallback) const {
  return Has(key) ? GetInt(key) : StatusOr<int64_t>(fallback);
}

StatusOr<double> GgufFile::GetFloatOr(const std::string& key, double fallback) const {
  return Has(key) ? GetFloat(key) : StatusOr<double>(fallback);
}

StatusOr<const std::vector<std::string>*> GgufFile::GetStringArray(const std::string& key) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end() || it->second.type != GgufValueType::kArray ||
      it->second.array_type != GgufValueType::kString) {
    return KeyError(key, "is not an array of strings");
  }
  return &it->second.strings;
}

StatusOr<const std::vector<int64_t>*> GgufFile::GetIntArray(const std::string& key) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end() || it->second.type != GgufValueType::kArray || !IsIntegerType(it->second.array_type)) {
    return KeyError(key, "is not an array of integers");
  }
  return &it->second.ints;
}

StatusOr<const std::vector<double>*> GgufFile::GetFloatArray(const std::string& key) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end() || it->second.type != GgufValueType::kArray ||
      (it->second.array_type != GgufValueType::kF32 && it->second.array_type != GgufValueType::kF64)) {
    return KeyError(key, "is not an array of floats");
  }
  return &it->second.floats;
}

const GgufTensor* GgufFile::FindTensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

StatusOr<const GgufTensor*> GgufFile::GetTensor(const std::string& name) const {
  const GgufTensor* t = FindTensor(name);
  if (t == nullptr) return NotFound("GGUF file " + path() + " has no tensor " + name);
  return t;
}

}  // namespace foresight::worker
