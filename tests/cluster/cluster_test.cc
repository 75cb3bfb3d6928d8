// Issue 6 acceptance on loopback: real etcd, real foresight-cached nodes, the ClusterClient.
// Every test skips with a message when the etcd binary is absent.
#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "cluster/cluster_client.h"
#include "cluster/etcd_client.h"
#include "testing/local_node.h"
#include "tests/cluster/local_etcd.h"

namespace foresight {
namespace {

using namespace std::chrono_literals;

#define SKIP_WITHOUT_ETCD()        \
  if (LocalEtcd::Binary().empty()) \
  GTEST_SKIP() << "etcd not installed: apt-get install etcd-server (or set FORESIGHT_ETCD)"

std::vector<uint8_t> Content(uint64_t size, uint64_t seed) {
  std::vector<uint8_t> v(size);
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i < size; i += 8) {
    const uint64_t r = rng();
    std::memcpy(v.data() + i, &r, std::min<size_t>(8, size - i));
  }
  return v;
}

// An etcd plus cache nodes n0, n1, ... that register in it; NVMe dirs survive restarts.
class LocalCluster {
 public:
  // The nodes' lease TTL. Tests that need a lease to expire poll for it rather than wait a fixed
  // time, so the TTL only sets how soon a killed node drops out; 3 s leaves a keepalive (every
  // TTL/3) two seconds of slack on a loaded machine before a live node would be dropped.
  static constexpr int kTtlSeconds = 3;

  explicit LocalCluster(std::string ram = "64MiB") : ram_(std::move(ram)), dir_("cluster") {
    auto etcd = LocalEtcd::Start();
    EXPECT_TRUE(etcd.ok()) << etcd.status().ToString();
    if (etcd.ok()) etcd_ = std::move(*etcd);
  }
  bool ok() const { return etcd_ != nullptr; }
  LocalEtcd& etcd() { return *etcd_; }

  // Starts (or restarts) node `i`.
  ::testing::AssertionResult StartNode(int i) {
    if (nodes_.size() <= static_cast<size_t>(i)) nodes_.resize(i + 1);
    const std::string id = "n" + std::to_string(i);
    auto node = LocalNode::Start({"--ram-bytes", ram_, "--nvme-dir", dir_.path() + "/" + id, "--nvme-bytes", "1GiB",
                                  "--etcd", etcd_->url(), "--node-id", id, "--etcd-ttl", std::to_string(kTtlSeconds)});
    if (!node.ok()) return ::testing::AssertionFailure() << id << ": " << node.status().ToString();
    nodes_[i] = std::move(*node);
    return ::testing::AssertionSuccess();
  }
  LocalNode& node(int i) { return *nodes_[i]; }
  std::string nvme_dir(int i) const { return dir_.path() + "/n" + std::to_string(i); }

  // Clients fail over after `node_timeout`; a repairer may take longer per call (a loaded machine
  // slows a pass down, and a pass that times out on a node is retried from the start).
  std::unique_ptr<ClusterClient> Client(int replication, bool repair = false,
                                        std::chrono::milliseconds node_timeout = 2000ms) {
    ClusterClientOptions o;
    o.etcd = etcd_->url();
    o.replication = replication;
    o.background_repair = repair;
    o.node.timeout = node_timeout;
    o.refresh_interval = 200ms;
    auto c = ClusterClient::Connect(o);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? std::move(*c) : nullptr;
  }

