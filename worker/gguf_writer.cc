#include "worker/gguf_writer.h"

#include <cstring>
#include <fstream>

#include "worker/quantized_kernels.h"

namespace foresight::worker {
namespace {

template <typename T>
void Put(std::vector<uint8_t>& out, T v) {
  const size_t at = out.size();
  out.resize(at + sizeof(T));
  std::memcpy(out.data() + at, &v, sizeof(T));
}

void PutString(std::vector<uint8_t>& out, const std::string& s) {
  Put<uint64_t>(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
}

void PutKey(std::vector<uint8_t>& out, const std::string& key, GgufValueType type) {
  PutString(out, key);
  Put<uint32_t>(out, static_cast<uint32_t>(type));
}

}  // namespace

void GgufWriter::SetString(const std::string& key, const std::string& value) {
  PutKey(kv_bytes_, key, GgufValueType::kString);
  PutString(kv_bytes_, value);
  ++kv_count_;
}

void GgufWriter::SetU32(const std::string& key, uint32_t value) {
  PutKey(kv_bytes_, key, GgufValueType::kU32);
  Put(kv_bytes_, value);
  ++kv_count_;
}

void GgufWriter::SetF32(const std::string& key, float value) {
  PutKey(kv_bytes_, key, GgufValueType::kF32);
  Put(kv_bytes_, value);
  ++kv_count_;
}

void GgufWriter::SetBool(const std::string& key, bool value) {
  PutKey(kv_bytes_, key, GgufValueType::kBool);
  Put<uint8_t>(kv_bytes_, value ? 1 : 0);
  ++kv_count_;
}

void GgufWriter::SetStringArray(const std::string& key, const std::vector<std::string>& values) {
  PutKey(kv_bytes_, key, GgufValueType::kArray);
  Put<uint32_t>(kv_bytes_, static_cast<uint32_t>(GgufValueType::kString));
  Put<uint64_t>(kv_bytes_, values.size());
  for (const auto& v : values) PutString(kv_bytes_, v);
  ++kv_count_;
}

void GgufWriter::SetI32Array(const std::string& key, const std::vector<int32_t>& values) {
  PutKey(kv_bytes_, key, GgufValueType::kArray);
  Put<uint32_t>(kv_bytes_, static_cast<uint32_t>(GgufValueType::kI32));
  Put<uint64_t>(kv_bytes_, values.size());
  for (int32_t v : values) Put(kv_bytes_, v);
  ++kv_count_;
}

void GgufWriter::SetF32Array(const std::string& key, const std::vector<float>& values) {
  PutKey(kv_bytes_, key, GgufValueType::kArray);
  Put<uint32_t>(kv_bytes_, static_cast<uint32_t>(GgufValueType::kF32));
  Put<uint64_t>(kv_bytes_, values.size());
  for (float v : values) Put(kv_bytes_, v);
  ++kv_count_;
}

void GgufWriter::AddTensor(const std::string& name, TensorType type, std::vector<int64_t> dims,
                           std::vector<uint8_t> data) {
  tensors_.push_back({name, type, std::move(dims), std::move(data)});
}

Status GgufWriter::AddFloatTensor(const std::string& name, TensorType type, std::vector<int64_t> dims,
                                  const std::vector<float>& values) {
  const int64_t row = dims.at(0);
  std::vector<uint8_t> bytes;
  for (size_t at = 0; at < values.size(); at += row) {
    auto encoded = QuantizeRow(type, values.data() + at, row);
    if (!encoded.ok()) return encoded.status().WithContext("tensor " + name);
    bytes.insert(bytes.end(), encoded->begin(), encoded->end());
  }
  AddTensor(name, type, std::move(dims), std::move(bytes));
  return Status::OK();
}

Status GgufWriter::Write(const std::string& path) const {
  constexpr uint64_t kAlign = 32;
  std::vector<uint8_t> out;
  Put<uint32_t>(out, 0x46554747);
  Put<uint32_t>(out, 3);
  Put<uint64_t>(out, tensors_.size());
  Put<uint64_t>(out, kv_count_);
  out.insert(out.end(), kv_bytes_.begin(), kv_bytes_.end());
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    PutString(out, t.name);
    Put<uint32_t>(out, static_cast<uint32_t>(t.dims.size()));
    for (int64_t d : t.dims) Put<uint64_t>(out, static_cast<uint64_t>(d));
    Put<uint32_t>(out, static_cast<uint32_t>(t.type));
    Put<uint64_t>(out, offset);
    offset += (t.data.size() + kAlign - 1) / kAlign * kAlign;
  }
  out.resize((out.size() + kAlign - 1) / kAlign * kAlign, 0);
  for (const Tensor& t : tensors_) {
    out.insert(out.end(), t.data.begin(), t.data.end());
    out.resize((out.size() + kAlign - 1) / kAlign * kAlign, 0);
  }
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) return Unavailable("cannot open " + path + " for writing");
  f.write(reinterpret_cast<const char*>(out.data()), static_cast<std::streamsize>(out.size()));
  if (!f) return DataLoss("writing " + path + " failed");
  return Status::OK();
}

}  // namespace foresight::worker
