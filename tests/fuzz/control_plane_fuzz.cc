// Fuzz target: sequences of control-plane calls (the gRPC fallback's Put and Get with inline
// bytes, Stat, Evict, LongestPrefix, List, Flush, NodeStats) against one real node store: a 4 MiB
// RAM arena over a RocksDB NVMe tier in a temporary folder, so that blocks are demoted, promoted
// and dropped as inputs run.
//
// Each input is decoded into calls (a byte picks the call, the next ones its arguments), on 16
// keys of its own. A model of what each key may hold checks every answer:
//   - a block is never served with other bytes than the last put of that key that succeeded, or,
//     after a failed put, the value before it; a served checksum always matches the served bytes;
//   - a key never put, or evicted since, is not found; malformed keys and ranges get errors;
//   - Stat and LongestPrefix agree with the model.
// NOT_FOUND is always allowed for a key that was put: the store may drop blocks under pressure.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>

#include "cache_service/block_store.h"
#include "cache_service/control_service.h"
#include "cache_service/node_metrics.h"
#include "common/checksum.h"
#include "proto/foresight.grpc.pb.h"
#include "tests/fuzz/fuzz_target.h"

namespace foresight::fuzz {
namespace {

constexpr uint64_t kMaxBlock = 64 << 10;
constexpr int kKeys = 16;

struct Node {
  std::string dir;
  std::unique_ptr<BlockStore> store;
  std::unique_ptr<NodeMetrics> metrics;
  std::unique_ptr<ControlService> service;
};

Node& TheNode() {
  static Node* node = [] {
    auto* n = new Node;
    n->dir = (std::filesystem::temp_directory_path() / ("foresight-fuzz-nvme-" + std::to_string(getpid()))).string();
    std::filesystem::remove_all(n->dir);
    BlockStoreOptions o;
    o.ram_bytes = 4 << 20;
    o.max_block_bytes = kMaxBlock;
    o.background_eviction = false;  // evict on the calling thread: one input, one outcome
    o.nvme_dir = n->dir;
    o.nvme_bytes = 16 << 20;
    o.shared_arena = false;
    o.huge_pages = HugePages::kOff;
    auto store = BlockStore::Open(o);
    FUZZ_CHECK(store.ok(), store.status().message().c_str());
    n->store = std::move(store).value();
    n->metrics = std::make_unique<NodeMetrics>();
    ControlServiceOptions co;
    co.node_id = "fuzz";
    co.max_block_bytes = kMaxBlock;
    co.nvme_bytes = o.nvme_bytes;
    co.nvme_enabled = true;
    co.max_batch_bytes = 256 << 10;
    n->service = std::make_unique<ControlService>(n->store.get(), n->metrics.get(), co);
    // The store's RocksDB folder goes with the process, once the store is closed.
    std::atexit([] {
      Node& node = TheNode();
      node.service.reset();
      node.store.reset();
      std::error_code ec;
      std::filesystem::remove_all(node.dir, ec);
    });
    return n;
  }();
  return *node;
}

// What a key may hold: any of `values` (bytes), or nothing.
struct KeyModel {
  std::vector<std::string> values;
};

std::string KeyId(uint64_t input, int index) {
  std::string id(BlockKey::kSize, '\0');
  std::memcpy(id.data(), &input, 8);
  const uint64_t i = static_cast<uint64_t>(index) + 1;
  std::memcpy(id.data() + 8, &i, 8);
  return id;
}

// The bytes `ranges` select from `value`, or nullopt when a range falls outside it.
std::optional<std::string> Slice(const std::string& value, const v1::GetItem& item) {
  if (item.ranges().empty()) return value;
  std::string out;
  for (const auto& r : item.ranges()) {
    if (r.length() == 0 || r.offset() > value.size() || r.length() > value.size() - r.offset()) return std::nullopt;
    out.append(value, r.offset(), r.length());
  }
  return out;
}

}  // namespace

std::vector<std::string> Seeds() {
  // put a, get a, put b (wrong checksum), get b, stat a, ranged get a, evict a, get a, prefix a-b.
  return {
      std::string("\x00\x01\x00\x02\x00\x00\x01\x00\x00", 9),
      std::string("\x00\x03\x01\x03\x05\x02\x02\x03\x07\x00\x01\x11\x05\x02\x01\x01\x01\x02\x03\x00\x00", 21),
      std::string("\x00\x02\x04\x03\x09\x00\x05\x01\x08\x00\x01\x04\x01\x05\x00\x04\x03\x04\x05\x06\x07\x06\x06\x07",
                  24),
      std::string("\x00\x01\x00\x00\x00\x00\x01\x01\x00\x02\x10\x00\x20\x00\x30\x00\x05\x00\x03\x00\x01\x01\x00\x00",
                  24),
  };
}

}  // namespace foresight::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace foresight;
  using namespace foresight::fuzz;
  static uint64_t input_number = 0;
  const uint64_t input = ++input_number;
  Node& node = TheNode();
  ByteReader in(data, size);
  KeyModel model[kKeys];
  const uint64_t kSizes[] = {1, 100, 4096, kMaxBlock, kMaxBlock + 1, 3000, 0, 65000};

  // A key field: usually one of this input's keys, sometimes malformed (wrong length).
  auto key_of = [&](uint8_t b, v1::Key* key) -> int {
    if (b % 32 == 31) {
      key->set_id(std::string(b % 3 == 0 ? 0 : 15 + b % 3 * 2, 'k'));  // 0, 17 or 19 bytes
      return -1;
    }
    const int index = b % kKeys;
    key->set_id(KeyId(input, index));
    return index;
  };

  for (int calls = 0; !in.empty() && calls < 64; ++calls) {
    grpc::ServerContext ctx;
    switch (in.Next() % 8) {
      case 0: {  // Put, 1-3 items
        v1::PutRequest req;
        v1::PutResponse resp;
        std::vector<int> index;
        std::vector<bool> honest;
        const int n = 1 + in.Next() % 3;
        for (int i = 0; i < n; ++i) {
          v1::PutItem* item = req.add_items();
          index.push_back(key_of(in.Next(), item->mutable_key()));
          const uint8_t how = in.Next();
          item->set_data(PatternBytes(kSizes[how % 8], in.Next()));
          honest.push_back(how / 8 % 4 != 3);
          const uint64_t sum = BlockChecksum(item->data().data(), item->data().size());
          item->set_checksum(honest.back() ? sum : sum ^ 1);
        }
        FUZZ_CHECK(node.service->Put(&ctx, &req, &resp).ok(), "Put answers per item");
        FUZZ_CHECK(resp.results_size() == n, "one result per put item");
        for (int i = 0; i < n; ++i) {
          const bool ok = resp.results(i).code() == 0;
          FUZZ_CHECK(ok || !resp.results(i).message().empty(), "a failed put says why");
          if (index[i] < 0) {
            FUZZ_CHECK(!ok, "a malformed key is refused");
            continue;
          }
          FUZZ_CHECK(!ok || honest[i], "a put whose checksum does not match its bytes is refused");
          KeyModel& m = model[index[i]];
          if (ok) {
            m.values = {req.items(i).data()};
          } else if (!m.values.empty()) {
            m.values.push_back(m.values.front());  // the old value may stay
          }
        }
        break;
      }
      case 1: {  // Get, 1-3 items, each whole or 1-2 ranges
        v1::GetRequest req;
        v1::GetResponse resp;
        std::vector<int> index;
        const int n = 1 + in.Next() % 3;
        for (int i = 0; i < n; ++i) {
          v1::GetItem* item = req.add_items();
          index.push_back(key_of(in.Next(), item->mutable_key()));
          const int ranges = in.Next() % 3;
          for (int r = 0; r < ranges; ++r) {
            v1::ByteRange* range = item->add_ranges();
            range->set_offset(static_cast<uint16_t>(in.NextN(2)));
            range->set_length(static_cast<uint16_t>(in.NextN(2)));
          }
        }
        FUZZ_CHECK(node.service->Get(&ctx, &req, &resp).ok(), "Get answers per item");
        FUZZ_CHECK(resp.results_size() == n, "one result per get item");
        for (int i = 0; i < n; ++i) {
          const v1::GetResult& r = resp.results(i);
          const int code = r.status().code();
          if (index[i] < 0) {
            FUZZ_CHECK(code == static_cast<int>(StatusCode::kInvalidArgument), "a malformed key is refused");
            continue;
          }
          const KeyModel& m = model[index[i]];
          if (code != 0) {
            FUZZ_CHECK(!r.status().message().empty(), "a failed get says why");
            FUZZ_CHECK(r.data().empty(), "a failed get carries no bytes");
            continue;
          }
          FUZZ_CHECK(!m.values.empty(), "a key never put (or evicted) is not found");
          FUZZ_CHECK(r.checksum() == BlockChecksum(r.data().data(), r.data().size()), "checksum matches bytes");
          bool matched = false;
          for (const std::string& v : m.values) {
            auto want = Slice(v, req.items(i));
            if (want.has_value() && *want == r.data() && r.block_bytes() == v.size()) matched = true;
          }
          FUZZ_CHECK(matched, "a get serves the bytes that were put");
        }
        break;
      }
      case 2: {  // Stat
        v1::StatRequest req;
        v1::StatResponse resp;
        const int index = key_of(in.Next(), req.mutable_key());
        const grpc::Status st = node.service->Stat(&ctx, &req, &resp);
        if (index < 0) {
          FUZZ_CHECK(st.error_code() == grpc::StatusCode::INVALID_ARGUMENT, "a malformed key is refused");
        } else if (st.ok()) {
          const KeyModel& m = model[index];
          bool matched = false;
          for (const std::string& v : m.values) {
            matched |= resp.block().size() == v.size() && resp.block().checksum() == BlockChecksum(v.data(), v.size());
          }
          FUZZ_CHECK(matched, "Stat describes the block that was put");
          FUZZ_CHECK(resp.block().in_ram() || resp.block().on_nvme(), "a present block is in a tier");
        } else {
          FUZZ_CHECK(st.error_code() == grpc::StatusCode::NOT_FOUND, "Stat of a sound key: found or not found");
        }
        break;
      }
      case 3: {  // Evict
        v1::EvictRequest req;
        v1::EvictResponse resp;
        const int index = key_of(in.Next(), req.mutable_key());
        const grpc::Status st = node.service->Evict(&ctx, &req, &resp);
        if (index < 0) {
          FUZZ_CHECK(st.error_code() == grpc::StatusCode::INVALID_ARGUMENT, "a malformed key is refused");
        } else {
          FUZZ_CHECK(st.ok() || st.error_code() == grpc::StatusCode::NOT_FOUND, "Evict: done or not found");
          model[index].values.clear();
        }
        break;
      }
      case 4: {  // LongestPrefix over up to 8 keys
        v1::PrefixRequest req;
        v1::PrefixResponse resp;
        std::vector<int> index;
        const int n = in.Next() % 9;
        for (int i = 0; i < n; ++i) index.push_back(key_of(in.Next(), req.add_chain()));
        const grpc::Status st = node.service->LongestPrefix(&ctx, &req, &resp);
        bool malformed = false;
        for (int i : index) malformed |= i < 0;
        if (malformed) {
          FUZZ_CHECK(st.error_code() == grpc::StatusCode::INVALID_ARGUMENT, "a malformed chain key is refused");
          break;
        }
        FUZZ_CHECK(st.ok(), "LongestPrefix answers");
        FUZZ_CHECK(resp.length() <= static_cast<uint32_t>(n), "a prefix is no longer than its chain");
        for (uint32_t i = 0; i < resp.length(); ++i) {
          FUZZ_CHECK(!model[index[i]].values.empty(), "a prefix holds only keys that are present");
        }
        break;
      }
      case 5: {  // List
        v1::ListRequest req;
        v1::ListResponse resp;
        req.set_limit(in.Next());
        FUZZ_CHECK(node.service->List(&ctx, &req, &resp).ok(), "List answers");
        FUZZ_CHECK(req.limit() == 0 || resp.blocks_size() <= static_cast<int>(req.limit()), "List keeps its limit");
        break;
      }
      case 6: {  // Flush
        v1::FlushRequest req;
        v1::FlushResponse resp;
        const grpc::Status st = node.service->Flush(&ctx, &req, &resp);
        FUZZ_CHECK(st.ok(), st.error_message().c_str());
        break;
      }
      default: {  // NodeStats, Info, Health
        v1::NodeStatsRequest req;
        v1::NodeStatsResponse resp;
        FUZZ_CHECK(node.service->NodeStats(&ctx, &req, &resp).ok(), "NodeStats answers");
        FUZZ_CHECK(resp.ram().used_bytes() <= resp.ram().capacity_bytes(), "RAM use within capacity");
        break;
      }
    }
  }
  return 0;
}
