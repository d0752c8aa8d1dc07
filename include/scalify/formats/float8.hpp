// scalify: 8-bit floating-point types.
//
//   float8_e4m3fn   s eeee mmm   bias 7    max 448     no inf, NaN = s.1111.111
//   float8_e5m2     s eeeee mm   bias 15   max 57344   inf = s.11111.00
//   float8_e8m0fnu  eeeeeeee     bias 127  max 2^127   no sign, no zero, NaN = 0xFF
//
// Semantics follow the OCP 8-bit Floating Point Specification (OFP8) rev 1.0
// and the OCP Microscaling (MX) spec v1.0 as implemented by the reference that
// JAX, NumPy (ml_dtypes) and PyTorch share: casts round to nearest, ties to
// even, then overflow (non-saturating by default). See docs/formats.md.
//
// This header depends on neither Eigen nor fmt: Eigen glue lives in
// formats/eigen.hpp, fmt glue in formats/fmt.hpp.
#ifndef SCALIFY_FORMATS_FLOAT8_HPP_
#define SCALIFY_FORMATS_FLOAT8_HPP_

#include <array>        // std::array (decode tables)
#include <bit>          // std::bit_cast
#include <cstdint>      // uint8_t
#include <functional>   // std::hash
#include <limits>       // std::numeric_limits
#include <ostream>      // operator<<
#include <type_traits>  // std::is_integral_v, std::is_convertible_v

#include "scalify/formats/detail/codec.hpp"  // format_spec, encode, decode_float

namespace scalify {

class float8_e4m3fn;
class float8_e5m2;
class float8_e8m0fnu;

namespace detail {

template <>
struct format_of<float8_e4m3fn> {
  static constexpr const format_spec& value = kE4M3FN;
};
template <>
struct format_of<float8_e5m2> {
  static constexpr const format_spec& value = kE5M2;
};
template <>
struct format_of<float8_e8m0fnu> {
  static constexpr const format_spec& value = kE8M0FNU;
};

/// Float values of all 256 codes, computed at compile time.
template <const format_spec& S>
constexpr std::array<float, 256> make_decode_table() {
  std::array<float, 256> table{};
  for (uint32_t code = 0; code < 256; ++code) table[code] = decode_float<S>(code);
  return table;
}
template <const format_spec& S>
inline constexpr std::array<float, 256> kDecodeTable = make_decode_table<S>();

/// Types a float8 constructor accepts through float without double rounding:
/// float itself and narrower floating-point types such as Eigen::half and
/// Eigen::bfloat16 (widening those to float is exact).
template <class U>
concept float_like = !std::is_integral_v<U> && !std::is_same_v<U, double> &&
                     !std::is_same_v<U, long double> && requires(U u) { static_cast<float>(u); };

/// CRTP base of the float8 types: storage, conversions, arithmetic (through
/// float, as ml_dtypes does) and comparisons (on values: NaN is unordered and
/// +0 == -0).
template <class Derived>
class float8_base {
 public:
  static constexpr const format_spec& kSpec = format_of<Derived>::value;

  /// The 8-bit code. **Example**: `float8_e4m3fn(1.0f).bits() == 0x38`.
  constexpr uint8_t bits() const { return bits_; }
  /// The value with code `bits`. **Example**: `float8_e4m3fn::from_bits(0x7E)` is 448.
  static constexpr Derived from_bits(uint8_t bits) {
    Derived d;
    d.bits_ = bits;
    return d;
  }

  /// Exact widening.
  constexpr explicit operator float() const {
    if (std::is_constant_evaluated()) return decode_float<kSpec>(bits_);
    return kDecodeTable<kSpec>[bits_];
  }
  constexpr explicit operator double() const { return static_cast<double>(static_cast<float>(*this)); }
  constexpr explicit operator bool() const { return static_cast<float>(*this) != 0.0f; }
  template <class I>
    requires std::is_integral_v<I>
  constexpr explicit operator I() const {
    return static_cast<I>(static_cast<float>(*this));
  }

  constexpr Derived operator-() const {
    if constexpr (!kSpec.has_sign) {
      return from_bits(static_cast<uint8_t>(kSpec.nan_code));  // -x is not representable
    } else {
      return from_bits(static_cast<uint8_t>(bits_ ^ kSpec.sign_bit()));
    }
  }
  constexpr Derived operator+() const { return derived(); }

  friend constexpr Derived operator+(Derived a, Derived b) { return Derived(float(a) + float(b)); }
  friend constexpr Derived operator-(Derived a, Derived b) { return Derived(float(a) - float(b)); }
  friend constexpr Derived operator*(Derived a, Derived b) { return Derived(float(a) * float(b)); }
  friend constexpr Derived operator/(Derived a, Derived b) { return Derived(float(a) / float(b)); }
  constexpr Derived& operator+=(Derived b) { return derived() = derived() + b; }
  constexpr Derived& operator-=(Derived b) { return derived() = derived() - b; }
  constexpr Derived& operator*=(Derived b) { return derived() = derived() * b; }
  constexpr Derived& operator/=(Derived b) { return derived() = derived() / b; }

