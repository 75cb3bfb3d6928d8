// Integration tests: the real foresight-cached over real sockets on loopback.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <ucp/api/ucp.h>

#include "client/cache_client.h"
#include "client/ucx_transport.h"
#include "common/checksum.h"
#include "proto/foresight.grpc.pb.h"
#include "testing/local_node.h"

namespace foresight {
namespace {

std::vector<uint8_t> Bytes(uint64_t size, uint32_t seed) {
  std::vector<uint8_t> v(size);
  std::mt19937 rng(seed);
  for (size_t i = 0; i < v.size(); i += 4) {
    const uint32_t r = rng();
    std::memcpy(v.data() + i, &r, std::min<size_t>(4, v.size() - i));
  }
  return v;
}

std::unique_ptr<LocalNode> StartNode(std::vector<std::string> args) {
  auto node = LocalNode::Start(std::move(args));
  EXPECT_TRUE(node.ok()) << node.status().ToString();
  return node.ok() ? std::move(*node) : nullptr;
}

std::unique_ptr<CacheClient> Connect(const LocalNode& node, DataPath path, std::string token = "") {
  CacheClientOptions o;
  o.address = node.address();
  o.data_path = path;
  o.token = std::move(token);
  auto client = CacheClient::Connect(o);
  EXPECT_TRUE(client.ok()) << client.status().ToString();
  return client.ok() ? std::move(*client) : nullptr;
}

// Puts `n` blocks of `size` bytes named "b<i>"; returns their contents.
std::vector<std::vector<uint8_t>> PutBlocks(CacheClient& client, int n, uint64_t size, uint32_t seed = 0) {
  std::vector<std::vector<uint8_t>> data;
  for (int i = 0; i < n; ++i) {
    data.push_back(Bytes(size, seed + i));
    Status s = client.Put(PlainKey("t", "b" + std::to_string(i)), data.back().data(), size);
    EXPECT_TRUE(s.ok()) << i << ": " << s.ToString();
  }
  return data;
}

void ExpectBlocksIntact(CacheClient& client, const std::vector<std::vector<uint8_t>>& data) {
  for (size_t i = 0; i < data.size(); ++i) {
    std::vector<uint8_t> out(data[i].size());
    auto n = client.Get(PlainKey("t", "b" + std::to_string(i)), out.data(), out.size());
    ASSERT_TRUE(n.ok()) << i << ": " << n.status().ToString();
    ASSERT_EQ(*n, data[i].size());
    ASSERT_EQ(out, data[i]) << "block " << i << " came back with wrong bytes";
  }
}

TEST(CacheNodeTest, GrpcFallbackRoundTripWholeBlocksAndHeadRanges) {
  auto node = StartNode({"--ram-bytes", "64MiB"});
  ASSERT_TRUE(node);
  auto client = Connect(*node, DataPath::kGrpc);
  ASSERT_TRUE(client);
  EXPECT_EQ(client->stats().data_path, "grpc");
  auto data = PutBlocks(*client, 20, 3 * 4096 + 17);
  ExpectBlocksIntact(*client, data);

  // Per-KV-head ranges (SmolLM2 geometry: 3 heads of 4096 bytes): one contiguous range each.
  BlockLayout layout(16, 3, 64, 2);
  auto block = Bytes(layout.block_bytes(), 99);
  const BlockKey key = PlainKey("t", "layered");
  ASSERT_TRUE(client->Put(key, block.data(), block.size()).ok());
  std::vector<uint8_t> out(2 * layout.head_bytes());
  auto n = client->Get(key, out.data(), out.size(), {layout.head_range(0), layout.head_range(2)});
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  ASSERT_EQ(*n, 2 * layout.head_bytes());
  EXPECT_TRUE(std::equal(out.begin(), out.begin() + layout.head_bytes(), block.begin()));
  EXPECT_TRUE(std::equal(out.begin() + layout.head_bytes(), out.end(), block.begin() + 2 * layout.head_bytes()));

  // Missing is an answer.
  std::vector<uint8_t> buf(100);
  EXPECT_EQ(client->Get(PlainKey("t", "nope"), buf.data(), buf.size()).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(node->Stop(), 0) << node->Log();
}

TEST(CacheNodeTest, EvictionWritesDownToNvmeAndReadsPromoteBack) {
  TempDir dir("evict");
  auto node = StartNode({"--ram-bytes", "16MiB", "--max-block-bytes", "1MiB", "--nvme-dir", dir.path()});
  ASSERT_TRUE(node);
  auto client = Connect(*node, DataPath::kGrpc);
  ASSERT_TRUE(client);
  auto data = PutBlocks(*client, 48, 1 << 20);  // three times the RAM tier
  auto before = client->NodeStats();
  ASSERT_TRUE(before.ok());
  EXPECT_GE(before->demotions, 32u);
  EXPECT_GE(before->nvme.items, 32u);
  EXPECT_LE(before->ram.used_bytes, 16u << 20);
  ExpectBlocksIntact(*client, data);
  auto after = client->NodeStats();
  ASSERT_TRUE(after.ok());
  EXPECT_GE(after->promotions, 32u);
  EXPECT_GE(after->nvme.hits, 32u);
  EXPECT_EQ(after->checksum_failures, 0u);
  // --huge-pages auto: 2 MiB pages where this machine has them reserved, else 4 KiB.
  EXPECT_TRUE(after->ram_page_bytes == 4096u || after->ram_page_bytes == (2u << 20)) << after->ram_page_bytes;
}

TEST(CacheNodeTest, Kill9AndRestartServesEveryNvmeBlockIntact) {
  TempDir dir("kill9");
  std::vector<std::vector<uint8_t>> data;
  std::vector<bool> on_nvme;
  {
    auto node = StartNode({"--ram-bytes", "8MiB", "--max-block-bytes", "1MiB", "--nvme-dir", dir.path()});
    ASSERT_TRUE(node);
    auto client = Connect(*node, DataPath::kGrpc);
    ASSERT_TRUE(client);
    data = PutBlocks(*client, 30, 700000);
    for (size_t i = 0; i < data.size(); ++i) {
      auto info = client->Stat(PlainKey("t", "b" + std::to_string(i)));
      ASSERT_TRUE(info.ok());
      on_nvme.push_back(info->on_nvme);
    }
    node->Kill9();
  }
  const int expected = static_cast<int>(std::count(on_nvme.begin(), on_nvme.end(), true));
  EXPECT_GE(expected, 15);
  auto node = StartNode({"--ram-bytes", "8MiB", "--max-block-bytes", "1MiB", "--nvme-dir", dir.path()});
  ASSERT_TRUE(node);
  auto client = Connect(*node, DataPath::kGrpc);
  ASSERT_TRUE(client);
  int served = 0;
  for (size_t i = 0; i < data.size(); ++i) {
    std::vector<uint8_t> out(data[i].size());
    auto n = client->Get(PlainKey("t", "b" + std::to_string(i)), out.data(), out.size());
    if (on_nvme[i]) {
      ASSERT_TRUE(n.ok()) << "block " << i << " had reached NVMe but is not served: " << n.status().ToString();
    }
    if (n.ok()) {
      ASSERT_EQ(out, data[i]);
      ++served;
    } else {
      EXPECT_EQ(n.status().code(), StatusCode::kNotFound);  // RAM-only blocks are not durable
    }
  }
  EXPECT_GE(served, expected);
}

TEST(CacheNodeTest, FlippedByteOnNvmeIsReportedCorruptNeverServed) {
  TempDir dir("flip");
  std::vector<std::vector<uint8_t>> data;
  {
    auto node = StartNode({"--ram-bytes", "8MiB", "--max-block-bytes", "1MiB", "--nvme-dir", dir.path()});
    ASSERT_TRUE(node);
    auto client = Connect(*node, DataPath::kGrpc);
    ASSERT_TRUE(client);
    data = PutBlocks(*client, 6, 1 << 20);
    ASSERT_TRUE(client->Flush().ok());
    node->Kill9();
  }
  // Flip one byte in the middle of every blob file (the block bytes).
  int flipped = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    if (entry.path().extension() != ".blob") continue;
    std::fstream f(entry.path(), std::ios::in | std::ios::out | std::ios::binary);
    const auto size = std::filesystem::file_size(entry.path());
    f.seekg(static_cast<std::streamoff>(size / 2));
    char c;
    f.read(&c, 1);
    c ^= 0x40;
    f.seekp(static_cast<std::streamoff>(size / 2));
    f.write(&c, 1);
    ++flipped;
  }
  ASSERT_GE(flipped, 1) << "no blob file found in " << dir.path();
  auto node = StartNode({"--ram-bytes", "8MiB", "--max-block-bytes", "1MiB", "--nvme-dir", dir.path()});
  ASSERT_TRUE(node);
  auto client = Connect(*node, DataPath::kGrpc);
  ASSERT_TRUE(client);
  int corrupt = 0;
  for (size_t i = 0; i < data.size(); ++i) {
    std::vector<uint8_t> out(data[i].size());
    auto n = client->Get(PlainKey("t", "b" + std::to_string(i)), out.data(), out.size());
    if (n.ok()) {
      ASSERT_EQ(out, data[i]) << "block " << i << " served with wrong bytes";
    } else {
      EXPECT_EQ(n.status().code(), StatusCode::kDataLoss) << n.status().ToString();
      ++corrupt;
      // Dropped, not served later either.
      EXPECT_EQ(client->Get(PlainKey("t", "b" + std::to_string(i)), out.data(), out.size()).status().code(),
                StatusCode::kNotFound);
    }
  }
  EXPECT_GE(corrupt, 1);
  auto stats = client->NodeStats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->checksum_failures, static_cast<uint64_t>(corrupt));
}

TEST(CacheNodeTest, CallsWithoutTheTokenAreRefused) {
  TempDir dir("auth");
  const std::string token_file = dir.path() + "/token";
  std::ofstream(token_file) << "s3cret-token\n";
  auto node = StartNode({"--ram-bytes", "16MiB", "--token-file", token_file});
  ASSERT_TRUE(node);
  CacheClientOptions o;
  o.address = node->address();
  o.data_path = DataPath::kGrpc;
  auto anonymous = CacheClient::Connect(o);
  ASSERT_FALSE(anonymous.ok());
  EXPECT_EQ(anonymous.status().code(), StatusCode::kUnauthenticated);
  o.token = "wrong";
  auto wrong = CacheClient::Connect(o);
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), StatusCode::kUnauthenticated);

  // A raw stub without metadata cannot read or write either.
  auto channel = grpc::CreateChannel(node->address(), grpc::InsecureChannelCredentials());
  auto stub = v1::CacheNode::NewStub(channel);
  grpc::ClientContext ctx;
  v1::GetRequest req;
  req.add_items()->mutable_key()->set_id(std::string(PlainKey("t", "x").view()));
  v1::GetResponse resp;
  EXPECT_EQ(stub->Get(&ctx, req, &resp).error_code(), grpc::StatusCode::UNAUTHENTICATED);

  o.token = "s3cret-token";
  auto good = CacheClient::Connect(o);
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  auto data = PutBlocks(**good, 3, 5000);
  ExpectBlocksIntact(**good, data);
}

