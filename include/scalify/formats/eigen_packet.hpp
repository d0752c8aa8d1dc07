// scalify: float8 <-> float casts that vectorize inside Eigen's evaluators,
// as Eigen's own half and bfloat16 conversions do in its packet math.
//
//   Eigen::Array<float8_e4m3fn, Dynamic, 1> x = ..., w = ...;
//   Eigen::ArrayXf y = x.cast<float>();                                   // 8 codes per step
//   z = (x.cast<float>() * w.cast<float>()).cast<float8_e4m3fn>();        // one fused loop
//
// Include scalify/formats/eigen.hpp, which includes this header.
//
// Eigen 3.4 picks its SIMD code at compile time (EIGEN_VECTORIZE_AVX2 follows
// -mavx2 or -march=...), so, unlike the rest of scalify (run-time dispatch
// from cpuid, one translation unit for every path), this header is active only when Eigen itself
// vectorizes with AVX2 and the compiler targets F16C: SCALIFY_EIGEN_PACKET_FLOAT8 is then 1.
// Otherwise it defines nothing else and Eigen converts one element at a time
// through float8_base, as before. As with Eigen itself, every translation unit
// of a program should be built with the same -m flags. The bulk casts of
// formats/convert.hpp are unaffected either way.
//
// What it adds, for float8_e4m3fn and float8_e5m2 (in Eigen::internal):
//   - Packet8<T>, 8 codes; packet_traits<T> makes the float8 types Vectorizable
//     for loads, stores, copies and casts, with arithmetic left scalar
//     (HasAdd = HasMul = ... = 0) and unpacket_traits<Packet8<T>>::vectorizable
//     false, which keeps Eigen's GEMM/GEMV kernels scalar.
//   - type_casting_traits and pcast between Packet8<T> and Packet8f: widening
//     is exact (NaN codes give 0x7FC00000 with their sign); narrowing rounds to
//     nearest even without saturating, the default cast, bit for bit.
//   - inside scalify's own evaluations (a screen_scope, which
//     core/scaled_array.hpp's evaluate_linear opens), NaN screening for
//     e4m3fn widening: contiguous codes are checked for NaN codes up to 512 at
//     a time, ahead of the packets but never past the last coefficient the
//     evaluation reads, and packets in a window without one skip the NaN step
//     of the decode (6 uops per 8 codes instead of 10; the same bits). Plain
//     Eigen assignments read nothing ahead and decode every packet exactly.
//   - for formats/detail/eigen_fold.hpp, which folds the e4m3fn decode's 2^8
//     into an expression's constant factors inside scalify's evaluations:
//     packet_over_256 (value * 2^-8, exact), clean_run (how far the screened
//     windows let packets decode without a check) and packet_clean_over_256.
//   - evaluators for `cast<float>()` and `cast<T>()` expressions that call those
//     pcasts. Eigen 3.4 never vectorizes a cast expression in Core (its
//     scalar_cast_op has PacketAccess = false, for half and bfloat16 too; only
//     the Tensor module uses pcast), so this is the one place where scalify
//     specializes Eigen internals beyond the documented customisation points
//     (numeric_limits, NumTraits, numext, ScalarBinaryOpTraits, functors with
//     functor_traits); hence the version check (Eigen 3.4.x).
//   - the packet functions that Eigen calls for any Vectorizable scalar even
//     when arithmetic is off: pset1, pfirst, preverse, pgather/pscatter, the
//     ptranspose of GEMM's right-hand-side packing, and padd/psub/pmul/pdiv for
//     the small coefficient-based products, which widen, compute in float and
//     round once, exactly like the scalar float8 operators.
//
// Under AVX-512 (EIGEN_VECTORIZE_AVX512; tested by formats/eigen_packet_avx512,
// the same test built with -mavx512f/bw/dq/vl, on CPUs that have them) Eigen's float packet is
// Packet16f: a widening cast decodes two Packet8<T> with the AVX2 code below
// and joins them with one AVX-512F insert; narrowing still goes 8 lanes at a
// time (the float8 packet has 8 lanes, and Eigen asks the float operand for a
// Packet8f). Smaller float packets (Packet4f, for small fixed sizes) are filled
// element by element with the scalar cast.
//
// Bit-exactness assumes the default MXCSR rounding (to nearest), as all of
// Eigen's float math does: narrowing rounds float8 subnormals with one float
// addition (step 2 of encode_e4m3fn). DAZ and FTZ change no result.
#ifndef SCALIFY_FORMATS_EIGEN_PACKET_HPP_
#define SCALIFY_FORMATS_EIGEN_PACKET_HPP_

#include <Eigen/Core>  // EIGEN_VECTORIZE_*, Eigen::internal packet math and evaluators

#include "scalify/formats/float8.hpp"  // float8_e4m3fn, float8_e5m2

/// 1 when Eigen's casts between float8 and float vectorize (the
/// specializations below are active), else 0.
#if defined(EIGEN_VECTORIZE_AVX2) && defined(__F16C__) && EIGEN_VERSION_AT_LEAST(3, 4, 0) && \
    !EIGEN_VERSION_AT_LEAST(3, 4, 90)
