// Which optional instruction sets the CPU kernels may use. The build targets AVX2/FMA/F16C; kernels
// with an AVX-512 form compile it with a target attribute and take it only where this says so.
// Each such kernel computes every lane as its AVX2 form does, so results do not depend on the CPU
// (tests/worker/quantized_kernels_test.cc compares the two).
//
// Thread-safety: safe; the answer is computed once.
#pragma once

namespace foresight::worker {

// True when the CPU has AVX-512 F, BW, VL, DQ and VNNI, unless FORESIGHT_NO_AVX512 is set to
// something other than 0 (to run and measure the AVX2 kernels on such a CPU).
bool UseAvx512();

}  // namespace foresight::worker
