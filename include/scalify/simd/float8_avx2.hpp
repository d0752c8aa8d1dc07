// scalify: float8 codes widened in AVX2 + F16C registers, written once for
// the GEMM packers and streaming GEMV (kernels/pack.hpp, kernels/gemv.hpp,
// through kernels/detail/widen_avx2.hpp) and the Eigen packet casts
// (formats/eigen_packet.hpp). They check blocks of e4m3fn codes for the NaN
// code, and decode blocks without one with no NaN step.
//
//   nan_screen                 a running check for the e4m3fn NaN code over codes in registers
//   any_e4m3fn_nan(p, n)       whether one of the n e4m3fn codes at p is NaN
//   widen8_e4m3fn_no_nan(c)    8 e4m3fn codes (the low 64 bits of c), none NaN -> float32
//   widen8_e4m3fn_no_nan_over_256(c)  the same values times 2^-8 (one multiply less)
//   e4m3fn_halves_over_256(p, h)  32 e4m3fn codes, none NaN -> float16 bits of value * 2^-8 in memory
//   cvtph_ps_from(h)           8 float16 in memory -> float32 (vcvtph2ps with a memory operand)
//   widen8_e5m2(c)             8 e5m2 codes -> float32 (NaN codes keep their payload)
//
// The functions ask only for AVX2 and F16C (not the FMA and BMI2 of
// SCALIFY_TARGET_AVX2), so that code compiled with -mavx2 -mf16c, as Eigen's
// packet math is, may inline them as well as scalify's own AVX2 regions.
#ifndef SCALIFY_SIMD_FLOAT8_AVX2_HPP_
#define SCALIFY_SIMD_FLOAT8_AVX2_HPP_

#include "scalify/config.hpp"  // SCALIFY_HAVE_X86_SIMD, SCALIFY_ALWAYS_INLINE

#if SCALIFY_HAVE_X86_SIMD
#include <immintrin.h>  // AVX2, F16C

#include <cstddef>  // ptrdiff_t
#include <cstdint>  // uint8_t

#define SCALIFY_TARGET_AVX2_F16C __attribute__((target("avx2,f16c")))

namespace scalify::simd::avx2 {

/// A running check for the float8_e4m3fn NaN code over codes in registers:
/// `add()` the codes as they are loaded, `hit()` tells whether one was NaN. A
/// code is NaN iff its 7 magnitude bits are all set (s.1111.111): code | 0x80
/// is then 0xFF, the largest byte, so the unsigned byte maximum of
/// (code | 0x80) over the codes is 0xFF iff one is NaN (2 operations per 32
/// codes).
struct nan_screen {
  __m256i m;
  SCALIFY_ALWAYS_INLINE SCALIFY_TARGET_AVX2_F16C nan_screen() : m(_mm256_setzero_si256()) {}
  SCALIFY_ALWAYS_INLINE SCALIFY_TARGET_AVX2_F16C void add(__m256i x) {
    m = _mm256_max_epu8(m, _mm256_or_si256(x, _mm256_set1_epi8(static_cast<char>(0x80))));
  }
  SCALIFY_ALWAYS_INLINE SCALIFY_TARGET_AVX2_F16C void add(__m128i x) {
    add(_mm256_zextsi128_si256(x));
  }
  SCALIFY_ALWAYS_INLINE SCALIFY_TARGET_AVX2_F16C bool hit() const {
    return _mm256_movemask_epi8(_mm256_cmpeq_epi8(m, _mm256_set1_epi8(-1))) != 0;
  }
};

/// Whether one of the n float8_e4m3fn codes at p is NaN (nan_screen over
/// memory, 32 codes at a time, then the tail one by one).
inline SCALIFY_TARGET_AVX2_F16C bool any_e4m3fn_nan(const uint8_t* p, std::ptrdiff_t n) {
  nan_screen screen;
  std::ptrdiff_t i = 0;
  for (; i + 32 <= n; i += 32) {
    screen.add(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)));
  }
  if (screen.hit()) return true;
  for (; i < n; ++i) {
    if ((p[i] | 0x80) == 0xFF) return true;
  }
  return false;
}

