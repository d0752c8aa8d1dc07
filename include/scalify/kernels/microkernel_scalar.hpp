// scalify: the portable reference GEMM micro-kernels, templated on the tile
// shape so tests can hit any edge, and an exact emulation of vdpbf16ps.
//
// Same contract as the SIMD kernels (docs/kernels.md, restated in
// kernels/detail/microkernel-inl.hpp):
//
//   c[i * NR + j]  (accumulate ? += : =)  sum over u < ku of  A(i, u) . B(u, j)
//
// with a[u * MR + i], b[u * NR + j] the packed panels. gemm_tile_f32_ref does
// one std::fma per unit in the order u = 0, 1, ...: the SIMD f32 kernels do the
// same per lane, so every path gives the same bits. gemm_tile_bf16_ref applies
// dpbf16_lane() per unit, the order of vdpbf16ps.
#ifndef SCALIFY_KERNELS_MICROKERNEL_SCALAR_HPP_
#define SCALIFY_KERNELS_MICROKERNEL_SCALAR_HPP_

#include <bit>      // std::bit_cast
#include <cmath>    // std::fma
#include <cstddef>  // ptrdiff_t
#include <cstdint>  // uint32_t

namespace scalify::kernels::scalar {

/// A bfloat16 (the low or high half of `pair`) as float32, denormals read as
/// zero (sign kept), as vdpbf16ps reads its inputs.
constexpr float bf16_half_daz(uint32_t pair, bool high) {
  const uint32_t bits = high ? (pair & 0xFFFF'0000u) : (pair << 16);
  const bool denormal = (bits & 0x7F80'0000u) == 0;
  return std::bit_cast<float>(denormal ? (bits & 0x8000'0000u) : bits);
}

/// Flushes a denormal float32 to zero of the same sign (FTZ).
constexpr float flush_denormal(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  return (bits & 0x7F80'0000u) == 0 ? std::bit_cast<float>(bits & 0x8000'0000u) : x;
}

/// One lane of vdpbf16ps (Intel SDM, "VDPBF16PS"): two fused multiply-adds in
/// round-to-nearest-even, the high (odd-k) pair first, then the low one; inputs
/// (both bfloat16 and the accumulator) with denormals read as zero, each result
/// flushed to zero if denormal; MXCSR is ignored.
inline float dpbf16_lane(float acc, uint32_t a_pair, uint32_t b_pair) {
  float r = flush_denormal(acc);
  r = flush_denormal(std::fma(bf16_half_daz(a_pair, true), bf16_half_daz(b_pair, true), r));
  r = flush_denormal(std::fma(bf16_half_daz(a_pair, false), bf16_half_daz(b_pair, false), r));
  return r;
}

/// Reference float32 tile: c (MR x NR, row-major) (+)= A panel * B panel, one
/// std::fma per unit in order.
template <int MR, int NR>
void gemm_tile_f32_ref(std::ptrdiff_t ku, const uint32_t* a, const uint32_t* b, float* c, bool accumulate) {
  float acc[MR][NR];
  for (int i = 0; i < MR; ++i) {
    for (int j = 0; j < NR; ++j) acc[i][j] = accumulate ? c[i * NR + j] : 0.0f;
  }
  for (std::ptrdiff_t u = 0; u < ku; ++u) {
    for (int i = 0; i < MR; ++i) {
      const float ai = std::bit_cast<float>(a[u * MR + i]);
      for (int j = 0; j < NR; ++j) acc[i][j] = std::fma(ai, std::bit_cast<float>(b[u * NR + j]), acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int j = 0; j < NR; ++j) c[i * NR + j] = acc[i][j];
  }
}

/// Reference bfloat16-pair tile: one dpbf16_lane() per unit.
template <int MR, int NR>
void gemm_tile_bf16_ref(std::ptrdiff_t ku, const uint32_t* a, const uint32_t* b, float* c, bool accumulate) {
  for (int i = 0; i < MR; ++i) {
    for (int j = 0; j < NR; ++j) {
      float acc = accumulate ? c[i * NR + j] : 0.0f;
      for (std::ptrdiff_t u = 0; u < ku; ++u) acc = dpbf16_lane(acc, a[u * MR + i], b[u * NR + j]);
      c[i * NR + j] = acc;
    }
  }
}

}  // namespace scalify::kernels::scalar

#endif  // SCALIFY_KERNELS_MICROKERNEL_SCALAR_HPP_
