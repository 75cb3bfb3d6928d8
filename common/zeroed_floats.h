// ZeroedFloats: a fixed-size array of floats that starts at zero, allocated with calloc.
//
// Why not std::vector<float>(n, 0.0f): the vector writes every zero itself, while calloc takes a
// large block as fresh pages from the kernel, which are zero already, and writes nothing. The
// pooled-attention buffers a request fills (predictor/prefill_recorder.h: 2 MB per layer at 7K
// tokens; worker/offload/seed_cache.h: 15 MB per block) are allocated once per request on the way to
// its first token, and then mostly overwritten: the vector's zeros were a second pass over them.
//
//   ZeroedFloats a(n);   // a[i] == 0.0f for every i < n
//   std::span<const float> s = a.span();
//
// Thread-safety: as a plain array (distinct elements may be written concurrently).
#pragma once

#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>
#include <span>
#include <utility>

namespace foresight {

class ZeroedFloats {
 public:
  ZeroedFloats() = default;
  explicit ZeroedFloats(size_t n) : size_(n), data_(static_cast<float*>(std::calloc(n == 0 ? 1 : n, sizeof(float)))) {
    if (data_ == nullptr) throw std::bad_alloc();
  }
  ZeroedFloats(ZeroedFloats&& other) noexcept : size_(std::exchange(other.size_, 0)), data_(std::move(other.data_)) {}
  ZeroedFloats& operator=(ZeroedFloats&& other) noexcept {
    size_ = std::exchange(other.size_, 0);
    data_ = std::move(other.data_);
    return *this;
  }

  size_t size() const { return size_; }
  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  float& operator[](size_t i) { return data_[i]; }
  const float& operator[](size_t i) const { return data_[i]; }
  std::span<const float> span() const { return {data_.get(), size_}; }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  size_t size_ = 0;
  std::unique_ptr<float[], Free> data_;
};

}  // namespace foresight
