// tests/support/narrow_types.hpp: ties scalify's narrow number types to the
// independent reference descriptions in support/reference.hpp, and reads or
// makes values of any of them from their codes.
#pragma once

#include <cstdint>      // std::uint32_t
#include <type_traits>  // std::is_same_v, std::conditional_t

#include <Eigen/Core>  // Eigen::numext::bit_cast

#include "scalify/formats/float16.hpp"  // scalify::float16, scalify::bfloat16
#include "scalify/formats/float8.hpp"   // float8_e4m3fn, float8_e5m2, float8_e8m0fnu
#include "support/reference.hpp"        // ref::format

namespace scalify_test {

template <class T>
struct ref_format_of;
template <>
struct ref_format_of<scalify::float8_e4m3fn> {
  static constexpr const ref::format& value = ref::e4m3fn;
};
template <>
struct ref_format_of<scalify::float8_e5m2> {
  static constexpr const ref::format& value = ref::e5m2;
};
template <>
struct ref_format_of<scalify::float8_e8m0fnu> {
  static constexpr const ref::format& value = ref::e8m0fnu;
};
template <>
struct ref_format_of<scalify::float16> {
  static constexpr const ref::format& value = ref::binary16;
};
template <>
struct ref_format_of<scalify::bfloat16> {
  static constexpr const ref::format& value = ref::bfloat16;
};

template <class T>
constexpr const ref::format& ref_format = ref_format_of<T>::value;

// The code (bit pattern) of x, for float8 formats, float16 and bfloat16.
template <class T>
std::uint32_t code_of(T x) {
  if constexpr (std::is_same_v<T, scalify::float16> || std::is_same_v<T, scalify::bfloat16>) {
    return Eigen::numext::bit_cast<std::uint16_t>(x);
  } else {
    return x.bits();
  }
}

template <class T>
T from_code(std::uint32_t code) {
  if constexpr (std::is_same_v<T, scalify::float16> || std::is_same_v<T, scalify::bfloat16>) {
    return Eigen::numext::bit_cast<T>(static_cast<std::uint16_t>(code));
  } else {
    return T::from_bits(static_cast<std::uint8_t>(code));
  }
}

// "code" type of T: uint8_t for the float8 formats, uint16_t for the others.
template <class T>
using code_t = std::conditional_t<sizeof(T) == 1, std::uint8_t, std::uint16_t>;

template <class T>
int hex_digits() {
  return 2 * static_cast<int>(sizeof(T));
}

}  // namespace scalify_test
