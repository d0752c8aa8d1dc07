// scalify: exact widening of 32 narrow values to float32 in two AVX-512
// registers, for the streaming small-M path (kernels/gemv.hpp). The AVX-512
// twin of widen_avx2.hpp's widen16, with the same method per type, at twice
// the width.
//
//   widen32(p, lo, hi)   32 values of T (float8_e4m3fn, float8_e5m2, float16, bfloat16,
//                        float) -> two __m512. For e4m3fn the result is value * 2^-8:
//                        multiply the other factor by kGemvScale<T> = 2^8 (avx2's)
//   widen_pair(p, lo, hi) widen32 into two f32x (simd/f32_avx512.hpp)
//   widen_lanes16(p, w)  16 values into one f32x (the dot form's step)
//
// e4m3fn without the NaN step, as in widen_avx2.hpp, at twice the width:
//   nan_screen                      whether the codes widened since it was made had the NaN code
//   widen_pair_no_nan(p, lo, hi, screen)  widen32's value * 2^-8 for codes that are not NaN
//   widen_quad_no_nan(p, w, screen)       64 codes -> w[0..3] (codes 0-15, 16-31, 32-47, 48-63)
//   widen_pair_bits_no_nan, widen_quad_bits_no_nan   the same codes -> value * 2^-120
//                                   (float32 bits, no float16 step; A scaled by kGemvBitsScale)
//   kNoNanMaxRows                   the largest M for which the streaming GEMV uses them
#ifndef SCALIFY_KERNELS_DETAIL_WIDEN_AVX512_HPP_
#define SCALIFY_KERNELS_DETAIL_WIDEN_AVX512_HPP_

#include <cstddef>      // ptrdiff_t
#include <cstdint>      // uint8_t, uint16_t
#include <type_traits>  // std::is_same_v

#include "scalify/config.hpp"           // SCALIFY_HAVE_X86_SIMD, SCALIFY_BEGIN_TARGET_AVX512
#include "scalify/formats/float16.hpp"  // float16, bfloat16
#include "scalify/formats/float8.hpp"   // float8_e4m3fn, float8_e5m2
#include "scalify/simd/f32_avx512.hpp"   // f32x
#include "scalify/kernels/detail/widen_avx2.hpp"   // avx2::kGemvScale

#if SCALIFY_HAVE_X86_SIMD
#include <immintrin.h>  // AVX-512 F/BW

SCALIFY_BEGIN_TARGET_AVX512
namespace scalify::kernels::avx512 {

using namespace ::scalify::simd::avx512;  // the path's vector types (simd/)

/// The 32 16-bit lanes of h as float16 -> two __m512 (lanes 0-15, 16-31).
SCALIFY_ALWAYS_INLINE void halves_to_f32(__m512i h, __m512& lo, __m512& hi) {
  lo = _mm512_cvtph_ps(_mm512_castsi512_si256(h));
  hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1));
}

template <class T>
SCALIFY_ALWAYS_INLINE void widen32(const T* p, __m512& lo, __m512& hi) {
  if constexpr (std::is_same_v<T, float>) {
    lo = _mm512_loadu_ps(p);
    hi = _mm512_loadu_ps(p + 16);
  } else if constexpr (std::is_same_v<T, bfloat16>) {
    const __m512i w0 = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    const __m512i w1 = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16)));
    lo = _mm512_castsi512_ps(_mm512_slli_epi32(w0, 16));
    hi = _mm512_castsi512_ps(_mm512_slli_epi32(w1, 16));
  } else if constexpr (std::is_same_v<T, float16>) {
    lo = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    hi = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16)));
  } else if constexpr (std::is_same_v<T, float8_e5m2>) {
    // e5m2 is the upper byte of a float16.
    const __m512i x = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    halves_to_f32(_mm512_slli_epi16(x, 8), lo, hi);
  } else {
    static_assert(std::is_same_v<T, float8_e4m3fn>, "widen32: unsupported type");
    // As avx2::widen16: s.eeee.mmm sign-extended, shifted left by 7, masked with
    // 0xBF80 (float16 s.0eeee.mmm0000000 = value * 2^-8); the NaN magnitude
    // 0x7F is the only one for which adding 0x80 carries into bit 14, which
    // or'ed in makes the quiet NaN 0x7F80 (sign kept).
    const __m512i v = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    const __m512i h0 = _mm512_and_si512(_mm512_slli_epi16(v, 7), _mm512_set1_epi16(static_cast<short>(0xBF80)));
    const __m512i nan =
        _mm512_and_si512(_mm512_add_epi16(h0, _mm512_set1_epi16(0x80)), _mm512_set1_epi16(0x4000));
    halves_to_f32(_mm512_or_si512(h0, nan), lo, hi);
  }
}

