// scalify: the one traits-driven codec behind every narrow format.
//
// A format is described by a `format_spec` (bit widths, bias, special codes);
// `encode<Spec>()` rounds a float or double to the format's code and
// `decode_float<Spec>()` widens a code to float32. Every cast in scalify
// (float8, float16, bfloat16; nearest-even, toward-zero, stochastic; default
// and saturating) is this one function with different arguments, and the SIMD
// bulk casts (formats/detail/convert_simd-inl.hpp) compute the same results
// lane by lane (mostly by the same integer steps; float8 nearest-even rounds
// with a float addition), so scalar and SIMD results agree bit for bit.
//
// References: OCP 8-bit Floating Point Specification (OFP8) rev 1.0, 2023;
// Micikevicius et al., "FP8 Formats for Deep Learning", arXiv 2209.05433;
// OCP Microscaling Formats (MX) v1.0 for E8M0; IEEE 754-2019.
#ifndef SCALIFY_FORMATS_DETAIL_CODEC_HPP_
#define SCALIFY_FORMATS_DETAIL_CODEC_HPP_

#include <bit>          // std::bit_cast, std::bit_width
#include <cstdint>      // uint8_t, uint16_t, uint32_t, uint64_t
#include <stdexcept>    // std::invalid_argument
#include <string>       // std::to_string
#include <type_traits>  // std::conditional_t, std::is_same_v

namespace scalify {

/// How a cast rounds a value that falls between two representable neighbours.
enum class rounding {
  nearest_even,  ///< IEEE round to nearest, ties to even (the default).
  toward_zero,   ///< Truncate the magnitude (for experiments).
  stochastic,    ///< Round away from zero with probability equal to the
                 ///< fraction of the gap; the caller supplies 32 random bits.
};

namespace detail {

/// The layout of a narrow floating-point format.
struct format_spec {
  int bits;            ///< total width: 8 or 16
  int mantissa_bits;   ///< stored fraction bits
  int exponent_bias;
  bool has_sign;       ///< e8m0fnu has none
  bool has_zero;       ///< e8m0fnu has none
  bool has_subnormals; ///< e8m0fnu: the all-zero exponent is the normal value 2^-127
  bool has_inf;
  uint32_t max_code;   ///< largest finite magnitude code
  uint32_t inf_code;   ///< magnitude code of infinity (if has_inf)
  uint32_t nan_code;   ///< canonical quiet NaN magnitude code

