// CudaModel and CudaSequence: the host side of the CUDA forward pass. Every CUDA and cuBLAS call is
// checked; a failure becomes a Status naming the call (and the layer, in the forward pass).
#include "worker/cuda/cuda_sequence.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "worker/cuda/cuda_kernels.h"
#include "worker/transformer_kernels.h"

namespace foresight::worker {
namespace {

double Now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

std::string Mib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f MiB", bytes / 1048576.0);
  return buf;
}

Status Check(cudaError_t err, const std::string& what) {
  if (err == cudaSuccess) return Status::OK();
  return Internal("cuda backend: " + what + ": " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
}

Status Check(cublasStatus_t status, const std::string& what) {
  if (status == CUBLAS_STATUS_SUCCESS) return Status::OK();
  return Internal("cuda backend: " + what + ": " + cublasGetStatusName(status) + " (" + cublasGetStatusString(status) +
                  ")");
}

// The forward pass checks a few hundred calls per token: build no message unless one failed.
Status Check(cudaError_t err, const char* what) {
  return err == cudaSuccess ? Status::OK() : Check(err, std::string(what));
}

// A device allocation that grows to the largest size asked for; its contents do not survive growth.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  Status Reserve(uint64_t bytes, const char* what) {
    if (bytes <= bytes_) return Status::OK();
    if (ptr_ != nullptr) cudaFree(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
    FS_RETURN_IF_ERROR(Check(cudaMalloc(&ptr_, bytes), std::string("cudaMalloc of ") + Mib(bytes) + " for " + what));
    bytes_ = bytes;
    return Status::OK();
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
  uint64_t bytes_ = 0;
};

}  // namespace

Status CudaDeviceStatus(int device) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the error so that later calls do not report it again
    return Unavailable(std::string("cuda backend: no CUDA device: ") + cudaGetErrorName(err) + " (" +
                       cudaGetErrorString(err) + ")");
  }
  if (count == 0) return Unavailable("cuda backend: no CUDA device (the driver reports none)");
  if (device < 0 || device >= count) {
    return Unavailable("cuda backend: CUDA device " + std::to_string(device) + " does not exist (" +
                       std::to_string(count) + " found)");
  }
  return Status::OK();
}

// ---------------------------------------------------------------------------------------------
// CudaModel

CudaModel::~CudaModel() {
  for (void* p : allocations_) cudaFree(p);
}

StatusOr<const float*> CudaModel::UploadFloats(const std::vector<float>& values, const std::string& name) {
  void* p = nullptr;
  const uint64_t bytes = values.size() * sizeof(float);
  FS_RETURN_IF_ERROR(Check(cudaMalloc(&p, bytes), "cudaMalloc of " + Mib(bytes) + " for " + name));
  allocations_.push_back(p);
  bytes_ += bytes;
  FS_RETURN_IF_ERROR(Check(cudaMemcpy(p, values.data(), bytes, cudaMemcpyHostToDevice), "uploading " + name));
  return static_cast<const float*>(p);
}

StatusOr<CudaMatrix> CudaModel::UploadMatrix(const WeightMatrix& m, const std::string& name) {
  if (m.empty()) return InvalidArgument("cuda backend: weight " + name + " is missing");
  CudaMatrix d;
  d.rows = m.rows();
  d.cols = m.cols();
  d.f16 = m.type() != TensorType::kF32;
  const uint64_t elems = static_cast<uint64_t>(d.rows) * d.cols;
  const uint64_t bytes = elems * (d.f16 ? 2 : 4);
  void* p = nullptr;
  FS_RETURN_IF_ERROR(Check(cudaMalloc(&p, bytes), "cudaMalloc of " + Mib(bytes) + " for " + name));
  allocations_.push_back(p);
  bytes_ += bytes;
  d.data = p;
  if (m.type() == TensorType::kF32 || m.type() == TensorType::kF16) {  // already the device encoding
    FS_RETURN_IF_ERROR(Check(cudaMemcpy(p, m.row(0), bytes, cudaMemcpyHostToDevice), "uploading " + name));
    return d;
  }
  // Dequantised to float and rounded to half on the host, a slice of rows at a time (about 16 MiB
  // of floats) so that a large matrix needs no full float copy.
  const int64_t slice = std::max<int64_t>(1, (int64_t{1} << 22) / d.cols);
  std::vector<float> floats(static_cast<size_t>(std::min(slice, d.rows) * d.cols));
  std::vector<uint16_t> halves(floats.size());
  for (int64_t r0 = 0; r0 < d.rows; r0 += slice) {
    const int64_t rows = std::min(slice, d.rows - r0);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      m.DequantizeRowTo(r0 + r, floats.data() + r * d.cols);
      FloatToHalfRow(floats.data() + r * d.cols, d.cols, halves.data() + r * d.cols);
    }
    FS_RETURN_IF_ERROR(Check(
        cudaMemcpy(static_cast<uint16_t*>(p) + r0 * d.cols, halves.data(), rows * d.cols * 2, cudaMemcpyHostToDevice),
        "uploading " + name));
  }
  return d;
}