/// widen32 into the path's f32x (2 * kF32Lanes values), for code written once
/// per path (kernels/detail/gemv-inl.hpp).
template <class T>
SCALIFY_ALWAYS_INLINE void widen_pair(const T* p, f32x& lo, f32x& hi) {
  widen32(p, lo.v, hi.v);
}

/// 16 values of T -> one f32x (16 / kF32Lanes of them), widen32's method on
/// half as many, for the dot form written once per path
/// (kernels/detail/gemv-inl.hpp). e4m3fn: value * 2^-8, as widen32.
template <class T>
SCALIFY_ALWAYS_INLINE void widen_lanes16(const T* p, f32x* w) {
  if constexpr (std::is_same_v<T, float>) {
    w[0].v = _mm512_loadu_ps(p);
  } else if constexpr (std::is_same_v<T, bfloat16>) {
    const __m512i x = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    w[0].v = _mm512_castsi512_ps(_mm512_slli_epi32(x, 16));
  } else if constexpr (std::is_same_v<T, float16>) {
    w[0].v = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  } else if constexpr (std::is_same_v<T, float8_e5m2>) {
    const __m256i x = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    w[0].v = _mm512_cvtph_ps(_mm256_slli_epi16(x, 8));
  } else {
    static_assert(std::is_same_v<T, float8_e4m3fn>, "widen_lanes16: unsupported type");
    w[0].v = _mm512_cvtph_ps(avx2::e4m3fn_half_bits16(p));
  }
}

using avx2::kGemvScale;
using avx2::kGemvBitsScale;

/// The streaming GEMV uses the decode without the NaN step for M = 1 only:
/// for M = 2..4 (32 columns per step, a store and reload per 32 codes for
/// fewer FMAs) it measured slower than widen32 (1x1024x512 in L2 on the Xeon,
/// ns per 16 products, widen32 -> no NaN step: M = 1 0.87 -> 0.77, M = 2
/// 0.58 -> 0.67, M = 3 0.51 -> 0.54, M = 4 0.45 -> 0.48).
inline constexpr int kNoNanMaxRows = 1;

/// simd::avx2::nan_screen at 64 codes per operation.
struct nan_screen {
  __m512i m;
  SCALIFY_ALWAYS_INLINE nan_screen() : m(_mm512_setzero_si512()) {}
  SCALIFY_ALWAYS_INLINE void add(__m512i x) {
    m = _mm512_max_epu8(m, _mm512_or_si512(x, _mm512_set1_epi8(static_cast<char>(0x80))));
  }
  SCALIFY_ALWAYS_INLINE void add(__m256i x) { add(_mm512_zextsi256_si512(x)); }
  SCALIFY_ALWAYS_INLINE bool hit() const { return _mm512_cmpeq_epi8_mask(m, _mm512_set1_epi8(-1)) != 0; }
};

/// 16 float16 at p -> float32, vcvtph2ps with a memory operand (see
/// avx2::cvtph_ps_from: no vextracti64x4 for the upper half).
SCALIFY_ALWAYS_INLINE __m512 cvtph_ps_from(const uint16_t* p) {
  __m512 r;
  __asm__("vcvtph2ps {%1, %0|%0, %1}" : "=v"(r) : "m"(*reinterpret_cast<const __m256i*>(p)));
  return r;
}

/// 32 e4m3fn codes, none NaN -> value * 2^-8 (widen32 without its NaN step:
/// sign extension, shift, and, then vcvtph2ps from memory).
template <class T>  // float8_e4m3fn (a template so that discarded calls for other types compile)
SCALIFY_ALWAYS_INLINE void widen_pair_no_nan(const T* p, f32x& lo, f32x& hi, nan_screen& screen) {
  static_assert(std::is_same_v<T, float8_e4m3fn>, "widen_pair_no_nan: e4m3fn codes only");
  const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  screen.add(x);
  const __m512i v = _mm512_cvtepi8_epi16(x);
  alignas(64) uint16_t h[32];
  _mm512_store_si512(h, _mm512_and_si512(_mm512_slli_epi16(v, 7), _mm512_set1_epi16(static_cast<short>(0xBF80))));
  lo.v = cvtph_ps_from(h);
  hi.v = cvtph_ps_from(h + 16);
}