TEST(CacheNodeTest, MalformedRequestsGetErrorsAndTheNodeKeepsServing) {
  auto node = StartNode({"--ram-bytes", "16MiB", "--max-block-bytes", "1MiB"});
  ASSERT_TRUE(node);
  auto channel = grpc::CreateChannel(node->address(), grpc::InsecureChannelCredentials());
  auto stub = v1::CacheNode::NewStub(channel);

  {  // A key of the wrong length.
    grpc::ClientContext ctx;
    v1::PutRequest req;
    auto* item = req.add_items();
    item->mutable_key()->set_id("short");
    item->set_data("abc");
    v1::PutResponse resp;
    ASSERT_TRUE(stub->Put(&ctx, req, &resp).ok());
    ASSERT_EQ(resp.results_size(), 1);
    EXPECT_EQ(resp.results(0).code(), static_cast<int>(StatusCode::kInvalidArgument));
    EXPECT_NE(resp.results(0).message().find("malformed key"), std::string::npos);
  }
  {  // A wrong checksum.
    grpc::ClientContext ctx;
    v1::PutRequest req;
    auto* item = req.add_items();
    item->mutable_key()->set_id(std::string(PlainKey("t", "c").view()));
    item->set_data("hello");
    item->set_checksum(12345);
    v1::PutResponse resp;
    ASSERT_TRUE(stub->Put(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.results(0).code(), static_cast<int>(StatusCode::kDataLoss));
  }
  {  // Too large, and empty.
    grpc::ClientContext ctx;
    v1::PutRequest req;
    std::string big((1 << 20) + 1, 'x');
    auto* item = req.add_items();
    item->mutable_key()->set_id(std::string(PlainKey("t", "big").view()));
    item->set_checksum(BlockChecksum(big.data(), big.size()));
    item->set_data(big);
    auto* empty = req.add_items();
    empty->mutable_key()->set_id(std::string(PlainKey("t", "empty").view()));
    v1::PutResponse resp;
    ASSERT_TRUE(stub->Put(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.results(0).code(), static_cast<int>(StatusCode::kInvalidArgument));
    EXPECT_NE(resp.results(0).message().find("maximum block size"), std::string::npos);
    EXPECT_EQ(resp.results(1).code(), static_cast<int>(StatusCode::kInvalidArgument));
  }
  auto client = Connect(*node, DataPath::kGrpc);
  ASSERT_TRUE(client);
  auto data = PutBlocks(*client, 2, 8192);
  {  // A range outside the block.
    std::vector<uint8_t> out(100);
    auto n = client->Get(PlainKey("t", "b0"), out.data(), out.size(), {ByteRange{8000, 500}});
    EXPECT_EQ(n.status().code(), StatusCode::kOutOfRange);
  }
  {  // Bytes that are not a protobuf message at all.
    grpc::GenericStub generic(channel);
    grpc::ClientContext ctx;
    grpc::Slice garbage(std::string("\xff\xff\xff\xff\x0f garbage", 13));
    grpc::ByteBuffer request(&garbage, 1), response;
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    grpc::Status status;
    generic.UnaryCall(&ctx, "/foresight.v1.CacheNode/Put", grpc::StubOptions(), &request, &response,
                      [&](grpc::Status s) {
                        std::lock_guard<std::mutex> lock(mu);
                        status = s;
                        done = true;
                        cv.notify_one();
                      });
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return done; }));
    EXPECT_FALSE(status.ok());
  }
  {  // Raw garbage on the socket.
    const auto colon = node->address().rfind(':');
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(std::stoi(node->address().substr(colon + 1))));
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    const char junk[] = "GET / HTTP/1.1\r\n\r\n\x00\x01\x02garbage";
    (void)!write(fd, junk, sizeof(junk));
    close(fd);
  }
  ASSERT_TRUE(node->running());
  EXPECT_TRUE(client->Health().ok());
  ExpectBlocksIntact(*client, data);
  EXPECT_EQ(node->Stop(), 0);
}

