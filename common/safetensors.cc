#include "common/safetensors.h"

#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

#include "common/half.h"

namespace foresight {

namespace {
struct DTypeInfo {
  DType dtype;
  const char* name;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::kF64, "F64", 8}, {DType::kF32, "F32", 4},   {DType::kF16, "F16", 2}, {DType::kBF16, "BF16", 2},
    {DType::kI64, "I64", 8}, {DType::kI32, "I32", 4},   {DType::kI16, "I16", 2}, {DType::kI8, "I8", 1},
    {DType::kU8, "U8", 1},   {DType::kBool, "BOOL", 1},
};

template <typename Out>
std::vector<Out> ConvertFloat(const TensorView& t) {
  const int64_t n = t.numel();
  std::vector<Out> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    double v = 0;
    switch (t.dtype) {
      case DType::kF64: {
        double x;
        std::memcpy(&x, t.data + 8 * i, 8);
        v = x;
        break;
      }
      case DType::kF32: {
        float x;
        std::memcpy(&x, t.data + 4 * i, 4);
        v = x;
        break;
      }
      case DType::kF16: {
        uint16_t x;
        std::memcpy(&x, t.data + 2 * i, 2);
        v = HalfToFloat(x);
        break;
      }
      case DType::kBF16: {
        uint16_t x;
        std::memcpy(&x, t.data + 2 * i, 2);
        v = BFloat16ToFloat(x);
        break;
      }
      case DType::kI64: {
        int64_t x;
        std::memcpy(&x, t.data + 8 * i, 8);
        v = static_cast<double>(x);
        break;
      }
      case DType::kI32: {
        int32_t x;
        std::memcpy(&x, t.data + 4 * i, 4);
        v = x;
        break;
      }
      case DType::kI16: {
        int16_t x;
        std::memcpy(&x, t.data + 2 * i, 2);
        v = x;
        break;
      }
      case DType::kI8:
        v = static_cast<int8_t>(t.data[i]);
        break;
      case DType::kU8:
      case DType::kBool:
        v = t.data[i];
        break;
    }
    out[static_cast<size_t>(i)] = static_cast<Out>(v);
  }
  return out;
}
}  // namespace

StatusOr<DType> ParseDType(const std::string& name) {
  for (const auto& d : kDTypes)
    if (name == d.name) return d.dtype;
  return InvalidArgument("unknown safetensors dtype '" + name + "'");
}

const char* DTypeName(DType dtype) {
  for (const auto& d : kDTypes)
    if (d.dtype == dtype) return d.name;
  return "?";
}

size_t DTypeSize(DType dtype) {
  for (const auto& d : kDTypes)
    if (d.dtype == dtype) return d.size;
  return 0;
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<float> TensorView::ToFloat32() const {
  if (dtype == DType::kF32) {
    std::vector<float> out(static_cast<size_t>(numel()));
    if (nbytes > 0) std::memcpy(out.data(), data, nbytes);
    return out;
  }
  return ConvertFloat<float>(*this);
}

std::vector<double> TensorView::ToFloat64() const { return ConvertFloat<double>(*this); }

StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  FS_ASSIGN_OR_RETURN(auto mapped, MappedFile::Open(path));
  const uint8_t* data = mapped->data();
  const size_t size = mapped->size();
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile(path, std::move(mapped)));
  FS_RETURN_IF_ERROR(file->Parse(data, size));
  return file;
}

StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::FromBytes(std::string name, const uint8_t* data,
                                                                      size_t size) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile(std::move(name), nullptr));
  FS_RETURN_IF_ERROR(file->Parse(data, size));
  return file;
}

