// The CNN as one fused kernel: a thread block owns one image and a tile of 32 columns and walks
// down the 64 rows, keeping the three conv1 rows conv2 needs in shared memory; each thread owns
// one (conv2 channel, column) and accumulates its mean over time in a register. Nothing but the
// input and the scores touches global memory.
#include "predictor/cuda/cnn_cuda.h"

#include <cuda_runtime.h>

#include <string>
#include <vector>

namespace foresight::predictor {
namespace {

constexpr int kTile = 32;            // output columns per block (one warp across columns)
constexpr int kC1 = kCnnChannels1;   // 16
constexpr int kC2 = kCnnChannels2;   // 32
constexpr int kA1Width = kTile + 2;  // conv1 columns a tile's conv2 reads
constexpr int kW1 = 0, kB1 = kW1 + kC1 * 9, kW2 = kB1 + kC1, kB2 = kW2 + kC2 * kC1 * 9, kW3 = kB2 + kC2,
              kB3 = kW3 + kC2, kWeightCount = kB3 + 1;
static_assert(kWeightCount == kCnnParameters, "packed weight layout");

__constant__ float c_weights[kWeightCount];

Status CudaError(cudaError_t err, const char* what) {
  return Internal(std::string("CUDA ") + what + ": " + cudaGetErrorString(err));
}

__device__ float Input(const float* image, int64_t columns, int row, int64_t col) {
  if (row < 0 || row >= kCnnRows || col < 0 || col >= columns) return 0.0f;
  return image[row * columns + col];
}

// blockDim = (kTile, kC2): threadIdx.x = column within the tile, threadIdx.y = conv2 channel.
__global__ void CnnKernel(const float* __restrict__ images, int64_t columns, float* __restrict__ out) {
  __shared__ float a1[3][kC1][kA1Width];  // ring of conv1 rows h-1, h, h+1
  __shared__ float partial[kC2][kTile];
  const int64_t image_index = blockIdx.y;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const float* image = images + image_index * kCnnRows * columns;
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kTile + tx;

  // conv1 + ReLU of row r into ring slot s; zero outside the image (conv2's padding).
  auto conv1_row = [&](int r, int s) {
    for (int idx = tid; idx < kC1 * kA1Width; idx += kTile * kC2) {
      const int i = idx / kA1Width, j = idx % kA1Width;
      const int64_t col = c0 - 1 + j;
      float v = 0.0f;
      if (r >= 0 && r < kCnnRows && col >= 0 && col < columns) {
        float acc = c_weights[kB1 + i];
        for (int dy = 0; dy < 3; ++dy)
          for (int dx = 0; dx < 3; ++dx)
            acc = fmaf(c_weights[kW1 + i * 9 + dy * 3 + dx], Input(image, columns, r + dy - 1, col + dx - 1), acc);
        v = fmaxf(acc, 0.0f);
      }
      a1[s][i][j] = v;
    }
  };

  conv1_row(-1, 0);
  conv1_row(0, 1);
  float sum = 0.0f;
  for (int h = 0; h < kCnnRows; ++h) {
    const int above = h % 3, row = (h + 1) % 3, below = (h + 2) % 3;
    conv1_row(h + 1, below);
    __syncthreads();
    float acc = c_weights[kB2 + ty];
    const int slots[3] = {above, row, below};
    for (int i = 0; i < kC1; ++i)
      for (int dy = 0; dy < 3; ++dy)
        for (int dx = 0; dx < 3; ++dx)
          acc = fmaf(c_weights[kW2 + (ty * kC1 + i) * 9 + dy * 3 + dx], a1[slots[dy]][i][tx + dx], acc);
    sum += fmaxf(acc, 0.0f);
    __syncthreads();  // the slot of row h-1 is overwritten next
  }
  partial[ty][tx] = c_weights[kW3 + ty] * (sum / kCnnRows);
  __syncthreads();
  if (ty == 0 && c0 + tx < columns) {
    float y = 0.0f;
    for (int o = 0; o < kC2; ++o) y += partial[o][tx];
    out[image_index * columns + c0 + tx] = y + c_weights[kB3];
  }
}

}  // namespace

bool CudaDeviceAvailable(std::string* why) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    if (why) *why = std::string("cudaGetDeviceCount: ") + cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky error for later calls
    return false;
  }
  if (count == 0) {
    if (why) *why = "no CUDA device";
    return false;
  }
  return true;
}

