// A real foresight-cached (testing/local_node.h) and a CacheClient connected to it, for the worker's
// offload tests.
//
//   auto cache = LocalCache::Start({"--ram-bytes", "256MiB"});
//   ASSERT_TRUE(cache.ok()) << cache.status().ToString();
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "client/cache_client.h"
#include "testing/local_node.h"

namespace foresight {

struct LocalCache {
  std::unique_ptr<LocalNode> node;
  std::unique_ptr<CacheClient> client;

  static StatusOr<LocalCache> Start(std::vector<std::string> node_args) {
    LocalCache c;
    FS_ASSIGN_OR_RETURN(c.node, LocalNode::Start(std::move(node_args)));
    CacheClientOptions o;
    o.address = c.node->address();
    FS_ASSIGN_OR_RETURN(c.client, CacheClient::Connect(o));
    return c;
  }
};

}  // namespace foresight