TEST(CacheNodeTest, BadFlagsAreRefusedWithAClearMessage) {
  auto node = LocalNode::Start({"--ram-bytes", "12XB"});
  ASSERT_FALSE(node.ok());
  EXPECT_NE(node.status().message().find("--ram-bytes"), std::string::npos) << node.status().message();
}

}  // namespace
}  // namespace foresight

namespace foresight {
namespace {

class UcxPathTest : public ::testing::TestWithParam<const char*> {};

TEST_P(UcxPathTest, RoundTripWholeBlocksAndHeadRangesOverUcx) {
  TempDir dir(std::string("ucx-") + GetParam());
  auto node = StartNode({"--ram-bytes", "16MiB", "--max-block-bytes", "1MiB", "--nvme-dir", dir.path()});
  ASSERT_TRUE(node);
  ASSERT_GT(node->ucx_port(), 0);
  CacheClientOptions o;
  o.address = node->address();
  o.data_path = DataPath::kUcx;
  o.ucx_transports = GetParam();
  auto connected = CacheClient::Connect(o);
  ASSERT_TRUE(connected.ok()) << connected.status().ToString();
  CacheClient& client = **connected;
  EXPECT_EQ(client.stats().data_path, "ucx");
  // Three times the RAM tier: the gets below also promote from NVMe.
  auto data = PutBlocks(client, 48, 1 << 20, /*seed=*/500);
  ExpectBlocksIntact(client, data);

  // Batched, asynchronous gets of per-KV-head ranges into one allocated buffer.
  BlockLayout layout(16, 8, 128, 2);  // Llama-3.1-8B geometry, f16: 64 KiB per block
  std::vector<std::vector<uint8_t>> blocks;
  for (int i = 0; i < 8; ++i) {
    blocks.push_back(Bytes(layout.block_bytes(), 700 + i));
    ASSERT_TRUE(client.Put(PlainKey("t", "kv" + std::to_string(i)), blocks[i].data(), blocks[i].size()).ok());
  }
  auto buffer = client.AllocateBuffer(8 * layout.head_bytes());
  ASSERT_TRUE(buffer.ok()) << buffer.status().ToString();
  std::vector<BlockGet> gets(8);
  for (int i = 0; i < 8; ++i) {
    gets[i].key = PlainKey("t", "kv" + std::to_string(i));
    gets[i].ranges = {layout.head_range(i % 8)};
    gets[i].dest = *buffer + i * layout.head_bytes();
    gets[i].capacity = layout.head_bytes();
  }
  auto pending = client.GetBatchAsync(gets);
  ASSERT_TRUE(pending.get().ok());
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(gets[i].status.ok()) << gets[i].status.ToString();
    ASSERT_EQ(gets[i].bytes, layout.head_bytes());
    const ByteRange r = layout.head_range(i % 8);
    EXPECT_EQ(std::memcmp(*buffer + i * layout.head_bytes(), blocks[i].data() + r.offset, r.length), 0) << i;
  }
  std::vector<uint8_t> small(10);
  EXPECT_EQ(client.Get(PlainKey("t", "missing"), small.data(), small.size()).status().code(), StatusCode::kNotFound);
  auto stats = client.NodeStats();
  ASSERT_TRUE(stats.ok());
  // One-sided gets (shm) release their leases in batches just after the copy: poll for it.
  for (const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
       stats.ok() && stats->active_leases != 0 && std::chrono::steady_clock::now() < deadline;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    stats = client.NodeStats();
  }
  ASSERT_TRUE(stats.ok());
  EXPECT_GT(stats->promotions, 0u);
  EXPECT_EQ(stats->checksum_failures, 0u);
  EXPECT_EQ(stats->active_leases, 0u);
  EXPECT_EQ(node->Stop(), 0) << node->Log();
}

INSTANTIATE_TEST_SUITE_P(Transports, UcxPathTest, ::testing::Values("shm", "tcp"));

// The daemon's arena mapped by a client in another process (the one-sided get path), behind a
// token: whole blocks in a batch of 16, head ranges, NVMe-resident blocks (promoted under the lease).
TEST(CacheNodeTest, OneSidedGetsCopyFromTheDaemonsArena) {
  TempDir dir("one-sided");
  const std::string token_file = dir.path() + "/token";
  std::ofstream(token_file) << "t0ken\n";
  auto node = StartNode({"--ram-bytes", "16MiB", "--max-block-bytes", "1MiB", "--nvme-dir", dir.path() + "/nvme",
                         "--token-file", token_file});
  ASSERT_TRUE(node);
  UcxTransportOptions o;
  o.transports = "shm";
  auto t = UcxTransport::Connect("127.0.0.1", static_cast<uint16_t>(node->ucx_port()), "t0ken", o);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ASSERT_TRUE((*t)->Stats().arena_mapped) << (*t)->Stats().arena_note;
  std::vector<std::vector<uint8_t>> blocks;
  for (int i = 0; i < 40; ++i) {  // 40 MiB over a 16 MiB RAM tier: the early ones go to NVMe
    blocks.push_back(Bytes(1 << 20, 900 + i));
    auto put = (*t)->SubmitPuts({UcxPut{PlainKey("os", std::to_string(i)), blocks[i].data(), 1 << 20,
                                        BlockChecksum(blocks[i].data(), 1 << 20)}});
    ASSERT_TRUE(put.ok());
    auto r = (*t)->Wait(*put, 20);
    ASSERT_EQ(r.size(), 1u);
    ASSERT_TRUE(r[0].status.ok()) << r[0].status.ToString();
  }
  std::vector<uint8_t> sink(16u << 20);
  for (int first : {0, 24}) {
    std::vector<UcxGet> gets;
    for (int i = 0; i < 16; ++i) {
      gets.push_back(UcxGet{PlainKey("os", std::to_string(first + i)), {}, sink.data() + (uint64_t(i) << 20), 1 << 20});
    }
    auto batch = (*t)->SubmitGets(gets);
    ASSERT_TRUE(batch.ok());
    auto results = (*t)->Wait(*batch, 30);
    ASSERT_EQ(results.size(), 16u);
    for (int i = 0; i < 16; ++i) {
      ASSERT_TRUE(results[i].status.ok()) << first + i << ": " << results[i].status.ToString();
      EXPECT_EQ(std::memcmp(sink.data() + (uint64_t(i) << 20), blocks[first + i].data(), 1 << 20), 0) << first + i;
    }
  }
  BlockLayout layout(16, 8, 64, 8);  // heads of 16 KiB: ranges within the first 128 KiB of the block
  const std::vector<ByteRange> ranges = {layout.head_range(6), layout.head_range(1)};
  auto r = (*t)->SubmitGets({UcxGet{PlainKey("os", "30"), ranges, sink.data(), sink.size()}});
  ASSERT_TRUE(r.ok());
  auto got = (*t)->Wait(*r, 10);
  ASSERT_TRUE(got[0].status.ok()) << got[0].status.ToString();
  ASSERT_EQ(got[0].bytes, 2 * layout.head_bytes());
  EXPECT_EQ(std::memcmp(sink.data(), blocks[30].data() + ranges[0].offset, ranges[0].length), 0);
  EXPECT_EQ(std::memcmp(sink.data() + ranges[0].length, blocks[30].data() + ranges[1].offset, ranges[1].length), 0);
  EXPECT_GE((*t)->Stats().one_sided_gets, 33u);
  EXPECT_EQ(node->Stop(), 0) << node->Log();
}

TEST(CacheNodeTest, UcxRefusesAWrongTokenAndAutoDoesNotFallBackSilently) {
  TempDir dir("ucx-auth");
  const std::string token_file = dir.path() + "/token";
  std::ofstream(token_file) << "tok\n";
  auto node = StartNode({"--ram-bytes", "16MiB", "--token-file", token_file});
  ASSERT_TRUE(node);
  ASSERT_GT(node->ucx_port(), 0);
  CacheClientOptions o;
  o.address = node->address();
  o.data_path = DataPath::kUcx;
  o.token = "tok";
  auto good = CacheClient::Connect(o);
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  auto data = PutBlocks(**good, 2, 100000);
  ExpectBlocksIntact(**good, data);

  // The UCX listener itself checks the token (not only the gRPC Info call in front of it).
  UcxTransportOptions uo;
  uo.transports = "tcp";
  for (const char* token : {"bad", ""}) {
    auto raw = UcxTransport::Connect("127.0.0.1", static_cast<uint16_t>(node->ucx_port()), token, uo);
    ASSERT_FALSE(raw.ok()) << "the UCX listener accepted the token \"" << token << "\"";
    EXPECT_EQ(raw.status().code(), StatusCode::kUnauthenticated) << raw.status().ToString();
  }
  auto raw = UcxTransport::Connect("127.0.0.1", static_cast<uint16_t>(node->ucx_port()), "tok", uo);
  ASSERT_TRUE(raw.ok()) << raw.status().ToString();

  o.token = "bad";
  auto bad = CacheClient::Connect(o);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kUnauthenticated);