StatusOr<std::unique_ptr<CudaModel>> CudaModel::Upload(const Model& model, int device) {
  FS_RETURN_IF_ERROR(CudaDeviceStatus(device));
  const ModelConfig& c = model.config();
  if (c.head_dim <= 0 || c.head_dim % 2 != 0 || c.head_dim > cuda::kMaxHeadDim) {
    return InvalidArgument("cuda backend: head size " + std::to_string(c.head_dim) +
                           " is not supported (even, at most " + std::to_string(cuda::kMaxHeadDim) + ")");
  }
  if (c.n_kv_heads <= 0 || c.n_heads % c.n_kv_heads != 0) {
    return InvalidArgument("cuda backend: " + std::to_string(c.n_heads) + " query heads do not group over " +
                           std::to_string(c.n_kv_heads) + " KV heads");
  }
  const ModelWeights& w = model.weights();
  const int64_t d = c.d_model, qo = int64_t{c.n_heads} * c.head_dim, kvo = int64_t{c.n_kv_heads} * c.head_dim;
  auto expect = [](const WeightMatrix& m, int64_t rows, int64_t cols, const std::string& name) {
    if (m.rows() == rows && m.cols() == cols) return Status::OK();
    return InvalidArgument("cuda backend: weight " + name + " is " + std::to_string(m.rows()) + "x" +
                           std::to_string(m.cols()) + ", the config says " + std::to_string(rows) + "x" +
                           std::to_string(cols));
  };
  auto expect_len = [](const std::vector<float>& v, int64_t n, const std::string& name) {
    if (static_cast<int64_t>(v.size()) == n) return Status::OK();
    return InvalidArgument("cuda backend: " + name + " has " + std::to_string(v.size()) + " values, expected " +
                           std::to_string(n));
  };
  FS_RETURN_IF_ERROR(expect(w.token_embedding, c.vocab_size, d, "token_embd"));
  FS_RETURN_IF_ERROR(expect(w.output, c.vocab_size, d, "output"));
  FS_RETURN_IF_ERROR(expect_len(w.output_norm, d, "output_norm"));
  if (static_cast<int32_t>(w.layers.size()) != c.n_layers) {
    return InvalidArgument("cuda backend: the model has " + std::to_string(w.layers.size()) + " layers, the config " +
                           std::to_string(c.n_layers));
  }

  std::unique_ptr<CudaModel> m(new CudaModel(model, device));
  FS_RETURN_IF_ERROR(Check(cudaSetDevice(device), "cudaSetDevice(" + std::to_string(device) + ")"));
  FS_ASSIGN_OR_RETURN(m->token_embedding_, m->UploadMatrix(w.token_embedding, "token_embd"));
  const bool tied = w.output.row(0) == w.token_embedding.row(0) && w.output.type() == w.token_embedding.type();
  if (tied) {
    m->output_ = m->token_embedding_;  // one copy on the device too
  } else {
    FS_ASSIGN_OR_RETURN(m->output_, m->UploadMatrix(w.output, "output"));
  }
  FS_ASSIGN_OR_RETURN(m->output_norm_, m->UploadFloats(w.output_norm, "output_norm"));
  for (int32_t l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = w.layers[l];
    const std::string b = "blk." + std::to_string(l) + ".";
    FS_RETURN_IF_ERROR(expect(L.wq, qo, d, b + "attn_q"));
    FS_RETURN_IF_ERROR(expect(L.wk, kvo, d, b + "attn_k"));
    FS_RETURN_IF_ERROR(expect(L.wv, kvo, d, b + "attn_v"));
    FS_RETURN_IF_ERROR(expect(L.wo, d, qo, b + "attn_output"));
    FS_RETURN_IF_ERROR(expect(L.w_gate, c.ffn_dim, d, b + "ffn_gate"));
    FS_RETURN_IF_ERROR(expect(L.w_up, c.ffn_dim, d, b + "ffn_up"));
    FS_RETURN_IF_ERROR(expect(L.w_down, d, c.ffn_dim, b + "ffn_down"));
    FS_RETURN_IF_ERROR(expect_len(L.attn_norm, d, b + "attn_norm"));
    FS_RETURN_IF_ERROR(expect_len(L.ffn_norm, d, b + "ffn_norm"));
    Layer g;
    FS_ASSIGN_OR_RETURN(g.attn_norm, m->UploadFloats(L.attn_norm, b + "attn_norm"));
    FS_ASSIGN_OR_RETURN(g.ffn_norm, m->UploadFloats(L.ffn_norm, b + "ffn_norm"));
    FS_ASSIGN_OR_RETURN(g.wq, m->UploadMatrix(L.wq, b + "attn_q"));
    FS_ASSIGN_OR_RETURN(g.wk, m->UploadMatrix(L.wk, b + "attn_k"));
    FS_ASSIGN_OR_RETURN(g.wv, m->UploadMatrix(L.wv, b + "attn_v"));
    FS_ASSIGN_OR_RETURN(g.wo, m->UploadMatrix(L.wo, b + "attn_output"));
    FS_ASSIGN_OR_RETURN(g.w_gate, m->UploadMatrix(L.w_gate, b + "ffn_gate"));
    FS_ASSIGN_OR_RETURN(g.w_up, m->UploadMatrix(L.w_up, b + "ffn_up"));
    FS_ASSIGN_OR_RETURN(g.w_down, m->UploadMatrix(L.w_down, b + "ffn_down"));
    if (c.qkv_bias) {
      FS_RETURN_IF_ERROR(expect_len(L.bq, qo, b + "attn_q.bias"));
      FS_RETURN_IF_ERROR(expect_len(L.bk, kvo, b + "attn_k.bias"));
      FS_RETURN_IF_ERROR(expect_len(L.bv, kvo, b + "attn_v.bias"));
      FS_ASSIGN_OR_RETURN(g.bq, m->UploadFloats(L.bq, b + "attn_q.bias"));
      FS_ASSIGN_OR_RETURN(g.bk, m->UploadFloats(L.bk, b + "attn_k.bias"));
      FS_ASSIGN_OR_RETURN(g.bv, m->UploadFloats(L.bv, b + "attn_v.bias"));
    }
    m->layers_.push_back(g);
  }
  std::vector<float> factors = c.rope_freq_factors;
  if (factors.empty()) factors.assign(c.head_dim / 2, 1.0f);
  FS_RETURN_IF_ERROR(expect_len(factors, c.head_dim / 2, "rope_freq_factors"));
  FS_ASSIGN_OR_RETURN(m->rope_freq_factors_, m->UploadFloats(factors, "rope_freq_factors"));
  // The expression Rope's constructor uses, so that both backends start from the same float.
  m->rope_theta_scale_ = std::pow(c.rope_theta, -2.0f / static_cast<float>(c.head_dim));
  return m;
}

