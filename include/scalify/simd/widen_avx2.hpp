// scalify: exact widening of 8 or 16 narrow values to float32 in AVX2 + F16C
// registers, for the GEMM packing (kernels/pack.hpp) and the streaming
// small-M path (kernels/gemv.hpp).
//
//   widen8(p)            8 values of T (float8_e4m3fn, float8_e5m2, float16, bfloat16, float) -> __m256
//   widen16(p, lo, hi)   16 values; float8 in 16-bit lanes. For e4m3fn the result is
//                        value * 2^-8: multiply the other factor by kGemvScale<T> = 2^8
//   widen_pair(p, lo, hi) widen16 into two f32x (simd/f32_avx2.hpp)
#ifndef SCALIFY_SIMD_WIDEN_AVX2_HPP_
#define SCALIFY_SIMD_WIDEN_AVX2_HPP_

#include <type_traits>  // std::is_same_v

#include "scalify/config.hpp"           // SCALIFY_HAVE_X86_SIMD, SCALIFY_BEGIN_TARGET_AVX2
#include "scalify/formats/float16.hpp"  // float16, bfloat16
#include "scalify/formats/float8.hpp"   // float8_e4m3fn, float8_e5m2
#include "scalify/simd/f32_avx2.hpp"     // f32x

#if SCALIFY_HAVE_X86_SIMD
#include <immintrin.h>  // AVX2, F16C

SCALIFY_BEGIN_TARGET_AVX2
namespace scalify::simd::avx2 {

/// 8 elements of T at p, widened exactly to float32 (a NaN to a quiet NaN of
/// the same sign; its payload may differ from the scalar cast's).
template <class T>
SCALIFY_ALWAYS_INLINE __m256 widen8(const T* p) {
  if constexpr (std::is_same_v<T, float>) {
    return _mm256_loadu_ps(p);
  } else if constexpr (std::is_same_v<T, bfloat16>) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  } else if constexpr (std::is_same_v<T, float16>) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  } else if constexpr (std::is_same_v<T, float8_e5m2>) {
    const __m128i x = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
    return _mm256_cvtph_ps(_mm_slli_epi16(x, 8));  // e5m2 is the upper byte of a float16
  } else {
    // e4m3fn s.eeee.mmm sign-extended to 16 bits, shifted left by 7 and masked
    // with 0xBF80: float16 s.0eeee.mmm0000000 = value * 2^-8 (subnormals too),
    // scaled back by 2^8 in float32 (exact). The NaN magnitude 0x7F (-> 0x3F80)
    // is the only one for which adding 0x80 carries into bit 14; or'ed in, it
    // makes 0x7F80, a quiet NaN (sign kept). widen16's method, at 8 lanes.
    const __m128i v = _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
    const __m128i h0 = _mm_and_si128(_mm_slli_epi16(v, 7), _mm_set1_epi16(static_cast<short>(0xBF80)));
    const __m128i nan = _mm_and_si128(_mm_add_epi16(h0, _mm_set1_epi16(0x80)), _mm_set1_epi16(0x4000));
    return _mm256_mul_ps(_mm256_cvtph_ps(_mm_or_si128(h0, nan)), _mm256_set1_ps(256.0f));
  }
}

template <class T>
inline constexpr float kGemvScale = std::is_same_v<T, float8_e4m3fn> ? 256.0f : 1.0f;

template <class T>
SCALIFY_ALWAYS_INLINE void widen16(const T* p, __m256& lo, __m256& hi) {
  if constexpr (std::is_same_v<T, float8_e5m2>) {
    // e5m2 is the upper byte of a float16: interleave a zero byte below each
    // (in order, no lane crossing), then F16C.
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i z = _mm_setzero_si128();
    lo = _mm256_cvtph_ps(_mm_unpacklo_epi8(z, x));
    hi = _mm256_cvtph_ps(_mm_unpackhi_epi8(z, x));
  } else if constexpr (std::is_same_v<T, float8_e4m3fn>) {
    // s.eeee.mmm sign-extended to 16 bits, shifted left by 7 and masked with
    // 0xBF80: float16 s.0eeee.mmm0000000 = value * 2^-8 (subnormals too).
    // The NaN code (magnitude 0x7F -> 0x3F80, the largest magnitude) is the only
    // one for which adding 0x80 carries into bit 14: that bit, or'ed in, makes
    // the exponent 11111 with a nonzero mantissa (0x7F80: NaN, sign kept).
    const __m256i v = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    const __m256i h0 = _mm256_and_si256(_mm256_slli_epi16(v, 7), _mm256_set1_epi16(static_cast<short>(0xBF80)));
    const __m256i nan = _mm256_and_si256(_mm256_add_epi16(h0, _mm256_set1_epi16(0x80)), _mm256_set1_epi16(0x4000));
    const __m256i h = _mm256_or_si256(h0, nan);
    lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
    hi = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
  } else {
    lo = widen8(p);
    hi = widen8(p + 8);
  }
}

/// widen16 into the path's f32x (2 * kF32Lanes values), for code written once
/// per path (kernels/detail/gemv-inl.hpp).
template <class T>
SCALIFY_ALWAYS_INLINE void widen_pair(const T* p, f32x& lo, f32x& hi) {
  widen16(p, lo.v, hi.v);
}

}  // namespace scalify::simd::avx2
SCALIFY_END_TARGET

#endif  // SCALIFY_HAVE_X86_SIMD
#endif  // SCALIFY_SIMD_WIDEN_AVX2_HPP_
