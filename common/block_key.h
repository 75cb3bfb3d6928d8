// BlockKey: the content address of one KV block, as in vLLM's prefix cache.
//
//   chain(0) = H(salt, tokens of block 0)          salt = H(namespace, model fingerprint)
//   chain(i) = H(chain(i-1), tokens of block i)
//   key(i, layer) = H(chain(i), layer)
//
// H is XXH3-128. Equal prefixes under the same namespace and model give equal keys on every
// worker, so prefix sharing needs no coordination; different namespaces (tenants) never collide.
// Operators may also name blocks by plain strings (PlainKey), hashed under their namespace.
//
// This file is the one place keys are built. Thread-safety: values.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "common/status.h"

namespace foresight {

class BlockKey {
 public:
  static constexpr size_t kSize = 16;
  BlockKey() { bytes_.fill(0); }
  static BlockKey FromBytes(const void* data) {
    BlockKey k;
    std::memcpy(k.bytes_.data(), data, kSize);
    return k;
  }
  // Parses the 32-hex-digit form printed by ToHex().
  static StatusOr<BlockKey> FromHex(std::string_view hex);

  const uint8_t* data() const { return bytes_.data(); }
  std::string_view view() const { return {reinterpret_cast<const char*>(bytes_.data()), kSize}; }
  std::string ToHex() const;
  uint64_t hash() const {
    uint64_t h;
    std::memcpy(&h, bytes_.data(), 8);
    return h;
  }

  friend bool operator==(const BlockKey& a, const BlockKey& b) { return a.bytes_ == b.bytes_; }
  friend bool operator!=(const BlockKey& a, const BlockKey& b) { return !(a == b); }
  friend bool operator<(const BlockKey& a, const BlockKey& b) { return a.bytes_ < b.bytes_; }

 private:
  std::array<uint8_t, kSize> bytes_;
};

struct BlockKeyHash {
  size_t operator()(const BlockKey& k) const { return static_cast<size_t>(k.hash()); }
};

// The running prefix hash of a sequence, one block at a time.
class PrefixChain {
 public:
  // `model_fingerprint` identifies the weights (e.g. a hash of the model file's tensor metadata).
  PrefixChain(std::string_view name_space, std::string_view model_fingerprint);
  // Extends the chain by one block of token ids; returns the new chain value.
  const BlockKey& Extend(std::span<const int32_t> block_tokens);
  const BlockKey& current() const { return chain_; }
  // The key of layer `layer` of the block the chain last reached.
  BlockKey LayerKey(uint32_t layer) const;

 private:
  BlockKey chain_;
};

// An operator's named block: H("plain", namespace, name).
BlockKey PlainKey(std::string_view name_space, std::string_view name);

}  // namespace foresight

template <>
struct std::hash<foresight::BlockKey> {
  size_t operator()(const foresight::BlockKey& k) const { return static_cast<size_t>(k.hash()); }
};
