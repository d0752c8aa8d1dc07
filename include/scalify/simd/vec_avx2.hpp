// scalify: a thin 8 x uint32 vector type over AVX2, for the generic SIMD
// kernels (formats/detail/convert_simd-inl.hpp). Masks are vectors whose lanes
// are all ones or all zeros, as AVX2 compares produce.
#ifndef SCALIFY_SIMD_VEC_AVX2_HPP_
#define SCALIFY_SIMD_VEC_AVX2_HPP_

#include "scalify/config.hpp"  // SCALIFY_HAVE_X86_SIMD, SCALIFY_BEGIN_TARGET_AVX2

#if SCALIFY_HAVE_X86_SIMD
#include <immintrin.h>  // AVX2 intrinsics

#include <cstddef>  // size_t
#include <cstdint>  // uint8_t, uint16_t, uint32_t

SCALIFY_BEGIN_TARGET_AVX2
namespace scalify::simd::avx2 {

struct u32x {
  __m256i v;
};
inline constexpr std::size_t kLanes = 8;

SCALIFY_ALWAYS_INLINE u32x set1(uint32_t x) { return {_mm256_set1_epi32(static_cast<int>(x))}; }
/// 0, 1, ..., kLanes - 1
SCALIFY_ALWAYS_INLINE u32x iota() { return {_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)}; }

