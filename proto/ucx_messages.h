// The UCX data plane's wire format: the messages a client (client/ucx_transport.h) and a cache
// node (cache_service/ucx_server.h) exchange as UCX active messages.
//
// Every message travels as one active message. Its UCX "header" carries a fixed, little-endian
// MsgHeader followed by the fixed body of its type; its UCX "data" carries the variable part (a
// token, a list of byte ranges, a packed remote key, block bytes, or an error text). Requests go
// to the node under kUcxRequestAmId, replies come back under kUcxReplyAmId; the type field says
// what the message is, so that an unknown type can still be answered with an error (UCX drops
// messages to unknown AM ids silently).
//
//   client -> node                         node -> client
//   HELLO     data: token                  HELLO_REPLY    status, data: error text
//   REGISTER  region, key check,           REGISTER_REPLY status, flags (kReplyMapped,
//             [flags, claim slots],                       kReplyClaims, kReplyClaimWriters)
//             data: packed rkey
//   GET       key, ranges, destination,    GET_REPLY      status, checksum, length,
//             [claim slot, generation]                    data: block bytes or error text
//             (data: ranges)
//   PUT       key, size, checksum, source  PUT_REPLY      status, data: error text
//             (data: block bytes)
//   ARENA                                  ARENA_REPLY    status, data: ArenaGrant
//   LEASE     key, ranges (GET's body)     LEASE_REPLY    status, checksum, length,
//             (data: ranges)                              data: LeaseGrant
//   RELEASE   data: lease ids              (no reply)
//   (any)                                  ERROR          status, data: error text
//
// One-sided shared-memory gets (ARENA / LEASE / RELEASE): a same-host client asks for the node's
// arena (a memfd, opened as /proc/<pid>/<fd> and mapped read-only; the nonce in its header page
// proves it is this node's); a LEASE pins a block and answers where it lies in the arena and its
// checksum (the writer's for a whole block; XXH3 over the ranges concatenated for a subset); the
// client copies the bytes out itself, verifying the checksum, and RELEASEs the lease (ids batched).
//
// Claimed region GETs (proto/region_claim.h): a client REGISTERs a claim table (kRegisterClaimTable,
// `claim_slots` 32-bit words); a node that maps it answers kReplyClaims. A GET with kViaRegion then
// also sets kClaimSlot and names one word and its generation; the node writes into the region only
// after moving that word from PENDING to WRITING, so a client that gave up (CANCELLED) never finds
// bytes written late. Without kReplyClaims the client sends no kViaRegion GETs (bytes come in the
// reply instead). With kRegisterClaimWriters the table is followed by as many writer words; a node
// that answers kReplyClaimWriters holds them while it copies, so that a client can tell a node that
// died mid-copy from one that is stopped (proto/region_claim.h). [fields] above: added at the end
// of the body; a flag says they are meaningful.
//
// Versioning: MsgHeader.version is kUcxWireVersion; a node answers a request of another version
// with ERROR (FAILED_PRECONDITION) naming both versions. Bodies only ever grow at their end;
// `body_bytes` says how many fixed bytes follow the header, so a reader accepts longer bodies.
//
// This header only encodes and decodes; it holds no state. Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "common/block_key.h"
#include "common/block_layout.h"
#include "common/checksum.h"