  friend constexpr bool operator==(Derived a, Derived b) { return float(a) == float(b); }
  friend constexpr bool operator!=(Derived a, Derived b) { return float(a) != float(b); }
  friend constexpr bool operator<(Derived a, Derived b) { return float(a) < float(b); }
  friend constexpr bool operator<=(Derived a, Derived b) { return float(a) <= float(b); }
  friend constexpr bool operator>(Derived a, Derived b) { return float(a) > float(b); }
  friend constexpr bool operator>=(Derived a, Derived b) { return float(a) >= float(b); }

  friend std::ostream& operator<<(std::ostream& os, Derived x) { return os << static_cast<float>(x); }

 protected:
  constexpr float8_base() = default;
  /// Default cast: round to nearest even, non-saturating.
  static constexpr uint8_t round(float x) {
    return static_cast<uint8_t>(encode<kSpec>(x, rounding::nearest_even, false));
  }
  static constexpr uint8_t round(double x) {
    return static_cast<uint8_t>(encode<kSpec>(x, rounding::nearest_even, false));
  }

  uint8_t bits_ = 0;

 private:
  constexpr Derived& derived() { return static_cast<Derived&>(*this); }
  constexpr const Derived& derived() const { return static_cast<const Derived&>(*this); }
};

}  // namespace detail

// The constructors below all round to nearest, ties to even, and are
// non-saturating; saturate_cast / truncate_cast / stochastic_cast
// (formats/cast.hpp) give the other flavours. Integers convert through double,
// which is exact up to 2^53, so every source rounds exactly once.
#define SCALIFY_FLOAT8_CONSTRUCTORS(T)                                         \
  constexpr T() = default;                                                     \
  constexpr explicit T(float x) { bits_ = round(x); }                          \
  constexpr explicit T(double x) { bits_ = round(x); }                         \
  template <class U>                                                           \
    requires std::is_integral_v<U>                                             \
  constexpr explicit T(U x) {                                                  \
    bits_ = round(static_cast<double>(x));                                     \
  }                                                                            \
  template <detail::float_like U>                                              \
    requires(!std::is_same_v<U, float> && !std::is_base_of_v<detail::float8_base<T>, U>) \
  constexpr explicit T(const U& x) {                                           \
    bits_ = round(static_cast<float>(x));                                      \
  }

/// 8-bit float for forward values: exponent 4, mantissa 3, bias 7; extended
/// range up to 448 with no infinity; NaN is `s.1111.111`.
///
/// **Example**: `scalify::float8_e4m3fn x(0.3f); float(x) == 0.3125f;`
class float8_e4m3fn : public detail::float8_base<float8_e4m3fn> {
 public:
  SCALIFY_FLOAT8_CONSTRUCTORS(float8_e4m3fn)
};

/// 8-bit float for gradients: exponent 5, mantissa 2, bias 15; IEEE-like with
/// infinities (`s.11111.00`) and NaNs; max 57344.
///
/// **Example**: `scalify::float8_e5m2 g(1e5f); isinf(g) == true;`
class float8_e5m2 : public detail::float8_base<float8_e5m2> {
 public:
  SCALIFY_FLOAT8_CONSTRUCTORS(float8_e5m2)
};

/// 8-bit power-of-two scale (OCP MX E8M0): 2^(e - 127) for e = 0..254, no
/// sign, no zero; 0xFF is NaN. Positive values round to the nearest power of
/// two (ties to the even exponent); zero, negatives, infinities and NaN give NaN.
///
/// **Example**: `scalify::float8_e8m0fnu s(0.25f); s.bits() == 125;`
class float8_e8m0fnu : public detail::float8_base<float8_e8m0fnu> {
 public:
  SCALIFY_FLOAT8_CONSTRUCTORS(float8_e8m0fnu)
};

#undef SCALIFY_FLOAT8_CONSTRUCTORS

namespace detail {
template <class T>
concept float8_type = std::is_base_of_v<float8_base<T>, T>;

/// The code of a narrow-format value, and back (overloaded for float16 and
/// bfloat16 in formats/float16.hpp).
template <float8_type T>
constexpr uint32_t to_code(T x) {
  return x.bits();
}
template <float8_type T>
constexpr T from_code(uint32_t code) {
  return T::from_bits(static_cast<uint8_t>(code));
}
}  // namespace detail

/// True if `x` is a NaN.
template <detail::float8_type T>
constexpr bool isnan(T x) {
  constexpr const auto& s = T::kSpec;
  const uint32_t m = x.bits() & s.magnitude_mask();
  return m == s.nan_code || (s.has_inf && m > s.inf_code);
}
/// True if `x` is +-infinity (never, for e4m3fn and e8m0fnu).
template <detail::float8_type T>
constexpr bool isinf(T x) {
  constexpr const auto& s = T::kSpec;
  return s.has_inf && (x.bits() & s.magnitude_mask()) == s.inf_code;
}
/// True if `x` is neither infinite nor NaN.
template <detail::float8_type T>
constexpr bool isfinite(T x) {
  return !isnan(x) && !isinf(x);
}
/// True if the sign bit of `x` is set.
template <detail::float8_type T>
constexpr bool signbit(T x) {
  return (x.bits() & T::kSpec.sign_bit()) != 0;
}
/// |x| (clears the sign bit; identity for e8m0fnu).
template <detail::float8_type T>
constexpr T abs(T x) {
  return T::from_bits(static_cast<uint8_t>(x.bits() & ~T::kSpec.sign_bit()));
}

}  // namespace scalify

