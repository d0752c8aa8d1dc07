// scalify: a thin 8 x float32 vector type over AVX2 + FMA, for the GEMM
// micro-kernels written once over this interface
// (kernels/detail/microkernel-inl.hpp). simd/f32_avx512.hpp has the same
// interface at 16 lanes, tests/support/f32_emulated.hpp emulates it.
//
//   f32x  f32_zero(), f32_set1(x), f32_broadcast(p), f32_load(p), f32_store(p, v),
//         f32_fmadd(a, b, c) = a * b + c, f32_mul, f32_add, f32_abs(a),
//         f32_mul_rounded(a, b) = a * b, never fused into a following add by the compiler,
//         f32_max(a, b) = a > b ? a : b per lane (maxps: b when either is NaN or both are zeros)
//
// Loads take `const uint32_t*`: the packed GEMM panels hold float32 bits
// (or bfloat16 pairs) as 32-bit units.
#ifndef SCALIFY_SIMD_F32_AVX2_HPP_
#define SCALIFY_SIMD_F32_AVX2_HPP_

#include "scalify/config.hpp"  // SCALIFY_HAVE_X86_SIMD, SCALIFY_BEGIN_TARGET_AVX2

#if SCALIFY_HAVE_X86_SIMD
#include <immintrin.h>  // AVX2 intrinsics

#include <cstddef>  // size_t
#include <cstdint>  // uint32_t

SCALIFY_BEGIN_TARGET_AVX2
namespace scalify::simd::avx2 {

struct f32x {
  __m256 v;
};
inline constexpr std::size_t kF32Lanes = 8;

SCALIFY_ALWAYS_INLINE f32x f32_zero() { return {_mm256_setzero_ps()}; }
/// All lanes = the float whose bits are *p.
SCALIFY_ALWAYS_INLINE f32x f32_broadcast(const uint32_t* p) {
  return {_mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(*p)))};
}
SCALIFY_ALWAYS_INLINE f32x f32_load(const uint32_t* p) {
  return {_mm256_castsi256_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)))};
}
SCALIFY_ALWAYS_INLINE f32x f32_load(const float* p) { return {_mm256_loadu_ps(p)}; }
SCALIFY_ALWAYS_INLINE void f32_store(float* p, f32x a) { _mm256_storeu_ps(p, a.v); }
/// a * b + c, rounded once.
SCALIFY_ALWAYS_INLINE f32x f32_fmadd(f32x a, f32x b, f32x c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
SCALIFY_ALWAYS_INLINE f32x f32_set1(float x) { return {_mm256_set1_ps(x)}; }
SCALIFY_ALWAYS_INLINE f32x f32_mul(f32x a, f32x b) { return {_mm256_mul_ps(a.v, b.v)}; }
/// a * b, rounded on its own: the compiler may not fuse it into a following
/// add (-ffp-contract=fast), where a routine's bits must not depend on the build.
SCALIFY_ALWAYS_INLINE f32x f32_mul_rounded(f32x a, f32x b) {
  __m256 v = _mm256_mul_ps(a.v, b.v);
  __asm__("" : "+x"(v));
  return {v};
}
SCALIFY_ALWAYS_INLINE f32x f32_add(f32x a, f32x b) { return {_mm256_add_ps(a.v, b.v)}; }
SCALIFY_ALWAYS_INLINE f32x f32_max(f32x a, f32x b) { return {_mm256_max_ps(a.v, b.v)}; }
SCALIFY_ALWAYS_INLINE f32x f32_abs(f32x a) {
  return {_mm256_and_ps(a.v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF'FFFF)))};
}

}  // namespace scalify::simd::avx2
SCALIFY_END_TARGET

#endif  // SCALIFY_HAVE_X86_SIMD
#endif  // SCALIFY_SIMD_F32_AVX2_HPP_