  constexpr uint32_t sign_bit() const { return has_sign ? 1u << (bits - 1) : 0u; }
  constexpr uint32_t magnitude_mask() const {
    return (has_sign ? (1u << (bits - 1)) : (1u << bits)) - 1u;
  }
  /// Biased exponent of the smallest normal number (1, or 0 without subnormals).
  constexpr int min_normal_exponent() const { return has_subnormals ? 1 : 0; }
};

/// Running statistics of a narrowing cast (see scalify::cast_stats).
struct narrow_stats {
  uint32_t amax_bits = 0;  ///< float bits of max |x| over non-NaN inputs
  uint64_t overflow = 0, underflow = 0, nan = 0;
};

/// Maps a narrow type to its format_spec: `format_of<T>::value`. Specialised
/// next to each type (formats/float8.hpp, formats/float16.hpp).
template <class T>
struct format_of;

/// Layout of the IEEE source formats (float, double) the casts read.
template <class From>
struct source_layout;
template <>
struct source_layout<float> {
  using bits_type = uint32_t;
  static constexpr int kBits = 32, kMantissaBits = 23, kExponentBias = 127;
};
template <>
struct source_layout<double> {
  using bits_type = uint64_t;
  static constexpr int kBits = 64, kMantissaBits = 52, kExponentBias = 1023;
};

/// Decides whether a value truncated to `q` units rounds up, given the dropped
/// low `shift` bits `rem` of its significand (`rem < 2^shift`).
///
///   significand:  q q q ... q L | R T T ... T        (shift bits after '|')
///   nearest_even: up if R T..T > 1 0..0, or == 1 0..0 and L is odd
///   toward_zero:  never
///   stochastic:   F = floor(rem / 2^shift * 2^32); up if random_bits < F
///
/// Throws std::invalid_argument for a `mode` outside the enum, so a cast with
/// e.g. `rounding(7)` fails instead of truncating silently (entry points such
/// as convert() check the mode once, before their loops).
template <class Bits>
constexpr bool round_up(Bits q, Bits rem, int shift, rounding mode, uint32_t random_bits) {
  constexpr int kWidth = sizeof(Bits) * 8;
  switch (mode) {
    case rounding::nearest_even: {
      if (shift > kWidth) return false;  // rem < 2^(kWidth) <= half: below the midpoint
      const Bits half = Bits{1} << (shift - 1);
      return rem > half || (rem == half && (q & 1u) != 0);
    }
    case rounding::toward_zero:
      return false;
    case rounding::stochastic: {
      uint64_t fraction;  // floor(rem * 2^(32 - shift)), a 32-bit fixed-point fraction
      if (shift <= 32) {
        fraction = static_cast<uint64_t>(rem) << (32 - shift);
      } else {
        fraction = shift - 32 >= kWidth ? 0 : static_cast<uint64_t>(rem >> (shift - 32));
      }
      return random_bits < fraction;
    }
  }
  // Only reached for a value outside the enum (e.g. rounding(7)): never in the loops of valid casts.
  throw std::invalid_argument("scalify: unknown rounding mode " + std::to_string(static_cast<int>(mode)) +
                              " (expected nearest_even, toward_zero or stochastic)");
}

/// Rounds `x` (float or double) into the format `S` and returns its code.
///
/// Steps:
///  1. NaN -> canonical NaN (sign kept where the format has one); infinity ->
///     infinity, or NaN for formats without one (in every mode).
///  2. Zero -> zero of the same sign (NaN for e8m0fnu, which has no zero).
///  3. Pick the significand and how many of its low bits to drop: a normal
///     result puts the target's exponent field above the source mantissa (so a
///     carry from rounding moves into the exponent for free); a subnormal result
///     shifts the full significand, implicit bit included, further right.
///  4. Round the dropped bits (round_up above).
///  5. Overflow, decided after rounding: saturate -> largest finite, otherwise
///     infinity or NaN. So e4m3fn: 464 -> 448 (tie to even), 464.5 -> NaN;
///     e5m2: 61440 -> inf.
///
/// If `overflowed` is given, it is set to whether a finite `x` fell beyond the
/// range (step 5), whatever `saturate` did about it.
template <const format_spec& S, class From>
constexpr uint32_t encode(From x, rounding mode, bool saturate, uint32_t random_bits = 0,
                          bool* overflowed = nullptr) {
  using L = source_layout<From>;
  using Bits = typename L::bits_type;
  constexpr Bits kSignMask = Bits{1} << (L::kBits - 1);
  constexpr Bits kInfBits = ((Bits{1} << (L::kBits - 1 - L::kMantissaBits)) - 1) << L::kMantissaBits;
  constexpr Bits kMantissaMask = (Bits{1} << L::kMantissaBits) - 1;

  const Bits u = std::bit_cast<Bits>(x);
  const bool negative = (u & kSignMask) != 0;
  const Bits a = u & ~kSignMask;
  const uint32_t sign = negative ? S.sign_bit() : 0u;

  // 1. Non-finite values.
  if (a > kInfBits) return S.nan_code | sign;
  if (!S.has_sign && negative && a != 0) return S.nan_code;
  if (a == kInfBits) return (S.has_inf ? S.inf_code : S.nan_code) | sign;
  // 2. Zeros.
  if (a == 0) return S.has_zero ? sign : S.nan_code;

  // 3. Significand and shift. Write |x| = full * 2^(exponent - FM) with the
  //    leading one of `full` at bit FM (source subnormals are normalised).
  const int biased_exponent = static_cast<int>(a >> L::kMantissaBits);
  Bits full;
  int exponent;
  if (biased_exponent == 0) {
    const int k = L::kMantissaBits + 1 - static_cast<int>(std::bit_width(a));
    full = a << k;
    exponent = 1 - L::kExponentBias - k;
  } else {
    full = (a & kMantissaMask) | (Bits{1} << L::kMantissaBits);
    exponent = biased_exponent - L::kExponentBias;
  }
  const int to_exponent = exponent + S.exponent_bias;  // biased, in the target
  Bits significand;
  int shift = L::kMantissaBits - S.mantissa_bits;
  if (to_exponent >= S.min_normal_exponent()) {
    // Normal result: the target's exponent field above the source mantissa,
    // so a carry out of the mantissa when rounding bumps the exponent.
    significand = (static_cast<Bits>(to_exponent) << L::kMantissaBits) | (full & kMantissaMask);
  } else if (!S.has_subnormals) {
    return 0;  // e8m0fnu: below 2^-127, its smallest value and nearest neighbour (code 0)
  } else {
    // Subnormal result (or below the format's range): the full significand,
    // shifted further by how far the exponent is below the normal range.
    significand = full;
    shift += S.min_normal_exponent() - to_exponent;
  }

  // 4. Round.
  constexpr int kWidth = L::kBits;
  Bits code;
  if (shift >= kWidth) {
    code = round_up(Bits{0}, significand, shift, mode, random_bits) ? 1u : 0u;
  } else if (mode == rounding::nearest_even) {
    // Branch-free form of round_up(): adding half - 1 plus the lowest kept
    // bit carries into the kept bits exactly when nearest-even rounds up.
    const Bits half = Bits{1} << (shift - 1);
    code = (significand + ((significand >> shift) & 1u) + half - 1u) >> shift;
  } else {
    const Bits q = significand >> shift;
    const Bits rem = significand & ((Bits{1} << shift) - 1);
    code = q + (round_up(q, rem, shift, mode, random_bits) ? 1u : 0u);
  }

  // 5. Overflow.
  if (code > S.max_code) {
    if (overflowed != nullptr) *overflowed = true;
    if (saturate || mode == rounding::stochastic) return S.max_code | sign;
    return (S.has_inf ? S.inf_code : S.nan_code) | sign;
  }
  return static_cast<uint32_t>(code) | sign;
}

/// Widens a code of format `S` to float32 bits, exactly. NaN codes become the
/// canonical quiet NaN 0x7FC00000 with the code's sign bit.
template <const format_spec& S>
constexpr uint32_t decode_float_bits(uint32_t code) {
  const uint32_t sign = (code & S.sign_bit()) != 0 ? 0x8000'0000u : 0u;
  const uint32_t magnitude = code & S.magnitude_mask();
  if (magnitude == S.nan_code || (S.has_inf && magnitude > S.inf_code)) return sign | 0x7FC0'0000u;
  if (S.has_inf && magnitude == S.inf_code) return sign | 0x7F80'0000u;
  if (magnitude == 0 && S.has_zero) return sign;
  const uint32_t exponent = magnitude >> S.mantissa_bits;
  const uint32_t mantissa = magnitude & ((1u << S.mantissa_bits) - 1u);
  if (exponent == 0 && S.has_subnormals) {
    // mantissa * 2^(1 - bias - M): normalise around the leading one bit p.
    const int p = std::bit_width(mantissa) - 1;
    const int e = p + 1 - S.exponent_bias - S.mantissa_bits + 127;
    if (e <= 0) {  // a float32 subnormal (bfloat16 subnormals): same layout
      return sign | (mantissa << (23 - S.mantissa_bits));
    }
    return sign | (static_cast<uint32_t>(e) << 23) | ((mantissa - (1u << p)) << (23 - p));
  }
  if (exponent == 0) {  // e8m0fnu's 2^-127: a float32 subnormal
    return sign | (1u << 22) | (mantissa << (22 - S.mantissa_bits));
  }
  const uint32_t e = exponent - S.exponent_bias + 127;
  return sign | (e << 23) | (mantissa << (23 - S.mantissa_bits));
}

template <const format_spec& S>
constexpr float decode_float(uint32_t code) {
  return std::bit_cast<float>(decode_float_bits<S>(code));
}

// ---------------------------------------------------------------------------
// The formats. Constants are grouped by field: s eeee mmm.

/// float8_e4m3fn. Exponent 4, mantissa 3, bias 7; no infinity; NaN = S.1111.111.
/// max: (1 + 0b110 * 2^-3) * 2^(0b1111 - 7) = 1.75 * 2^8 = 448.
inline constexpr format_spec kE4M3FN{8, 3, 7, true, true, true, false,
                                     /*max*/ 0b0'1111'110, /*inf*/ 0, /*nan*/ 0b0'1111'111};
/// float8_e5m2. Exponent 5, mantissa 2, bias 15; IEEE-like.
/// max: (1 + 0b11 * 2^-2) * 2^(0b11110 - 15) = 1.75 * 2^15 = 57344; inf = S.11111.00.
inline constexpr format_spec kE5M2{8, 2, 15, true, true, true, true,
                                   /*max*/ 0b0'11110'11, /*inf*/ 0b0'11111'00, /*nan*/ 0b0'11111'10};
/// float8_e8m0fnu (OCP MX scale). Exponent 8, no mantissa, bias 127, no sign,
/// no zero: 2^(e - 127) for e = 0..254; NaN = 0xFF.
inline constexpr format_spec kE8M0FNU{8, 0, 127, false, false, false, false,
                                      /*max*/ 0b1111'1110, /*inf*/ 0, /*nan*/ 0b1111'1111};
/// IEEE binary16. max: (2 - 2^-10) * 2^15 = 65504.
inline constexpr format_spec kFloat16{16, 10, 15, true, true, true, true,
                                      /*max*/ 0x7BFF, /*inf*/ 0x7C00, /*nan*/ 0x7E00};
/// bfloat16: float32's upper half. max: (2 - 2^-7) * 2^127 ~ 3.39e38.
inline constexpr format_spec kBFloat16{16, 7, 127, true, true, true, true,
                                       /*max*/ 0x7F7F, /*inf*/ 0x7F80, /*nan*/ 0x7FC0};

}  // namespace detail
}  // namespace scalify

#endif  // SCALIFY_FORMATS_DETAIL_CODEC_HPP_