  // Auto: with the right token it takes UCX, with no fallback to explain; with a wrong one it
  // fails as UNAUTHENTICATED rather than handing back a client on another path.
  o.data_path = DataPath::kAuto;
  o.token = "tok";
  auto autopath = CacheClient::Connect(o);
  ASSERT_TRUE(autopath.ok()) << autopath.status().ToString();
  EXPECT_EQ((*autopath)->stats().data_path, "ucx") << (*autopath)->stats().fallback_reason;
  EXPECT_EQ((*autopath)->stats().fallback_reason, "");
  ExpectBlocksIntact(**autopath, data);
  for (const char* token : {"bad", ""}) {
    o.token = token;
    auto refused = CacheClient::Connect(o);
    ASSERT_FALSE(refused.ok()) << "auto connected with the token \"" << token << "\" over "
                               << (*refused)->stats().data_path;
    EXPECT_EQ(refused.status().code(), StatusCode::kUnauthenticated) << refused.status().ToString();
  }
}

std::string HttpGet(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  const std::string req = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
  (void)!write(fd, req.data(), req.size());
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd);
  return out;
}

TEST(CacheNodeTest, MetricsEndpointServesPrometheusText) {
  TempDir dir("metrics");
  auto node = StartNode(
      {"--ram-bytes", "8MiB", "--max-block-bytes", "1MiB", "--nvme-dir", dir.path(), "--metrics", "127.0.0.1:0"});
  ASSERT_TRUE(node);
  ASSERT_GT(node->metrics_port(), 0);
  auto client = Connect(*node, DataPath::kAuto);
  ASSERT_TRUE(client);
  auto data = PutBlocks(*client, 16, 1 << 20);
  ExpectBlocksIntact(*client, data);
  std::vector<uint8_t> buf(10);
  (void)client->Get(PlainKey("t", "absent"), buf.data(), buf.size());
  const std::vector<std::string> needles = {"foresight_tier_bytes{tier=\"ram\"}",
                                            "foresight_tier_items{tier=\"nvme\"}",
                                            "foresight_tier_hits_total",
                                            "foresight_tier_misses_total{tier=\"nvme\"} 1",
                                            "foresight_evictions_total{tier=\"ram\"}",
                                            "foresight_bytes_in_total",
                                            "foresight_bytes_out_total",
                                            "foresight_request_seconds_bucket",
                                            "foresight_checksum_failures_total 0",
                                            "foresight_store_events_total{event=\"demotion\"}",
                                            "foresight_ram_page_bytes "};
  auto missing_from = [&](const std::string& text) {
    for (const auto& needle : needles)
      if (text.find(needle) == std::string::npos) return needle;
    return std::string();
  };
  // The gauges refresh about once a second: poll until the ones above show the traffic.
  std::string text;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  do {
    text = HttpGet(node->metrics_port(), "/metrics");
    if (missing_from(text).empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  } while (std::chrono::steady_clock::now() < deadline);
  EXPECT_EQ(missing_from(text), "") << "missing in:\n" << text.substr(0, 3000);
}

TEST(CacheNodeTest, TlsOnTheControlPlane) {
  TempDir dir("tls");
  const std::string cert = dir.path() + "/cert.pem", key = dir.path() + "/key.pem";
  const std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -keyout " + key + " -out " + cert +
                          " -days 1 -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost "
                          ">/dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0) GTEST_SKIP() << "openssl cannot make a test certificate";
  auto node = StartNode({"--ram-bytes", "16MiB", "--tls-cert", cert, "--tls-key", key});
  ASSERT_TRUE(node);
  CacheClientOptions o;
  o.address = node->address();
  o.tls_ca = cert;
  auto client = CacheClient::Connect(o);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  auto data = PutBlocks(**client, 3, 70000);
  ExpectBlocksIntact(**client, data);
  o.tls_ca.clear();
  o.timeout = std::chrono::milliseconds(2000);
  EXPECT_FALSE(CacheClient::Connect(o).ok());  // plaintext against a TLS port
}

TEST(CacheNodeTest, FlagsFromAConfigFile) {
  TempDir dir("config");
  const std::string config = dir.path() + "/node.toml";
  std::ofstream(config) << "ram-bytes = \"24MiB\"\nmax-block-bytes = \"2MiB\"\nno-ucx = true\n";
  auto node = StartNode({"--config", config});
  ASSERT_TRUE(node);
  EXPECT_EQ(node->ucx_port(), 0);
  auto client = Connect(*node, DataPath::kAuto);
  ASSERT_TRUE(client);
  auto info = client->Info();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->ram_bytes, 24u << 20);
  EXPECT_EQ(info->max_block_bytes, 2u << 20);

  // A misspelt key is refused by name; it used to be ignored, and the node ran with the default.
  const std::string typo = dir.path() + "/typo.toml";
  std::ofstream(typo) << "ram_bytes = \"24MiB\"\n";
  auto refused = LocalNode::Start({"--config", typo});
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("ram_bytes"), std::string::npos) << refused.status().ToString();
}

TEST(CacheNodeTest, InfoNamesTheNodesUcx) {
  auto node = StartNode({"--ram-bytes", "16MiB"});
  ASSERT_TRUE(node);
  auto client = Connect(*node, DataPath::kGrpc);
  ASSERT_TRUE(client);
  auto info = client->Info();
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_NE(info->ucx_port, 0u);
  EXPECT_EQ(info->ucx_version, ucp_get_version_string());  // the node is built as this test is
}

TEST(CacheNodeTest, AutoFallsBackToGrpcAndSaysWhy) {
  auto node = StartNode({"--ram-bytes", "16MiB", "--no-ucx"});
  ASSERT_TRUE(node);
  auto client = Connect(*node, DataPath::kAuto);
  ASSERT_TRUE(client);
  EXPECT_EQ(client->stats().data_path, "grpc");
  EXPECT_NE(client->stats().fallback_reason.find("no UCX listener"), std::string::npos);
  CacheClientOptions o;
  o.address = node->address();
  o.data_path = DataPath::kUcx;
  EXPECT_FALSE(CacheClient::Connect(o).ok());
}

}  // namespace
}  // namespace foresight