SCALIFY_ALWAYS_INLINE u32x load_u32(const void* p) {
  return {_mm256_loadu_si256(static_cast<const __m256i*>(p))};
}
SCALIFY_ALWAYS_INLINE u32x load_u16(const uint16_t* p) {
  return {_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))};
}
SCALIFY_ALWAYS_INLINE u32x load_u8(const uint8_t* p) {
  return {_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)))};
}
SCALIFY_ALWAYS_INLINE void store_u32(void* p, u32x a) { _mm256_storeu_si256(static_cast<__m256i*>(p), a.v); }
/// Stores the low 16 bits of each lane (lanes must hold values < 2^16).
SCALIFY_ALWAYS_INLINE void store_u16(uint16_t* p, u32x a) {
  const __m128i lo = _mm256_castsi256_si128(a.v), hi = _mm256_extracti128_si256(a.v, 1);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm_packus_epi32(lo, hi));
}
/// Stores the low 8 bits of each lane (lanes must hold values < 2^8).
SCALIFY_ALWAYS_INLINE void store_u8(uint8_t* p, u32x a) {
  const __m128i lo = _mm256_castsi256_si128(a.v), hi = _mm256_extracti128_si256(a.v, 1);
  const __m128i w = _mm_packus_epi32(lo, hi);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packus_epi16(w, w));
}
/// Stores the low 7 bits of each lane of a, b, c and d (lanes < 2^7), in
/// that order, with bit 7 of each byte the sign bit (bit 31) of the matching
/// lane of sa, sb, sc and sd: two in-lane packs to bytes for each set (signed
/// saturation keeps each lane's sign), an and-or, then one permute puts the
/// 4-byte groups in order. The signs cost 3 packs and an and-or for 4 vectors
/// instead of a shift, an and and an or per vector.
SCALIFY_ALWAYS_INLINE void store4_u8_signed(uint8_t* p, u32x a, u32x b, u32x c, u32x d, u32x sa, u32x sb, u32x sc,
                                            u32x sd) {
  const __m256i codes = _mm256_packus_epi16(_mm256_packus_epi32(a.v, b.v), _mm256_packus_epi32(c.v, d.v));
  const __m256i signs = _mm256_packs_epi16(_mm256_packs_epi32(sa.v, sb.v), _mm256_packs_epi32(sc.v, sd.v));
  const __m256i bytes = _mm256_or_si256(codes, _mm256_and_si256(signs, _mm256_set1_epi8(static_cast<char>(0x80))));
  _mm256_storeu_si256(
      reinterpret_cast<__m256i*>(p),
      _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}

/// The kLanes float16 at p widened to float32 bits (vcvtph2ps: exact; a NaN
/// is quieted and keeps its payload).
SCALIFY_ALWAYS_INLINE u32x load_f16_as_f32(const uint16_t* p) {
  return {_mm256_castps_si256(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))))};
}
/// Stores the lanes (float32 bits) rounded to float16, nearest even (vcvtps2ph:
/// overflow to inf, subnormal results whatever MXCSR; a NaN keeps the top of
/// its payload).
SCALIFY_ALWAYS_INLINE void store_f32_as_f16(uint16_t* p, u32x a) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                   _mm256_cvtps_ph(_mm256_castsi256_ps(a.v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

SCALIFY_ALWAYS_INLINE u32x operator+(u32x a, u32x b) { return {_mm256_add_epi32(a.v, b.v)}; }
SCALIFY_ALWAYS_INLINE u32x operator-(u32x a, u32x b) { return {_mm256_sub_epi32(a.v, b.v)}; }
SCALIFY_ALWAYS_INLINE u32x operator*(u32x a, u32x b) { return {_mm256_mullo_epi32(a.v, b.v)}; }
SCALIFY_ALWAYS_INLINE u32x operator&(u32x a, u32x b) { return {_mm256_and_si256(a.v, b.v)}; }
SCALIFY_ALWAYS_INLINE u32x operator|(u32x a, u32x b) { return {_mm256_or_si256(a.v, b.v)}; }
SCALIFY_ALWAYS_INLINE u32x operator^(u32x a, u32x b) { return {_mm256_xor_si256(a.v, b.v)}; }
/// a & ~b
SCALIFY_ALWAYS_INLINE u32x and_not(u32x a, u32x b) { return {_mm256_andnot_si256(b.v, a.v)}; }
template <int kCount>
SCALIFY_ALWAYS_INLINE u32x shift_right(u32x a) {
  return {_mm256_srli_epi32(a.v, kCount)};
}
template <int kCount>
SCALIFY_ALWAYS_INLINE u32x shift_left(u32x a) {
  return {_mm256_slli_epi32(a.v, kCount)};
}
/// Per-lane shifts; counts of 32 or more give 0.
SCALIFY_ALWAYS_INLINE u32x shift_right(u32x a, u32x count) { return {_mm256_srlv_epi32(a.v, count.v)}; }
SCALIFY_ALWAYS_INLINE u32x shift_left(u32x a, u32x count) { return {_mm256_sllv_epi32(a.v, count.v)}; }
SCALIFY_ALWAYS_INLINE u32x min(u32x a, u32x b) { return {_mm256_min_epu32(a.v, b.v)}; }
SCALIFY_ALWAYS_INLINE u32x max(u32x a, u32x b) { return {_mm256_max_epu32(a.v, b.v)}; }

SCALIFY_ALWAYS_INLINE u32x eq(u32x a, u32x b) { return {_mm256_cmpeq_epi32(a.v, b.v)}; }
/// Unsigned a > b.
SCALIFY_ALWAYS_INLINE u32x gt(u32x a, u32x b) {
  const __m256i bias = _mm256_set1_epi32(INT32_MIN);
  return {_mm256_cmpgt_epi32(_mm256_xor_si256(a.v, bias), _mm256_xor_si256(b.v, bias))};
}
/// Signed a > b: one instruction; use it when both lanes are known < 2^31.
SCALIFY_ALWAYS_INLINE u32x gt_i32(u32x a, u32x b) { return {_mm256_cmpgt_epi32(a.v, b.v)}; }
/// mask ? a : b
SCALIFY_ALWAYS_INLINE u32x select(u32x mask, u32x a, u32x b) { return {_mm256_blendv_epi8(b.v, a.v, mask.v)}; }
/// True if any lane of the mask is set.
SCALIFY_ALWAYS_INLINE bool any(u32x mask) { return !_mm256_testz_si256(mask.v, mask.v); }

/// Converts int32 lanes to float and multiplies by `scale`; returns the float bits.
SCALIFY_ALWAYS_INLINE u32x int_to_float_bits_scaled(u32x a, float scale) {
  const __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(a.v), _mm256_set1_ps(scale));
  return {_mm256_castps_si256(f)};
}

/// The bits of float(a) + c, where the lanes of `a` hold float bits (one IEEE addition).
SCALIFY_ALWAYS_INLINE u32x float_add_bits(u32x a, float c) {
  return {_mm256_castps_si256(_mm256_add_ps(_mm256_castsi256_ps(a.v), _mm256_set1_ps(c)))};
}

/// The bits of float(a) + float(b), lane by lane (one IEEE addition).
SCALIFY_ALWAYS_INLINE u32x float_add_bits(u32x a, u32x b) {
  return {_mm256_castps_si256(_mm256_add_ps(_mm256_castsi256_ps(a.v), _mm256_castsi256_ps(b.v)))};
}

/// Sum of all lanes, in 64 bits.
SCALIFY_ALWAYS_INLINE uint64_t reduce_add(u32x a) {
  alignas(32) uint32_t lanes[kLanes];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), a.v);
  uint64_t sum = 0;
  for (uint32_t x : lanes) sum += x;
  return sum;
}
SCALIFY_ALWAYS_INLINE uint32_t reduce_max(u32x a) {
  alignas(32) uint32_t lanes[kLanes];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), a.v);
  uint32_t m = 0;
  for (uint32_t x : lanes) m = x > m ? x : m;
  return m;
}

}  // namespace scalify::simd::avx2
SCALIFY_END_TARGET

#endif  // SCALIFY_HAVE_X86_SIMD
#endif  // SCALIFY_SIMD_VEC_AVX2_HPP_
