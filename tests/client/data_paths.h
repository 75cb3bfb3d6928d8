// The three data paths a CacheClient takes to a node on this host (gRPC; UCX over shared memory,
// with one-sided gets; UCX over TCP), for tests parameterised over them.
//
//   class MyTest : public ::testing::TestWithParam<PathCase> { ... ConnectOver(*node_, GetParam()) ... };
//   INSTANTIATE_TEST_SUITE_P(Paths, MyTest, AllDataPaths(), PathCaseName);
#pragma once

#include <memory>
#include <ostream>
#include <string>

#include <gtest/gtest.h>

#include "client/cache_client.h"
#include "testing/local_node.h"

namespace foresight {

struct PathCase {
  const char* name;
  DataPath path;
  const char* transports;
};
inline void PrintTo(const PathCase& c, std::ostream* os) { *os << c.name; }

inline auto AllDataPaths() {
  return ::testing::Values(PathCase{"grpc", DataPath::kGrpc, "auto"}, PathCase{"ucx_shm", DataPath::kUcx, "shm"},
                           PathCase{"ucx_tcp", DataPath::kUcx, "tcp"});
}
inline std::string PathCaseName(const ::testing::TestParamInfo<PathCase>& info) { return info.param.name; }

// A client of `node` over `c`'s data path.
inline StatusOr<std::unique_ptr<CacheClient>> ConnectOver(const LocalNode& node, const PathCase& c) {
  CacheClientOptions o;
  o.address = node.address();
  o.data_path = c.path;
  o.ucx_transports = c.transports;
  return CacheClient::Connect(o);
}

}  // namespace foresight
