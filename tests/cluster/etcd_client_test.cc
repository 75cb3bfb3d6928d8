// EtcdClient against a real etcd on loopback (skipped when etcd is not installed).
#include <thread>

#include <gtest/gtest.h>

#include "cluster/etcd_client.h"
#include "tests/cluster/local_etcd.h"

namespace foresight {
namespace {

TEST(EtcdClientTest, Base64RoundTripsEveryLengthAndByte) {
  std::string bytes;
  for (int i = 0; i < 300; ++i) {
    bytes.push_back(static_cast<char>(i * 37));
    auto back = EtcdClient::Base64Decode(EtcdClient::Base64Encode(bytes));
    ASSERT_TRUE(back.ok());
    ASSERT_EQ(*back, bytes) << "length " << bytes.size();
  }
  EXPECT_EQ(EtcdClient::Base64Encode("foo"), "Zm9v");
  EXPECT_EQ(EtcdClient::Base64Encode("fo"), "Zm8=");
  EXPECT_FALSE(EtcdClient::Base64Decode("Zm9v!").ok());
}

TEST(EtcdClientTest, RejectsBadEndpoints) {
  EXPECT_FALSE(EtcdClient::Create("").ok());
  EXPECT_FALSE(EtcdClient::Create("https://a:1").ok());
  EXPECT_FALSE(EtcdClient::Create("http://a").ok());
}

TEST(EtcdClientTest, UnreachableEtcdIsUnavailableAndNamesTheUrl) {
  RefusingLoopbackPort refusing;
  auto etcd = EtcdClient::Create("http://127.0.0.1:" + std::to_string(refusing.port()), std::chrono::milliseconds(300));
  ASSERT_TRUE(etcd.ok());
  auto r = (*etcd)->RangePrefix("/x/");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  EXPECT_NE(r.status().message().find("127.0.0.1"), std::string::npos);
}

TEST(EtcdClientTest, KeysRangesDeletesAndLeasesOnRealEtcd) {
  if (LocalEtcd::Binary().empty()) GTEST_SKIP() << "etcd not installed (apt-get install etcd-server)";
  auto server = LocalEtcd::Start();
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  auto etcd = EtcdClient::Create((*server)->url());
  ASSERT_TRUE(etcd.ok());
  EtcdClient& c = **etcd;

  const std::string binary("v\0\xff\x01", 4);
  ASSERT_TRUE(c.Put("/t/a", binary).ok());
  ASSERT_TRUE(c.Put("/t/b", "2").ok());
  ASSERT_TRUE(c.Put("/u/c", "3").ok());
  auto a = c.Get("/t/a");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->value, binary);
  EXPECT_EQ(c.Get("/t/zz").status().code(), StatusCode::kNotFound);
  auto range = c.RangePrefix("/t/");
  ASSERT_TRUE(range.ok());
  ASSERT_EQ(range->kvs.size(), 2u);
  EXPECT_EQ(range->kvs[0].key, "/t/a");
  EXPECT_EQ(range->kvs[1].key, "/t/b");
  EXPECT_GT(range->revision, 0);
  auto deleted = c.Delete("/t/b");
  ASSERT_TRUE(deleted.ok());
  EXPECT_EQ(*deleted, 1);

  auto lease = c.GrantLease(2);
  ASSERT_TRUE(lease.ok()) << lease.status().ToString();
  ASSERT_TRUE(c.Put("/l/k", "x", *lease).ok());
  auto ttl = c.KeepAliveOnce(*lease);
  ASSERT_TRUE(ttl.ok()) << ttl.status().ToString();
  EXPECT_EQ(*ttl, 2);
  EXPECT_EQ(c.Get("/l/k")->lease, *lease);
  ASSERT_TRUE(c.RevokeLease(*lease).ok());
  EXPECT_EQ(c.Get("/l/k").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(c.KeepAliveOnce(*lease).status().code(), StatusCode::kNotFound);

  // With several endpoints, a dead one is skipped.
  RefusingLoopbackPort dead;
  auto multi = EtcdClient::Create("http://127.0.0.1:" + std::to_string(dead.port()) + "," + (*server)->url(),
                                  std::chrono::milliseconds(500));
  ASSERT_TRUE(multi.ok());
  auto via_second = (*multi)->Get("/u/c");
  ASSERT_TRUE(via_second.ok()) << via_second.status().ToString();
  EXPECT_EQ(via_second->value, "3");

  // A lease that is not kept alive expires and takes its keys with it.
  auto short_lease = c.GrantLease(1);
  ASSERT_TRUE(short_lease.ok());
  const auto granted = std::chrono::steady_clock::now();
  ASSERT_TRUE(c.Put("/l/short", "x", *short_lease).ok());
  EXPECT_TRUE(c.Get("/l/short").ok());
  const auto deadline = granted + std::chrono::seconds(15);
  while (c.Get("/l/short").ok() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const double gone_after = std::chrono::duration<double>(std::chrono::steady_clock::now() - granted).count();
  EXPECT_EQ(c.Get("/l/short").status().code(), StatusCode::kNotFound) << "still there after " << gone_after << " s";
  // etcd expires a lease no earlier than its TTL (its leader may take a while longer to notice).
  EXPECT_GE(gone_after, 0.9);
}

}  // namespace
}  // namespace foresight