// ---------------------------------------------------------------------------------------------
// CudaSequence

struct CudaSequence::Impl {
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  // Activations of up to `chunk` tokens (Sequence's x_, h_, q_, ...).
  DeviceBuffer x, h, q, k, v, att, gate, up, act_half, tokens, logits;
  // Sparse decode's block lists (CSR per KV head) and the per-block attention it reports back.
  DeviceBuffer block_offsets, block_ids, block_max, block_sum;
  // The KV cache: per layer, kv_capacity blocks one after another (cuda_kernels.h).
  std::vector<__half*> kv;
  int64_t kv_capacity = 0;
  // Host side of the hooks: the step's queries, the block lists, the per-block attention, and a
  // copy of the KV cache (`mirrored` tokens of each layer copied so far).
  std::vector<float> q_host, block_max_host, block_sum_host;
  std::vector<int32_t> offsets_host, ids_host;
  std::vector<std::vector<int32_t>> selected;
  KvCache mirror;
  std::vector<int64_t> mirrored;

  Impl(const ModelConfig& c)
      : mirror(c.n_layers, c.n_kv_heads, c.head_dim, cuda::kBlockTokens), mirrored(c.n_layers, 0) {}
  ~Impl() {
    for (__half* p : kv) cudaFree(p);
    if (blas != nullptr) cublasDestroy(blas);
    if (stream != nullptr) cudaStreamDestroy(stream);
  }
};

CudaSequence::CudaSequence(const CudaModel& model, int32_t prefill_chunk)
    : model_(model),
      c_(model.config()),
      // A prefill chunk is the attention grid's y dimension (at most 65535).
      chunk_(std::clamp(prefill_chunk, 1, 65535)),
      impl_(std::make_unique<Impl>(model.config())) {}

CudaSequence::~CudaSequence() = default;

