// scalify: power-of-two helpers for scales.
//
// Scalify keeps scales at powers of two so that rebasing data onto a new scale
// is exact. These helpers round a positive magnitude to a power of two and
// split a value into (power-of-two scale, mantissa).
//
// Differences from jax-scalify's pow2 helpers, on purpose: subnormal inputs are
// handled exactly (the reference returns 0 for float32 subnormals); rounding up
// leaves exact powers of two unchanged (the reference always doubles, marked
// FIXME there); NaN stays NaN (the reference returns +inf); and stochastic
// rounding is implemented (the reference only names it).
#ifndef SCALIFY_CORE_POW2_HPP_
#define SCALIFY_CORE_POW2_HPP_

#include <bit>        // std::bit_cast, std::bit_width
#include <cmath>      // std::fabs, std::isnan, std::isinf, std::floor
#include <cstdint>    // uint32_t, uint64_t
#include <limits>     // std::numeric_limits
#include <stdexcept>  // std::invalid_argument
#include <string>     // std::to_string

namespace scalify {

/// How scales are rounded to a power of two (jax-scalify's Pow2RoundMode).
enum class pow2_mode {
  down,        ///< largest power of two <= |x| (the default)
  up,          ///< smallest power of two >= |x|
  none,        ///< no rounding: |x| itself
  stochastic,  ///< up with probability (|x| - down) / down, from caller's random bits
};

namespace detail {

template <class F>
struct pow2_bits;
template <>
struct pow2_bits<float> {
  using type = uint32_t;
  static constexpr type kExponentMask = 0x7F80'0000u, kSignMask = 0x8000'0000u;
};
template <>
struct pow2_bits<double> {
  using type = uint64_t;
  static constexpr type kExponentMask = 0x7FF0'0000'0000'0000ull, kSignMask = 0x8000'0000'0000'0000ull;
};

}  // namespace detail

/// The largest power of two <= |x|; 0 for 0, inf for inf, NaN for NaN.
/// Subnormals are exact: `pow2_round_down(3e-45f) == 0x1p-149f * 2`.
///
/// **Example**: `pow2_round_down(0.3f) == 0.25f; pow2_round_down(-5.0f) == 4.0f;`
template <class F>
constexpr F pow2_round_down(F x) {
  using B = detail::pow2_bits<F>;
  using Bits = typename B::type;
  const Bits a = std::bit_cast<Bits>(x) & ~B::kSignMask;
  if (a >= B::kExponentMask) return std::bit_cast<F>(a);  // inf or NaN (sign cleared)
  if ((a & B::kExponentMask) != 0) return std::bit_cast<F>(a & B::kExponentMask);
  if (a == 0) return F(0);
  return std::bit_cast<F>(Bits{1} << (std::bit_width(a) - 1));  // subnormal: its top bit
}

/// The smallest power of two >= |x| (exact powers of two are unchanged; may
/// overflow to inf); 0, inf and NaN as pow2_round_down.
///
/// **Example**: `pow2_round_up(0.3f) == 0.5f; pow2_round_up(4.0f) == 4.0f;`
template <class F>
constexpr F pow2_round_up(F x) {
  const F down = pow2_round_down(x);
  const F magnitude = x < 0 ? -x : x;
  return down == magnitude || down == F(0) || !(down == down) ? down : down * F(2);
}

/// Rounds |x| to a power of two with `mode`. For `pow2_mode::stochastic`,
/// rounds up iff `random_bits < floor(f * 2^32)` where f = (|x| - down) / down,
/// so E[result] = |x| (to within 2^-32 relative); deterministic for given bits.
/// Throws std::invalid_argument for a mode outside the enum.
///
/// **Example**: `pow2_round(3.0f, pow2_mode::up) == 4.0f`
template <class F>
constexpr F pow2_round(F x, pow2_mode mode = pow2_mode::down, uint32_t random_bits = 0) {
  switch (mode) {
    case pow2_mode::down: return pow2_round_down(x);
    case pow2_mode::up: return pow2_round_up(x);
    case pow2_mode::none: return x < 0 ? -x : x;
    case pow2_mode::stochastic: {
      const F down = pow2_round_down(x);
      const F magnitude = x < 0 ? -x : x;
      if (!(down > F(0)) || down == magnitude || down == std::numeric_limits<F>::infinity()) return down;
      // (|x| - down) / down is exact (a difference of nearby floats over a power
      // of two); scaling by 2^32 and flooring in double is exact too.
      const double fraction = static_cast<double>((magnitude - down) / down);
      const auto threshold = static_cast<uint64_t>(fraction * 4294967296.0);
      return random_bits < threshold ? down * F(2) : down;
    }
  }
  throw std::invalid_argument("scalify::pow2_round: unknown pow2_mode " + std::to_string(static_cast<int>(mode)) +
                              " (expected down, up, none or stochastic)");
}

/// x = scale * mantissa with scale = pow2_round_down(x) > 0 and |mantissa| in
/// [1, 2), the sign in the mantissa. Zero gives {0, x}; inf gives {inf, x};
/// NaN gives {NaN, NaN}.
template <class F>
struct pow2_parts {
  F scale;
  F mantissa;
};

/// Splits `x` into a power-of-two scale and a mantissa in [1, 2) (exactly).
///
/// **Example**: `auto [s, m] = pow2_decompose(-6.0f);  // s == 4, m == -1.5`
template <class F>
constexpr pow2_parts<F> pow2_decompose(F x) {
  const F scale = pow2_round_down(x);
  const bool usable = scale > F(0) && scale != std::numeric_limits<F>::infinity();
  return {scale, usable ? x / scale : x};
}

}  // namespace scalify

#endif  // SCALIFY_CORE_POW2_HPP_
