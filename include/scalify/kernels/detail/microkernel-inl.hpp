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
// epilogue writes only the valid part. The driver also uses each kernel with
// MR - 1 rows (microkernel::short_tile), on panels packed MR - 1 high.
//
// No include guard on purpose (one inclusion per path).
#if !defined(SCALIFY_SIMD_NS) || !defined(SCALIFY_SIMD_BEGIN_TARGET) || !defined(SCALIFY_SIMD_END_TARGET)
#error "Include scalify/kernels/microkernels.hpp instead of this file."
#endif

SCALIFY_SIMD_BEGIN_TARGET
namespace scalify::kernels::SCALIFY_SIMD_NS {

using namespace ::scalify::simd::SCALIFY_SIMD_NS;  // the path's vector types (simd/)

/// The accumulators of one tile: loaded from `c_in` (Accumulate) or zero,
/// then ku units added (see the file comment), then handed to finish(acc).
/// `Accumulate` is fixed at compile time so that the accumulators stay in
/// registers from the first load to the last use (a run-time choice made GCC
/// spill and reload all of them around the k loop).
template <int MR, int NV, bool Accumulate, class Finish>
SCALIFY_ALWAYS_INLINE void gemm_tile_f32_impl(std::ptrdiff_t ku, const uint32_t* a, const uint32_t* b,
                                              const float* c_in, Finish&& finish) {
  constexpr int NR = NV * static_cast<int>(kF32Lanes);
  f32x acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      if constexpr (Accumulate) {
        acc[i][v] = f32_load(c_in + i * NR + v * kF32Lanes);
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
  finish(acc);
}

/// Stores the accumulators as the tile c[i * NR + j].
template <int MR, int NV>
SCALIFY_ALWAYS_INLINE void store_tile(f32x (&acc)[MR][NV], float* c) {
  constexpr int NR = NV * static_cast<int>(kF32Lanes);
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) f32_store(c + i * NR + v * kF32Lanes, acc[i][v]);
  }
}

/// store_tile_epilogue's loop with beta and ReLU fixed at compile time, so
/// the 2 x MR x NV vector steps have no branches; returns the amax lanes.
template <int MR, int NV, bool Beta, bool Relu>
SCALIFY_ALWAYS_INLINE f32x store_tile_epilogue_as(f32x (&acc)[MR][NV], const kernels::f32_tile_out& out, f32x alpha,
                                                  f32x beta, const f32x (&bias)[NV], f32x amax) {
  const f32x zero = f32_zero();
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      float* p = out.c + i * out.ldc + v * static_cast<std::ptrdiff_t>(kF32Lanes);
      f32x x = f32_mul_rounded(alpha, acc[i][v]);  // never fused into the bias add below
      if constexpr (Beta) x = f32_fmadd(beta, f32_load(p), x);
      x = f32_add(x, bias[v]);
      if constexpr (Relu) x = f32_max(x, zero);
      f32_store(p, x);
      amax = f32_max(f32_abs(x), amax);
    }
  }
  return amax;
}

/// The float32 epilogue (kernels/epilogue.hpp) applied to the accumulators
/// and stored into C: per element v = alpha * acc, v = fma(beta, C, v) if
/// beta != 0, v += bias[j] (without a bias, v += -0, which changes no value,
/// -0 included), v = max(v, 0) if relu (NaN and -0 give +0), C = v, amax
/// lanes = max(|v|, amax) (NaN skipped; not stored if out.amax is null). The
/// operations and their order are epilogue_tile's, so the bits are the same.
template <int MR, int NV>
SCALIFY_ALWAYS_INLINE void store_tile_epilogue(f32x (&acc)[MR][NV], const kernels::f32_tile_out& out) {
  const f32x alpha = f32_set1(out.alpha), beta = f32_set1(out.beta);
  f32x bias[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) bias[v] = out.bias != nullptr ? f32_load(out.bias + v * kF32Lanes) : f32_set1(-0.0f);
  f32x amax = out.amax != nullptr ? f32_load(out.amax) : f32_zero();
  if (out.beta != 0.0f) {
    amax = out.relu ? SCALIFY_SIMD_NS::store_tile_epilogue_as<MR, NV, true, true>(acc, out, alpha, beta, bias, amax)
                    : SCALIFY_SIMD_NS::store_tile_epilogue_as<MR, NV, true, false>(acc, out, alpha, beta, bias, amax);
  } else {
    amax = out.relu ? SCALIFY_SIMD_NS::store_tile_epilogue_as<MR, NV, false, true>(acc, out, alpha, beta, bias, amax)
                    : SCALIFY_SIMD_NS::store_tile_epilogue_as<MR, NV, false, false>(acc, out, alpha, beta, bias, amax);
  }
  if (out.amax != nullptr) f32_store(out.amax, amax);
}