namespace foresight::ucxwire {

inline constexpr uint32_t kUcxMagic = 0x58555346;  // "FSUX"
inline constexpr uint16_t kUcxWireVersion = 2;     // 2: REGISTER carries key_check
inline constexpr unsigned kUcxRequestAmId = 17;
inline constexpr unsigned kUcxReplyAmId = 18;

// Limits a node enforces before touching anything (absurd lengths are answered with errors).
inline constexpr uint32_t kMaxRanges = 4096;
// Messages up to this size go eagerly on both sides (UCX_RNDV_THRESH, unless the environment sets
// it). UCX 1.13's TCP lanes switch to rendezvous at 8 KiB, which adds a round trip to every
// per-head or coalesced block reply and to block puts; 1 MiB replies stay rendezvous (eager was
// slower there). docs/perf-notes.md has the measurements.
inline constexpr const char* kUcxRendezvousThreshold = "128K";
inline constexpr uint32_t kMaxTokenBytes = 4096;
inline constexpr uint32_t kMaxRkeyBytes = 64 * 1024;
inline constexpr uint32_t kMaxHeaderBytes = 1024;
inline constexpr uint32_t kMaxReleaseIds = 65536;

// Whether two UCX library versions ("1.22.0") can talk: the same major.minor. UCX 1.13 and 1.22
// endpoints refuse each other's wire-up (measured), and other pairs are untested.
inline bool UcxVersionsInteroperate(const std::string& a, const std::string& b) {
  auto major_minor = [](const std::string& v) { return v.substr(0, v.find('.', v.find('.') + 1)); };
  return major_minor(a) == major_minor(b);
}

// REGISTER's check of its packed remote key: the low 32 bits of the key's XXH3-64. UCX's
// ucp_ep_rkey_unpack trusts its input (it takes no length; UCX 1.22 crashes on random bytes), so a
// node unpacks only a key whose check matches. That stops damaged or foreign bytes; it cannot stop
// a token holder who crafts a bad key with a matching check (README, "Auth").
inline uint32_t RkeyCheck(const void* key, size_t length) { return static_cast<uint32_t>(BlockChecksum(key, length)); }

enum class MsgType : uint16_t {
  kHello = 1,
  kHelloReply = 2,
  kRegister = 3,
  kRegisterReply = 4,
  kGet = 5,
  kGetReply = 6,
  kPut = 7,
  kPutReply = 8,
  kError = 9,
  kArena = 10,
  kArenaReply = 11,
  kLease = 12,
  kLeaseReply = 13,
  kRelease = 14,
};

// GET / PUT flags.
inline constexpr uint32_t kViaRegion = 1u << 0;  // bytes move through a mapped client region
inline constexpr uint32_t kClaimSlot = 1u << 1;  // GET: claim_slot / claim_generation are set
// REGISTER flags.
inline constexpr uint32_t kRegisterClaimTable = 1u << 0;    // the region is the client's claim table
inline constexpr uint32_t kRegisterClaimWriters = 1u << 1;  // ... followed by its writer words
// Reply flags.
inline constexpr uint32_t kReplyMapped = 1u << 0;        // REGISTER_REPLY: the node mapped the region
inline constexpr uint32_t kReplyWroteRegion = 1u << 1;   // GET_REPLY: bytes are in the region
inline constexpr uint32_t kReplyCloses = 1u << 2;        // the node drops the connection after this
inline constexpr uint32_t kReplyClaims = 1u << 3;        // REGISTER_REPLY: the claim table is honoured
inline constexpr uint32_t kReplyClaimWriters = 1u << 4;  // REGISTER_REPLY: and the node holds its writer words

// 24 bytes on the wire.
struct MsgHeader {
  uint32_t magic = kUcxMagic;
  uint16_t version = kUcxWireVersion;
  MsgType type = MsgType::kError;
  uint64_t req_id = 0;
  uint32_t body_bytes = 0;  // fixed body bytes following the header
  uint32_t reserved = 0;
};
inline constexpr size_t kHeaderWireBytes = 24;

struct RegisterBody {  // 32 bytes (24 before claim tables; a shorter body has flags 0)
  uint32_t region_id = 0;
  uint32_t key_check = 0;  // RkeyCheck of the packed key in the data (wire version 2)
  uint64_t base = 0;       // the region's address in the client
  uint64_t length = 0;
  uint32_t flags = 0;        // kRegisterClaimTable
  uint32_t claim_slots = 0;  // with kRegisterClaimTable: 32-bit claim words from `base`
};

// 56 bytes (48 before claim slots; a shorter body cannot carry kClaimSlot);
// data: range_count x {offset u64, length u64} (none: whole block)
struct GetBody {
  BlockKey key;
  uint32_t flags = 0;
  uint32_t region_id = 0;  // with kViaRegion: where the node writes the bytes
  uint64_t region_offset = 0;
  uint64_t capacity = 0;  // room at the destination; a longer answer is an error
  uint32_t range_count = 0;
  uint32_t reserved = 0;
  uint32_t claim_slot = 0;        // with kClaimSlot: the claim word guarding the region write
  uint32_t claim_generation = 0;  // with kClaimSlot: the generation that word was armed with
};

struct PutBody {  // 48 bytes; data: the block bytes unless kViaRegion
  BlockKey key;
  uint64_t size = 0;
  uint64_t checksum = 0;  // BlockChecksum of the block, computed by the writer
  uint32_t flags = 0;
  uint32_t region_id = 0;  // with kViaRegion: where the node reads the bytes
  uint64_t region_offset = 0;
};

// Every reply (and ERROR). 32 bytes.
// For GET: `checksum` is BlockChecksum of exactly the bytes delivered: the writer's checksum for
// a whole block, the node's XXH3 over the concatenated ranges for a subset.
struct ReplyBody {
  int32_t status = 0;  // foresight::StatusCode
  uint32_t flags = 0;
  uint64_t checksum = 0;
  uint64_t length = 0;  // bytes delivered (GET) or stored (PUT)
  uint64_t reserved = 0;
};

// ARENA_REPLY data, 48 bytes: where a same-host client finds the node's arena.
struct ArenaGrant {
  uint32_t pid = 0;  // the node's process id
  int32_t fd = -1;   // the memfd in that process (/proc/<pid>/fd/<fd>)
  uint64_t file_bytes = 0;
  uint64_t arena_offset = 0;  // where the arena starts in the file
  uint64_t arena_bytes = 0;
  uint8_t nonce[16] = {};  // must match the file's header
};
inline constexpr uint32_t kArenaGrantBytes = 48;

// The header page of a shared arena file starts with this magic (8 bytes, little-endian) and the
// node's nonce (16 bytes), so that a client that opened the file by /proc/<pid>/fd/<fd> can tell it
// mapped this node's arena and not another process's file. The node writes it
// (cache_service/tiered_block_store.cc); the client checks it against its ArenaGrant.
inline constexpr uint64_t kArenaFileMagic = 0x414e4552414f4653ull;  // "FSOARENA"
inline constexpr uint32_t kArenaFileHeaderBytes = 24;

inline void WriteArenaFileHeader(uint8_t* page, const uint8_t (&nonce)[16]) {
  for (int i = 0; i < 8; ++i) page[i] = static_cast<uint8_t>(kArenaFileMagic >> (8 * i));
  std::memcpy(page + 8, nonce, sizeof nonce);
}

inline bool ArenaFileHeaderMatches(const uint8_t* page, const uint8_t (&nonce)[16]) {
  uint64_t magic = 0;
  for (int i = 0; i < 8; ++i) magic |= static_cast<uint64_t>(page[i]) << (8 * i);
  return magic == kArenaFileMagic && std::memcmp(page + 8, nonce, sizeof nonce) == 0;
}

// LEASE_REPLY data, 24 bytes: the pinned block, as an offset into the arena.
struct LeaseGrant {
  uint64_t lease_id = 0;      // to RELEASE
  uint64_t block_offset = 0;  // the block's first byte, from the arena's start
  uint64_t block_bytes = 0;   // the whole block (ranges are offsets into it)
};
inline constexpr uint32_t kLeaseGrantBytes = 24;

// --- Little-endian primitives. ---
namespace internal {
inline void PutLE(std::vector<uint8_t>& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
inline uint64_t GetLE(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t{p[i]} << (8 * i);
  return v;
}
inline std::vector<uint8_t> Start(MsgType type, uint64_t req_id, uint32_t body_bytes) {
  std::vector<uint8_t> out;
  out.reserve(kHeaderWireBytes + body_bytes);
  PutLE(out, kUcxMagic, 4);
  PutLE(out, kUcxWireVersion, 2);
  PutLE(out, static_cast<uint16_t>(type), 2);
  PutLE(out, req_id, 8);
  PutLE(out, body_bytes, 4);
  PutLE(out, 0, 4);
  return out;
}
inline void PutKey(std::vector<uint8_t>& out, const BlockKey& key) {
  out.insert(out.end(), key.data(), key.data() + BlockKey::kSize);
}
}  // namespace internal

inline constexpr uint32_t kRegisterBodyBytes = 24;  // the shortest accepted; 32 are sent
inline constexpr uint32_t kRegisterClaimBodyBytes = 32;
inline constexpr uint32_t kGetBodyBytes = 48;  // the shortest accepted; 56 are sent
inline constexpr uint32_t kGetClaimBodyBytes = 56;
inline constexpr uint32_t kPutBodyBytes = 48;
inline constexpr uint32_t kReplyBodyBytes = 32;

inline const char* MsgTypeName(MsgType type) {
  switch (type) {
    case MsgType::kHello:
      return "HELLO";
    case MsgType::kHelloReply:
      return "HELLO_REPLY";
    case MsgType::kRegister:
      return "REGISTER";
    case MsgType::kRegisterReply:
      return "REGISTER_REPLY";
    case MsgType::kGet:
      return "GET";
    case MsgType::kGetReply:
      return "GET_REPLY";
    case MsgType::kPut:
      return "PUT";
    case MsgType::kPutReply:
      return "PUT_REPLY";
    case MsgType::kError:
      return "ERROR";
    case MsgType::kArena:
      return "ARENA";
    case MsgType::kArenaReply:
      return "ARENA_REPLY";
    case MsgType::kLease:
      return "LEASE";
    case MsgType::kLeaseReply:
      return "LEASE_REPLY";
    case MsgType::kRelease:
      return "RELEASE";
  }
  return "UNKNOWN";
}

// --- Encoding: header + body into one buffer (the UCX AM header). ---
inline std::vector<uint8_t> EncodeHello(uint64_t req_id) { return internal::Start(MsgType::kHello, req_id, 0); }
inline std::vector<uint8_t> EncodeRegister(uint64_t req_id, const RegisterBody& b) {
  auto out = internal::Start(MsgType::kRegister, req_id, kRegisterClaimBodyBytes);
  internal::PutLE(out, b.region_id, 4);
  internal::PutLE(out, b.key_check, 4);
  internal::PutLE(out, b.base, 8);
  internal::PutLE(out, b.length, 8);
  internal::PutLE(out, b.flags, 4);
  internal::PutLE(out, b.claim_slots, 4);
  return out;
}
inline std::vector<uint8_t> EncodeGet(uint64_t req_id, const GetBody& b) {
  auto out = internal::Start(MsgType::kGet, req_id, kGetClaimBodyBytes);
  internal::PutKey(out, b.key);
  internal::PutLE(out, b.flags, 4);
  internal::PutLE(out, b.region_id, 4);
  internal::PutLE(out, b.region_offset, 8);
  internal::PutLE(out, b.capacity, 8);
  internal::PutLE(out, b.range_count, 4);
  internal::PutLE(out, 0, 4);
  internal::PutLE(out, b.claim_slot, 4);
  internal::PutLE(out, b.claim_generation, 4);
  return out;
}
inline std::vector<uint8_t> EncodeArena(uint64_t req_id) { return internal::Start(MsgType::kArena, req_id, 0); }
// LEASE has GET's body and range list (flags and region fields unused).
inline std::vector<uint8_t> EncodeLease(uint64_t req_id, const GetBody& b) {
  auto out = EncodeGet(req_id, b);
  out[6] = static_cast<uint8_t>(MsgType::kLease);
  out[7] = 0;
  return out;
}
inline std::vector<uint8_t> EncodeRelease(uint64_t req_id) { return internal::Start(MsgType::kRelease, req_id, 0); }
inline std::vector<uint8_t> EncodeIds(const std::vector<uint64_t>& ids) {
  std::vector<uint8_t> out;
  out.reserve(ids.size() * 8);
  for (uint64_t id : ids) internal::PutLE(out, id, 8);
  return out;
}
inline std::vector<uint8_t> EncodeArenaGrant(const ArenaGrant& g) {
  std::vector<uint8_t> out;
  out.reserve(kArenaGrantBytes);
  internal::PutLE(out, g.pid, 4);
  internal::PutLE(out, static_cast<uint32_t>(g.fd), 4);
  internal::PutLE(out, g.file_bytes, 8);
  internal::PutLE(out, g.arena_offset, 8);
  internal::PutLE(out, g.arena_bytes, 8);
  out.insert(out.end(), g.nonce, g.nonce + 16);
  return out;
}
inline std::vector<uint8_t> EncodeLeaseGrant(const LeaseGrant& g) {
  std::vector<uint8_t> out;
  out.reserve(kLeaseGrantBytes);
  internal::PutLE(out, g.lease_id, 8);
  internal::PutLE(out, g.block_offset, 8);
  internal::PutLE(out, g.block_bytes, 8);
  return out;
}
inline std::vector<uint8_t> EncodePut(uint64_t req_id, const PutBody& b) {
  auto out = internal::Start(MsgType::kPut, req_id, kPutBodyBytes);
  internal::PutKey(out, b.key);
  internal::PutLE(out, b.size, 8);
  internal::PutLE(out, b.checksum, 8);
  internal::PutLE(out, b.flags, 4);
  internal::PutLE(out, b.region_id, 4);
  internal::PutLE(out, b.region_offset, 8);
  return out;
}
inline std::vector<uint8_t> EncodeReply(MsgType type, uint64_t req_id, const ReplyBody& b) {
  auto out = internal::Start(type, req_id, kReplyBodyBytes);
  internal::PutLE(out, static_cast<uint32_t>(b.status), 4);
  internal::PutLE(out, b.flags, 4);
  internal::PutLE(out, b.checksum, 8);
  internal::PutLE(out, b.length, 8);
  internal::PutLE(out, 0, 8);
  return out;
}
inline std::vector<uint8_t> EncodeRanges(const std::vector<ByteRange>& ranges) {
  std::vector<uint8_t> out;
  out.reserve(ranges.size() * 16);
  for (const ByteRange& r : ranges) {
    internal::PutLE(out, r.offset, 8);
    internal::PutLE(out, r.length, 8);
  }
  return out;
}

// --- Decoding. Each returns nullopt (and a reason in *error) when the bytes are malformed. ---
struct Decoded {
  MsgHeader header;
  const uint8_t* body = nullptr;  // header.body_bytes bytes
};

inline std::optional<Decoded> DecodeHeader(const void* data, size_t size, std::string* error) {
  const auto* p = static_cast<const uint8_t*>(data);
  if (p == nullptr || size < kHeaderWireBytes) {
    *error = "message header of " + std::to_string(size) + " bytes is shorter than the " +
             std::to_string(kHeaderWireBytes) + "-byte minimum";
    return std::nullopt;
  }
  Decoded d;
  d.header.magic = static_cast<uint32_t>(internal::GetLE(p, 4));
  d.header.version = static_cast<uint16_t>(internal::GetLE(p + 4, 2));
  d.header.type = static_cast<MsgType>(internal::GetLE(p + 6, 2));
  d.header.req_id = internal::GetLE(p + 8, 8);
  d.header.body_bytes = static_cast<uint32_t>(internal::GetLE(p + 16, 4));
  if (d.header.magic != kUcxMagic) {
    *error = "bad magic in message header (not a Foresight data-plane message)";
    return std::nullopt;
  }
  if (d.header.version != kUcxWireVersion) {
    *error = "wire version " + std::to_string(d.header.version) + " is not supported (this side speaks " +
             std::to_string(kUcxWireVersion) + ")";
    return std::nullopt;
  }
  if (d.header.body_bytes > size - kHeaderWireBytes) {
    *error = "message header announces a " + std::to_string(d.header.body_bytes) + "-byte body but only " +
             std::to_string(size - kHeaderWireBytes) + " bytes follow";
    return std::nullopt;
  }
  d.body = p + kHeaderWireBytes;
  return d;
}

namespace internal {
inline bool NeedBody(const Decoded& msg, uint32_t bytes, const char* what, std::string* error) {
  if (msg.header.body_bytes >= bytes) return true;
  *error = std::string(what) + " body of " + std::to_string(msg.header.body_bytes) + " bytes is shorter than " +
           std::to_string(bytes);
  return false;
}
}  // namespace internal

inline std::optional<RegisterBody> DecodeRegister(const Decoded& msg, std::string* error) {
  if (!internal::NeedBody(msg, kRegisterBodyBytes, "REGISTER", error)) return std::nullopt;
  const uint8_t* p = msg.body;
  RegisterBody b;
  b.region_id = static_cast<uint32_t>(internal::GetLE(p, 4));
  b.key_check = static_cast<uint32_t>(internal::GetLE(p + 4, 4));
  b.base = internal::GetLE(p + 8, 8);
  b.length = internal::GetLE(p + 16, 8);
  if (msg.header.body_bytes >= kRegisterClaimBodyBytes) {
    b.flags = static_cast<uint32_t>(internal::GetLE(p + 24, 4));
    b.claim_slots = static_cast<uint32_t>(internal::GetLE(p + 28, 4));
  }
  return b;
}
inline std::optional<GetBody> DecodeGet(const Decoded& msg, std::string* error) {
  if (!internal::NeedBody(msg, kGetBodyBytes, "GET", error)) return std::nullopt;
  const uint8_t* p = msg.body;
  GetBody b;
  b.key = BlockKey::FromBytes(p);
  b.flags = static_cast<uint32_t>(internal::GetLE(p + 16, 4));
  b.region_id = static_cast<uint32_t>(internal::GetLE(p + 20, 4));
  b.region_offset = internal::GetLE(p + 24, 8);
  b.capacity = internal::GetLE(p + 32, 8);
  b.range_count = static_cast<uint32_t>(internal::GetLE(p + 40, 4));
  if (msg.header.body_bytes >= kGetClaimBodyBytes) {
    b.claim_slot = static_cast<uint32_t>(internal::GetLE(p + 48, 4));
    b.claim_generation = static_cast<uint32_t>(internal::GetLE(p + 52, 4));
  } else if (b.flags & kClaimSlot) {
    *error = "GET sets kClaimSlot but its body of " + std::to_string(msg.header.body_bytes) +
             " bytes ends before the claim fields (" + std::to_string(kGetClaimBodyBytes) + " bytes needed)";
    return std::nullopt;
  }
  return b;
}
inline std::optional<PutBody> DecodePut(const Decoded& msg, std::string* error) {
  if (!internal::NeedBody(msg, kPutBodyBytes, "PUT", error)) return std::nullopt;
  const uint8_t* p = msg.body;
  PutBody b;
  b.key = BlockKey::FromBytes(p);
  b.size = internal::GetLE(p + 16, 8);
  b.checksum = internal::GetLE(p + 24, 8);
  b.flags = static_cast<uint32_t>(internal::GetLE(p + 32, 4));
  b.region_id = static_cast<uint32_t>(internal::GetLE(p + 36, 4));
  b.region_offset = internal::GetLE(p + 40, 8);
  return b;
}
inline std::optional<ReplyBody> DecodeReply(const Decoded& msg, std::string* error) {
  if (!internal::NeedBody(msg, kReplyBodyBytes, "reply", error)) return std::nullopt;
  const uint8_t* p = msg.body;
  ReplyBody b;
  b.status = static_cast<int32_t>(internal::GetLE(p, 4));
  b.flags = static_cast<uint32_t>(internal::GetLE(p + 4, 4));
  b.checksum = internal::GetLE(p + 8, 8);
  b.length = internal::GetLE(p + 16, 8);
  return b;
}
inline std::optional<std::vector<ByteRange>> DecodeRanges(const void* data, size_t size, uint32_t count,
                                                          std::string* error) {
  if (count > kMaxRanges) {
    *error = std::to_string(count) + " ranges exceed the limit of " + std::to_string(kMaxRanges);
    return std::nullopt;
  }
  if (size != uint64_t{count} * 16 || (count > 0 && data == nullptr)) {
    *error = "range list of " + std::to_string(size) + " bytes does not hold " + std::to_string(count) +
             " ranges of 16 bytes";
    return std::nullopt;
  }
  std::vector<ByteRange> ranges(count);
  const auto* p = static_cast<const uint8_t*>(data);
  for (uint32_t i = 0; i < count; ++i) {
    ranges[i].offset = internal::GetLE(p + 16 * i, 8);
    ranges[i].length = internal::GetLE(p + 16 * i + 8, 8);
  }
  return ranges;
}

inline std::optional<ArenaGrant> DecodeArenaGrant(const void* data, size_t size, std::string* error) {
  if (data == nullptr || size < kArenaGrantBytes) {
    *error = "ARENA_REPLY carries " + std::to_string(size) + " bytes, fewer than " + std::to_string(kArenaGrantBytes);
    return std::nullopt;
  }
  const auto* p = static_cast<const uint8_t*>(data);
  ArenaGrant g;
  g.pid = static_cast<uint32_t>(internal::GetLE(p, 4));
  g.fd = static_cast<int32_t>(static_cast<uint32_t>(internal::GetLE(p + 4, 4)));
  g.file_bytes = internal::GetLE(p + 8, 8);
  g.arena_offset = internal::GetLE(p + 16, 8);
  g.arena_bytes = internal::GetLE(p + 24, 8);
  std::memcpy(g.nonce, p + 32, 16);
  return g;
}
inline std::optional<LeaseGrant> DecodeLeaseGrant(const void* data, size_t size, std::string* error) {
  if (data == nullptr || size < kLeaseGrantBytes) {
    *error = "LEASE_REPLY carries " + std::to_string(size) + " bytes, fewer than " + std::to_string(kLeaseGrantBytes);
    return std::nullopt;
  }
  const auto* p = static_cast<const uint8_t*>(data);
  LeaseGrant g;
  g.lease_id = internal::GetLE(p, 8);
  g.block_offset = internal::GetLE(p + 8, 8);
  g.block_bytes = internal::GetLE(p + 16, 8);
  return g;
}
inline std::optional<std::vector<uint64_t>> DecodeIds(const void* data, size_t size, std::string* error) {
  if (size % 8 != 0 || size / 8 > kMaxReleaseIds || (size > 0 && data == nullptr)) {
    *error = "lease id list of " + std::to_string(size) + " bytes is not 1.." + std::to_string(kMaxReleaseIds) +
             " ids of 8 bytes";
    return std::nullopt;
  }
  std::vector<uint64_t> ids(size / 8);
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = internal::GetLE(p + 8 * i, 8);
  return ids;
}

}  // namespace foresight::ucxwire
