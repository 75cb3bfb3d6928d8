// Fuzz target: the node's UCX data plane (UcxServer over a real BlockStore, in this process) fed
// sequences of hand-made messages over a real loopback TCP endpoint: well-formed GET, PUT, LEASE,
// RELEASE, REGISTER, ARENA and HELLO with fuzzed fields (keys, sizes, checksums, regions, range
// lists that do or do not match their counts), and raw headers straight from the input.
//
// Checked, besides the sanitizers: every malformed request is answered with an error that says
// why; a GET answered OK carries bytes that match the checksum it claims; and after every input a
// well-behaved client (UcxTransport) still puts and gets a block with the right bytes.
#include <unistd.h>

#include <cstring>
#include <memory>

#include "cache_service/block_store.h"
#include "cache_service/ucx_server.h"
#include "client/ucx_transport.h"
#include "common/checksum.h"
#include "proto/ucx_messages.h"
#include "tests/client/raw_ucx_client.h"
#include "tests/fuzz/fuzz_target.h"

namespace foresight::fuzz {
namespace {

using namespace foresight::ucxwire;

struct Node {
  std::unique_ptr<BlockStore> store;
  std::unique_ptr<UcxServer> server;
  std::unique_ptr<RawClient> raw;         // the fuzzed connection; replaced when dropped
  std::unique_ptr<UcxTransport> checker;  // a well-behaved client
};

Node& TheNode() {
  static Node* node = [] {
    auto* n = new Node;
    BlockStoreOptions so;
    so.ram_bytes = 8 << 20;
    so.max_block_bytes = 256 << 10;
    so.huge_pages = HugePages::kOff;
    auto store = BlockStore::Open(so);
    FUZZ_CHECK(store.ok(), store.status().message().c_str());
    n->store = std::move(store).value();
    UcxServerOptions uo;
    uo.host = "127.0.0.1";
    uo.transfer_timeout_s = 2;
    uo.transports = "tcp";
    auto server = UcxServer::Start(n->store.get(), uo);
    FUZZ_CHECK(server.ok(), server.status().message().c_str());
    n->server = std::move(server).value();
    UcxTransportOptions to;
    to.transports = "tcp";
    auto checker = UcxTransport::Connect("127.0.0.1", n->server->port(), "", to);
    FUZZ_CHECK(checker.ok(), checker.status().message().c_str());
    n->checker = std::move(checker).value();
    return n;
  }();
  return *node;
}

BlockKey KeyOf(uint8_t b) {
  char name[16] = "fuzz-key-0000..";
  name[9] = static_cast<char>('a' + b % 8);
  return BlockKey::FromBytes(name);
}

std::vector<uint8_t> Pattern(uint64_t size, uint8_t seed) {
  const std::string bytes = PatternBytes(size, seed);
  return {bytes.begin(), bytes.end()};
}

// A node's answer to a request it refused must say why.
void CheckReply(const RawClient::Reply& r) {
  if (r.status != StatusCode::kOk) {
    FUZZ_CHECK(!r.text.empty(), "an error reply carries its reason");
    return;
  }
  if (r.type == MsgType::kGetReply && !r.rendezvous && !(r.flags & kReplyWroteRegion)) {
    FUZZ_CHECK(r.text.size() == r.length, "a GET reply carries the length it announces");
    FUZZ_CHECK(BlockChecksum(r.text.data(), r.text.size()) == r.checksum, "served bytes match their checksum");
  }
}

// A put and a get by a well-behaved client: the node still serves, with the right bytes.
void CheckStillServing(Node& node, uint64_t input) {
  const std::vector<uint8_t> block = Pattern(4096 + input % 4096, static_cast<uint8_t>(input));
  const BlockKey key = BlockKey::FromBytes("fuzz-checker-key");
  const uint64_t sum = BlockChecksum(block.data(), block.size());
  auto put = node.checker->SubmitPuts({UcxPut{key, block.data(), block.size(), sum}});
  FUZZ_CHECK(put.ok(), put.status().message().c_str());
  auto put_results = node.checker->Wait(*put, 10);
  FUZZ_CHECK(put_results.size() == 1 && put_results[0].status.ok(), "a well-behaved put still succeeds");
  std::vector<uint8_t> out(block.size());
  auto get = node.checker->SubmitGets({UcxGet{key, {}, out.data(), out.size()}});
  FUZZ_CHECK(get.ok(), get.status().message().c_str());
  auto get_results = node.checker->Wait(*get, 10);
  FUZZ_CHECK(get_results.size() == 1 && get_results[0].status.ok(), "a well-behaved get still succeeds");
  FUZZ_CHECK(out == block, "a well-behaved get gets the bytes it put");
}

}  // namespace

std::vector<std::string> Seeds() {
  // put a (1 KiB), get a, get a with two ranges, lease a, release, arena, hello, raw junk.
  return {
      std::string("\x02\x00\x01\x00\x00\x00\x01\x00\x00\x00", 10),
      std::string("\x02\x01\x02\x00\x00\x01\x01\x00\x00\x02\x00\x10\x00\x00\x00\x08\x00\x00", 18),
      std::string("\x04\x00\x00\x06\x05\x00\x07\x08\x00\x01", 10),
      std::string(
          "\x00\x14\x46\x53\x55\x58\x02\x00\x03\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 25),
      std::string("\x03\x05\x10\x00\x00\x40\x00\x01\x00\x00\x00\x00\x00\x00\x02", 15),
  };
}

}  // namespace foresight::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace foresight;
  using namespace foresight::fuzz;
  static uint64_t input_number = 0;
  const uint64_t input = ++input_number;
  Node& node = TheNode();
  if (node.raw == nullptr || node.raw->failed()) node.raw = std::make_unique<RawClient>(node.server->port());
  RawClient& raw = *node.raw;
  ByteReader in(data, size);
  std::vector<uint64_t> lease_ids;
  const uint64_t kSizes[] = {0, 1, 1024, 4096, 65536, 200000, (256 << 10) + 1, 1ull << 40};