#define SCALIFY_EIGEN_PACKET_FLOAT8 1
#else
#define SCALIFY_EIGEN_PACKET_FLOAT8 0
#endif

#if SCALIFY_EIGEN_PACKET_FLOAT8

#include <immintrin.h>  // AVX2, F16C (and AVX-512F under EIGEN_VECTORIZE_AVX512)

#include <algorithm>    // std::min
#include <cstdint>      // uint8_t
#include <type_traits>  // std::conditional_t, std::is_same_v

#include "scalify/simd/float8_avx2.hpp"  // any_e4m3fn_nan, widen8_e4m3fn_no_nan, widen8_e5m2

namespace scalify::detail::eigen_packet {

using Eigen::Index;

/// Eight float8 codes of type T, in the low 64 bits of an SSE register.
/// A distinct type per format, so pcast overloads cannot mix them up; no
/// implicit conversions, so an Eigen packet function we did not define fails
/// to compile instead of running on the raw register.
template <class T>
struct Packet8 {
  __m128i v;
};

EIGEN_STRONG_INLINE __m256i set1_u32(uint32_t x) { return _mm256_set1_epi32(static_cast<int>(x)); }

/// Keeps the low byte of each 32-bit lane (all lanes < 256) and packs them.
EIGEN_STRONG_INLINE __m128i pack_low_bytes(__m256i codes) {
  const __m128i words =
      _mm_packus_epi32(_mm256_castsi256_si128(codes), _mm256_extracti128_si256(codes, 1));
  return _mm_packus_epi16(words, words);
}

// ---------------------------------------------------------------------------
// Widening. Both formats are subsets of IEEE binary16 once rescaled, so F16C
// (vcvtph2ps) does the work; only NaN codes need care.

/// float8_e4m3fn -> float, exactly (decode_float_bits of formats/detail/codec.hpp):
/// simd::avx2::widen8_e4m3fn_no_nan's decode (sign-extend, shift left by 7,
/// mask with 0xBF80: the float16 of value * 2^-8; vcvtph2ps and * 2^8) with a
/// NaN step between the mask and vcvtph2ps. NaN codes (s.1111.111) would
/// become +-1.875 (0x3F80 with the sign); before the mask they are the only
/// lanes with y | 0xC000 == 0xFF80, and xor-ing 0x4180 into them gives 0x7E00
/// with the sign, the float16 canonical NaN, which widens to 0x7FC00000 with
/// the code's sign. Integer operations and one multiply (no blend): 9 uops
/// with the two of vcvtph2ps and the load, against 6 without the NaN step.
EIGEN_STRONG_INLINE __m256 decode_e4m3fn(__m128i codes) {
  const __m128i y = _mm_slli_epi16(_mm_cvtepi8_epi16(codes), 7);
  const __m128i h0 = _mm_and_si128(y, _mm_set1_epi16(static_cast<short>(0xBF80)));
  const __m128i nan = _mm_cmpeq_epi16(_mm_or_si128(y, _mm_set1_epi16(static_cast<short>(0xC000))),
                                      _mm_set1_epi16(static_cast<short>(0xFF80)));
  const __m128i h = _mm_xor_si128(h0, _mm_and_si128(nan, _mm_set1_epi16(0x4180)));
  return _mm256_mul_ps(_mm256_cvtph_ps(h), _mm256_set1_ps(256.0f));
}

/// How far NaN screening may read ahead (see scalify_cast_evaluator): the
/// contiguous float8_e4m3fn operands of evaluators built on this thread while
/// a screen_scope is alive are screened up to linear index `end`, which the
/// evaluation promises to read anyway. Without a scope (plain Eigen
/// assignments) nothing is read ahead and every packet decodes exactly, so
/// Eigen reads only the coefficients it evaluates, as always.
inline thread_local Index screen_end = 0;

class screen_scope {
 public:
  explicit screen_scope(Index end) : saved_(screen_end) { screen_end = end; }
  ~screen_scope() { screen_end = saved_; }
  screen_scope(const screen_scope&) = delete;
  screen_scope& operator=(const screen_scope&) = delete;