/// The 8 float8_e4m3fn codes in the low 64 bits of `codes`, none of them
/// NaN, widened exactly to float32. Each code is sign-extended to a 16-bit
/// lane (vpmovsxbw, which takes the 8 bytes straight from memory when they
/// were just loaded), shifted left by 7 and masked:
///    s..s s eeee mmm  ->  s s eeee mmm 0000000  ->  s 0eeee mmm0000000   (& 0xBF80)
/// That float16 is the e4m3fn value times 2^-8 (float16 bias 15 = 7 + 8), and
/// e4m3fn subnormals land on float16 subnormals with the same mantissa;
/// vcvtph2ps and * 2^8 are exact. A NaN code would give +-1.875 * 2^8.
/// 6 uops with the two of vcvtph2ps and the load.
/// widen8_e4m3fn_no_nan_over_256 stops before the multiply: value * 2^-8,
/// exactly (the smallest subnormal, 2^-9, gives 2^-17, a normal float), for
/// callers that fold the 2^8 into another factor (5 uops).
SCALIFY_ALWAYS_INLINE SCALIFY_TARGET_AVX2_F16C __m256 widen8_e4m3fn_no_nan_over_256(__m128i codes) {
  const __m128i h = _mm_and_si128(_mm_slli_epi16(_mm_cvtepi8_epi16(codes), 7),
                                  _mm_set1_epi16(static_cast<short>(0xBF80)));
  return _mm256_cvtph_ps(h);
}
SCALIFY_ALWAYS_INLINE SCALIFY_TARGET_AVX2_F16C __m256 widen8_e4m3fn_no_nan(__m128i codes) {
  return _mm256_mul_ps(widen8_e4m3fn_no_nan_over_256(codes), _mm256_set1_ps(256.0f));
}

/// 32 float8_e4m3fn codes at p, none of them NaN, to the float16 bits of
/// their values times 2^-8 (widen8_e4m3fn_no_nan_over_256's halves) at h: 32
/// halves, 32-byte aligned, in groups of 8 codes in the order of the in-lane
/// unpacks: codes 0-7, 16-23, 8-15, 24-31. Each code x and t = x & 0x80 make
/// one 16-bit lane, and vpmaddubsw with weights 128, 128 gives 128 x + 128 t
/// as signed bytes: 128 |x| - 32768 s = s.0.eeee.mmm.0000000, the same bits
/// (no saturation: the extremes are 16256 and -32768). Per 32 codes: the
/// load, 5 vector uops and 2 stores, and no shift (on Zen 2, shifts, vector
/// stores and the register form of vcvtph2ps share one pipe). Returns the
/// codes, for a nan_screen.
SCALIFY_ALWAYS_INLINE SCALIFY_TARGET_AVX2_F16C __m256i e4m3fn_halves_over_256(const uint8_t* p, uint16_t* h) {
  const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i c = _mm256_set1_epi8(static_cast<char>(0x80));
  const __m256i t = _mm256_and_si256(x, c);
  _mm256_store_si256(reinterpret_cast<__m256i*>(h), _mm256_maddubs_epi16(c, _mm256_unpacklo_epi8(x, t)));
  _mm256_store_si256(reinterpret_cast<__m256i*>(h + 16), _mm256_maddubs_epi16(c, _mm256_unpackhi_epi8(x, t)));
  return x;
}

/// 8 float16 at p -> float32: vcvtph2ps with a memory operand. Inline
/// assembly, because compilers turn a store and a reload of the register form
/// into vextracti128. On a Zen 2 the register form shares a pipe with the
/// vector shifts and stores (8 values converted and stored: 2 cycles from a
/// register, 1 from memory), while the memory form shares the FMA pipes (12
/// conversions and 12 independent FMAs: 18 cycles, 12 from registers):
/// which form is faster depends on the loop around it.
SCALIFY_ALWAYS_INLINE SCALIFY_TARGET_AVX2_F16C __m256 cvtph_ps_from(const uint16_t* p) {
  __m256 r;
  __asm__("vcvtph2ps {%1, %0|%0, %1}" : "=x"(r) : "m"(*reinterpret_cast<const __m128i*>(p)));
  return r;
}

/// The 8 float8_e5m2 codes in the low 64 bits of `codes`, widened exactly to
/// float32: an e5m2 code is the upper byte of a float16, so a zero byte below
/// each (one unpack) and vcvtph2ps do it, subnormals and infinities included.
/// A NaN code gives a quiet NaN that keeps the code's payload (0x7FC00000 or
/// 0x7FE00000 with the sign). 4 uops with the load.
SCALIFY_ALWAYS_INLINE SCALIFY_TARGET_AVX2_F16C __m256 widen8_e5m2(__m128i codes) {
  return _mm256_cvtph_ps(_mm_unpacklo_epi8(_mm_setzero_si128(), codes));
}

}  // namespace scalify::simd::avx2

#undef SCALIFY_TARGET_AVX2_F16C

#endif  // SCALIFY_HAVE_X86_SIMD
#endif  // SCALIFY_SIMD_FLOAT8_AVX2_HPP_