StatusOr<std::unique_ptr<CudaSequence>> CudaSequence::Create(const CudaModel& model, int32_t prefill_chunk) {
  std::unique_ptr<CudaSequence> seq(new CudaSequence(model, prefill_chunk));
  Impl& m = *seq->impl_;
  const ModelConfig& c = model.config();
  FS_RETURN_IF_ERROR(Check(cudaSetDevice(model.device()), "cudaSetDevice"));
  FS_RETURN_IF_ERROR(Check(cudaStreamCreateWithFlags(&m.stream, cudaStreamNonBlocking), "cudaStreamCreate"));
  FS_RETURN_IF_ERROR(Check(cublasCreate(&m.blas), "cublasCreate"));
  FS_RETURN_IF_ERROR(Check(cublasSetStream(m.blas, m.stream), "cublasSetStream"));
  const uint64_t rows = seq->chunk_, f = sizeof(float);
  const uint64_t d = c.d_model, qo = uint64_t(c.n_heads) * c.head_dim, kvo = uint64_t(c.n_kv_heads) * c.head_dim;
  const uint64_t widest = std::max({d, qo, uint64_t(c.ffn_dim)});
  FS_RETURN_IF_ERROR(m.x.Reserve(rows * d * f, "the residual stream"));
  FS_RETURN_IF_ERROR(m.h.Reserve(rows * d * f, "normed activations"));
  FS_RETURN_IF_ERROR(m.q.Reserve(rows * qo * f, "queries"));
  FS_RETURN_IF_ERROR(m.k.Reserve(rows * kvo * f, "keys"));
  FS_RETURN_IF_ERROR(m.v.Reserve(rows * kvo * f, "values"));
  FS_RETURN_IF_ERROR(m.att.Reserve(rows * qo * f, "attention outputs"));
  FS_RETURN_IF_ERROR(m.gate.Reserve(rows * c.ffn_dim * f, "the FFN gate"));
  FS_RETURN_IF_ERROR(m.up.Reserve(rows * c.ffn_dim * f, "the FFN up projection"));
  FS_RETURN_IF_ERROR(m.act_half.Reserve(rows * widest * 2, "half activations"));
  FS_RETURN_IF_ERROR(m.tokens.Reserve(rows * sizeof(int32_t), "token ids"));
  m.kv.assign(c.n_layers, nullptr);
  return seq;
}

