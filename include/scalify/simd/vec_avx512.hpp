// scalify: a thin 16 x uint32 vector type over AVX-512 F/BW/VL/DQ, with the
// same interface as simd/vec_avx2.hpp so the generic kernels compile for both.
// Masks are vectors (all-ones or all-zeros lanes) here too; the few extra
// mask <-> vector moves cost little and keep one kernel source for both ISAs.
#ifndef SCALIFY_SIMD_VEC_AVX512_HPP_
#define SCALIFY_SIMD_VEC_AVX512_HPP_

#include "scalify/config.hpp"  // SCALIFY_HAVE_X86_SIMD, SCALIFY_BEGIN_TARGET_AVX512

#if SCALIFY_HAVE_X86_SIMD
#include <immintrin.h>  // AVX-512 intrinsics

#include <cstddef>  // size_t
#include <cstdint>  // uint8_t, uint16_t, uint32_t

SCALIFY_BEGIN_TARGET_AVX512
namespace scalify::simd::avx512 {

struct u32x {
  __m512i v;
};
inline constexpr std::size_t kLanes = 16;

SCALIFY_ALWAYS_INLINE u32x set1(uint32_t x) { return {_mm512_set1_epi32(static_cast<int>(x))}; }
SCALIFY_ALWAYS_INLINE u32x iota() {
  return {_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)};
}

SCALIFY_ALWAYS_INLINE u32x load_u32(const void* p) { return {_mm512_loadu_si512(p)}; }
SCALIFY_ALWAYS_INLINE u32x load_u16(const uint16_t* p) {
  return {_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)))};
}
SCALIFY_ALWAYS_INLINE u32x load_u8(const uint8_t* p) {
  return {_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))};
}
SCALIFY_ALWAYS_INLINE void store_u32(void* p, u32x a) { _mm512_storeu_si512(p, a.v); }
/// Stores the low 16 bits of each lane (vpmovdw truncates).
SCALIFY_ALWAYS_INLINE void store_u16(uint16_t* p, u32x a) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(a.v));
}
/// Stores the low 8 bits of each lane (vpmovdb truncates).
SCALIFY_ALWAYS_INLINE void store_u8(uint8_t* p, u32x a) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtepi32_epi8(a.v));
}
/// As in vec_avx2.hpp: lanes < 2^7 with the signs of sa..sd as bit 7 (signed
/// packs keep the signs; one ternary-logic or-and merges them; then one
/// permute of the 4-byte groups).
SCALIFY_ALWAYS_INLINE void store4_u8_signed(uint8_t* p, u32x a, u32x b, u32x c, u32x d, u32x sa, u32x sb, u32x sc,
                                            u32x sd) {
  const __m512i codes = _mm512_packus_epi16(_mm512_packus_epi32(a.v, b.v), _mm512_packus_epi32(c.v, d.v));
  const __m512i signs = _mm512_packs_epi16(_mm512_packs_epi32(sa.v, sb.v), _mm512_packs_epi32(sc.v, sd.v));
  // codes | (signs & 0x80): truth table 0xF8 for (A, B, C) = (codes, signs, 0x80).
  const __m512i bytes = _mm512_ternarylogic_epi32(codes, signs, _mm512_set1_epi8(static_cast<char>(0x80)), 0xF8);
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  _mm512_storeu_si512(p, _mm512_permutexvar_epi32(order, bytes));
}