// ---------------------------------------------------------------------------
// std::numeric_limits, with the arithmetic behind each constant.

namespace std {

template <>
struct numeric_limits<scalify::float8_e4m3fn> {
  using T = scalify::float8_e4m3fn;
  static constexpr bool is_specialized = true;
  static constexpr bool is_signed = true;
  static constexpr bool is_integer = false;
  static constexpr bool is_exact = false;
  static constexpr bool has_infinity = false;
  static constexpr bool has_quiet_NaN = true;
  static constexpr bool has_signaling_NaN = false;
  static constexpr float_denorm_style has_denorm = denorm_present;
  static constexpr bool has_denorm_loss = false;
  static constexpr float_round_style round_style = round_to_nearest;
  static constexpr bool is_iec559 = false;
  static constexpr bool is_bounded = true;
  static constexpr bool is_modulo = false;
  static constexpr int digits = 4;          // 3 stored + 1 implicit
  static constexpr int digits10 = 0;        // floor((digits - 1) * log10(2))
  static constexpr int max_digits10 = 3;    // ceil(digits * log10(2) + 1)
  static constexpr int radix = 2;
  static constexpr int min_exponent = -5;   // min normal 2^-6 = 0.5 * 2^-5
  static constexpr int min_exponent10 = -1;
  static constexpr int max_exponent = 9;    // 448 = 0.875 * 2^9
  static constexpr int max_exponent10 = 2;
  static constexpr bool traps = false;
  static constexpr bool tinyness_before = false;
  // 2^(0b0001 - 7) = 2^-6
  static constexpr T min() noexcept { return T::from_bits(0b0'0001'000); }
  // -(1 + 0b110 * 2^-3) * 2^(0b1111 - 7) = -448
  static constexpr T lowest() noexcept { return T::from_bits(0b1'1111'110); }
  // (1 + 0b110 * 2^-3) * 2^(0b1111 - 7) = 448
  static constexpr T max() noexcept { return T::from_bits(0b0'1111'110); }
  // 2^-3 = 2^(0b0100 - 7): the gap after 1
  static constexpr T epsilon() noexcept { return T::from_bits(0b0'0100'000); }
  // 0.5 = 2^(0b0110 - 7)
  static constexpr T round_error() noexcept { return T::from_bits(0b0'0110'000); }
  // No infinity: returns NaN, never a finite value.
  static constexpr T infinity() noexcept { return T::from_bits(0b0'1111'111); }
  static constexpr T quiet_NaN() noexcept { return T::from_bits(0b0'1111'111); }
  static constexpr T signaling_NaN() noexcept { return T::from_bits(0b0'1111'111); }
  // 0b001 * 2^-3 * 2^(1 - 7) = 2^-9
  static constexpr T denorm_min() noexcept { return T::from_bits(0b0'0000'001); }
};

template <>
struct numeric_limits<scalify::float8_e5m2> {
  using T = scalify::float8_e5m2;
  static constexpr bool is_specialized = true;
  static constexpr bool is_signed = true;
  static constexpr bool is_integer = false;
  static constexpr bool is_exact = false;
  static constexpr bool has_infinity = true;
  static constexpr bool has_quiet_NaN = true;
  static constexpr bool has_signaling_NaN = true;
  static constexpr float_denorm_style has_denorm = denorm_present;
  static constexpr bool has_denorm_loss = false;
  static constexpr float_round_style round_style = round_to_nearest;
  static constexpr bool is_iec559 = false;
  static constexpr bool is_bounded = true;
  static constexpr bool is_modulo = false;
  static constexpr int digits = 3;          // 2 stored + 1 implicit
  static constexpr int digits10 = 0;
  static constexpr int max_digits10 = 2;
  static constexpr int radix = 2;
  static constexpr int min_exponent = -13;  // min normal 2^-14 = 0.5 * 2^-13
  static constexpr int min_exponent10 = -4;
  static constexpr int max_exponent = 16;   // 57344 = 0.875 * 2^16
  static constexpr int max_exponent10 = 4;
  static constexpr bool traps = false;
  static constexpr bool tinyness_before = false;
  // 2^(0b00001 - 15) = 2^-14
  static constexpr T min() noexcept { return T::from_bits(0b0'00001'00); }
  // -(1 + 0b11 * 2^-2) * 2^(0b11110 - 15) = -57344
  static constexpr T lowest() noexcept { return T::from_bits(0b1'11110'11); }
  // (1 + 0b11 * 2^-2) * 2^(0b11110 - 15) = 57344
  static constexpr T max() noexcept { return T::from_bits(0b0'11110'11); }
  // 2^-2 = 2^(0b01101 - 15)
  static constexpr T epsilon() noexcept { return T::from_bits(0b0'01101'00); }
  // 0.5 = 2^(0b01110 - 15)
  static constexpr T round_error() noexcept { return T::from_bits(0b0'01110'00); }
  static constexpr T infinity() noexcept { return T::from_bits(0b0'11111'00); }
  static constexpr T quiet_NaN() noexcept { return T::from_bits(0b0'11111'10); }
  static constexpr T signaling_NaN() noexcept { return T::from_bits(0b0'11111'01); }
  // 0b01 * 2^-2 * 2^(1 - 15) = 2^-16
  static constexpr T denorm_min() noexcept { return T::from_bits(0b0'00000'01); }
};

template <>
struct numeric_limits<scalify::float8_e8m0fnu> {
  using T = scalify::float8_e8m0fnu;
  static constexpr bool is_specialized = true;
  static constexpr bool is_signed = false;
  static constexpr bool is_integer = false;
  static constexpr bool is_exact = false;
  static constexpr bool has_infinity = false;
  static constexpr bool has_quiet_NaN = true;
  static constexpr bool has_signaling_NaN = false;
  static constexpr float_denorm_style has_denorm = denorm_absent;
  static constexpr bool has_denorm_loss = false;
  static constexpr float_round_style round_style = round_to_nearest;
  static constexpr bool is_iec559 = false;
  static constexpr bool is_bounded = true;
  static constexpr bool is_modulo = false;
  static constexpr int digits = 1;          // the implicit bit only
  static constexpr int digits10 = 0;
  static constexpr int max_digits10 = 2;
  static constexpr int radix = 2;
  static constexpr int min_exponent = -126; // min 2^-127 = 0.5 * 2^-126
  static constexpr int min_exponent10 = -38;
  static constexpr int max_exponent = 128;  // max 2^127 = 0.5 * 2^128
  static constexpr int max_exponent10 = 38;
  static constexpr bool traps = false;
  static constexpr bool tinyness_before = false;
  // 2^(0 - 127)
  static constexpr T min() noexcept { return T::from_bits(0b0000'0000); }
  // no sign: the lowest value is the smallest one
  static constexpr T lowest() noexcept { return T::from_bits(0b0000'0000); }
  // 2^(254 - 127) = 2^127
  static constexpr T max() noexcept { return T::from_bits(0b1111'1110); }
  // 2^1 - 2^0 = 1 = 2^(127 - 127)
  static constexpr T epsilon() noexcept { return T::from_bits(0b0111'1111); }
  // 0.5 = 2^(126 - 127)
  static constexpr T round_error() noexcept { return T::from_bits(0b0111'1110); }
  // No infinity: returns NaN, never a finite value.
  static constexpr T infinity() noexcept { return T::from_bits(0b1111'1111); }
  static constexpr T quiet_NaN() noexcept { return T::from_bits(0b1111'1111); }
  static constexpr T signaling_NaN() noexcept { return T::from_bits(0b1111'1111); }
  static constexpr T denorm_min() noexcept { return T::from_bits(0b0000'0000); }
};

// cv-qualified variants, as the standard library provides for builtins.
template <class T>
  requires scalify::detail::float8_type<T>
struct numeric_limits<const T> : numeric_limits<T> {};
template <class T>
  requires scalify::detail::float8_type<T>
struct numeric_limits<volatile T> : numeric_limits<T> {};
template <class T>
  requires scalify::detail::float8_type<T>
struct numeric_limits<const volatile T> : numeric_limits<T> {};

template <class T>
  requires scalify::detail::float8_type<T>
struct hash<T> {
  // Equal values hash equally: -0 == +0, so -0 hashes as +0.
  size_t operator()(T x) const noexcept {
    const uint8_t code = x.bits() == T::kSpec.sign_bit() ? uint8_t{0} : x.bits();
    return hash<uint8_t>{}(code);
  }
};

}  // namespace std

#endif  // SCALIFY_FORMATS_FLOAT8_HPP_
