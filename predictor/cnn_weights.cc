#include "predictor/cnn_weights.h"

#include <cmath>
#include <random>
#include <vector>

#include "common/safetensors.h"

namespace foresight::predictor {
namespace {

Status ReadTensor(const SafetensorsFile& file, const std::string& name, const std::vector<int64_t>& shape, float* dst) {
  FS_ASSIGN_OR_RETURN(const TensorView* t, file.Get(name));
  if (t->shape != shape) {
    std::string want, got;
    for (int64_t d : shape) want += (want.empty() ? "" : ",") + std::to_string(d);
    for (int64_t d : t->shape) got += (got.empty() ? "" : ",") + std::to_string(d);
    return InvalidArgument("predictor weights " + file.path() + ": tensor " + name + " has shape [" + got +
                           "], expected [" + want + "]");
  }
  std::vector<float> values = t->ToFloat32();
  std::copy(values.begin(), values.end(), dst);
  return Status::OK();
}

StatusOr<std::shared_ptr<const CnnWeights>> FromSafetensors(const SafetensorsFile& file) {
  auto w = std::make_shared<CnnWeights>();
  FS_RETURN_IF_ERROR(ReadTensor(file, "conv1.weight", {16, 1, 3, 3}, &w->conv1_weight[0][0]));
  FS_RETURN_IF_ERROR(ReadTensor(file, "conv1.bias", {16}, w->conv1_bias));
  FS_RETURN_IF_ERROR(ReadTensor(file, "conv2.weight", {32, 16, 3, 3}, &w->conv2_weight[0][0]));
  FS_RETURN_IF_ERROR(ReadTensor(file, "conv2.bias", {32}, w->conv2_bias));
  FS_RETURN_IF_ERROR(ReadTensor(file, "conv3.weight", {1, 32, 1}, w->conv3_weight));
  FS_RETURN_IF_ERROR(ReadTensor(file, "conv3.bias", {1}, &w->conv3_bias));
  return std::shared_ptr<const CnnWeights>(std::move(w));
}

}  // namespace

StatusOr<std::shared_ptr<const CnnWeights>> CnnWeights::Load(const std::string& path) {
  FS_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(path));
  return FromSafetensors(*file);
}

StatusOr<std::shared_ptr<const CnnWeights>> CnnWeights::FromBytes(const std::string& name, const uint8_t* data,
                                                                  size_t size) {
  FS_ASSIGN_OR_RETURN(auto file, SafetensorsFile::FromBytes(name, data, size));
  return FromSafetensors(*file);
}

Status CnnWeights::Save(const std::string& path, const std::string& description) const {
  std::vector<TensorToWrite> t;
  t.push_back(TensorToWrite::F32("conv1.weight", {16, 1, 3, 3}, &conv1_weight[0][0]));
  t.push_back(TensorToWrite::F32("conv1.bias", {16}, conv1_bias));
  t.push_back(TensorToWrite::F32("conv2.weight", {32, 16, 3, 3}, &conv2_weight[0][0]));
  t.push_back(TensorToWrite::F32("conv2.bias", {32}, conv2_bias));
  t.push_back(TensorToWrite::F32("conv3.weight", {1, 32, 1}, conv3_weight));
  t.push_back(TensorToWrite::F32("conv3.bias", {1}, &conv3_bias));
  std::map<std::string, std::string> meta;
  if (!description.empty()) meta["description"] = description;
  return WriteSafetensors(path, t, meta);
}

std::shared_ptr<CnnWeights> CnnWeights::Random(uint64_t seed) {
  auto w = std::make_shared<CnnWeights>();
  std::mt19937_64 rng(seed);
  auto fill = [&rng](float* p, int n, int fan_in) {
    std::uniform_real_distribution<float> u(-1.0f / std::sqrt(float(fan_in)), 1.0f / std::sqrt(float(fan_in)));
    for (int i = 0; i < n; ++i) p[i] = u(rng);
  };
  fill(&w->conv1_weight[0][0], 16 * 9, 9);
  fill(w->conv1_bias, 16, 9);
  fill(&w->conv2_weight[0][0], 32 * 144, 144);
  fill(w->conv2_bias, 32, 144);
  fill(w->conv3_weight, 32, 32);
  fill(&w->conv3_bias, 1, 32);
  return w;
}

}  // namespace foresight::predictor
