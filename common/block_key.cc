#include "common/block_key.h"

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack
#include <xxhash.h>

namespace foresight {

namespace {

BlockKey FromHash(const XXH128_hash_t& h) {
  uint8_t bytes[16];
  std::memcpy(bytes, &h.low64, 8);
  std::memcpy(bytes + 8, &h.high64, 8);
  return BlockKey::FromBytes(bytes);
}

// Hashes length-prefixed fields so that ("ab","c") and ("a","bc") differ.
BlockKey HashFields(std::initializer_list<std::string_view> fields) {
  XXH3_state_t state;
  XXH3_128bits_reset(&state);
  for (std::string_view f : fields) {
    const uint64_t len = f.size();
    XXH3_128bits_update(&state, &len, sizeof(len));
    XXH3_128bits_update(&state, f.data(), f.size());
  }
  return FromHash(XXH3_128bits_digest(&state));
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

StatusOr<BlockKey> BlockKey::FromHex(std::string_view hex) {
  if (hex.size() != 2 * kSize) return InvalidArgument("block key '" + std::string(hex) + "' must be 32 hex digits");
  uint8_t bytes[kSize];
  for (size_t i = 0; i < kSize; ++i) {
    const int hi = HexValue(hex[2 * i]), lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return InvalidArgument("block key '" + std::string(hex) + "' is not hexadecimal");
    bytes[i] = static_cast<uint8_t>(hi * 16 + lo);
  }
  return FromBytes(bytes);
}

std::string BlockKey::ToHex() const {
  static const char* kDigits = "0123456789abcdef";
  std::string out(2 * kSize, '0');
  for (size_t i = 0; i < kSize; ++i) {
    out[2 * i] = kDigits[bytes_[i] >> 4];
    out[2 * i + 1] = kDigits[bytes_[i] & 15];
  }
  return out;
}

PrefixChain::PrefixChain(std::string_view name_space, std::string_view model_fingerprint)
    : chain_(HashFields({"foresight-chain-v1", name_space, model_fingerprint})) {}

const BlockKey& PrefixChain::Extend(std::span<const int32_t> block_tokens) {
  chain_ = HashFields(
      {chain_.view(), std::string_view(reinterpret_cast<const char*>(block_tokens.data()), block_tokens.size_bytes())});
  return chain_;
}

BlockKey PrefixChain::LayerKey(uint32_t layer) const {
  return HashFields({"layer", chain_.view(), std::string_view(reinterpret_cast<const char*>(&layer), 4)});
}

BlockKey PlainKey(std::string_view name_space, std::string_view name) {
  return HashFields({"plain", name_space, name});
}

}  // namespace foresight
