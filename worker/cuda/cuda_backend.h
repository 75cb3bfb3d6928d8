// The CUDA backend behind the engine's Backend interface (worker/backend.h): CudaSequences
// (worker/cuda/cuda_sequence.h) on an NVIDIA GPU. Run takes its items one at a time (no batched
// products across sequences yet). Decode hooks and prefill observers work as on the CPU; what
// this backend cannot do is refused with UNIMPLEMENTED naming "cuda backend" and the feature,
// never run some other way: a KvBlockSource (offload's fetched blocks), lookahead queries
// (DecodeAttentionHook::WantsLookaheadQueries), importing KV (shared prefixes), and anything that
// needs the KV in host memory (offload: SupportsOffload says so up front).
//
//   FS_ASSIGN_OR_RETURN(std::unique_ptr<Backend> gpu, NewCudaBackend(model));  // uploads the weights
//   GenerateOptions options;
//   options.backend = gpu.get();
//   Generate(model, prompt, options);
//
// Built only where nvcc exists (FORESIGHT_HAVE_CUDA; target foresight_worker_cuda).
//
// Thread-safety: as Backend.
#pragma once

#include <memory>

#include "common/status.h"
#include "worker/backend.h"
#include "worker/cuda/cuda_sequence.h"
#include "worker/model.h"

namespace foresight::worker {

// Uploads `model`'s weights to CUDA device `device` (CudaModel::Upload: UNAVAILABLE without a
// usable GPU, saying why) and returns a backend owning them. `model` must outlive it.
StatusOr<std::unique_ptr<Backend>> NewCudaBackend(const Model& model, int device = 0);
// A backend on weights already uploaded; `model` must outlive it.
std::unique_ptr<Backend> NewCudaBackend(const CudaModel& model);

}  // namespace foresight::worker
