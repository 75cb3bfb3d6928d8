// EtcdClient: a small client of etcd v3 (3.4) over its JSON gateway (http://HOST:PORT/v3/...).
//
// Generic: it knows keys, values, leases and revisions, nothing of Foresight. It speaks
// HTTP/1.1 over a plain TCP socket, one connection per call ("Connection: close"), so a call never
// waits behind another and a dead etcd costs at most `timeout`. Keys and values are raw bytes here;
// the base64 of the gateway stays inside the .cc file.
//
//   auto etcd = EtcdClient::Create("http://127.0.0.1:2379");
//   auto lease = etcd->GrantLease(10);                 // seconds
//   etcd->Put("/app/nodes/a", "{...}", *lease);
//   auto kvs = etcd->RangePrefix("/app/nodes/");
//   etcd->KeepAliveOnce(*lease);                       // NOT_FOUND once the lease expired
//
// Several endpoints may be given, comma-separated; a call tries them in turn until one answers.
// Errors are UNAVAILABLE when no endpoint answers (naming the URLs), and carry etcd's own message
// otherwise. Watches are not offered: callers poll RangePrefix, which is enough for membership
// (a few keys) and survives etcd restarts without a resume protocol.
//
// Thread-safety: all methods may be called concurrently.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace foresight {

struct EtcdKeyValue {
  std::string key, value;
  int64_t mod_revision = 0;
  int64_t lease = 0;
};

struct EtcdRange {
  std::vector<EtcdKeyValue> kvs;
  int64_t revision = 0;  // the store's revision when the range was read
};

class EtcdClient {
 public:
  // `endpoints`: "http://HOST:PORT[,http://HOST:PORT...]" (https is not supported).
  static StatusOr<std::unique_ptr<EtcdClient>> Create(const std::string& endpoints,
                                                      std::chrono::milliseconds timeout = std::chrono::seconds(3));

  Status Put(const std::string& key, const std::string& value, int64_t lease = 0);
  // NOT_FOUND when the key is absent.
  StatusOr<EtcdKeyValue> Get(const std::string& key);
  // Every key that starts with `prefix`, in key order.
  StatusOr<EtcdRange> RangePrefix(const std::string& prefix);
  // Deletes `key`; returns how many keys were deleted (0 or 1).
  StatusOr<int64_t> Delete(const std::string& key);

  // A new lease of `ttl_seconds`; returns its id.
  StatusOr<int64_t> GrantLease(int64_t ttl_seconds);
  // Refreshes the lease once; returns the TTL it now has. NOT_FOUND when it expired or was revoked.
  StatusOr<int64_t> KeepAliveOnce(int64_t lease);
  // Revokes the lease, deleting every key attached to it.
  Status RevokeLease(int64_t lease);

  const std::string& endpoints() const { return endpoints_text_; }

  // The base64 the gateway uses (RFC 4648, padded); exposed for tests.
  static std::string Base64Encode(const std::string& bytes);
  static StatusOr<std::string> Base64Decode(const std::string& text);

 private:
  struct Endpoint {
    std::string host;
    uint16_t port = 0;
    std::string url;
  };
  EtcdClient() = default;
  // POSTs `body` to `path` on the first endpoint that answers; returns the response body (JSON).
  StatusOr<std::string> Call(const std::string& path, const std::string& body);
  StatusOr<std::string> CallOne(const Endpoint& e, const std::string& path, const std::string& body);

  std::vector<Endpoint> endpoints_;
  std::string endpoints_text_;
  std::chrono::milliseconds timeout_{3000};
};

}  // namespace foresight
