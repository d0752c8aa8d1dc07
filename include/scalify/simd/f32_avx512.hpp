// scalify: a thin 16 x float32 vector type over AVX-512F (namespace
// simd::avx512) and the same plus bfloat16 pair dot products (namespace
// simd::avx512bf16), with the interface of simd/f32_avx2.hpp:
//
//   f32x   f32_zero(), f32_set1(x), f32_broadcast(p), f32_load(p), f32_store(p, v),
//          f32_fmadd(a, b, c), f32_mul, f32_mul_rounded, f32_add, f32_max, f32_abs
//   bf16x2 (avx512bf16 only): bf16x2_load(p), bf16x2_broadcast(p),
//          f32_dpbf16(acc, a, b): per lane acc += a.hi * b.hi, then += a.lo * b.lo (vdpbf16ps)
#ifndef SCALIFY_SIMD_F32_AVX512_HPP_
#define SCALIFY_SIMD_F32_AVX512_HPP_

#include "scalify/config.hpp"  // SCALIFY_HAVE_X86_SIMD, SCALIFY_BEGIN_TARGET_AVX512(BF16)

#if SCALIFY_HAVE_X86_SIMD
#include <immintrin.h>  // AVX-512 intrinsics

#include <cstddef>  // size_t
#include <cstdint>  // uint32_t

SCALIFY_BEGIN_TARGET_AVX512
namespace scalify::simd::avx512 {

struct f32x {
  __m512 v;
};
inline constexpr std::size_t kF32Lanes = 16;

SCALIFY_ALWAYS_INLINE f32x f32_zero() { return {_mm512_setzero_ps()}; }
SCALIFY_ALWAYS_INLINE f32x f32_broadcast(const uint32_t* p) {
  return {_mm512_castsi512_ps(_mm512_set1_epi32(static_cast<int>(*p)))};
}
SCALIFY_ALWAYS_INLINE f32x f32_load(const uint32_t* p) { return {_mm512_castsi512_ps(_mm512_loadu_si512(p))}; }
SCALIFY_ALWAYS_INLINE f32x f32_load(const float* p) { return {_mm512_loadu_ps(p)}; }
SCALIFY_ALWAYS_INLINE void f32_store(float* p, f32x a) { _mm512_storeu_ps(p, a.v); }
SCALIFY_ALWAYS_INLINE f32x f32_fmadd(f32x a, f32x b, f32x c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
SCALIFY_ALWAYS_INLINE f32x f32_set1(float x) { return {_mm512_set1_ps(x)}; }
SCALIFY_ALWAYS_INLINE f32x f32_mul(f32x a, f32x b) { return {_mm512_mul_ps(a.v, b.v)}; }
/// a * b, rounded on its own: the compiler may not fuse it into a following
/// add (-ffp-contract=fast), where a routine's bits must not depend on the build.
SCALIFY_ALWAYS_INLINE f32x f32_mul_rounded(f32x a, f32x b) {
  __m512 v = _mm512_mul_ps(a.v, b.v);
  __asm__("" : "+v"(v));
  return {v};
}
SCALIFY_ALWAYS_INLINE f32x f32_add(f32x a, f32x b) { return {_mm512_add_ps(a.v, b.v)}; }
SCALIFY_ALWAYS_INLINE f32x f32_max(f32x a, f32x b) { return {_mm512_max_ps(a.v, b.v)}; }
SCALIFY_ALWAYS_INLINE f32x f32_abs(f32x a) {
  return {_mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a.v), _mm512_set1_epi32(0x7FFF'FFFF)))};
}

}  // namespace scalify::simd::avx512
SCALIFY_END_TARGET

SCALIFY_BEGIN_TARGET_AVX512BF16
namespace scalify::simd::avx512bf16 {

// The float32 part is avx512's (an AVX-512F function inlines into this
// superset target).
using avx512::f32_abs;
using avx512::f32_add;
using avx512::f32_broadcast;
using avx512::f32_fmadd;
using avx512::f32_load;
using avx512::f32_max;
using avx512::f32_mul;
using avx512::f32_mul_rounded;
using avx512::f32_set1;
using avx512::f32_store;
using avx512::f32_zero;
using avx512::f32x;
using avx512::kF32Lanes;

/// 16 lanes of two bfloat16 each: the low half is the even k, the high half the odd k.
struct bf16x2 {
  __m512bh v;
};

SCALIFY_ALWAYS_INLINE bf16x2 bf16x2_load(const uint32_t* p) { return {(__m512bh)_mm512_loadu_si512(p)}; }
SCALIFY_ALWAYS_INLINE bf16x2 bf16x2_broadcast(const uint32_t* p) {
  return {(__m512bh)_mm512_set1_epi32(static_cast<int>(*p))};
}
/// vdpbf16ps: acc += a.hi * b.hi, then acc += a.lo * b.lo, per lane; RNE,
/// denormal inputs read as zero, denormal results flushed to zero.
SCALIFY_ALWAYS_INLINE f32x f32_dpbf16(f32x acc, bf16x2 a, bf16x2 b) { return {_mm512_dpbf16_ps(acc.v, a.v, b.v)}; }

}  // namespace scalify::simd::avx512bf16
SCALIFY_END_TARGET

#endif  // SCALIFY_HAVE_X86_SIMD
#endif  // SCALIFY_SIMD_F32_AVX512_HPP_
