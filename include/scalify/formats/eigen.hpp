// scalify: Eigen integration of the float8 types, through Eigen's documented
// customisation points only (NumTraits, numext), as Eigen does for
// Eigen::half and Eigen::bfloat16. With it, Eigen::Matrix<float8_e4m3fn, ...>
// works, including `.cast<float>()` and `m.cast<float8_e4m3fn>()`.
//
// float16 and bfloat16 need nothing here: they are Eigen's own types.
#ifndef SCALIFY_FORMATS_EIGEN_HPP_
#define SCALIFY_FORMATS_EIGEN_HPP_

#include <Eigen/Core>  // Eigen::NumTraits, Eigen::numext
#include <limits>      // std::numeric_limits

#include "scalify/formats/float16.hpp"  // float16, bfloat16
#include "scalify/formats/float8.hpp"   // float8_e4m3fn, float8_e5m2, float8_e8m0fnu

namespace scalify::detail {

/// NumTraits of a float8 type: cheap like float (one table lookup to widen),
/// constants from std::numeric_limits.
template <class T>
struct float8_num_traits : Eigen::GenericNumTraits<T> {
  enum {
    IsSigned = std::numeric_limits<T>::is_signed,
    IsInteger = false,
    IsComplex = false,
    RequireInitialization = false,
  };
  static constexpr T epsilon() { return std::numeric_limits<T>::epsilon(); }
  static constexpr T dummy_precision() { return T(0.5f); }
  static constexpr T highest() { return std::numeric_limits<T>::max(); }
  static constexpr T lowest() { return std::numeric_limits<T>::lowest(); }
  static constexpr T infinity() { return std::numeric_limits<T>::infinity(); }
  static constexpr T quiet_NaN() { return std::numeric_limits<T>::quiet_NaN(); }
  static constexpr int digits10() { return std::numeric_limits<T>::digits10; }
  static constexpr int max_digits10() { return std::numeric_limits<T>::max_digits10; }
};

}  // namespace scalify::detail

namespace Eigen {

template <>
struct NumTraits<scalify::float8_e4m3fn> : scalify::detail::float8_num_traits<scalify::float8_e4m3fn> {};
template <>
struct NumTraits<scalify::float8_e5m2> : scalify::detail::float8_num_traits<scalify::float8_e5m2> {};
template <>
struct NumTraits<scalify::float8_e8m0fnu> : scalify::detail::float8_num_traits<scalify::float8_e8m0fnu> {};

namespace numext {

#define SCALIFY_EIGEN_NUMEXT(T)                                                              \
  template <>                                                                                \
  EIGEN_STRONG_INLINE bool(isnan)(const T& x) { return scalify::isnan(x); }                  \
  template <>                                                                                \
  EIGEN_STRONG_INLINE bool(isinf)(const T& x) { return scalify::isinf(x); }                  \
  template <>                                                                                \
  EIGEN_STRONG_INLINE bool(isfinite)(const T& x) { return scalify::isfinite(x); }

SCALIFY_EIGEN_NUMEXT(scalify::float8_e4m3fn)
SCALIFY_EIGEN_NUMEXT(scalify::float8_e5m2)
SCALIFY_EIGEN_NUMEXT(scalify::float8_e8m0fnu)
#undef SCALIFY_EIGEN_NUMEXT

}  // namespace numext
}  // namespace Eigen

#include "scalify/formats/eigen_packet.hpp"  // vectorized float8 <-> float casts (with AVX2 + F16C)

#endif  // SCALIFY_FORMATS_EIGEN_HPP_
