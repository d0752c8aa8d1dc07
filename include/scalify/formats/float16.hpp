// scalify: 16-bit floating-point types.
//
//   float16    s eeeee mmmmmmmmmm  IEEE binary16, bias 15, max 65504
//   bfloat16   s eeeeeeee mmmmmmm  float32's upper half, bias 127, max ~3.39e38
//
// Both are Eigen's own types (Eigen::half, Eigen::bfloat16), so Eigen matrices
// of them work everywhere. scalify adds the traits its casts need; the casts
// themselves (saturating, truncating, stochastic, bulk) are in formats/cast.hpp
// and formats/convert.hpp and follow the same rules as the float8 formats.
#ifndef SCALIFY_FORMATS_FLOAT16_HPP_
#define SCALIFY_FORMATS_FLOAT16_HPP_

#include <Eigen/Core>  // Eigen::half, Eigen::bfloat16, Eigen::numext::bit_cast
#include <cstdint>     // uint16_t, uint32_t
#include <type_traits>  // std::is_same_v

#include "scalify/formats/detail/codec.hpp"  // format_of, kFloat16, kBFloat16

namespace scalify {

/// IEEE binary16. **Example**: `scalify::float16 h(0.1f); float(h) == 0.0999755859375f;`
using float16 = Eigen::half;
/// bfloat16. **Example**: `scalify::bfloat16 b(1.0f / 3); float(b) == 0.333984375f;`
using bfloat16 = Eigen::bfloat16;

/// The binary16 code of `x`. **Example**: `float16_bits(float16(1.0f)) == 0x3C00`.
inline uint16_t float16_bits(float16 x) { return Eigen::numext::bit_cast<uint16_t>(x); }
/// The float16 with code `bits`.
inline float16 float16_from_bits(uint16_t bits) { return Eigen::numext::bit_cast<float16>(bits); }
/// The bfloat16 code of `x`. **Example**: `bfloat16_bits(bfloat16(1.0f)) == 0x3F80`.
inline uint16_t bfloat16_bits(bfloat16 x) { return Eigen::numext::bit_cast<uint16_t>(x); }
/// The bfloat16 with code `bits`.
inline bfloat16 bfloat16_from_bits(uint16_t bits) { return Eigen::numext::bit_cast<bfloat16>(bits); }

namespace detail {

template <>
struct format_of<float16> {
  static constexpr const format_spec& value = kFloat16;
};
template <>
struct format_of<bfloat16> {
  static constexpr const format_spec& value = kBFloat16;
};

inline uint32_t to_code(float16 x) { return float16_bits(x); }
inline uint32_t to_code(bfloat16 x) { return bfloat16_bits(x); }
template <class T>
  requires std::is_same_v<T, float16>
inline T from_code(uint32_t code) {
  return float16_from_bits(static_cast<uint16_t>(code));
}
template <class T>
  requires std::is_same_v<T, bfloat16>
inline T from_code(uint32_t code) {
  return bfloat16_from_bits(static_cast<uint16_t>(code));
}

}  // namespace detail
}  // namespace scalify

#endif  // SCALIFY_FORMATS_FLOAT16_HPP_