StatusOr<std::unique_ptr<CudaCnn>> CudaCnn::Create(const CnnWeights& w, int device) {
  std::string why;
  if (!CudaDeviceAvailable(&why)) return Unavailable("CUDA CNN: " + why);
  std::unique_ptr<CudaCnn> cnn(new CudaCnn());
  cnn->device_ = device;
  cudaError_t err = cudaSetDevice(device);
  if (err != cudaSuccess) return CudaError(err, "cudaSetDevice");
  std::vector<float> packed(kWeightCount);
  std::copy(&w.conv1_weight[0][0], &w.conv1_weight[0][0] + kC1 * 9, &packed[kW1]);
  std::copy(w.conv1_bias, w.conv1_bias + kC1, &packed[kB1]);
  std::copy(&w.conv2_weight[0][0], &w.conv2_weight[0][0] + kC2 * kC1 * 9, &packed[kW2]);
  std::copy(w.conv2_bias, w.conv2_bias + kC2, &packed[kB2]);
  std::copy(w.conv3_weight, w.conv3_weight + kC2, &packed[kW3]);
  packed[kB3] = w.conv3_bias;
  // One process-wide constant bank: every CudaCnn of a process must share the weights.
  err = cudaMemcpyToSymbol(c_weights, packed.data(), sizeof(float) * kWeightCount);
  if (err != cudaSuccess) return CudaError(err, "uploading weights");
  return cnn;
}

CudaCnn::~CudaCnn() {
  if (device_in_) cudaFree(device_in_);
  if (device_out_) cudaFree(device_out_);
  if (device_weights_) cudaFree(device_weights_);
}

Status CudaCnn::RunOnDevice(const float* device_images, int64_t n, int64_t columns, float* device_scores,
                            void* stream) {
  if (n <= 0 || columns <= 0) return Status::OK();
  if (n > 65535) return InvalidArgument("CUDA CNN: at most 65535 images per call");
  const dim3 grid(static_cast<unsigned>((columns + kTile - 1) / kTile), static_cast<unsigned>(n));
  const dim3 block(kTile, kC2);
  CnnKernel<<<grid, block, 0, static_cast<cudaStream_t>(stream)>>>(device_images, columns, device_scores);
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? Status::OK() : CudaError(err, "launching the CNN kernel");
}

Status CudaCnn::Run(const float* images, int64_t n, int64_t columns, float* scores) {
  const size_t in_bytes = sizeof(float) * n * kCnnRows * columns, out_bytes = sizeof(float) * n * columns;
  cudaError_t err;
  if (in_bytes > in_capacity_) {
    if (device_in_) cudaFree(device_in_);
    device_in_ = nullptr;
    if ((err = cudaMalloc(&device_in_, in_bytes)) != cudaSuccess) return CudaError(err, "cudaMalloc input");
    in_capacity_ = in_bytes;
  }
  if (out_bytes > out_capacity_) {
    if (device_out_) cudaFree(device_out_);
    device_out_ = nullptr;
    if ((err = cudaMalloc(&device_out_, out_bytes)) != cudaSuccess) return CudaError(err, "cudaMalloc output");
    out_capacity_ = out_bytes;
  }
  if ((err = cudaMemcpy(device_in_, images, in_bytes, cudaMemcpyHostToDevice)) != cudaSuccess) {
    return CudaError(err, "copying images to the device");
  }
  FS_RETURN_IF_ERROR(RunOnDevice(device_in_, n, columns, device_out_, nullptr));
  if ((err = cudaMemcpy(scores, device_out_, out_bytes, cudaMemcpyDeviceToHost)) != cudaSuccess) {
    return CudaError(err, "copying scores from the device");
  }
  return Status::OK();
}

}  // namespace foresight::predictor