namespace {

// Bytes of one KV block on the device (and in KvCache: the same layout).
uint64_t BlockBytes(const ModelConfig& c) {
  return uint64_t{2} * cuda::kBlockTokens * c.n_kv_heads * c.head_dim * sizeof(__half);
}

// y[n x rows] = x[n x cols] W^T, with W [rows x cols] row-major (cuBLAS is column-major: W is the
// transposed [cols x rows] operand).
Status Gemm(cublasHandle_t blas, cudaStream_t stream, const CudaMatrix& w, const float* x, int64_t n, float* y,
            __half* x_half, const char* what) {
  const float one = 1.0f, zero = 0.0f;
  const void* b = x;
  cudaDataType type = CUDA_R_32F;
  if (w.f16) {  // cuBLAS multiplies equal input types: the activations go to half
    const cudaError_t err = cuda::LaunchToHalf(x, n * w.cols, x_half, stream);
    if (err != cudaSuccess) return Check(err, std::string("converting activations for ") + what);
    b = x_half;
    type = CUDA_R_16F;
  }
  const cublasStatus_t status = cublasGemmEx(
      blas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(w.rows), static_cast<int>(n), static_cast<int>(w.cols), &one,
      w.data, type, static_cast<int>(w.cols), b, type, static_cast<int>(w.cols), &zero, y, CUDA_R_32F,
      static_cast<int>(w.rows), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  if (status == CUBLAS_STATUS_SUCCESS) return Status::OK();
  return Check(status, std::string("cublasGemmEx for ") + what);
}

}  // namespace

void CudaSequence::Rewind(int64_t position) {
  tokens_ = std::min(tokens_, std::max<int64_t>(0, position));
  Impl& m = *impl_;
  for (int64_t& t : m.mirrored) t = std::min(t, tokens_);
  if (m.mirror.tokens() > tokens_) m.mirror.Resize(tokens_);
}

Status CudaSequence::Prefill(const std::vector<TokenId>& tokens, std::vector<float>* logits, bool all_logits,
                             PrefillAttentionObserver* observer) {
  if (tokens.empty()) return InvalidArgument("prefill needs at least one token");
  if (logits != nullptr) logits->assign(all_logits ? tokens.size() * c_.vocab_size : c_.vocab_size, 0.0f);
  return Step(tokens.data(), static_cast<int64_t>(tokens.size()), logits != nullptr ? logits->data() : nullptr,
              all_logits, nullptr, observer, /*prefill=*/true);
}

Status CudaSequence::Decode(TokenId token, std::vector<float>* logits, DecodeAttentionHook* hook) {
  if (logits != nullptr) logits->assign(c_.vocab_size, 0.0f);
  return Step(&token, 1, logits != nullptr ? logits->data() : nullptr, false, hook, nullptr, /*prefill=*/false);
}

Status CudaSequence::Step(const TokenId* tokens, int64_t n, float* logits, bool all_logits, DecodeAttentionHook* hook,
                          PrefillAttentionObserver* observer, bool prefill) {
  if (n <= 0) return InvalidArgument("a forward step needs at least one token");
  const double t0 = Now();
  const int64_t p0 = tokens_;
  // Hooks belong to decode steps (one token, no observer), as in BatchForward.
  DecodeAttentionHook* step_hook = n == 1 && observer == nullptr ? hook : nullptr;
  for (int64_t at = 0; at < n; at += chunk_) {
    const int64_t rows = std::min<int64_t>(chunk_, n - at);
    float* out = nullptr;
    if (logits != nullptr && all_logits) out = logits + at * c_.vocab_size;
    if (logits != nullptr && !all_logits && at + rows == n) out = logits;
    Status status = Forward(tokens + at, rows, out, all_logits, step_hook, observer);
    if (!status.ok()) {
      Rewind(p0);  // the step's earlier chunks did not happen either
      return status;
    }
  }
  if (prefill) {
    stats_.prefill_tokens += n;
    stats_.prefill_seconds += Now() - t0;
  } else {
    stats_.decode_tokens += n;
    stats_.decode_seconds += Now() - t0;
  }
  return Status::OK();
}

Status CudaSequence::Forward(const TokenId* tokens, int64_t n, float* logits, bool all_logits,
                             DecodeAttentionHook* hook, PrefillAttentionObserver* observer) {
  const int64_t p0 = tokens_;
  if (p0 + n > c_.max_context && c_.max_context > 0) {
    return OutOfRange("sequence of " + std::to_string(p0 + n) + " tokens exceeds the model's context of " +
                      std::to_string(c_.max_context));
  }
  for (int64_t t = 0; t < n; ++t) {
    if (tokens[t] < 0 || tokens[t] >= c_.vocab_size) {
      return InvalidArgument("token id " + std::to_string(tokens[t]) + " is outside the vocabulary of " +
                             std::to_string(c_.vocab_size));
    }
  }
  Impl& m = *impl_;
  const int64_t d = c_.d_model, hd = c_.head_dim, qo = int64_t{c_.n_heads} * hd, kvo = int64_t{c_.n_kv_heads} * hd;
  const int64_t ctx = p0 + n, n_blocks = (ctx + cuda::kBlockTokens - 1) / cuda::kBlockTokens;
  const uint64_t block_bytes = BlockBytes(c_);
  cudaStream_t s = m.stream;
  FS_RETURN_IF_ERROR(Check(cudaSetDevice(model_.device()), "cudaSetDevice"));

  // Grow the KV cache (doubling, up to the model's context) keeping the blocks written so far.
  if (n_blocks > m.kv_capacity) {
    int64_t capacity = std::max<int64_t>(n_blocks, std::max<int64_t>(64, 2 * m.kv_capacity));
    if (c_.max_context > 0) {
      capacity = std::max(n_blocks,
                          std::min(capacity, (int64_t{c_.max_context} + cuda::kBlockTokens - 1) / cuda::kBlockTokens));
    }
    const int64_t used = (p0 + cuda::kBlockTokens - 1) / cuda::kBlockTokens;
    for (int32_t l = 0; l < c_.n_layers; ++l) {
      void* grown = nullptr;
      FS_RETURN_IF_ERROR(
          Check(cudaMalloc(&grown, capacity * block_bytes),
                "cudaMalloc of " + Mib(capacity * block_bytes) + " for the KV cache of layer " + std::to_string(l)));
      // Zeroed, as KvCache's new blocks are: a partial block's unwritten rows read the same on both
      // backends (and in the host copy).
      Status zeroed = Check(cudaMemsetAsync(grown, 0, capacity * block_bytes, s), "clearing the KV cache");
      if (!zeroed.ok()) {
        cudaFree(grown);
        return zeroed;
      }
      if (m.kv[l] != nullptr) {
        Status copied = Check(cudaMemcpyAsync(grown, m.kv[l], used * block_bytes, cudaMemcpyDeviceToDevice, s),
                              "copying the KV cache of layer " + std::to_string(l) + " into its grown buffer");
        if (copied.ok()) copied = Check(cudaStreamSynchronize(s), "growing the KV cache");
        if (!copied.ok()) {
          cudaFree(grown);
          return copied;
        }
        cudaFree(m.kv[l]);
      }
      m.kv[l] = static_cast<__half*>(grown);
    }
    m.kv_capacity = capacity;
  }

  Status status = [&]() -> Status {
    FS_RETURN_IF_ERROR(
        Check(cudaMemcpyAsync(m.tokens.as<int32_t>(), tokens, n * sizeof(int32_t), cudaMemcpyHostToDevice, s),
              "copying token ids to the device"));
    const CudaMatrix& emb = model_.token_embedding();
    FS_RETURN_IF_ERROR(Check(cuda::LaunchEmbed(emb.data, emb.f16, m.tokens.as<int32_t>(), n, d, m.x.as<float>(), s),
                             "launching the embedding lookup"));
    float *x = m.x.as<float>(), *h = m.h.as<float>(), *q = m.q.as<float>(), *k = m.k.as<float>(), *v = m.v.as<float>();
    float *att = m.att.as<float>(), *gate = m.gate.as<float>(), *up = m.up.as<float>();
    __half* xh = m.act_half.as<__half>();
    const bool interleaved = c_.rope_style == RopeStyle::kInterleaved;
    for (int32_t l = 0; l < c_.n_layers; ++l) {
      const CudaModel::Layer& L = model_.layer(l);
      Status ls = [&]() -> Status {
        FS_RETURN_IF_ERROR(Check(cuda::LaunchRmsNorm(x, L.attn_norm, n, d, c_.rms_eps, h, s), "launching RMSNorm"));
        FS_RETURN_IF_ERROR(Gemm(m.blas, s, L.wq, h, n, q, xh, "attn_q"));
        FS_RETURN_IF_ERROR(Gemm(m.blas, s, L.wk, h, n, k, xh, "attn_k"));
        FS_RETURN_IF_ERROR(Gemm(m.blas, s, L.wv, h, n, v, xh, "attn_v"));
        if (c_.qkv_bias) {
          FS_RETURN_IF_ERROR(Check(cuda::LaunchAddBias(q, L.bq, n, qo, s), "launching the query bias"));
          FS_RETURN_IF_ERROR(Check(cuda::LaunchAddBias(k, L.bk, n, kvo, s), "launching the key bias"));
          FS_RETURN_IF_ERROR(Check(cuda::LaunchAddBias(v, L.bv, n, kvo, s), "launching the value bias"));
        }
        FS_RETURN_IF_ERROR(Check(cuda::LaunchRope(q, n, c_.n_heads, c_.head_dim, p0, model_.rope_theta_scale(),
                                                  model_.rope_freq_factors(), interleaved, /*round_to_half=*/true, s),
                                 "launching RoPE on the queries"));
        FS_RETURN_IF_ERROR(Check(cuda::LaunchRope(k, n, c_.n_kv_heads, c_.head_dim, p0, model_.rope_theta_scale(),
                                                  model_.rope_freq_factors(), interleaved, /*round_to_half=*/false, s),
                                 "launching RoPE on the keys"));
        FS_RETURN_IF_ERROR(
            Check(cuda::LaunchStoreKv(k, v, n, p0, c_.n_kv_heads, c_.head_dim, m.kv[l], s), "launching the KV store"));
        if (observer != nullptr) {
          FS_RETURN_IF_ERROR(CopyQueriesToHost(n));
          FS_RETURN_IF_ERROR(CopyKvToHost(l, ctx));
        }
        FS_RETURN_IF_ERROR(Attend(l, n, p0, hook));
        FS_RETURN_IF_ERROR(Gemm(m.blas, s, L.wo, att, n, h, xh, "attn_output"));
        FS_RETURN_IF_ERROR(Check(cuda::LaunchAdd(x, h, n * d, s), "launching the residual add"));
        FS_RETURN_IF_ERROR(Check(cuda::LaunchRmsNorm(x, L.ffn_norm, n, d, c_.rms_eps, h, s), "launching RMSNorm"));
        FS_RETURN_IF_ERROR(Gemm(m.blas, s, L.w_gate, h, n, gate, xh, "ffn_gate"));
        FS_RETURN_IF_ERROR(Gemm(m.blas, s, L.w_up, h, n, up, xh, "ffn_up"));
        FS_RETURN_IF_ERROR(Check(cuda::LaunchSwiGlu(gate, up, n * c_.ffn_dim, s), "launching SwiGLU"));
        FS_RETURN_IF_ERROR(Gemm(m.blas, s, L.w_down, gate, n, h, xh, "ffn_down"));
        FS_RETURN_IF_ERROR(Check(cuda::LaunchAdd(x, h, n * d, s), "launching the residual add"));
        // On the host while the GPU runs the layer just launched.
        if (observer != nullptr) ReportPrefillRows(l, n, p0, observer);
        return Status::OK();
      }();
      if (!ls.ok()) return ls.WithContext("layer " + std::to_string(l));
    }
    if (logits == nullptr) return Check(cudaStreamSynchronize(s), "running the forward pass");
    const int64_t first = all_logits ? 0 : n - 1, rows = n - first;
    FS_RETURN_IF_ERROR(Check(cuda::LaunchRmsNorm(x + first * d, model_.output_norm(), rows, d, c_.rms_eps, h, s),
                             "launching the output RMSNorm"));
    FS_RETURN_IF_ERROR(m.logits.Reserve(rows * c_.vocab_size * sizeof(float), "logits"));
    FS_RETURN_IF_ERROR(Gemm(m.blas, s, model_.output(), h, rows, m.logits.as<float>(), xh, "output"));
    FS_RETURN_IF_ERROR(Check(
        cudaMemcpyAsync(logits, m.logits.as<float>(), rows * c_.vocab_size * sizeof(float), cudaMemcpyDeviceToHost, s),
        "copying logits to the host"));
    return Check(cudaStreamSynchronize(s), "running the forward pass");
  }();
  if (!status.ok()) {
    cudaStreamSynchronize(s);  // nothing still writes into buffers the next call reuses
    Rewind(p0);                // the step did not happen
    return status;
  }
  tokens_ = ctx;
  return Status::OK();
}

Status CudaSequence::Attend(int32_t layer, int64_t n, int64_t p0, DecodeAttentionHook* hook) {
  Impl& m = *impl_;
  cudaStream_t s = m.stream;
  const int64_t hd = c_.head_dim;
  const int64_t ctx = p0 + n, n_blocks = (ctx + cuda::kBlockTokens - 1) / cuda::kBlockTokens;
  cuda::AttentionArgs a;
  a.q = m.q.as<float>();
  a.kv = m.kv[layer];
  a.out = m.att.as<float>();
  a.n = n;
  a.p0 = p0;
  a.n_heads = c_.n_heads;
  a.kv_heads = c_.n_kv_heads;
  a.head_dim = c_.head_dim;
  a.scale = 1.0f / std::sqrt(static_cast<float>(hd));
  a.n_blocks = n_blocks;
  // Hooks and block statistics belong to decode steps (one token), as in BatchForward.
  const bool decode = n == 1;
  if (!decode || hook == nullptr) {
    if (decode) {
      stats_.blocks_attended += n_blocks * c_.n_kv_heads;
      stats_.blocks_total += n_blocks * c_.n_kv_heads;
    }
    return Check(cuda::LaunchAttention(a, s), "launching attention");
  }

  // The hook sees the step's queries and a host copy of the cache up to this token.
  FS_RETURN_IF_ERROR(CopyQueriesToHost(1));
  FS_RETURN_IF_ERROR(CopyKvToHost(layer, ctx));
  m.selected.assign(c_.n_kv_heads, {});
  const bool sparse = hook->SelectBlocks(layer, p0, m.q_host.data(), m.mirror, &m.selected);
  if (sparse) {
    if (static_cast<int32_t>(m.selected.size()) != c_.n_kv_heads) {
      return InvalidArgument("decode hook returned " + std::to_string(m.selected.size()) + " block lists for " +
                             std::to_string(c_.n_kv_heads) + " KV heads");
    }
    m.offsets_host.assign(1, 0);
    m.ids_host.clear();
    for (int32_t kvh = 0; kvh < c_.n_kv_heads; ++kvh) {
      int32_t prev = -1;
      for (int32_t b : m.selected[kvh]) {
        if (b <= prev || b >= n_blocks) {
          return InvalidArgument("decode hook: KV head " + std::to_string(kvh) +
                                 "'s block list must be ascending block "
                                 "indices below " +
                                 std::to_string(n_blocks) + "; it has " + std::to_string(b) + " after " +
                                 std::to_string(prev));
        }
        m.ids_host.push_back(b);
        prev = b;
      }
      m.offsets_host.push_back(static_cast<int32_t>(m.ids_host.size()));
      stats_.blocks_attended += static_cast<int64_t>(m.selected[kvh].size());
    }
    FS_RETURN_IF_ERROR(m.block_offsets.Reserve(m.offsets_host.size() * sizeof(int32_t), "block lists"));
    FS_RETURN_IF_ERROR(m.block_ids.Reserve(std::max<size_t>(1, m.ids_host.size()) * sizeof(int32_t), "block lists"));
    FS_RETURN_IF_ERROR(Check(cudaMemcpyAsync(m.block_offsets.as<int32_t>(), m.offsets_host.data(),
                                             m.offsets_host.size() * sizeof(int32_t), cudaMemcpyHostToDevice, s),
                             "copying block lists to the device"));
    if (!m.ids_host.empty()) {
      FS_RETURN_IF_ERROR(Check(cudaMemcpyAsync(m.block_ids.as<int32_t>(), m.ids_host.data(),
                                               m.ids_host.size() * sizeof(int32_t), cudaMemcpyHostToDevice, s),
                               "copying block lists to the device"));
    }
    a.block_offsets = m.block_offsets.as<int32_t>();
    a.block_ids = m.block_ids.as<int32_t>();
  } else {
    stats_.blocks_attended += n_blocks * c_.n_kv_heads;
  }
  stats_.blocks_total += n_blocks * c_.n_kv_heads;

  const uint64_t pooled_bytes = uint64_t(c_.n_heads) * n_blocks * sizeof(float);
  FS_RETURN_IF_ERROR(m.block_max.Reserve(pooled_bytes, "per-block attention"));
  FS_RETURN_IF_ERROR(m.block_sum.Reserve(pooled_bytes, "per-block attention"));
  FS_RETURN_IF_ERROR(
      Check(cudaMemsetAsync(m.block_max.as<float>(), 0, pooled_bytes, s), "clearing per-block attention"));
  FS_RETURN_IF_ERROR(
      Check(cudaMemsetAsync(m.block_sum.as<float>(), 0, pooled_bytes, s), "clearing per-block attention"));
  a.block_max = m.block_max.as<float>();
  a.block_sum = m.block_sum.as<float>();
  FS_RETURN_IF_ERROR(Check(cuda::LaunchAttention(a, s), "launching attention"));
  m.block_max_host.resize(c_.n_heads * n_blocks);
  m.block_sum_host.resize(c_.n_heads * n_blocks);
  FS_RETURN_IF_ERROR(
      Check(cudaMemcpyAsync(m.block_max_host.data(), a.block_max, pooled_bytes, cudaMemcpyDeviceToHost, s),
            "copying per-block attention to the host"));
  FS_RETURN_IF_ERROR(
      Check(cudaMemcpyAsync(m.block_sum_host.data(), a.block_sum, pooled_bytes, cudaMemcpyDeviceToHost, s),
            "copying per-block attention to the host"));
  FS_RETURN_IF_ERROR(Check(cudaStreamSynchronize(s), "running attention"));
  hook->OnAttention(layer, p0, m.q_host.data(), !sparse, m.block_max_host.data(), m.block_sum_host.data(), n_blocks);
  return Status::OK();
}

Status CudaSequence::CopyQueriesToHost(int64_t n) {
  Impl& m = *impl_;
  const int64_t qo = int64_t{c_.n_heads} * c_.head_dim;
  m.q_host.resize(n * qo);
  FS_RETURN_IF_ERROR(
      Check(cudaMemcpyAsync(m.q_host.data(), m.q.as<float>(), n * qo * sizeof(float), cudaMemcpyDeviceToHost, m.stream),
            "copying queries to the host"));
  return Check(cudaStreamSynchronize(m.stream), "computing queries");
}

Status CudaSequence::CopyKvToHost(int32_t layer, int64_t ctx) {
  Impl& m = *impl_;
  if (m.mirror.tokens() < ctx) m.mirror.Resize(ctx);
  const int64_t n_blocks = (ctx + cuda::kBlockTokens - 1) / cuda::kBlockTokens;
  const uint64_t block_bytes = BlockBytes(c_);
  // From the block holding the first token not yet copied (a partial block is copied again).
  for (int64_t b = m.mirrored[layer] / cuda::kBlockTokens; b < n_blocks; ++b) {
    FS_RETURN_IF_ERROR(Check(cudaMemcpy(m.mirror.mutable_block_data(layer, b),
                                        reinterpret_cast<const uint8_t*>(m.kv[layer]) + b * block_bytes, block_bytes,
                                        cudaMemcpyDeviceToHost),
                             "copying KV block " + std::to_string(b) + " to the host"));
  }
  m.mirrored[layer] = ctx;
  return Status::OK();
}

void CudaSequence::ReportPrefillRows(int32_t layer, int64_t n, int64_t p0, PrefillAttentionObserver* observer) {
  const Impl& m = *impl_;
  const int64_t qo = int64_t{c_.n_heads} * c_.head_dim;
  const int32_t group = c_.n_heads / c_.n_kv_heads;
#pragma omp parallel
  {
    std::vector<float> row(static_cast<size_t>(p0 + n));
#pragma omp for schedule(dynamic, 1)
    for (int32_t h = 0; h < c_.n_heads; ++h) {
      for (int64_t t = 0; t < n; ++t) {
        PrefillAttentionRow(m.mirror, layer, h / group, m.q_host.data() + t * qo + h * c_.head_dim, p0 + t + 1,
                            row.data());
        observer->OnRow(layer, h, p0 + t, row.data());
      }
    }
  }
}

}  // namespace foresight::worker
