// The block checksum: XXH3-64 over a block's bytes. Computed by the writer, verified when a block
// crosses a tier and by every reader. This is the one place it is defined.
#pragma once

#include <cstddef>
#include <cstdint>

namespace foresight {

uint64_t BlockChecksum(const void* data, size_t size);

}  // namespace foresight