/// 64 e4m3fn codes, none NaN -> w[0..3] (16 codes each, in order): as
/// widen_pair_no_nan, the float16 halves through memory to vcvtph2ps. Each
/// half of the codes is sign-extended by vpmovsxbw from memory (the screen
/// loads all 64 itself), not extracted from the 64-byte load: one
/// vextracti64x4 less per 64 codes, 6 % faster on a Zen 4 (docs/kernels.md,
/// "Decoding e4m3fn"). Converting from registers instead of the reload gained
/// as much there but adds two vextracti64x4, port 5 on Intel.
template <class T>  // float8_e4m3fn (a template so that discarded calls for other types compile)
SCALIFY_ALWAYS_INLINE void widen_quad_no_nan(const T* p, f32x* w, nan_screen& screen) {
  static_assert(std::is_same_v<T, float8_e4m3fn>, "widen_quad_no_nan: e4m3fn codes only");
  screen.add(_mm512_loadu_si512(p));
  const __m512i k = _mm512_set1_epi16(static_cast<short>(0xBF80));
  const __m512i v0 = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  const __m512i v1 = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p) + 1));
  alignas(64) uint16_t h[64];
  _mm512_store_si512(h, _mm512_and_si512(_mm512_slli_epi16(v0, 7), k));
  _mm512_store_si512(h + 32, _mm512_and_si512(_mm512_slli_epi16(v1, 7), k));
  for (int q = 0; q < 4; ++q) w[q].v = cvtph_ps_from(h + 16 * q);
}

/// 16 e4m3fn codes at p (none NaN) -> value * 2^-120: avx2::e4m3fn_f32_bits
/// at twice the width (vpmovsxbd from memory, shift left by 20, and with
/// 0x87F00000: float32 s.0000eeee.mmm0..0, e4m3fn's subnormals on float32
/// subnormals). The streaming loop scales A by kGemvBitsScale to match, under
/// avx2's conditions (kernels::gemv_block_with).
SCALIFY_ALWAYS_INLINE __m512 e4m3fn_f32_bits(const uint8_t* p) {
  const __m512i d = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm512_castsi512_ps(
      _mm512_and_si512(_mm512_slli_epi32(d, 20), _mm512_set1_epi32(static_cast<int>(0x87F00000u))));
}

/// 64 e4m3fn codes, none NaN -> value * 2^-120, in widen_quad_no_nan's order.
template <class T>  // float8_e4m3fn (a template so that discarded calls for other types compile)
SCALIFY_ALWAYS_INLINE void widen_quad_bits_no_nan(const T* p, f32x* w, nan_screen& screen) {
  static_assert(std::is_same_v<T, float8_e4m3fn>, "widen_quad_bits_no_nan: e4m3fn codes only");
  const auto* u = reinterpret_cast<const uint8_t*>(p);
  screen.add(_mm512_loadu_si512(u));
  w[0].v = e4m3fn_f32_bits(u);  // written out, as avx2's
  w[1].v = e4m3fn_f32_bits(u + 16);
  w[2].v = e4m3fn_f32_bits(u + 32);
  w[3].v = e4m3fn_f32_bits(u + 48);
}

/// 32 e4m3fn codes, none NaN -> value * 2^-120.
template <class T>  // float8_e4m3fn
SCALIFY_ALWAYS_INLINE void widen_pair_bits_no_nan(const T* p, f32x& lo, f32x& hi, nan_screen& screen) {
  static_assert(std::is_same_v<T, float8_e4m3fn>, "widen_pair_bits_no_nan: e4m3fn codes only");
  const auto* u = reinterpret_cast<const uint8_t*>(p);
  screen.add(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(u)));
  lo.v = e4m3fn_f32_bits(u);
  hi.v = e4m3fn_f32_bits(u + 16);
}

}  // namespace scalify::kernels::avx512
SCALIFY_END_TARGET

#endif  // SCALIFY_HAVE_X86_SIMD
#endif  // SCALIFY_KERNELS_DETAIL_WIDEN_AVX512_HPP_
