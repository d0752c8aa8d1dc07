// scalify: the GEMM micro-kernels, written once for every SIMD path.
//
// Included once per path by scalify/kernels/microkernels.hpp (through
// scalify/simd/foreach_path.hpp) with
// SCALIFY_SIMD_NS naming the path (avx2, avx512, avx512bf16) and
// SCALIFY_SIMD_BEGIN_TARGET / SCALIFY_SIMD_END_TARGET opening and closing its
// target region; `f32x` and its helpers come from scalify/simd/f32_<path>.hpp.
// SCALIFY_SIMD_HAS_BF16 adds the bfloat16-pair kernel (vdpbf16ps). The tests
// include it once more over a portable 16-lane emulation
// (tests/support/f32_emulated.hpp), so the AVX-512 kernel logic is checked on
// any CPU.
//
// The contract (docs/kernels.md), for a tile of MR x NR, NR = NV * kF32Lanes:
//
//   c[i * NR + j]  (accumulate ? += : =)  sum over u < ku of  A(i, u) . B(u, j)
//
//   a: ku units of MR 32-bit values: a[u * MR + i]   (packed A micro-panel)
//   b: ku units of NR 32-bit values: b[u * NR + j]   (packed B micro-panel)
//   f32 kernel:  a unit is one float32 and A(i,u).B(u,j) one fused multiply-add,
//                applied in the order u = 0, 1, ... (the scalar reference's order);
//   bf16 kernel: a unit is a pair of bfloat16 (k = 2u in the low half, 2u + 1 in
//                the high half) and A.B is vdpbf16ps: the odd k first, then the even.
// Edges are padded with zeros by the packing, so the tile is always full; the
// epilogue writes only the valid part.
//
// No include guard on purpose (one inclusion per path).
#if !defined(SCALIFY_SIMD_NS) || !defined(SCALIFY_SIMD_BEGIN_TARGET) || !defined(SCALIFY_SIMD_END_TARGET)
#error "Include scalify/kernels/microkernels.hpp instead of this file."
#endif

SCALIFY_SIMD_BEGIN_TARGET
namespace scalify::simd::SCALIFY_SIMD_NS {

/// gemm_tile_f32 with `accumulate` fixed at compile time: the accumulators stay
/// in registers from the first load (or zero) to the final store (a run-time
/// choice made GCC spill and reload all of them around the k loop).
template <int MR, int NV, bool Accumulate>
SCALIFY_ALWAYS_INLINE void gemm_tile_f32_impl(std::ptrdiff_t ku, const uint32_t* a, const uint32_t* b, float* c) {
  constexpr int NR = NV * static_cast<int>(kF32Lanes);
  f32x acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      if constexpr (Accumulate) {
        acc[i][v] = f32_load(c + i * NR + v * kF32Lanes);
      } else {
        acc[i][v] = f32_zero();
      }
    }
  }
  for (std::ptrdiff_t u = 0; u < ku; ++u) {
    f32x bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = f32_load(b + u * NR + v * kF32Lanes);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const f32x ai = f32_broadcast(a + u * MR + i);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = f32_fmadd(ai, bv[v], acc[i][v]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) f32_store(c + i * NR + v * kF32Lanes, acc[i][v]);
  }
}

/// MR x (NV * kF32Lanes) float32 tile, one FMA per unit (see the file comment).
template <int MR, int NV>
void gemm_tile_f32(std::ptrdiff_t ku, const uint32_t* a, const uint32_t* b, float* c, bool accumulate) {
  if (accumulate) {
    gemm_tile_f32_impl<MR, NV, true>(ku, a, b, c);
  } else {
    gemm_tile_f32_impl<MR, NV, false>(ku, a, b, c);
  }
}

#ifdef SCALIFY_SIMD_HAS_BF16
/// MR x (NV * kF32Lanes) tile over bfloat16 pairs (vdpbf16ps; see the file comment).
template <int MR, int NV>
void gemm_tile_bf16(std::ptrdiff_t ku, const uint32_t* a, const uint32_t* b, float* c, bool accumulate) {
  constexpr int NR = NV * static_cast<int>(kF32Lanes);
  f32x acc[MR][NV];
  for (int i = 0; i < MR; ++i) {
    for (int v = 0; v < NV; ++v) acc[i][v] = accumulate ? f32_load(c + i * NR + v * kF32Lanes) : f32_zero();
  }
  for (std::ptrdiff_t u = 0; u < ku; ++u) {
    bf16x2 bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = bf16x2_load(b + u * NR + v * kF32Lanes);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const bf16x2 ai = bf16x2_broadcast(a + u * MR + i);
      for (int v = 0; v < NV; ++v) acc[i][v] = f32_dpbf16(acc[i][v], ai, bv[v]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int v = 0; v < NV; ++v) f32_store(c + i * NR + v * kF32Lanes, acc[i][v]);
  }
}
#endif

}  // namespace scalify::simd::SCALIFY_SIMD_NS
SCALIFY_SIMD_END_TARGET