  for (int calls = 0; !in.empty() && calls < 16 && !raw.failed(); ++calls) {
    const uint64_t req = input * 100 + static_cast<uint64_t>(calls);
    std::vector<uint8_t> header, body;
    double wait_s = 2;
    switch (in.Next() % 8) {
      case 0: {  // raw bytes: a header and data straight from the input
        header = in.Take(in.Next() % 72);
        body = in.Take(in.Next() % 64);
        wait_s = 0.05;  // it may be a message that has no reply
        break;
      }
      case 1: {  // GET, whole or by ranges; the range list may disagree with its count
        GetBody g;
        g.key = KeyOf(in.Next());
        g.flags = in.Next() % 4 == 0 ? kViaRegion : 0;
        g.region_id = in.Next() % 3;
        g.region_offset = in.NextN(2);
        g.capacity = in.NextN(3) << (in.Next() % 4);
        const uint8_t count = in.Next();
        g.range_count = count < 250 ? count % 4 : (count == 255 ? kMaxRanges + 1 : 1u << 20);
        header = EncodeGet(req, g);
        const uint8_t ranges = in.Next() % 5;
        for (uint8_t r = 0; r < ranges; ++r) {
          const std::vector<uint8_t> range = EncodeRanges({{in.NextN(3), in.NextN(3)}});
          body.insert(body.end(), range.begin(), range.end());
        }
        break;
      }
      case 2: {  // PUT of inline bytes: size, length and checksum may disagree
        PutBody p;
        p.key = KeyOf(in.Next());
        const uint8_t how = in.Next();
        const std::vector<uint8_t> bytes = Pattern(kSizes[how % 8] > (1 << 20) ? 100 : kSizes[how % 8], in.Next());
        p.size = how / 8 % 4 == 3 ? kSizes[in.Next() % 8] : bytes.size();
        p.checksum = BlockChecksum(bytes.data(), bytes.size()) ^ (how / 32 % 4 == 3 ? 1 : 0);
        p.flags = how >= 250 ? kViaRegion : 0;
        p.region_id = in.Next() % 3;
        header = EncodePut(req, p);
        body = bytes;
        break;
      }
      case 3: {  // LEASE (one-sided gets), whole or by ranges
        GetBody g;
        g.key = KeyOf(in.Next());
        g.range_count = in.Next() % 3;
        header = EncodeLease(req, g);
        for (uint32_t r = 0; r < g.range_count; ++r) {
          const std::vector<uint8_t> range = EncodeRanges({{in.NextN(2), in.NextN(2)}});
          body.insert(body.end(), range.begin(), range.end());
        }
        break;
      }
      case 4: {  // RELEASE of lease ids: granted ones and made-up ones (no reply)
        std::vector<uint64_t> ids;
        const uint8_t n = in.Next() % 4;
        for (uint8_t i = 0; i < n; ++i) {
          const uint8_t pick = in.Next();
          ids.push_back(pick % 2 == 0 && !lease_ids.empty() ? lease_ids[pick % lease_ids.size()] : in.NextN(2));
        }
        header = EncodeRelease(req);
        body = EncodeIds(ids);
        wait_s = 0.02;
        break;
      }
      case 5: {  // REGISTER of a region whose key is junk, with a stale or a matching check
        RegisterBody r;
        r.region_id = in.Next() % 3;
        r.base = in.NextN(4) << 12;
        r.length = in.NextN(3);
        body = in.Take(1 + in.Next() % 48);
        // A stale check must be refused before UCX sees the bytes; with a matching one the junk
        // reaches ucp_ep_rkey_unpack (an authenticated client is trusted that far).
        r.key_check = RkeyCheck(body.data(), body.size()) ^ (r.region_id == 0 ? 1 : 0);
        header = EncodeRegister(req, r);
        break;
      }
      case 6:
        header = EncodeArena(req);
        break;
      default:
        header = EncodeHello(req);
        body = in.Take(in.Next() % 8);  // a token where none is expected
        break;
    }
    auto reply = raw.Call(header, body, wait_s);
    if (reply.has_value()) {
      CheckReply(*reply);
      if (reply->type == MsgType::kLeaseReply && reply->status == StatusCode::kOk && reply->text.size() >= 8) {
        std::string error;
        auto grant = DecodeLeaseGrant(reply->text.data(), reply->text.size(), &error);
        if (grant.has_value()) lease_ids.push_back(grant->lease_id);
      }
    }
  }
  CheckStillServing(node, input);
  return 0;
}
