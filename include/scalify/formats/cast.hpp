// scalify: the cast flavours for one value.
//
//   T(x), static_cast<T>(x)   nearest even, non-saturating (formats/float8.hpp)
//   saturate_cast<T>(x)       nearest even; finite overflow -> +-max finite
//   truncate_cast<T>(x)       toward zero, non-saturating
//   stochastic_cast<T>(x, r)  stochastic with caller's 32 random bits, saturating
//   round_cast<T>(x, mode, saturate, r)   any combination
//
// T is any of float8_e4m3fn, float8_e5m2, float8_e8m0fnu, float16, bfloat16;
// x is float, double, float16, bfloat16 or a float8. Narrow sources widen to
// float exactly first and doubles round directly, so every cast rounds once.
// Infinities and NaN behave as in the default cast in every flavour (e4m3fn:
// inf -> NaN; e5m2, float16, bfloat16: inf -> inf); NaN keeps its sign and
// drops its payload.
#ifndef SCALIFY_FORMATS_CAST_HPP_
#define SCALIFY_FORMATS_CAST_HPP_

#include <cstdint>      // uint32_t, uint64_t
#include <type_traits>  // std::is_same_v

#include "scalify/formats/detail/codec.hpp"  // encode, rounding
#include "scalify/formats/float16.hpp"       // float16, bfloat16
#include "scalify/formats/float8.hpp"        // float8_e4m3fn, float8_e5m2, float8_e8m0fnu

namespace scalify {
namespace detail {

template <class T>
concept narrow_float = float8_type<T> || std::is_same_v<T, float16> || std::is_same_v<T, bfloat16>;

/// The source value as float or double, exactly.
template <class From>
constexpr auto cast_source(From x) {
  if constexpr (std::is_same_v<From, double> || std::is_same_v<From, float>) {
    return x;
  } else if constexpr (std::is_integral_v<From>) {
    return static_cast<double>(x);
  } else {
    return static_cast<float>(x);
  }
}

/// Chris Wellons' "lowbias32" integer hash (public domain): a bijection on
/// 32 bits with low bias, cheap in SIMD (shifts, xors, 32-bit multiplies).
constexpr uint32_t hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

/// The two per-seed keys of stochastic_bits().
struct stochastic_keys {
  uint32_t lo, hi;
};
constexpr stochastic_keys make_stochastic_keys(uint64_t seed) {
  return {hash32(static_cast<uint32_t>(seed) ^ 0x2545F491u),
          hash32(static_cast<uint32_t>(seed >> 32) ^ 0x9E3779B9u)};
}
constexpr uint32_t stochastic_bits(stochastic_keys k, uint64_t index) {
  const uint32_t h = hash32(static_cast<uint32_t>(index) ^ k.lo);
  return hash32(h ^ static_cast<uint32_t>(index >> 32) ^ k.hi);
}

}  // namespace detail

/// Counter-based random bits for stochastic rounding: a pure function of
/// (seed, index), so a bulk stochastic cast gives the same bytes whatever the
/// chunking or thread count. Element `i` of a bulk cast with options
/// `{seed, offset}` uses `stochastic_bits(seed, offset + i)`.
///
/// **Example**: `stochastic_cast<float8_e4m3fn>(x, stochastic_bits(42, i))`
constexpr uint32_t stochastic_bits(uint64_t seed, uint64_t index) {
  return detail::stochastic_bits(detail::make_stochastic_keys(seed), index);
}

/// Casts `x` to `To` with any rounding mode, saturating or not. Stochastic
/// rounding always saturates.
///
/// **Example**: `round_cast<float8_e5m2>(x, rounding::toward_zero, true)`
template <detail::narrow_float To, class From>
constexpr To round_cast(From x, rounding mode, bool saturate, uint32_t random_bits = 0) {
  constexpr const detail::format_spec& spec = detail::format_of<To>::value;
  return detail::from_code<To>(detail::encode<spec>(detail::cast_source(x), mode, saturate, random_bits));
}

/// Round to nearest even; finite values beyond the range become the largest
/// finite value of that sign. Infinities and NaN as in the default cast.
///
/// **Example**: `saturate_cast<float8_e4m3fn>(1000.0f)` is 448.
template <detail::narrow_float To, class From>
constexpr To saturate_cast(From x) {
  return round_cast<To>(x, rounding::nearest_even, true);
}

/// Round toward zero (drop the low bits); values beyond the range still
/// overflow to infinity (or NaN for e4m3fn), as the default cast does.
///
/// **Example**: `truncate_cast<float8_e4m3fn>(1.24f)` is 1.125.
template <detail::narrow_float To, class From>
constexpr To truncate_cast(From x) {
  return round_cast<To>(x, rounding::toward_zero, false);
}

/// Stochastic rounding: rounds away from zero iff `random_bits` is below the
/// fraction of the gap between the two neighbours, as 32-bit fixed point, so
/// P(up) = fraction to within 2^-32 and E[result] = x. Saturating.
///
/// **Example**: `stochastic_cast<float8_e5m2>(x, stochastic_bits(seed, i))`
template <detail::narrow_float To, class From>
constexpr To stochastic_cast(From x, uint32_t random_bits) {
  return round_cast<To>(x, rounding::stochastic, true, random_bits);
}

}  // namespace scalify

#endif  // SCALIFY_FORMATS_CAST_HPP_
