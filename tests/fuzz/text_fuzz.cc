// Fuzz target: the text parsers that read operator and cluster input. The first byte picks one:
//   0  ParseByteSize (--ram-bytes 512MiB), which must agree with FormatByteSize where it accepts
//   1  ParseIntList (--budget 64,128)
//   2  BlockKey::FromHex (the CLI's hex keys), which must round-trip through ToHex
//   3  ParseClusterMember (a node's entry in etcd's member list, written by another process)
//   4  ParseHugePages (--huge-pages auto|on|off)
// Bad text gets an error; nothing throws or crashes.
#include "cache_service/arena_memory.h"
#include "cluster/cluster_client.h"
#include "common/block_key.h"
#include "common/units.h"
#include "tests/fuzz/fuzz_target.h"

namespace foresight::fuzz {

std::vector<std::string> Seeds() {
  return {
      std::string("\x00") + "512MiB",
      std::string("\x00") + "8GiB",
      std::string("\x00") + "1.5KiB",
      std::string("\x00") + "4096",
      std::string("\x01") + "64,128,2048",
      std::string("\x02") + "00112233445566778899aabbccddeeff",
      std::string("\x03") + R"({"node_id":"node-a","grpc":"127.0.0.1:7000","ucx_port":41000,"nvme":true,)"
                            R"("incarnation":"17","started_at":1764000000})",
      std::string("\x04") + "auto",
  };
}

}  // namespace foresight::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace foresight;
  if (size == 0) return 0;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 5) {
    case 0: {
      auto n = ParseByteSize(text);
      if (!n.ok()) {
        FUZZ_CHECK(!n.status().message().empty(), "a refused size says why");
        break;
      }
      // FormatByteSize prints 4 significant digits for people: what it prints is either a whole
      // number of bytes within 0.1% of the size, or refused as a fraction of a byte.
      auto again = ParseByteSize(FormatByteSize(*n));
      if (again.ok()) {
        const double a = static_cast<double>(*n), b = static_cast<double>(*again);
        FUZZ_CHECK(b >= a * 0.999 && b <= a * 1.001, "FormatByteSize is within 0.1%");
      } else {
        FUZZ_CHECK(again.status().message().find("whole number of bytes") != std::string::npos,
                   again.status().message().c_str());
      }
      break;
    }
    case 1: {
      auto list = ParseIntList(text, "--budget", 1, 1 << 20);
      if (list.ok()) {
        FUZZ_CHECK(!list->empty(), "a parsed list has an item");
        for (int64_t v : *list) FUZZ_CHECK(v >= 1 && v <= (1 << 20), "items lie in [min, max]");
      } else {
        FUZZ_CHECK(list.status().message().find("--budget") != std::string::npos, "the error names the flag");
      }
      break;
    }
    case 2: {
      auto key = BlockKey::FromHex(text);
      if (key.ok()) {
        auto again = BlockKey::FromHex(key->ToHex());
        FUZZ_CHECK(again.ok() && *again == *key, "ToHex round-trips");
      }
      break;
    }
    case 3: {
      auto member = ParseClusterMember(text);
      if (member.ok())
        FUZZ_CHECK(!member->node_id.empty() && !member->grpc.empty(), "a member has an id and an address");
      break;
    }
    default: {
      auto mode = ParseHugePages(text);
      if (!mode.ok()) FUZZ_CHECK(!mode.status().message().empty(), "a refused mode says why");
      break;
    }
  }
  return 0;
}
