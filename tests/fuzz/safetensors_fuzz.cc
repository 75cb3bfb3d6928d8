// Fuzz target: a safetensors file, as the Hugging Face loader opens each shard of a model folder.
// Open validates the JSON header against the file; every tensor it accepts must lie inside the
// file and convert to float without reading past its bytes.
#include "common/safetensors.h"
#include "tests/fuzz/fuzz_target.h"

namespace foresight::fuzz {

std::vector<std::string> Seeds() {
  const float values[6] = {1.0f, -2.5f, 3.25f, 0.0f, 1e-3f, 65504.0f};
  std::vector<TensorToWrite> tensors = {TensorToWrite::F32("a.weight", {2, 3}, values),
                                        TensorToWrite::F32("b.bias", {3}, values)};
  TensorToWrite half{"c.half", DType::kF16, {2, 2}, {0x00, 0x3c, 0x00, 0xc0, 0xff, 0x7b, 0x01, 0x00}};
  TensorToWrite bf16{"d.bf16", DType::kBF16, {2}, {0x80, 0x3f, 0x00, 0xc0}};
  TensorToWrite empty{"e.empty", DType::kF32, {0, 4}, {}};
  tensors.push_back(half);
  tensors.push_back(bf16);
  tensors.push_back(empty);
  std::vector<std::string> seeds;
  for (size_t n = 1; n <= tensors.size(); n += 2) {
    const std::string path = WriteScratchFile("", ".seed.safetensors");
    std::vector<TensorToWrite> some(tensors.begin(), tensors.begin() + static_cast<long>(n));
    const Status st = WriteSafetensors(path, some, {{"format", "pt"}});
    FUZZ_CHECK(st.ok(), st.message().c_str());
    seeds.push_back(ReadFileBytes(path));
  }
  return seeds;
}

}  // namespace foresight::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace foresight;
  const std::string path =
      fuzz::WriteScratchFile(std::string(reinterpret_cast<const char*>(data), size), ".safetensors");
  auto opened = SafetensorsFile::Open(path);
  if (!opened.ok()) {
    FUZZ_CHECK(!opened.status().message().empty(), "a refused file gets a reason");
    return 0;
  }
  const SafetensorsFile& file = **opened;
  for (const auto& [name, t] : file.tensors()) {
    FUZZ_CHECK(t.nbytes <= size, "a tensor is no larger than the file");
    uint64_t sum = 0;
    for (size_t i = 0; i < t.nbytes; ++i) sum += t.data[i];
    (void)sum;
    FUZZ_CHECK(file.Get(name).ok(), "a listed tensor can be fetched");
    if (t.dtype == DType::kF32 || t.dtype == DType::kF16 || t.dtype == DType::kBF16 || t.dtype == DType::kF64) {
      FUZZ_CHECK(static_cast<int64_t>(t.ToFloat32().size()) == t.numel(), "ToFloat32 gives numel values");
    }
  }
  return 0;
}
