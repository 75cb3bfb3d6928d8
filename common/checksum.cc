#include "common/checksum.h"

// Compiled inline, so that it uses this build's AVX2 (Debian's libxxhash is built for baseline
// x86-64 and measured several times slower, docs/perf-notes.md; the hash values are identical).
#define XXH_INLINE_ALL
#include <xxhash.h>

namespace foresight {

uint64_t BlockChecksum(const void* data, size_t size) { return XXH3_64bits(data, size); }

}  // namespace foresight