 private:
  Index saved_;
};

/// float8_e5m2 -> float, exactly: simd::avx2::widen8_e5m2 (a zero byte below
/// each code makes the float16 of the same value; vcvtph2ps), whose NaN codes
/// (s.11111.mm, mm != 0) come out as quiet NaNs carrying their payload
/// (0x7FE00000 or 0x7FC00000 with the sign); clearing bits 21..0 of NaN lanes
/// leaves the canonical 0x7FC00000 with the sign (3 uops more).
EIGEN_STRONG_INLINE __m256 decode_e5m2(__m128i codes) {
  const __m256 x = scalify::simd::avx2::widen8_e5m2(codes);
  const __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
  return _mm256_andnot_ps(_mm256_and_ps(nan, _mm256_castsi256_ps(set1_u32(0x003F'FFFFu))), x);
}

// ---------------------------------------------------------------------------
// Narrowing: round to nearest even, non-saturating (float8_base::round, i.e.
// detail::encode<S>(x, nearest_even, false)), lane by lane.

/// Sets bit 7 of each lane where x is negative (the float8 sign).
EIGEN_STRONG_INLINE __m256i with_sign(__m256i code, __m256 x) {
  const __m256 signed_code = _mm256_castsi256_ps(_mm256_or_si256(code, set1_u32(0x80)));
  return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(code), signed_code, x));
}

/// float -> float8_e4m3fn. With a = |x| as bits, two candidate codes:
///  1. n, right for normal results (a >= 2^-6 = 0x3C800000): rebias the
///     exponent by (7 - 127) and round the 23 - 3 = 20 dropped bits to nearest
///     even by adding 0x7FFFF plus the lowest kept bit (encode()'s
///     branch-free form); a carry out of the mantissa bumps the exponent:
///        n = ((a + ((a >> 20) & 1) + 0x7FFFF - (121 << 23)) >> 20) + 8
///     (rebiased by 121, then + 8 = one exponent step: the same for normal
///     results, while below 2^-6 the sum wraps around and n is huge).
///  2. k, right for subnormal results (a < 2^-6): |x| + 2^14 in float rounds
///     |x| to a multiple of 2^-9 = ulp(2^14), to nearest even, and its low
///     bits minus those of 2^14 (0x46800000) count the multiples: the code
///     (8 = the smallest normal, when rounding carries into it). For normal
///     results k = round(|x| * 2^9) >= n, so the code is min(k, n). Float
///     subnormal inputs are far below 2^-10 and give 0 with or without DAZ.
///  3. Overflow: every code above 0x7E (448) is NaN (no infinity, and the
///     cast does not saturate: 464 ties to 448, anything larger rounds to 480
///     or beyond), and inf and NaN inputs have larger codes still:
///     code = min(code, 0x7F).
///  4. The sign goes to bit 7.
EIGEN_STRONG_INLINE __m128i encode_e4m3fn(__m256 x) {
  const __m256i a = _mm256_and_si256(_mm256_castps_si256(x), set1_u32(0x7FFF'FFFFu));
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(a, 20), set1_u32(1));
  const __m256i sum = _mm256_add_epi32(_mm256_add_epi32(a, odd), set1_u32(0x7FFFFu - (121u << 23)));
  const __m256i n = _mm256_add_epi32(_mm256_srli_epi32(sum, 20), set1_u32(8));
  const __m256 k_sum = _mm256_add_ps(_mm256_castsi256_ps(a), _mm256_set1_ps(16384.0f));
  const __m256i k = _mm256_sub_epi32(_mm256_castps_si256(k_sum), set1_u32(0x4680'0000u));
  const __m256i code = _mm256_min_epu32(_mm256_min_epu32(k, n), set1_u32(0x7F));
  return pack_low_bytes(with_sign(code, x));
}

/// float -> float8_e5m2, the same steps with 2 mantissa bits and bias 15:
///  1. n = ((a + ((a >> 21) & 1) + 0xFFFFF - (113 << 23)) >> 21) + 4
///  2. k = bits(|x| + 2^7) - bits(2^7): multiples of 2^-16 = ulp(2^7);
///     code = min(k, n).
///  3. Codes above 0x7B (57344) overflow to infinity (0x7C), and so do inf
///     inputs: code = min(code, 0x7C); NaN inputs then get 0x7C | 0x02 = 0x7E.
///  4. The sign goes to bit 7.
EIGEN_STRONG_INLINE __m128i encode_e5m2(__m256 x) {
  const __m256i a = _mm256_and_si256(_mm256_castps_si256(x), set1_u32(0x7FFF'FFFFu));
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(a, 21), set1_u32(1));
  const __m256i sum = _mm256_add_epi32(_mm256_add_epi32(a, odd), set1_u32(0xFFFFFu - (113u << 23)));
  const __m256i n = _mm256_add_epi32(_mm256_srli_epi32(sum, 21), set1_u32(4));
  const __m256 k_sum = _mm256_add_ps(_mm256_castsi256_ps(a), _mm256_set1_ps(128.0f));
  const __m256i k = _mm256_sub_epi32(_mm256_castps_si256(k_sum), set1_u32(0x4300'0000u));
  __m256i code = _mm256_min_epu32(_mm256_min_epu32(k, n), set1_u32(0x7C));
  const __m256i nan = _mm256_cmpgt_epi32(a, set1_u32(0x7F80'0000u));  // a < 2^31: signed compare
  code = _mm256_or_si256(code, _mm256_and_si256(nan, set1_u32(0x02)));
  return pack_low_bytes(with_sign(code, x));
}

template <class T>
EIGEN_STRONG_INLINE __m256 decode(Packet8<T> p) {
  if constexpr (std::is_same_v<T, float8_e4m3fn>) {
    return decode_e4m3fn(p.v);
  } else {
    return decode_e5m2(p.v);
  }
}
template <class T>
EIGEN_STRONG_INLINE Packet8<T> encode(__m256 x) {
  if constexpr (std::is_same_v<T, float8_e4m3fn>) {
    return {encode_e4m3fn(x)};
  } else {
    return {encode_e5m2(x)};
  }
}

template <class T>
concept packet_float8 = std::is_same_v<T, float8_e4m3fn> || std::is_same_v<T, float8_e5m2>;

}  // namespace scalify::detail::eigen_packet

// Eigen's packet types carry vector attributes that GCC drops (and warns
// about) when they are template arguments; Eigen silences the same warning in
// its own headers.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

namespace Eigen::internal {

// ---------------------------------------------------------------------------
// The packet type and its traits.

/// packet_traits of a float8 type T (below, one explicit specialization each).
template <class T>
struct scalify_float8_packet_traits : default_packet_traits {
  using type = scalify::detail::eigen_packet::Packet8<T>;
  using half = type;  // no smaller packet
  enum {
    Vectorizable = 1,
    AlignedOnScalar = 1,
    size = 8,
    HasHalfPacket = 0,
    // Loads, stores and casts only: arithmetic on float8 stays scalar.
    HasAdd = 0,
    HasSub = 0,
    HasShift = 0,
    HasMul = 0,
    HasNegate = 0,
    HasAbs = 0,
    HasAbs2 = 0,
    HasMin = 0,
    HasMax = 0,
    HasConj = 0,
    HasSetLinear = 0,
    HasBlend = 0,
    HasCmp = 0,
    HasDiv = 0,
  };
};

template <class T>
struct unpacket_traits<scalify::detail::eigen_packet::Packet8<T>> {
  using type = T;
  using half = scalify::detail::eigen_packet::Packet8<T>;
  enum {
    size = 8,
    alignment = Aligned8,
    // false keeps the GEMM/GEMV kernels (which test this flag) on scalars.
    vectorizable = false,
    masked_load_available = false,
    masked_store_available = false,
  };
};

/// type_casting_traits of float8 <-> float: one packet of 8 for one packet of 8.
struct scalify_float8_casting_traits {
  enum { VectorizedCast = 1, SrcCoeffRatio = 1, TgtCoeffRatio = 1 };
};

template <>
struct packet_traits<scalify::float8_e4m3fn>
    : scalify_float8_packet_traits<scalify::float8_e4m3fn> {};
template <>
struct packet_traits<scalify::float8_e5m2> : scalify_float8_packet_traits<scalify::float8_e5m2> {};
template <>
struct type_casting_traits<scalify::float8_e4m3fn, float> : scalify_float8_casting_traits {};
template <>
struct type_casting_traits<float, scalify::float8_e4m3fn> : scalify_float8_casting_traits {};
template <>
struct type_casting_traits<scalify::float8_e5m2, float> : scalify_float8_casting_traits {};
template <>
struct type_casting_traits<float, scalify::float8_e5m2> : scalify_float8_casting_traits {};

// ---------------------------------------------------------------------------
// Packet functions (explicit specializations of Eigen's templates).

#define SCALIFY_EIGEN_PACKET_FUNCTIONS(T)                                                  \
  template <>                                                                              \
  EIGEN_STRONG_INLINE scalify::detail::eigen_packet::Packet8<T>                            \
  pset1<scalify::detail::eigen_packet::Packet8<T>>(const T& from) {                        \
    return {_mm_set1_epi8(static_cast<char>(from.bits()))};                                \
  }                                                                                        \
  template <>                                                                              \
  EIGEN_STRONG_INLINE scalify::detail::eigen_packet::Packet8<T>                            \
  ploadu<scalify::detail::eigen_packet::Packet8<T>>(const T* from) {                       \
    return {_mm_loadl_epi64(reinterpret_cast<const __m128i*>(from))};                      \
  }                                                                                        \
  template <>                                                                              \
  EIGEN_STRONG_INLINE scalify::detail::eigen_packet::Packet8<T>                            \
  pload<scalify::detail::eigen_packet::Packet8<T>>(const T* from) {                        \
    return {_mm_loadl_epi64(reinterpret_cast<const __m128i*>(from))};                      \
  }                                                                                        \
  template <>                                                                              \
  EIGEN_STRONG_INLINE void pstoreu<T, scalify::detail::eigen_packet::Packet8<T>>(          \
      T * to, const scalify::detail::eigen_packet::Packet8<T>& from) {                     \
    _mm_storel_epi64(reinterpret_cast<__m128i*>(to), from.v);                              \
  }                                                                                        \
  template <>                                                                              \
  EIGEN_STRONG_INLINE void pstore<T, scalify::detail::eigen_packet::Packet8<T>>(           \
      T * to, const scalify::detail::eigen_packet::Packet8<T>& from) {                     \
    _mm_storel_epi64(reinterpret_cast<__m128i*>(to), from.v);                              \
  }                                                                                        \
  template <>                                                                              \
  EIGEN_STRONG_INLINE T pfirst<scalify::detail::eigen_packet::Packet8<T>>(                 \
      const scalify::detail::eigen_packet::Packet8<T>& a) {                                \
    return T::from_bits(static_cast<uint8_t>(_mm_cvtsi128_si32(a.v)));                     \
  }                                                                                        \
  template <>                                                                              \
  EIGEN_STRONG_INLINE scalify::detail::eigen_packet::Packet8<T> preverse(                  \
      const scalify::detail::eigen_packet::Packet8<T>& a) {                                \
    return {_mm_shuffle_epi8(                                                              \
        a.v, _mm_setr_epi8(7, 6, 5, 4, 3, 2, 1, 0, 8, 9, 10, 11, 12, 13, 14, 15))};        \
  }                                                                                        \
  template <>                                                                              \
  EIGEN_STRONG_INLINE scalify::detail::eigen_packet::Packet8<T>                            \
  pgather<T, scalify::detail::eigen_packet::Packet8<T>>(const T* from, Index stride) {     \
    alignas(16) T codes[8];                                                                \
    for (int i = 0; i < 8; ++i) codes[i] = from[i * stride];                               \
    return ploadu<scalify::detail::eigen_packet::Packet8<T>>(codes);                       \
  }                                                                                        \
  template <>                                                                              \
  EIGEN_STRONG_INLINE void pscatter<T, scalify::detail::eigen_packet::Packet8<T>>(         \
      T * to, const scalify::detail::eigen_packet::Packet8<T>& from, Index stride) {       \
    alignas(16) T codes[8];                                                                \
    pstoreu(codes, from);                                                                  \
    for (int i = 0; i < 8; ++i) to[i * stride] = codes[i];                                 \
  }                                                                                        \
  template <>                                                                              \
  EIGEN_STRONG_INLINE Packet8f pcast<scalify::detail::eigen_packet::Packet8<T>, Packet8f>( \
      const scalify::detail::eigen_packet::Packet8<T>& a) {                                \
    return scalify::detail::eigen_packet::decode(a);                                       \
  }                                                                                        \
  template <>                                                                              \
  EIGEN_STRONG_INLINE scalify::detail::eigen_packet::Packet8<T>                            \
  pcast<Packet8f, scalify::detail::eigen_packet::Packet8<T>>(const Packet8f& a) {          \
    return scalify::detail::eigen_packet::encode<T>(a);                                    \
  }                                                                                        \
  /* Arithmetic as the scalar operators do it: widen, compute in float, round */           \
  /* once. Only Eigen's coefficient-based products reach these (HasAdd etc. are 0). */     \
  template <>                                                                              \
  EIGEN_STRONG_INLINE scalify::detail::eigen_packet::Packet8<T>                            \
  padd<scalify::detail::eigen_packet::Packet8<T>>(                                         \
      const scalify::detail::eigen_packet::Packet8<T>& a,                                  \
      const scalify::detail::eigen_packet::Packet8<T>& b) {                                \
    using namespace scalify::detail::eigen_packet;                                         \
    return encode<T>(_mm256_add_ps(decode(a), decode(b)));                                 \
  }                                                                                        \
  template <>                                                                              \
  EIGEN_STRONG_INLINE scalify::detail::eigen_packet::Packet8<T>                            \
  psub<scalify::detail::eigen_packet::Packet8<T>>(                                         \
      const scalify::detail::eigen_packet::Packet8<T>& a,                                  \
      const scalify::detail::eigen_packet::Packet8<T>& b) {                                \
    using namespace scalify::detail::eigen_packet;                                         \
    return encode<T>(_mm256_sub_ps(decode(a), decode(b)));                                 \
  }                                                                                        \
  template <>                                                                              \
  EIGEN_STRONG_INLINE scalify::detail::eigen_packet::Packet8<T>                            \
  pmul<scalify::detail::eigen_packet::Packet8<T>>(                                         \
      const scalify::detail::eigen_packet::Packet8<T>& a,                                  \
      const scalify::detail::eigen_packet::Packet8<T>& b) {                                \
    using namespace scalify::detail::eigen_packet;                                         \
    return encode<T>(_mm256_mul_ps(decode(a), decode(b)));                                 \
  }                                                                                        \
  template <>                                                                              \
  EIGEN_STRONG_INLINE scalify::detail::eigen_packet::Packet8<T>                            \
  pdiv<scalify::detail::eigen_packet::Packet8<T>>(                                         \
      const scalify::detail::eigen_packet::Packet8<T>& a,                                  \
      const scalify::detail::eigen_packet::Packet8<T>& b) {                                \
    using namespace scalify::detail::eigen_packet;                                         \
    return encode<T>(_mm256_div_ps(decode(a), decode(b)));                                 \
  }

/// Transposes N packets of 8 codes into the same 8 * N codes ordered column by
/// column: afterwards, element r of packet q is element k of input packet j,
/// where 8q + r = N k + j (N = 8: the square transpose). Eigen's GEMM packs its
/// right-hand side with this for any Vectorizable scalar, float8 included.
template <class T, int N>
EIGEN_STRONG_INLINE void ptranspose(
    PacketBlock<scalify::detail::eigen_packet::Packet8<T>, N>& kernel) {
  static_assert(N == 4 || N == 8, "Eigen transposes blocks of 4 or 8 packets");
  alignas(16) uint8_t in[N][8];
  alignas(16) uint8_t out[8 * N];
  for (int j = 0; j < N; ++j)
    _mm_storel_epi64(reinterpret_cast<__m128i*>(in[j]), kernel.packet[j].v);
  for (int k = 0; k < 8; ++k) {
    for (int j = 0; j < N; ++j) out[N * k + j] = in[j][k];
  }
  for (int q = 0; q < N; ++q)
    kernel.packet[q].v = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(out + 8 * q));
}

SCALIFY_EIGEN_PACKET_FUNCTIONS(scalify::float8_e4m3fn)
SCALIFY_EIGEN_PACKET_FUNCTIONS(scalify::float8_e5m2)
#undef SCALIFY_EIGEN_PACKET_FUNCTIONS

// ---------------------------------------------------------------------------
// Cast expressions. Eigen 3.4's generic unary evaluator would ask the operand
// for a packet of the *result* type; these ask it for the packet of its own
// type and convert with pcast.

/// The evaluator of `arg.cast<To>()` for a float8 <-> float pair.
template <class From, class To, class ArgType>
struct scalify_cast_evaluator : evaluator_base<CwiseUnaryOp<scalar_cast_op<From, To>, ArgType>> {
  using XprType = CwiseUnaryOp<scalar_cast_op<From, To>, ArgType>;
  using ArgEvaluator = evaluator<ArgType>;
  using CoeffReturnType = typename XprType::CoeffReturnType;
  static constexpr bool kNarrowing = std::is_same_v<From, float>;
  /// The operand's packet: 8 codes, or 8 floats (also under AVX-512).
  using FromPacket =
      std::conditional_t<kNarrowing, Packet8f, scalify::detail::eigen_packet::Packet8<From>>;

  enum {
    CoeffReadCost =
        int(ArgEvaluator::CoeffReadCost) + int(functor_traits<scalar_cast_op<From, To>>::Cost),
    Flags = ArgEvaluator::Flags & (HereditaryBits | LinearAccessBit | PacketAccessBit),
    // Operands are always read with unaligned loads (8 codes are 8 bytes).
    Alignment = Unaligned,
  };

  EIGEN_STRONG_INLINE explicit scalify_cast_evaluator(const XprType& xpr)
      : op_(xpr.functor()), arg_(xpr.nestedExpression()) {
    if constexpr (kScreened) {
      const auto& codes = xpr.nestedExpression();
      const Index end = std::min(codes.size(), scalify::detail::eigen_packet::screen_end);
      if (codes.innerStride() == 1 && end > 0) {
        codes_ = reinterpret_cast<const uint8_t*>(codes.data());
        end_ = end;
        nan_begin_ = nan_end_ = 0;  // screen at the first packet
      }
    }
  }

  EIGEN_STRONG_INLINE CoeffReturnType coeff(Index row, Index col) const {
    return op_(arg_.coeff(row, col));
  }
  EIGEN_STRONG_INLINE CoeffReturnType coeff(Index index) const { return op_(arg_.coeff(index)); }

  template <int LoadMode, typename PacketType>
  EIGEN_STRONG_INLINE PacketType packet(Index row, Index col) const {
    constexpr bool kRowMajor = (int(Flags) & RowMajorBit) != 0;
    return cast_packet<PacketType>(
        [&](Index k) {
          return arg_.template packet<Unaligned, FromPacket>(kRowMajor ? row : row + k,
                                                             kRowMajor ? col + k : col);
        },
        [&](Index k) { return coeff(kRowMajor ? row : row + k, kRowMajor ? col + k : col); });
  }

  template <int LoadMode, typename PacketType>
  EIGEN_STRONG_INLINE PacketType packet(Index index) const {
    if constexpr (kScreened) {
      if constexpr (std::is_same_v<PacketType, Packet8f>) return widen_screened(index);
#ifdef EIGEN_VECTORIZE_AVX512
      if constexpr (std::is_same_v<PacketType, Packet16f>) {
        return join(widen_screened(index), widen_screened(index + 8));
      }
#endif
    }
    return cast_packet<PacketType>(
        [&](Index k) { return arg_.template packet<Unaligned, FromPacket>(index + k); },
        [&](Index k) { return coeff(index + k); });
  }

  /// Widening float8_e4m3fn: the packet at linear `index` times 2^-8,
  /// exactly, for scalify::detail::eigen_packet::fold_evaluator, which folds
  /// the 2^8 into a constant factor: in a clean screened window, the decode
  /// without its multiply (simd::avx2::widen8_e4m3fn_no_nan_over_256); any
  /// other packet decodes exactly and is scaled (NaN stays the same NaN).
  template <typename PacketType>
  EIGEN_STRONG_INLINE PacketType packet_over_256(Index index) const {
    static_assert(std::is_same_v<From, scalify::float8_e4m3fn> && std::is_same_v<To, float>);
    constexpr float kOver256 = 1.0f / 256.0f;
    if constexpr (std::is_same_v<PacketType, Packet8f>) {
      if constexpr (kScreened) {
        if (in_clean_window(index)) return packet_clean_over_256<Packet8f>(index);
        return pmul(widen_unscreened(index), pset1<Packet8f>(kOver256));
      }
#ifdef EIGEN_VECTORIZE_AVX512
    } else if constexpr (std::is_same_v<PacketType, Packet16f>) {
      return join(packet_over_256<Packet8f>(index), packet_over_256<Packet8f>(index + 8));
#endif
    }
    return pmul(packet<Unaligned, PacketType>(index), pset1<PacketType>(kOver256));
  }

  /// Widening float8_e4m3fn: how many codes from linear `index` on
  /// packet_clean_over_256 may read without a check per packet: those of a
  /// window screened clean (screening the window that starts there if
  /// needed); 0 in a window with a NaN code and where nothing may be screened
  /// (outside a screen_scope, or strided codes): packet_over_256 then decodes
  /// packet by packet; all of them for operands never screened (not in
  /// memory), which packet_clean_over_256 decodes exactly.
  Index clean_run(Index index) const {
    if constexpr (kScreened) {
      if (!in_clean_window(index) && !screen_window(index)) return 0;
      return clean_begin_ + static_cast<Index>(clean_span_) + 8 - index;
    } else {
      static_cast<void>(index);
      return NumTraits<Index>::highest();  // not screened: packet_clean_over_256 decodes exactly
    }
  }

  /// Widening float8_e4m3fn codes in memory (kStageable, stageable()): the
  /// float16 bits of value * 2^-8 of the `count` codes from linear `index`
  /// on, `count` a multiple of 32, into `halves` (32-byte aligned), in the
  /// order of simd::avx2::e4m3fn_halves_over_256 within each 32, for
  /// simd::avx2::cvtph_ps_from; every code also goes through `screen`. A NaN
  /// code's halves are wrong (a finite value): the caller decodes the codes
  /// again packet by packet when screen.hit(). scalify's evaluation decodes
  /// blocks of 32 codes so, with fewer uops than packet_clean_over_256's 8 at
  /// a time, and no second pass over the codes for screening
  /// (formats/detail/eigen_fold.hpp).
  void stage_over_256(Index index, Index count, uint16_t* halves, scalify::simd::avx2::nan_screen& screen) const {
    static_assert(kStageable);
    for (Index k = 0; k < count; k += 32) {
      screen.add(scalify::simd::avx2::e4m3fn_halves_over_256(codes_ + index + k, halves + k));
    }
  }
  /// Whether stage_over_256 may read every code below linear index `end`:
  /// contiguous codes, inside a screen_scope reaching `end`.
  bool stageable(Index end) const {
    if constexpr (kStageable) {
      return codes_ != nullptr && end <= end_;
    } else {
      static_cast<void>(end);
      return false;
    }
  }

  /// packet_over_256 for a packet that clean_run() put in a clean window: no check.
  template <typename PacketType>
  EIGEN_STRONG_INLINE PacketType packet_clean_over_256(Index index) const {
    if constexpr (kScreened && std::is_same_v<PacketType, Packet8f>) {
      return scalify::simd::avx2::widen8_e4m3fn_no_nan_over_256(
          _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes_ + index)));
#ifdef EIGEN_VECTORIZE_AVX512
    } else if constexpr (kScreened && std::is_same_v<PacketType, Packet16f>) {
      return join(packet_clean_over_256<Packet8f>(index), packet_clean_over_256<Packet8f>(index + 8));
#endif
    } else {
      return packet_over_256<PacketType>(index);
    }
  }

 private:
  /// Widening float8_e4m3fn codes that lie contiguously in memory, read by
  /// linear index, inside a screen_scope: the codes are screened for NaN
  /// codes a window at a time (from the packet asked for, at most kWindow
  /// codes, never past screen_end), and packets in a window without one
  /// decode with simd::avx2::widen8_e4m3fn_no_nan (4 uops less per 8 codes,
  /// the same bits). Other operands (strided, computed, or outside a scope)
  /// decode every packet exactly. e5m2 is not screened: skipping its 3-uop
  /// NaN step that way measured no faster in cache and 5-10 % slower from
  /// memory (bench_ops, Zen 4).
  static constexpr bool kScreened = std::is_same_v<From, scalify::float8_e4m3fn> &&
                                    (int(traits<ArgType>::Flags) & DirectAccessBit) != 0 &&
                                    (int(ArgEvaluator::Flags) & LinearAccessBit) != 0;
  static constexpr Index kWindow = 512;  // codes screened at a time

 public:
  /// Whether stage_over_256 applies: e4m3fn codes in memory, read by linear index.
  static constexpr bool kStageable = kScreened;

 private:
  /// The packet at `index`: a range check and the short decode when the
  /// packet lies in the last window screened clean, else widen_unscreened().
  EIGEN_STRONG_INLINE Packet8f widen_screened(Index index) const {
    if (in_clean_window(index)) return widen_clean(index);
    return widen_unscreened(index);
  }

  /// Whether the packet at `index` lies in the last window screened clean.
  EIGEN_STRONG_INLINE bool in_clean_window(Index index) const {
    return static_cast<UIndex>(index) - static_cast<UIndex>(clean_begin_) <= clean_span_;
  }

  /// Screens the window starting at `index` (kWindow codes at most, never
  /// past end_) unless the packet lies in the last window found to hold a NaN
  /// code; a clean window becomes the clean one (true), one with a NaN code
  /// the NaN one (false). False too where no packet fits before end_.
  bool screen_window(Index index) const {
    if (index >= nan_begin_ && index + 8 <= nan_end_) return false;
    const Index window_end = std::min(end_, index + kWindow);
    if (index + 8 > window_end) return false;
    if (scalify::simd::avx2::any_e4m3fn_nan(codes_ + index, window_end - index)) {
      nan_begin_ = index;
      nan_end_ = window_end;
      return false;
    }
    clean_begin_ = index;
    clean_span_ = static_cast<UIndex>(window_end - 8 - index);
    return true;
  }

  /// A packet outside the clean window: screens the window starting here
  /// (screen_window). Packets in a window with a NaN code, past end_ (an
  /// evaluation nested in another, with other indices) or outside any
  /// screen_scope (the NaN window is then everything) decode exactly.
  Packet8f widen_unscreened(Index index) const {
    if (screen_window(index)) return widen_clean(index);
    return pcast<FromPacket, Packet8f>(arg_.template packet<Unaligned, FromPacket>(index));
  }

  // GCC 12, inlining this into an Eigen reduction over a cast e4m3fn matrix
  // (the dot products of a lazy product), warns of an index of -2^60 from a
  // path it cannot rule out but that never runs: in_clean_window and
  // screen_window keep index + 8 <= end_.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Warray-bounds"
#endif
  EIGEN_STRONG_INLINE Packet8f widen_clean(Index index) const {
    return scalify::simd::avx2::widen8_e4m3fn_no_nan(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes_ + index)));
  }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#ifdef EIGEN_VECTORIZE_AVX512
  /// Lanes 0-7 from `lo`, 8-15 from `hi` (an AVX-512F insert of 256 bits; the
  /// zero-masking form with every lane selected is the plain insert, and
  /// avoids GCC 12's -Wmaybe-uninitialized on _mm512_undefined_pd, PR105593).
  static EIGEN_STRONG_INLINE Packet16f join(const Packet8f& lo, const Packet8f& hi) {
    return _mm512_castpd_ps(_mm512_maskz_insertf64x4(static_cast<__mmask8>(0xFF),
                                                     _mm512_castpd256_pd512(_mm256_castps_pd(lo)),
                                                     _mm256_castps_pd(hi), 1));
  }
#endif

  /// The result packet starting at the current position: `load(k)` reads the
  /// operand's packet of 8 starting k elements further, `scalar(k)` one result.
  template <typename PacketType, class Load, class Scalar>
  EIGEN_STRONG_INLINE PacketType cast_packet(const Load& load, const Scalar& scalar) const {
    constexpr int kSize = unpacket_traits<PacketType>::size;
    if constexpr (kNarrowing) {
      static_assert(std::is_same_v<PacketType, typename packet_traits<To>::type>,
                    "a float8 result is only read as a packet of 8 codes");
      return pcast<Packet8f, PacketType>(load(0));
    } else if constexpr (std::is_same_v<PacketType, Packet8f>) {
      return pcast<FromPacket, Packet8f>(load(0));
#ifdef EIGEN_VECTORIZE_AVX512
    } else if constexpr (std::is_same_v<PacketType, Packet16f>) {
      return join(pcast<FromPacket, Packet8f>(load(0)), pcast<FromPacket, Packet8f>(load(8)));
#endif
    } else {
      // Any other float packet (Packet4f for small fixed sizes): element by element.
      alignas(64) float values[kSize];
      for (int k = 0; k < kSize; ++k) values[k] = scalar(k);
      return ploadu<PacketType>(values);
    }
  }

  scalar_cast_op<From, To> op_;
  ArgEvaluator arg_;
  // Screening (kScreened): codes_[0, end_) may be screened. Packets starting
  // at clean_begin_ + [0, clean_span_] lie in a window screened clean (none
  // at first: the unsigned difference from the lowest index is at least
  // 2^63); [nan_begin_, nan_end_) is the last window found to hold a NaN
  // code, everything when not screening, so every packet decodes exactly.
  using UIndex = std::make_unsigned_t<Index>;
  const uint8_t* codes_ = nullptr;
  Index end_ = 0;
  mutable Index clean_begin_ = NumTraits<Index>::lowest();
  mutable UIndex clean_span_ = 0;
  mutable Index nan_begin_ = NumTraits<Index>::lowest();
  mutable Index nan_end_ = NumTraits<Index>::highest();
};

template <class T, class ArgType>
requires scalify::detail::eigen_packet::packet_float8<T>
struct evaluator<CwiseUnaryOp<scalar_cast_op<T, float>, ArgType>>
    : scalify_cast_evaluator<T, float, ArgType> {
  using scalify_cast_evaluator<T, float, ArgType>::scalify_cast_evaluator;
};
template <class T, class ArgType>
requires scalify::detail::eigen_packet::packet_float8<T>
struct evaluator<CwiseUnaryOp<scalar_cast_op<float, T>, ArgType>>
    : scalify_cast_evaluator<float, T, ArgType> {
  using scalify_cast_evaluator<float, T, ArgType>::scalify_cast_evaluator;
};

}  // namespace Eigen::internal

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

#endif  // SCALIFY_EIGEN_PACKET_FLOAT8
#endif  // SCALIFY_FORMATS_EIGEN_PACKET_HPP_
