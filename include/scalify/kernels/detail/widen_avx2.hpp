// scalify: exact widening of 8 or 16 narrow values to float32 in AVX2 + F16C
// registers, for the GEMM packing (kernels/pack.hpp) and the streaming
// small-M path (kernels/gemv.hpp).
//
//   widen8(p)            8 values of T (float8_e4m3fn, float8_e5m2, float16, bfloat16, float) -> __m256
//   widen16(p, lo, hi)   16 values; float8 in 16-bit lanes. For e4m3fn the result is
//                        value * 2^-8: multiply the other factor by kGemvScale<T> = 2^8
//   widen_pair(p, lo, hi) widen16 into two f32x (simd/f32_avx2.hpp)
//
// e4m3fn without the NaN step, for blocks of codes checked for the NaN code
// (streaming GEMV, packers; docs/kernels.md, "Decoding e4m3fn"):
//   has_nan_code(p, n)            whether any of n codes at p is NaN (false for other types)
//   nan_screen                    the same, accumulated from the registers the *_no_nan widenings
//                                 load (simd/float8_avx2.hpp)
//   widen8_no_nan(p)              widen8 for codes that are not NaN
//   widen_pair_no_nan(p, lo, hi, screen)  widen16's value * 2^-8, codes that are not NaN
//   widen_quad_no_nan(p, w, screen)       32 codes -> w[0..3] (codes 0-7, 8-15, 16-23, 24-31), the same
//   kNoNanMaxRows                 the largest M for which the streaming GEMV uses them
#ifndef SCALIFY_KERNELS_DETAIL_WIDEN_AVX2_HPP_
#define SCALIFY_KERNELS_DETAIL_WIDEN_AVX2_HPP_

#include <cstddef>      // ptrdiff_t
#include <cstdint>      // uint16_t
#include <type_traits>  // std::is_same_v

#include "scalify/config.hpp"            // SCALIFY_HAVE_X86_SIMD, SCALIFY_BEGIN_TARGET_AVX2
#include "scalify/formats/float16.hpp"   // float16, bfloat16
#include "scalify/formats/float8.hpp"    // float8_e4m3fn, float8_e5m2
#include "scalify/simd/f32_avx2.hpp"     // f32x
#include "scalify/simd/float8_avx2.hpp"  // nan_screen, any_e4m3fn_nan, widen8_e4m3fn_no_nan, widen8_e5m2

#if SCALIFY_HAVE_X86_SIMD
#include <immintrin.h>  // AVX2, F16C

