// Fuzz target: the UCX data plane's message decoders (proto/ucx_messages.h), as the node and the
// client apply them to whatever arrives on an endpoint. A message that decodes must encode back to
// the same bytes; one that does not gets a reason.
#include <cstring>

#include "proto/ucx_messages.h"
#include "tests/fuzz/fuzz_target.h"

namespace foresight::fuzz {

std::vector<std::string> Seeds() {
  using namespace foresight::ucxwire;
  auto str = [](const std::vector<uint8_t>& v) { return std::string(v.begin(), v.end()); };
  GetBody get;
  get.key = BlockKey::FromBytes("0123456789abcdef");
  get.capacity = 1 << 20;
  get.range_count = 2;
  PutBody put;
  put.key = get.key;
  put.size = 4096;
  put.checksum = 0x1234;
  RegisterBody reg;
  reg.region_id = 3;
  reg.length = 1 << 20;
  ReplyBody reply;
  reply.length = 4096;
  return {str(EncodeHello(1)),
          str(EncodeGet(2, get)) + str(EncodeRanges({{0, 128}, {4096, 64}})),
          str(EncodePut(3, put)),
          str(EncodeRegister(4, reg)),
          str(EncodeReply(MsgType::kGetReply, 5, reply)),
          str(EncodeIds({1, 2, 3}))};
}

}  // namespace foresight::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace foresight::ucxwire;
  // The header's first 20 bytes and the body's first `body` bytes (the rest are reserved fields,
  // which decoding ignores and encoding zeroes).
  auto same = [&](const std::vector<uint8_t>& encoded, size_t body) {
    return encoded.size() >= kHeaderWireBytes + body && std::memcmp(encoded.data(), data, 20) == 0 &&
           std::memcmp(encoded.data() + kHeaderWireBytes, data + kHeaderWireBytes, body) == 0;
  };
  std::string error;
  auto msg = DecodeHeader(data, size, &error);
  if (!msg.has_value()) {
    FUZZ_CHECK(!error.empty(), "a refused header says why");
  } else {
    const MsgHeader& h = msg->header;
    const uint8_t* rest = data + kHeaderWireBytes + h.body_bytes;
    const size_t rest_size = size - kHeaderWireBytes - h.body_bytes;
    if (auto b = DecodeGet(*msg, &error);
        b.has_value() && h.body_bytes == kGetClaimBodyBytes && h.type == MsgType::kGet) {
      const std::vector<uint8_t> encoded = EncodeGet(h.req_id, *b);
      FUZZ_CHECK(same(encoded, 44), "GET round-trips");
      FUZZ_CHECK(std::memcmp(encoded.data() + kHeaderWireBytes + 48, data + kHeaderWireBytes + 48, 8) == 0,
                 "GET's claim fields round-trip");
      auto ranges = DecodeRanges(rest, rest_size, b->range_count, &error);
      if (ranges.has_value()) FUZZ_CHECK(EncodeRanges(*ranges).size() == rest_size, "ranges round-trip");
    }
    if (auto b = DecodePut(*msg, &error); b.has_value() && h.body_bytes == kPutBodyBytes && h.type == MsgType::kPut) {
      FUZZ_CHECK(same(EncodePut(h.req_id, *b), kPutBodyBytes), "PUT round-trips");
    }
    if (auto b = DecodeRegister(*msg, &error);
        b.has_value() && h.body_bytes == kRegisterClaimBodyBytes && h.type == MsgType::kRegister) {
      FUZZ_CHECK(same(EncodeRegister(h.req_id, *b), kRegisterClaimBodyBytes), "REGISTER round-trips");
    }
    if (auto b = DecodeReply(*msg, &error); b.has_value() && h.body_bytes == kReplyBodyBytes) {
      FUZZ_CHECK(same(EncodeReply(h.type, h.req_id, *b), 24), "reply round-trips");
    }
  }
  // The data-part decoders on the raw bytes.
  (void)DecodeArenaGrant(data, size, &error);
  (void)DecodeLeaseGrant(data, size, &error);
  if (auto ids = DecodeIds(data, size, &error); ids.has_value()) {
    FUZZ_CHECK(EncodeIds(*ids).size() == size, "ids round-trip");
  }
  (void)DecodeRanges(data, size, static_cast<uint32_t>(size / 16), &error);
  return 0;
}