Status SafetensorsFile::Parse(const uint8_t* bytes, size_t size) {
  const std::string& path = path_;
  if (size < 8) return InvalidArgument(path + ": not a safetensors file (shorter than 8 bytes)");
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes, 8);
  if (header_len > size - 8)
    return InvalidArgument(path + ": truncated safetensors file (header of " + std::to_string(header_len) +
                           " bytes, file has " + std::to_string(size) + ")");
  nlohmann::json header =
      nlohmann::json::parse(reinterpret_cast<const char*>(bytes + 8),
                            reinterpret_cast<const char*>(bytes + 8 + header_len), nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object())
    return InvalidArgument(path + ": safetensors header is not a JSON object");

  const uint8_t* base = bytes + 8 + header_len;
  const size_t data_size = size - 8 - header_len;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (it.value().is_object())
        for (auto m = it.value().begin(); m != it.value().end(); ++m)
          if (m.value().is_string()) metadata_[m.key()] = m.value().get<std::string>();
      continue;
    }
    const auto& j = it.value();
    const std::string where = path + ": tensor '" + it.key() + "'";
    if (!j.is_object() || !j.contains("dtype") || !j.contains("shape") || !j.contains("data_offsets") ||
        !j["dtype"].is_string() || !j["shape"].is_array() || !j["data_offsets"].is_array() ||
        j["data_offsets"].size() != 2)
      return InvalidArgument(where + " has a malformed header entry");
    TensorView t;
    t.name = it.key();
    auto dtype = ParseDType(j["dtype"].get<std::string>());
    if (!dtype.ok()) return dtype.status().WithContext(where);
    t.dtype = *dtype;
    uint64_t elems = 1;
    for (const auto& d : j["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) return InvalidArgument(where + " has a bad shape");
      t.shape.push_back(d.get<int64_t>());
      // Counted without overflow: no file holds 2^62 elements.
      if (__builtin_mul_overflow(elems, static_cast<uint64_t>(t.shape.back()), &elems) || elems > (1ull << 62) / 8)
        return InvalidArgument(where + " has a bad shape (too many elements)");
    }
    if (!j["data_offsets"][0].is_number_unsigned() || !j["data_offsets"][1].is_number_unsigned())
      return InvalidArgument(where + " has bad data_offsets");
    const uint64_t begin = j["data_offsets"][0].get<uint64_t>();
    const uint64_t end = j["data_offsets"][1].get<uint64_t>();
    if (begin > end || end > data_size)
      return InvalidArgument(where + " lies outside the file (truncated?): bytes [" + std::to_string(begin) + ", " +
                             std::to_string(end) + ") of " + std::to_string(data_size));
    t.nbytes = end - begin;
    if (static_cast<uint64_t>(t.numel()) * DTypeSize(t.dtype) != t.nbytes)
      return InvalidArgument(where + ": shape and dtype need " + std::to_string(t.numel() * DTypeSize(t.dtype)) +
                             " bytes, header says " + std::to_string(t.nbytes));
    t.data = base + begin;
    tensors_.emplace(t.name, std::move(t));
  }
  return Status::OK();
}

StatusOr<const TensorView*> SafetensorsFile::Get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) return NotFound(path() + ": no tensor named '" + name + "'");
  return &it->second;
}

TensorToWrite TensorToWrite::F32(std::string name, std::vector<int64_t> shape, const float* values) {
  TensorToWrite t{std::move(name), DType::kF32, std::move(shape), {}};
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  t.data.resize(static_cast<size_t>(n) * 4);
  if (n > 0) std::memcpy(t.data.data(), values, t.data.size());
  return t;
}

Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                        const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    header[t.name] = {
        {"dtype", DTypeName(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.data.size()}}};
    offset += t.data.size();
  }
  std::string text = header.dump();
  while ((text.size() + 8) % 8 != 0) text.push_back(' ');
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return Internal("cannot create " + path);
  uint64_t len = text.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  // The header gives explicit offsets, so its key order (alphabetical) does not matter.
  for (const auto& t : tensors)
    out.write(reinterpret_cast<const char*>(t.data.data()), static_cast<std::streamsize>(t.data.size()));
  if (!out) return Internal("failed writing " + path);
  return Status::OK();
}

}  // namespace foresight
