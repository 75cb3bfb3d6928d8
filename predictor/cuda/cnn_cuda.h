// CudaCnn: the AttentionPredictor CNN (full computation) on an NVIDIA GPU, for workers whose
// attention runs there. Same network and weights as predictor/cnn_cpu.h; tested against it on
// random data (tests/predictor/cnn_cuda_test.cc), which skips where no GPU is present.
//
// Built only where nvcc exists (FORESIGHT_HAVE_CUDA; target foresight_predictor_cuda). The header
// has no CUDA includes so host-only code can hold a CudaCnn.
//
// Thread-safety: one CudaCnn per host thread (it owns device buffers and a stream).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"
#include "predictor/cnn_weights.h"

namespace foresight::predictor {

class CudaCnn {
 public:
  // UNAVAILABLE when the process sees no usable GPU (no device, or no driver); the message says
  // which.
  static StatusOr<std::unique_ptr<CudaCnn>> Create(const CnnWeights& weights, int device = 0);
  ~CudaCnn();
  CudaCnn(const CudaCnn&) = delete;
  CudaCnn& operator=(const CudaCnn&) = delete;

  // `images` contiguous images [n, 64, columns] in host memory -> scores [n, columns] in host
  // memory. Synchronous.
  Status Run(const float* images, int64_t n, int64_t columns, float* scores);

  // Device-memory variant on the caller's stream (a cudaStream_t, or nullptr for the default
  // stream); asynchronous. The weights were uploaded by Create.
  Status RunOnDevice(const float* device_images, int64_t n, int64_t columns, float* device_scores, void* stream);

 private:
  CudaCnn() = default;
  int device_ = 0;
  float* device_weights_ = nullptr;  // packed: conv1 w, b, conv2 w, b, conv3 w, b
  float* device_in_ = nullptr;
  float* device_out_ = nullptr;
  size_t in_capacity_ = 0, out_capacity_ = 0;
};

// True when a CUDA device is usable; otherwise `why` says what cudaGetDeviceCount reported.
bool CudaDeviceAvailable(std::string* why);

}  // namespace foresight::predictor