 private:
  std::string ram_;
  TempDir dir_;
  std::unique_ptr<LocalEtcd> etcd_;
  std::vector<std::unique_ptr<LocalNode>> nodes_;
};

bool WaitForMembers(ClusterClient& c, size_t n, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    (void)c.RefreshMembership();
    if (c.members().size() == n) return true;
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

BlockKey KeyOf(const std::string& prefix, uint64_t i) { return PlainKey("cluster-test", prefix + std::to_string(i)); }

// How many of `keys` keys should move when one node joins `n` nodes under rendezvous hashing. A key
// moves exactly when the newcomer's weight beats all n old ones; with independent uniform weights
// that happens with p = 1/(n+1), so the count is Binomial(keys, p): mean keys*p, standard deviation
// sqrt(keys*p*(1-p)). The bounds are 8 standard deviations either side: a fair hash lands outside
// them with probability under 1e-15 (and for fixed node ids and keys the count is deterministic
// anyway), while a newcomer that wins noticeably less or more than its share fails. For 3000 keys
// and 3 -> 4 nodes: 750 +- 190; for 30000 keys: 7500 +- 600.
struct MovedKeyBounds {
  int low, high;
};
MovedKeyBounds ExpectedMovesOnJoin(int keys, int n) {
  const double p = 1.0 / (n + 1), mean = keys * p, sd = std::sqrt(keys * p * (1 - p));
  return {static_cast<int>(std::floor(mean - 8 * sd)), static_cast<int>(std::ceil(mean + 8 * sd))};
}

// A member entry is written by another process (or by hand with etcdctl): a field of the wrong type
// is an error naming it, never an exception in the client's refresh thread (this once threw).
TEST(ClusterTest, MemberEntriesWithFieldsOfTheWrongTypeAreRefused) {
  auto good = ParseClusterMember(R"({"node_id":"a","grpc":"127.0.0.1:7000","ucx_port":41000,"nvme":true,)"
                                 R"("incarnation":"3","started_at":1764000000})");
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  EXPECT_EQ(good->ucx_port, 41000u);
  EXPECT_TRUE(good->nvme);
  const std::pair<const char*, const char*> bad[] = {
      {R"({"node_id":5,"grpc":"127.0.0.1:7000"})", "\"node_id\" is number"},
      {R"({"node_id":"a","grpc":"127.0.0.1:7000","ucx_port":70000})", "\"ucx_port\" = 70000 is out of range"},
      {R"({"node_id":"a","grpc":"127.0.0.1:7000","ucx_port":-1})", "\"ucx_port\" = -1 is out of range"},
      {R"({"node_id":"a","grpc":"127.0.0.1:7000","nvme":"yes"})", "\"nvme\" is string"},
      {R"({"node_id":"a","grpc":["x"]})", "\"grpc\" is array"},
      {R"({"node_id":"a"})", "lacks node_id or grpc"},
      {R"([1,2])", "not a JSON object"},
  };
  for (const auto& [text, expect] : bad) {
    auto m = ParseClusterMember(text);
    ASSERT_FALSE(m.ok()) << text;
    EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument) << text;
    EXPECT_NE(m.status().message().find(expect), std::string::npos) << m.status().ToString();
  }
}

TEST(ClusterTest, RendezvousSpreadsKeysAndMovesAboutOneNthWhenANodeJoins) {
  // Pure routing figures over many keys (no processes), the property every client relies on.
  std::vector<std::string> ids = {"n0", "n1", "n2"};
  const int keys = 30000;
  std::map<std::string, int> owners_before;
  std::vector<size_t> first(keys);
  for (int i = 0; i < keys; ++i) first[i] = RendezvousOrder(KeyOf("k", i), ids)[0];
  ids.push_back("n3");
  int moved = 0, moved_elsewhere = 0;
  for (int i = 0; i < keys; ++i) {
    const size_t now = RendezvousOrder(KeyOf("k", i), ids)[0];
    if (now != first[i]) {
      ++moved;
      if (now != 3) ++moved_elsewhere;
    }
  }
  std::printf("[routing] %d keys, 3 -> 4 nodes: %d moved (%.3f of keys; 1/N = 0.25), %d between old nodes\n", keys,
              moved, double(moved) / keys, moved_elsewhere);
  EXPECT_EQ(moved_elsewhere, 0);
  EXPECT_LE(moved, 1.5 / 4 * keys);
  const MovedKeyBounds bounds = ExpectedMovesOnJoin(keys, 3);
  EXPECT_GE(moved, bounds.low) << "the new node takes too few keys: the weights do not treat it as an equal";
  EXPECT_LE(moved, bounds.high);
}

// Acceptance 1: three nodes spread keys within 15% of even; a fourth moves at most 1.5/N.
TEST(ClusterTest, ThreeNodesSpreadEvenlyAndAFourthMovesAtMostOnePointFiveOverN) {
  SKIP_WITHOUT_ETCD();
  LocalCluster cluster;
  ASSERT_TRUE(cluster.ok());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(cluster.StartNode(i));
  auto client = cluster.Client(1);
  ASSERT_TRUE(client);
  ASSERT_TRUE(WaitForMembers(*client, 3, 30s));

  const int keys = 3000;
  const uint64_t size = 1024;
  std::vector<std::vector<uint8_t>> data(keys);
  for (int base = 0; base < keys; base += 100) {
    std::vector<BlockPut> batch;
    for (int i = base; i < base + 100; ++i) {
      data[i] = Content(size, i);
      batch.push_back({KeyOf("k", i), data[i].data(), size, {}});
    }
    ASSERT_TRUE(client->PutBatch(batch).ok());
  }
  std::printf("[spread] %d keys over 3 nodes:", keys);
  for (const auto& m : client->members()) {
    auto node = client->NodeClient(m.node_id);
    ASSERT_TRUE(node.ok());
    auto st = (*node)->NodeStats();
    ASSERT_TRUE(st.ok()) << st.status().ToString();
    const uint64_t items = st->ram.items + st->nvme.items;
    const double deviation = (double(items) - keys / 3.0) / (keys / 3.0);
    std::printf(" %s=%llu (%+.1f%%)", m.node_id.c_str(), static_cast<unsigned long long>(items), deviation * 100);
    EXPECT_LE(std::abs(deviation), 0.15) << m.node_id;
  }
  std::printf("\n");

  std::vector<std::string> before(keys);
  for (int i = 0; i < keys; ++i) before[i] = client->Owners(KeyOf("k", i))[0];
  ASSERT_TRUE(cluster.StartNode(3));
  ASSERT_TRUE(WaitForMembers(*client, 4, 30s));
  int moved = 0;
  for (int i = 0; i < keys; ++i) moved += client->Owners(KeyOf("k", i))[0] != before[i];
  std::printf("[join] 4th node: %d of %d keys change owner (%.3f; limit 1.5/N = %.3f)\n", moved, keys,
              double(moved) / keys, 1.5 / 4);
  EXPECT_LE(moved, 1.5 / 4 * keys);
  const MovedKeyBounds bounds = ExpectedMovesOnJoin(keys, 3);
  EXPECT_GE(moved, bounds.low) << "the 4th node takes too few keys (expected about 1/4 of " << keys << ")";
  EXPECT_LE(moved, bounds.high);

  // Before any repair, every key is still served (its old owner is next in its order).
  std::vector<uint8_t> out(size);
  for (int i = 0; i < keys; ++i) {
    auto n = client->Get(KeyOf("k", i), out.data(), out.size());
    ASSERT_TRUE(n.ok()) << i << ": " << n.status().ToString();
    ASSERT_EQ(out, data[i]);
  }
  // Rebalancing copies exactly the moved keys to the new node.
  ASSERT_TRUE(client->RepairOnce().ok()) << client->repair_stats().last_error;
  auto n3 = client->NodeClient("n3");
  ASSERT_TRUE(n3.ok());
  auto st = (*n3)->NodeStats();
  ASSERT_TRUE(st.ok());
  std::printf("[rebalance] copied %llu blocks; n3 holds %llu\n",
              static_cast<unsigned long long>(client->repair_stats().blocks_copied),
              static_cast<unsigned long long>(st->ram.items + st->nvme.items));
  EXPECT_EQ(client->repair_stats().blocks_copied, static_cast<uint64_t>(moved));
  EXPECT_EQ(st->ram.items + st->nvme.items, static_cast<uint64_t>(moved));
}

// Acceptance 2: R=2, eight clients under load, kill -9 one node; zero failed or wrong gets of
// acknowledged blocks; the node restarts, rejoins and is repaired.
TEST(ClusterTest, ReplicatedClusterSurvivesKill9WithEightClientsAndRepairsTheRejoinedNode) {
  SKIP_WITHOUT_ETCD();
  LocalCluster cluster("16MiB");  // small RAM: many blocks reach NVMe before the crash
  ASSERT_TRUE(cluster.ok());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(cluster.StartNode(i));
  auto repairer = cluster.Client(2, /*repair=*/true, /*node_timeout=*/10000ms);
  ASSERT_TRUE(repairer);
  ASSERT_TRUE(WaitForMembers(*repairer, 3, 30s));

  constexpr int kClients = 8;
  constexpr uint64_t kSize = 64 * 1024;
  std::atomic<bool> stop{false};
  // Puts are rationed, so that the repair and the final check have a bounded amount to do on a slow
  // machine: enough at first for n1's RAM tier (16 MiB, 256 blocks of 64 KiB; it owns about 2/3 of
  // the blocks at R=2) to overflow to NVMe, then a few hundred more in each later phase. Without a
  // ration a client gets.
  std::atomic<int64_t> put_ration{800};
  std::atomic<uint64_t> puts_acked{0}, put_failures{0}, gets_ok{0}, gets_failed{0}, gets_wrong{0};
  std::vector<std::vector<uint64_t>> acked(kClients);  // per client: acknowledged block numbers
  std::vector<std::string> first_errors(kClients);
  std::vector<std::thread> threads;
  for (int t = 0; t < kClients; ++t) {
    threads.emplace_back([&, t] {
      auto client = cluster.Client(2);
      if (!client) return;
      std::mt19937 rng(t);
      std::vector<uint8_t> out(kSize);
      uint64_t next = 0;
      while (!stop) {
        bool put = false;
        if (acked[t].empty() || rng() % 2 == 0) {
          put = put_ration.fetch_sub(1) > 0;
          if (!put) put_ration.fetch_add(1);
        }
        if (!put && acked[t].empty()) {
          std::this_thread::yield();
        } else if (put) {
          const uint64_t j = next++;
          auto data = Content(kSize, (uint64_t(t) << 32) | j);
          Status s = client->Put(KeyOf("c" + std::to_string(t) + "-", j), data.data(), kSize);
          if (s.ok()) {
            acked[t].push_back(j);
            ++puts_acked;
          } else {
            ++put_failures;
          }
        } else {
          const uint64_t j = acked[t][rng() % acked[t].size()];
          auto n = client->Get(KeyOf("c" + std::to_string(t) + "-", j), out.data(), out.size());
          if (!n.ok()) {
            ++gets_failed;
            if (first_errors[t].empty()) first_errors[t] = n.status().ToString();
          } else if (out != Content(kSize, (uint64_t(t) << 32) | j)) {
            ++gets_wrong;
          } else {
            ++gets_ok;
          }
        }
      }
    });
  }
  // Stops and joins the clients however the test ends (an ASSERT below returns early).
  struct StopAndJoin {
    std::atomic<bool>& stop;
    std::vector<std::thread>& threads;
    ~StopAndJoin() {
      stop = true;
      for (auto& th : threads)
        if (th.joinable()) th.join();
    }
  } stop_and_join{stop, threads};
  // Load until n1 has written blocks down to NVMe (its RAM tier overflowed), so that the restart
  // shows what the NVMe tier keeps across a crash, and the clients have read and written a while.
  {
    CacheClientOptions o;
    o.address = cluster.node(1).address();
    o.data_path = DataPath::kGrpc;
    auto direct = CacheClient::Connect(o);
    ASSERT_TRUE(direct.ok()) << direct.status().ToString();
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    uint64_t n1_nvme_items = 0;
    while (std::chrono::steady_clock::now() < deadline) {
      auto st = (*direct)->NodeStats();
      if (st.ok()) n1_nvme_items = st->nvme.items;
      if (n1_nvme_items > 0 && gets_ok >= 300) break;
      std::this_thread::sleep_for(100ms);
    }
    ASSERT_GT(n1_nvme_items, 0u) << "n1 never wrote a block down to NVMe before the kill";
  }
  const uint64_t acked_before_kill = puts_acked;
  cluster.node(1).Kill9();
  // n1's lease expires (no fixed wait: poll etcd until its entry is gone and the membership drops
  // it), then the clients, routing around n1, keep acknowledging puts.
  {
    auto etcd = EtcdClient::Create(cluster.etcd().url());
    ASSERT_TRUE(etcd.ok()) << etcd.status().ToString();
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while ((*etcd)->Get("/foresight/nodes/n1").ok() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(100ms);
    }
    ASSERT_EQ((*etcd)->Get("/foresight/nodes/n1").status().code(), StatusCode::kNotFound)
        << "n1's lease never expired after kill -9";
  }
  ASSERT_TRUE(WaitForMembers(*repairer, 2, 30s));
  const uint64_t acked_at_expiry = puts_acked;
  put_ration += 200;
  for (const auto deadline = std::chrono::steady_clock::now() + 30s;
       puts_acked < acked_at_expiry + 100 && std::chrono::steady_clock::now() < deadline;) {
    std::this_thread::sleep_for(50ms);
  }
  const uint64_t acked_while_down = puts_acked - acked_before_kill;
  EXPECT_GE(puts_acked.load(), acked_at_expiry + 100) << "no puts were acknowledged with n1 down";
  ASSERT_TRUE(cluster.StartNode(1));
  uint64_t kept_on_nvme = 0;  // what the restarted node serves before any repair
  {
    CacheClientOptions o;
    o.address = cluster.node(1).address();
    o.data_path = DataPath::kGrpc;
    auto direct = CacheClient::Connect(o);
    ASSERT_TRUE(direct.ok()) << direct.status().ToString();
    auto blocks = (*direct)->List(100000);
    ASSERT_TRUE(blocks.ok());
    kept_on_nvme = blocks->size();
  }
  // Load goes on while n1 rejoins: until the membership lists it again and the clients have
  // acknowledged more puts since its restart.
  ASSERT_TRUE(WaitForMembers(*repairer, 3, 30s));
  const uint64_t acked_at_restart = puts_acked;
  put_ration += 200;
  for (const auto deadline = std::chrono::steady_clock::now() + 30s;
       puts_acked < acked_at_restart + 100 && std::chrono::steady_clock::now() < deadline;) {
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_GE(puts_acked.load(), acked_at_restart + 100) << "no puts were acknowledged after n1 rejoined";
  stop = true;
  for (auto& th : threads) th.join();

  ASSERT_TRUE(WaitForMembers(*repairer, 3, 30s));
  auto n1 = repairer->NodeClient("n1");
  ASSERT_TRUE(n1.ok()) << n1.status().ToString();
  ASSERT_TRUE(repairer->WaitForRepair(30s))
      << "repair passes " << repairer->repair_stats().passes << ", last error: " << repairer->repair_stats().last_error;
  // The pass the rejoin triggered may have run while clients that had not yet seen n1 come back
  // were still writing to its fallbacks; such blocks go home at the next periodic pass (every
  // repair_interval). Run that pass now, after the last write, rather than wait for it.
  ASSERT_TRUE(repairer->RepairOnce().ok()) << repairer->repair_stats().last_error;
  const RepairStats rs = repairer->repair_stats();

  // Every acknowledged block, read back through a new client after the dust settled.
  auto verifier = cluster.Client(2);
  ASSERT_TRUE(verifier);
  uint64_t final_ok = 0, final_bad = 0;
  std::vector<uint8_t> out(kSize);
  for (int t = 0; t < kClients; ++t) {
    for (uint64_t j : acked[t]) {
      auto n = verifier->Get(KeyOf("c" + std::to_string(t) + "-", j), out.data(), out.size());
      if (n.ok() && out == Content(kSize, (uint64_t(t) << 32) | j))
        ++final_ok;
      else
        ++final_bad;
    }
  }
  // After repair, both owners of every block hold it (the rejoined node included).
  uint64_t under_replicated = 0;
  for (int t = 0; t < kClients; ++t) {
    for (uint64_t j : acked[t]) {
      const BlockKey key = KeyOf("c" + std::to_string(t) + "-", j);
      for (const auto& owner : verifier->Owners(key)) {
        auto c = verifier->NodeClient(owner);
        if (!c.ok() || !(*c)->Stat(key).ok()) ++under_replicated;
      }
    }
  }
  std::printf(
      "[kill -9] 8 clients, R=2: puts acked %llu (%llu while n1 was down), put failures %llu; "
      "gets ok %llu, failed %llu, wrong %llu\n",
      (unsigned long long)puts_acked.load(), (unsigned long long)acked_while_down,
      (unsigned long long)put_failures.load(), (unsigned long long)gets_ok.load(),
      (unsigned long long)gets_failed.load(), (unsigned long long)gets_wrong.load());
  std::printf("[rejoin] n1 came back serving %llu blocks from its NVMe tier\n", (unsigned long long)kept_on_nvme);
  std::printf(
      "[rejoin] repair passes %llu, blocks copied %llu, copy errors %llu; final check: %llu of %llu "
      "acknowledged blocks intact, %llu owner copies missing\n",
      (unsigned long long)rs.passes, (unsigned long long)rs.blocks_copied, (unsigned long long)rs.copy_errors,
      (unsigned long long)final_ok, (unsigned long long)(final_ok + final_bad), (unsigned long long)under_replicated);
  for (int t = 0; t < kClients; ++t)
    if (!first_errors[t].empty()) std::printf("  client %d first get error: %s\n", t, first_errors[t].c_str());
  EXPECT_GT(puts_acked.load(), 500u);
  EXPECT_GT(acked_while_down, 0u);
  EXPECT_EQ(gets_failed.load(), 0u);
  EXPECT_EQ(gets_wrong.load(), 0u);
  EXPECT_EQ(final_bad, 0u);
  EXPECT_EQ(under_replicated, 0u);
  EXPECT_GT(kept_on_nvme, 0u);
}

// Acceptance 3: etcd stopped for 10 s; reads and writes to known nodes go on, a node that starts
// meanwhile joins once etcd is back, nothing is lost.
TEST(ClusterTest, EtcdOutageOfTenSecondsLosesNothing) {
  SKIP_WITHOUT_ETCD();
  LocalCluster cluster;
  ASSERT_TRUE(cluster.ok());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(cluster.StartNode(i));
  auto client = cluster.Client(2);
  ASSERT_TRUE(client);
  ASSERT_TRUE(WaitForMembers(*client, 3, 30s));
  constexpr uint64_t kSize = 8192;
  uint64_t written = 0;
  auto put_some = [&](int n) {
    for (int i = 0; i < n; ++i, ++written) {
      auto data = Content(kSize, written);
      Status s = client->Put(KeyOf("e", written), data.data(), kSize);
      if (!s.ok()) return s;
    }
    return Status::OK();
  };
  ASSERT_TRUE(put_some(300).ok());

  cluster.etcd().Stop();
  const auto outage_end = std::chrono::steady_clock::now() + 10s;
  ASSERT_TRUE(cluster.StartNode(3));  // its registration has to wait for etcd
  uint64_t puts_during = 0, gets_during = 0, failures_during = 0;
  std::vector<uint8_t> out(kSize);
  std::mt19937 rng(1);
  while (std::chrono::steady_clock::now() < outage_end) {
    Status s = put_some(20);
    if (s.ok())
      puts_during += 20;
    else
      ++failures_during;
    for (int i = 0; i < 20; ++i) {
      const uint64_t j = rng() % written;
      auto n = client->Get(KeyOf("e", j), out.data(), out.size());
      if (n.ok() && out == Content(kSize, j))
        ++gets_during;
      else
        ++failures_during;
    }
  }
  const ClusterStats during = client->stats();
  EXPECT_FALSE(during.etcd_reachable);
  EXPECT_EQ(client->members().size(), 3u) << "the member list must not change while etcd is down";

  ASSERT_TRUE(cluster.etcd().Restart().ok());
  const bool joined = WaitForMembers(*client, 4, 30s);
  uint64_t intact = 0;
  for (uint64_t j = 0; j < written; ++j) {
    auto n = client->Get(KeyOf("e", j), out.data(), out.size());
    if (n.ok() && out == Content(kSize, j)) ++intact;
  }
  std::printf(
      "[etcd down 10 s] puts %llu, gets %llu, failures %llu during the outage (etcd errors seen %llu); "
      "after: %llu of %llu blocks intact, members %zu (the 4th joined: %s)\n",
      (unsigned long long)puts_during, (unsigned long long)gets_during, (unsigned long long)failures_during,
      (unsigned long long)during.etcd_errors, (unsigned long long)intact, (unsigned long long)written,
      client->members().size(), joined ? "yes" : "no");
  EXPECT_GT(puts_during, 0u);
  EXPECT_GT(gets_during, 0u);
  EXPECT_EQ(failures_during, 0u);
  EXPECT_TRUE(joined);
  EXPECT_EQ(intact, written);
}

// The cluster behind the single-node CacheClient interface (what the worker is written against).
// Node index of a node id "n<i>".
int IndexOf(const std::string& node_id) { return std::stoi(node_id.substr(1)); }

uint64_t RamMisses(ClusterClient& client, const std::vector<ClusterMember>& members) {
  uint64_t misses = 0;
  for (const ClusterMember& m : members) {
    auto node = client.NodeClient(m.node_id);
    EXPECT_TRUE(node.ok()) << node.status().ToString();
    if (!node.ok()) continue;
    auto stats = (*node)->NodeStats();
    EXPECT_TRUE(stats.ok()) << stats.status().ToString();
    if (stats.ok()) misses += stats->ram.misses;
  }
  return misses;
}

// R = 2 on 4 nodes. A get whose first replica answers DATA_LOSS (a byte flipped in its NVMe copy)
// or NOT_FOUND (evicted there) is served from the other replica with the right bytes; a key on no
// node is NOT_FOUND after exactly R + extra_probes probes.
TEST(ClusterTest, GetFailsOverToTheOtherReplicaOnDataLossOrNotFoundAndAMissProbesABoundedNumberOfNodes) {
  SKIP_WITHOUT_ETCD();
  LocalCluster cluster("32MiB");
  ASSERT_TRUE(cluster.ok());
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(cluster.StartNode(i));
  ClusterClientOptions o;
  o.etcd = cluster.etcd().url();
  o.replication = 2;
  o.extra_probes = 1;  // a get tries at most 3 of the 4 nodes
  o.node.timeout = 5000ms;
  auto connected = ClusterClient::Connect(o);
  ASSERT_TRUE(connected.ok()) << connected.status().ToString();
  ClusterClient& client = **connected;
  ASSERT_TRUE(WaitForMembers(client, 4, 30s));
  constexpr uint64_t kSize = 256 << 10;
  std::vector<uint8_t> out(kSize);

  // DATA_LOSS on the first replica: its only block, flushed to NVMe, a byte flipped on disk while
  // the node is down; restarted, the node finds the damage when it reads the block.
  const BlockKey lossy = KeyOf("failover-data-loss", 0);
  const std::vector<std::string> lossy_owners = client.Owners(lossy);
  ASSERT_EQ(lossy_owners.size(), 2u);
  const int first = IndexOf(lossy_owners[0]);
  const auto lossy_data = Content(kSize, 1);
  ASSERT_TRUE(client.Put(lossy, lossy_data.data(), lossy_data.size()).ok());
  {
    auto node = client.NodeClient(lossy_owners[0]);
    ASSERT_TRUE(node.ok()) << node.status().ToString();
    ASSERT_TRUE((*node)->Flush().ok());
    auto listed = (*node)->List(10);
    ASSERT_TRUE(listed.ok());
    ASSERT_EQ(listed->size(), 1u) << "the first replica must hold only the block to damage";
  }
  cluster.node(first).Kill9();
  int flipped = 0;
  for (const auto& entry : std::filesystem::directory_iterator(cluster.nvme_dir(first))) {
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
  ASSERT_EQ(flipped, 1) << "expected the one blob file of " << cluster.nvme_dir(first);
  ASSERT_TRUE(cluster.StartNode(first));
  // The client must see the restarted node (its new address) before the get.
  const std::string restarted = cluster.node(first).address();
  bool seen = false;
  for (const auto deadline = std::chrono::steady_clock::now() + 30s;
       !seen && std::chrono::steady_clock::now() < deadline;) {
    (void)client.RefreshMembership();
    for (const ClusterMember& m : client.members()) seen |= m.node_id == lossy_owners[0] && m.grpc == restarted;
    if (!seen) std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(seen) << lossy_owners[0] << " never re-registered at " << restarted;
  ASSERT_EQ(client.Owners(lossy), lossy_owners);

  ClusterStats before = client.stats();
  auto got = client.Get(lossy, out.data(), out.size());
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(*got, kSize);
  EXPECT_TRUE(out == lossy_data) << "the failover served wrong bytes";
  EXPECT_EQ(client.stats().get_failovers, before.get_failovers + 1);
  EXPECT_EQ(client.stats().failed_gets, before.failed_gets);
  {
    auto node = client.NodeClient(lossy_owners[0]);
    ASSERT_TRUE(node.ok()) << node.status().ToString();
    auto stats = (*node)->NodeStats();
    ASSERT_TRUE(stats.ok());
    EXPECT_EQ(stats->checksum_failures, 1u) << "the first replica was not asked, or did not answer DATA_LOSS";
  }

  // NOT_FOUND on the first replica: evicted there, directly.
  const BlockKey evicted = KeyOf("failover-not-found", 0);
  const std::vector<std::string> evicted_owners = client.Owners(evicted);
  const auto evicted_data = Content(kSize, 2);
  ASSERT_TRUE(client.Put(evicted, evicted_data.data(), evicted_data.size()).ok());
  {
    auto node = client.NodeClient(evicted_owners[0]);
    ASSERT_TRUE(node.ok()) << node.status().ToString();
    ASSERT_TRUE((*node)->Evict(evicted).ok());
    EXPECT_EQ((*node)->Stat(evicted).status().code(), StatusCode::kNotFound);
  }
  before = client.stats();
  std::fill(out.begin(), out.end(), 0);
  got = client.Get(evicted, out.data(), out.size());
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(out == evicted_data) << "the failover served wrong bytes";
  EXPECT_EQ(client.stats().get_failovers, before.get_failovers + 1);

  // A true miss: NOT_FOUND after R + extra_probes = 3 probes (of 4 nodes), quickly.
  const std::vector<ClusterMember> members = client.members();
  ASSERT_EQ(members.size(), 4u);
  const uint64_t misses_before = RamMisses(client, members);
  before = client.stats();
  const BlockKey nowhere = KeyOf("failover-nowhere", 0);
  const auto t0 = std::chrono::steady_clock::now();
  got = client.Get(nowhere, out.data(), out.size());
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), StatusCode::kNotFound) << got.status().ToString();
  EXPECT_NE(got.status().message().find("none of its 3 candidate node(s)"), std::string::npos)
      << got.status().ToString();
  EXPECT_EQ(RamMisses(client, members) - misses_before, 3u) << "a miss must probe exactly R + extra_probes nodes";
  EXPECT_EQ(client.stats().get_failovers, before.get_failovers + 1) << "an item counts one failover";
  EXPECT_LT(took, 2s) << "a miss on healthy nodes must not wait for timeouts";
}

TEST(ClusterTest, ClusterServesTheCacheClientInterface) {
  SKIP_WITHOUT_ETCD();
  LocalCluster cluster;
  ASSERT_TRUE(cluster.ok());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(cluster.StartNode(i));
  ClusterClientOptions o;
  o.etcd = cluster.etcd().url();
  o.replication = 2;
  auto client = ConnectClusterAsCacheClient(o);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  CacheClient& c = **client;
  auto buffer = c.AllocateBuffer(4096);
  ASSERT_TRUE(buffer.ok());
  std::vector<BlockKey> chain;
  for (int i = 0; i < 20; ++i) {
    chain.push_back(KeyOf("chain", i));
    auto data = Content(4096, i);
    ASSERT_TRUE(c.Put(chain.back(), data.data(), data.size()).ok());
  }
  for (int i = 0; i < 20; ++i) {
    auto n = c.Get(chain[i], *buffer, 4096);
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    EXPECT_EQ(std::vector<uint8_t>(*buffer, *buffer + 4096), Content(4096, i));
  }
  auto info = c.Stat(chain[3]);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->size, 4096u);
  chain.push_back(KeyOf("chain-missing", 0));
  auto prefix = c.LongestPrefix(chain);
  ASSERT_TRUE(prefix.ok());
  EXPECT_EQ(*prefix, 20u);
  auto stats = c.NodeStats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->ram.items + stats->nvme.items, 40u) << "20 blocks, 2 replicas each";
  auto list = c.List(1000);
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->size(), 20u);
  ASSERT_TRUE(c.Evict(chain[0]).ok());
  EXPECT_EQ(c.Stat(chain[0]).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(c.Health().ok());
  EXPECT_EQ(c.stats().data_path, "cluster");
}

}  // namespace
}  // namespace foresight