/// MR x (NV * kF32Lanes) float32 tile, one FMA per unit (see the file comment).
template <int MR, int NV>
void gemm_tile_f32(std::ptrdiff_t ku, const uint32_t* a, const uint32_t* b, float* c, bool accumulate) {
  auto store = [c](f32x(&acc)[MR][NV]) SCALIFY_LAMBDA_ALWAYS_INLINE { SCALIFY_SIMD_NS::store_tile<MR, NV>(acc, c); };
  if (accumulate) {
    gemm_tile_f32_impl<MR, NV, true>(ku, a, b, c, store);
  } else {
    gemm_tile_f32_impl<MR, NV, false>(ku, a, b, c, store);
  }
}

/// The same tile, finished by the float32 epilogue straight into C (the last
/// pass over k of a full tile): accumulates onto the tile `acc_in`, or from
/// zero if it is null.
template <int MR, int NV>
void gemm_tile_f32_out(std::ptrdiff_t ku, const uint32_t* a, const uint32_t* b, const float* acc_in,
                       const kernels::f32_tile_out& out) {
  auto finish = [&out](f32x(&acc)[MR][NV]) SCALIFY_LAMBDA_ALWAYS_INLINE {
    SCALIFY_SIMD_NS::store_tile_epilogue<MR, NV>(acc, out);
  };
  if (acc_in != nullptr) {
    gemm_tile_f32_impl<MR, NV, true>(ku, a, b, acc_in, finish);
  } else {
    gemm_tile_f32_impl<MR, NV, false>(ku, a, b, acc_in, finish);
  }
}

#ifdef SCALIFY_SIMD_HAS_BF16
/// gemm_tile_f32_impl over bfloat16 pairs (vdpbf16ps; see the file comment).
template <int MR, int NV, class Finish>
SCALIFY_ALWAYS_INLINE void gemm_tile_bf16_impl(std::ptrdiff_t ku, const uint32_t* a, const uint32_t* b,
                                               const float* c_in, Finish&& finish) {
  constexpr int NR = NV * static_cast<int>(kF32Lanes);
  f32x acc[MR][NV];
  for (int i = 0; i < MR; ++i) {
    for (int v = 0; v < NV; ++v) acc[i][v] = c_in != nullptr ? f32_load(c_in + i * NR + v * kF32Lanes) : f32_zero();
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
  finish(acc);
}

/// MR x (NV * kF32Lanes) tile over bfloat16 pairs (vdpbf16ps; see the file comment).
template <int MR, int NV>
void gemm_tile_bf16(std::ptrdiff_t ku, const uint32_t* a, const uint32_t* b, float* c, bool accumulate) {
  gemm_tile_bf16_impl<MR, NV>(ku, a, b, accumulate ? c : nullptr, [c](f32x(&acc)[MR][NV]) SCALIFY_LAMBDA_ALWAYS_INLINE {
    SCALIFY_SIMD_NS::store_tile<MR, NV>(acc, c);
  });
}

/// gemm_tile_bf16 finished by the float32 epilogue straight into C (as gemm_tile_f32_out).
template <int MR, int NV>
void gemm_tile_bf16_out(std::ptrdiff_t ku, const uint32_t* a, const uint32_t* b, const float* acc_in,
                        const kernels::f32_tile_out& out) {
  gemm_tile_bf16_impl<MR, NV>(ku, a, b, acc_in, [&out](f32x(&acc)[MR][NV]) SCALIFY_LAMBDA_ALWAYS_INLINE {
    SCALIFY_SIMD_NS::store_tile_epilogue<MR, NV>(acc, out);
  });
}
#endif

}  // namespace scalify::kernels::SCALIFY_SIMD_NS
SCALIFY_SIMD_END_TARGET