SCALIFY_BEGIN_TARGET_AVX2
namespace scalify::kernels::avx2 {

using namespace ::scalify::simd::avx2;  // the path's vector types (simd/)

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
    return widen8_e5m2(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
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

/// 16 e4m3fn codes at p -> their float16 bits worth value * 2^-8 (NaN kept),
/// for widen16 and avx512::widen_lanes16.
SCALIFY_ALWAYS_INLINE __m256i e4m3fn_half_bits16(const void* p) {
  // s.eeee.mmm sign-extended to 16 bits, shifted left by 7 and masked with
  // 0xBF80: float16 s.0eeee.mmm0000000 = value * 2^-8 (subnormals too).
  // The NaN code (magnitude 0x7F -> 0x3F80, the largest magnitude) is the only
  // one for which adding 0x80 carries into bit 14: that bit, or'ed in, makes
  // the exponent 11111 with a nonzero mantissa (0x7F80: NaN, sign kept).
  const __m256i v = _mm256_cvtepi8_epi16(_mm_loadu_si128(static_cast<const __m128i*>(p)));
  const __m256i h0 = _mm256_and_si256(_mm256_slli_epi16(v, 7), _mm256_set1_epi16(static_cast<short>(0xBF80)));
  const __m256i nan = _mm256_and_si256(_mm256_add_epi16(h0, _mm256_set1_epi16(0x80)), _mm256_set1_epi16(0x4000));
  return _mm256_or_si256(h0, nan);
}

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
    const __m256i h = e4m3fn_half_bits16(p);
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

/// 16 values of T -> 16 / kF32Lanes f32x (here two: widen16), for the dot
/// form written once per path (kernels/detail/gemv-inl.hpp).
template <class T>
SCALIFY_ALWAYS_INLINE void widen_lanes16(const T* p, f32x* w) {
  widen16(p, w[0].v, w[1].v);
}

// ---------------------------------------------------------------------------
// e4m3fn without the NaN code. The streaming GEMV widens a block with the
// cheaper decode below and checks it in the same pass (simd::avx2::nan_screen,
// fed the registers the decode loads), then computes a block that had a NaN
// code again with widen16 (NaN kept); the packers check a row's run first
// (has_nan_code).

/// The streaming GEMV (kernels/detail/gemv-inl.hpp) uses the decode without
/// the NaN step for M <= 3 rows of A. At M = 4 the loop is bound by its 16
/// accumulators (some spill) and the extra registers of the check made it
/// slower (1x1024x512 in L2 on the Xeon, ns per 16 products, widen16 -> no
/// NaN step: M = 1 1.24 -> 0.92, M = 2 0.76 -> 0.65, M = 3 0.65 -> 0.64,
/// M = 4 0.62 -> 0.68).
inline constexpr int kNoNanMaxRows = 3;

/// Whether any of the n values at p is an e4m3fn NaN code; false for other
/// types (their widenings have no separate NaN step).
template <class T>
SCALIFY_ALWAYS_INLINE bool has_nan_code(const T* p, std::ptrdiff_t n) {
  if constexpr (std::is_same_v<T, float8_e4m3fn>) {
    return any_e4m3fn_nan(reinterpret_cast<const uint8_t*>(p), n);
  }
  (void)p;
  (void)n;
  return false;
}

/// Bytes b (in the upper half of 16-bit lanes, low half zero) -> float16 bits
/// of the e4m3fn value * 2^-8: s.eeee.mmm.00000000 shifted right by 1
/// (arithmetic) is s.s.eeee.mmm.0000000, masked with 0xBF80 s.0.eeee.mmm.0000000
/// (subnormals land on float16 subnormals with the same mantissa). In-lane
/// unpacks instead of the lane-crossing sign extension of widen16, and no
/// NaN step: the NaN code gives 0x3F80 (+-1.875).
SCALIFY_ALWAYS_INLINE __m256i e4m3fn_halves(__m256i upper) {
  return _mm256_and_si256(_mm256_srai_epi16(upper, 1), _mm256_set1_epi16(static_cast<short>(0xBF80)));
}
SCALIFY_ALWAYS_INLINE __m128i e4m3fn_halves(__m128i upper) {
  return _mm_and_si128(_mm_srai_epi16(upper, 1), _mm_set1_epi16(static_cast<short>(0xBF80)));
}

/// 32 e4m3fn codes, none NaN -> value * 2^-8 (as widen16): w[0] codes 0-7,
/// w[1] 8-15, w[2] 16-23, w[3] 24-31. The float16 halves of
/// simd::avx2::e4m3fn_halves_over_256 (vpmaddubsw, no shift) go through
/// memory to vcvtph2ps (cvtph_ps_from). Per 32 codes, vector uops on this
/// Xeon (vcvtph2ps: 2 in either form): 1 and, 2 unpacks, 2 vpmaddubsw, 8
/// vcvtph2ps, plus 2 for the NaN screen: 15, against 12 for e5m2's widen16
/// twice and 20 for widen16 (e4m3fn) twice.
template <class T>  // float8_e4m3fn (a template so that discarded calls for other types compile)
SCALIFY_ALWAYS_INLINE void widen_quad_no_nan(const T* p, f32x* w, nan_screen& screen) {
  static_assert(std::is_same_v<T, float8_e4m3fn>, "widen_quad_no_nan: e4m3fn codes only");
  alignas(32) uint16_t h[32];
  screen.add(e4m3fn_halves_over_256(reinterpret_cast<const uint8_t*>(p), h));
  w[0].v = cvtph_ps_from(h);       // codes 0-7   (lane 0 of the low unpack)
  w[1].v = cvtph_ps_from(h + 16);  // codes 8-15  (lane 0 of the high unpack)
  w[2].v = cvtph_ps_from(h + 8);   // codes 16-23
  w[3].v = cvtph_ps_from(h + 24);  // codes 24-31
}

/// 16 e4m3fn codes, none NaN -> value * 2^-8 (as widen16).
template <class T>  // float8_e4m3fn (a template so that discarded calls for other types compile)
SCALIFY_ALWAYS_INLINE void widen_pair_no_nan(const T* p, f32x& lo, f32x& hi, nan_screen& screen) {
  static_assert(std::is_same_v<T, float8_e4m3fn>, "widen_pair_no_nan: e4m3fn codes only");
  const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  screen.add(x);
  const __m128i z = _mm_setzero_si128();
  lo.v = _mm256_cvtph_ps(e4m3fn_halves(_mm_unpacklo_epi8(z, x)));
  hi.v = _mm256_cvtph_ps(e4m3fn_halves(_mm_unpackhi_epi8(z, x)));
}

// ---------------------------------------------------------------------------
// e4m3fn straight to float32 bits, without the NaN step: s.eeee.mmm sign-
// extended to 32 bits, shifted left by 20 and masked with 0x87F00000 is the
// float32 s.0000eeee.mmm0..0 = value * 2^-120, e4m3fn's subnormals landing on
// float32 subnormals with the same mantissa (so, exact only with MXCSR's DAZ
// off). 3 vector ops per 8 codes and no float16 conversion: cheaper than the
// halves above. The streaming GEMV scales A by kGemvBitsScale to match, so it
// may use this decode only where every finite |A| is below 2^8 and DAZ is off
// (kernels::gemv_block_with checks both), and checks the codes for the NaN code
// as with the halves (the NaN code gives 480 * 2^-120).

inline constexpr float kGemvBitsScale = 0x1p120f;

/// 8 e4m3fn codes at p (none NaN) -> value * 2^-120.
SCALIFY_ALWAYS_INLINE __m256 e4m3fn_f32_bits(const uint8_t* p) {
  const __m256i d = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(
      _mm256_and_si256(_mm256_slli_epi32(d, 20), _mm256_set1_epi32(static_cast<int>(0x87F00000u))));
}

/// 32 e4m3fn codes, none NaN -> value * 2^-120, in widen_quad_no_nan's order.
template <class T>  // float8_e4m3fn (a template so that discarded calls for other types compile)
SCALIFY_ALWAYS_INLINE void widen_quad_bits_no_nan(const T* p, f32x* w, nan_screen& screen) {
  static_assert(std::is_same_v<T, float8_e4m3fn>, "widen_quad_bits_no_nan: e4m3fn codes only");
  const auto* u = reinterpret_cast<const uint8_t*>(p);
  screen.add(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(u)));
  w[0].v = e4m3fn_f32_bits(u);  // written out: GCC keeps a loop here, through memory
  w[1].v = e4m3fn_f32_bits(u + 8);
  w[2].v = e4m3fn_f32_bits(u + 16);
  w[3].v = e4m3fn_f32_bits(u + 24);
}

/// 16 e4m3fn codes, none NaN -> value * 2^-120.
template <class T>  // float8_e4m3fn
SCALIFY_ALWAYS_INLINE void widen_pair_bits_no_nan(const T* p, f32x& lo, f32x& hi, nan_screen& screen) {
  static_assert(std::is_same_v<T, float8_e4m3fn>, "widen_pair_bits_no_nan: e4m3fn codes only");
  const auto* u = reinterpret_cast<const uint8_t*>(p);
  screen.add(_mm_loadu_si128(reinterpret_cast<const __m128i*>(u)));
  lo.v = e4m3fn_f32_bits(u);
  hi.v = e4m3fn_f32_bits(u + 8);
}

/// widen8 for codes that are not e4m3fn NaN (the same for other types).
template <class T>
SCALIFY_ALWAYS_INLINE __m256 widen8_no_nan(const T* p) {
  if constexpr (std::is_same_v<T, float8_e4m3fn>) {
    return widen8_e4m3fn_no_nan(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  } else {
    return widen8(p);
  }
}

}  // namespace scalify::kernels::avx2
SCALIFY_END_TARGET

#endif  // SCALIFY_HAVE_X86_SIMD
#endif  // SCALIFY_KERNELS_DETAIL_WIDEN_AVX2_HPP_