/// As in vec_avx2.hpp: float16 <-> float32 bits in hardware (vcvtph2ps, vcvtps2ph nearest even).
SCALIFY_ALWAYS_INLINE u32x load_f16_as_f32(const uint16_t* p) {
  return {_mm512_castps_si512(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))))};
}
SCALIFY_ALWAYS_INLINE void store_f32_as_f16(uint16_t* p, u32x a) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                      _mm512_cvtps_ph(_mm512_castsi512_ps(a.v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

SCALIFY_ALWAYS_INLINE u32x operator+(u32x a, u32x b) { return {_mm512_add_epi32(a.v, b.v)}; }
SCALIFY_ALWAYS_INLINE u32x operator-(u32x a, u32x b) { return {_mm512_sub_epi32(a.v, b.v)}; }
SCALIFY_ALWAYS_INLINE u32x operator*(u32x a, u32x b) { return {_mm512_mullo_epi32(a.v, b.v)}; }
SCALIFY_ALWAYS_INLINE u32x operator&(u32x a, u32x b) { return {_mm512_and_si512(a.v, b.v)}; }
SCALIFY_ALWAYS_INLINE u32x operator|(u32x a, u32x b) { return {_mm512_or_si512(a.v, b.v)}; }
SCALIFY_ALWAYS_INLINE u32x operator^(u32x a, u32x b) { return {_mm512_xor_si512(a.v, b.v)}; }
SCALIFY_ALWAYS_INLINE u32x and_not(u32x a, u32x b) { return {_mm512_andnot_si512(b.v, a.v)}; }
template <int kCount>
SCALIFY_ALWAYS_INLINE u32x shift_right(u32x a) {
  return {_mm512_srli_epi32(a.v, kCount)};
}
template <int kCount>
SCALIFY_ALWAYS_INLINE u32x shift_left(u32x a) {
  return {_mm512_slli_epi32(a.v, kCount)};
}
SCALIFY_ALWAYS_INLINE u32x shift_right(u32x a, u32x count) { return {_mm512_srlv_epi32(a.v, count.v)}; }
SCALIFY_ALWAYS_INLINE u32x shift_left(u32x a, u32x count) { return {_mm512_sllv_epi32(a.v, count.v)}; }
SCALIFY_ALWAYS_INLINE u32x min(u32x a, u32x b) { return {_mm512_min_epu32(a.v, b.v)}; }
SCALIFY_ALWAYS_INLINE u32x max(u32x a, u32x b) { return {_mm512_max_epu32(a.v, b.v)}; }

SCALIFY_ALWAYS_INLINE u32x eq(u32x a, u32x b) { return {_mm512_movm_epi32(_mm512_cmpeq_epu32_mask(a.v, b.v))}; }
SCALIFY_ALWAYS_INLINE u32x gt(u32x a, u32x b) { return {_mm512_movm_epi32(_mm512_cmpgt_epu32_mask(a.v, b.v))}; }
SCALIFY_ALWAYS_INLINE u32x gt_i32(u32x a, u32x b) {
  return {_mm512_movm_epi32(_mm512_cmpgt_epi32_mask(a.v, b.v))};
}
SCALIFY_ALWAYS_INLINE u32x select(u32x mask, u32x a, u32x b) {
  return {_mm512_mask_blend_epi32(_mm512_movepi32_mask(mask.v), b.v, a.v)};
}
SCALIFY_ALWAYS_INLINE bool any(u32x mask) { return _mm512_movepi32_mask(mask.v) != 0; }

SCALIFY_ALWAYS_INLINE u32x int_to_float_bits_scaled(u32x a, float scale) {
  const __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(a.v), _mm512_set1_ps(scale));
  return {_mm512_castps_si512(f)};
}

/// The bits of float(a) + c, where the lanes of `a` hold float bits (one IEEE addition).
SCALIFY_ALWAYS_INLINE u32x float_add_bits(u32x a, float c) {
  return {_mm512_castps_si512(_mm512_add_ps(_mm512_castsi512_ps(a.v), _mm512_set1_ps(c)))};
}

SCALIFY_ALWAYS_INLINE u32x float_add_bits(u32x a, u32x b) {
  return {_mm512_castps_si512(_mm512_add_ps(_mm512_castsi512_ps(a.v), _mm512_castsi512_ps(b.v)))};
}

SCALIFY_ALWAYS_INLINE uint64_t reduce_add(u32x a) {
  alignas(64) uint32_t lanes[kLanes];
  _mm512_store_si512(lanes, a.v);
  uint64_t sum = 0;
  for (uint32_t x : lanes) sum += x;
  return sum;
}
SCALIFY_ALWAYS_INLINE uint32_t reduce_max(u32x a) { return _mm512_reduce_max_epu32(a.v); }

}  // namespace scalify::simd::avx512
SCALIFY_END_TARGET

#endif  // SCALIFY_HAVE_X86_SIMD
#endif  // SCALIFY_SIMD_VEC_AVX512_HPP_
