// scalify: what a tensor holds, and what storing it into a format would do.
//
//   stats(x)              min, max, amax, mean, RMS of the values data * scale, counts of
//                         NaN, inf and zeros; computed in double
//   stats<T>(x)           the same, plus what rounding x's data into T (keeping x's scale)
//                         would do: how many values overflow, underflow to 0, or become
//                         subnormal
//   stats<T>(x, scale)    the same for the data value / scale (e.g. a scale to try)
//
// A tensor_stats prints with to_string(s) or os << s (fmt: scalify/core/fmt.hpp).
#ifndef SCALIFY_CORE_STATS_HPP_
#define SCALIFY_CORE_STATS_HPP_

#include <Eigen/Core>   // Eigen::Index
#include <cmath>        // std::isnan, std::isinf, std::sqrt, std::abs
#include <iosfwd>       // std::basic_ostream (declared only)
#include <limits>       // std::numeric_limits
#include <string>       // std::string
#include <type_traits>  // std::is_same_v

#include "scalify/core/pow2.hpp"          // pow2_round_down
#include "scalify/core/print.hpp"         // detail::print_value
#include "scalify/core/scaled_array.hpp"  // ScaledArray, detail::check_scale, detail::type_name
#include "scalify/formats/cast.hpp"       // round_cast, detail::cast_source

namespace scalify {

/// Statistics of a tensor's values v = data * scale, computed in double.
///
/// | field | meaning |
/// |---|---|
/// | `rows`, `cols` | the shape |
/// | `min`, `max` | smallest and largest value that is not NaN (+-inf included); NaN if there is none |
/// | `amax` | largest \|value\| that is not NaN (inf if any value is +-inf); NaN if there is none |
/// | `mean`, `rms` | mean and sqrt(mean of squares) of the finite values; NaN if there is none |
/// | `nan`, `inf`, `zeros` | how many values are NaN, +-inf, +-0 |
/// | `format` | the target data type of `stats<T>`, or nullptr |
/// | `overflow` | finite data beyond T's range: rounded to nearest even it is not finite in T (e4m3fn: >= 464 in magnitude, e5m2: >= 61440, float16: >= 65520). The default (saturating) store turns them into +-max finite, a non-saturating one into inf (NaN in e4m3fn) |
/// | `underflow` | nonzero finite data that rounds to +-0 in T (e4m3fn: below 2^-10 in magnitude, e5m2: below 2^-17, at 2^-10 or 2^-17 too: ties go to even 0) |
/// | `subnormal` | data that rounds to a nonzero subnormal of T (below T's smallest normal: fewer significant bits) |
///
/// **Example**: `if (scalify::stats<scalify::float8_e4m3fn>(g).overflow > 0) g = scalify::dynamic_rescale_max(g);`
struct tensor_stats {
  Eigen::Index rows = 0, cols = 0;
  double min = std::numeric_limits<double>::quiet_NaN();
  double max = std::numeric_limits<double>::quiet_NaN();
  double amax = std::numeric_limits<double>::quiet_NaN();
  double mean = std::numeric_limits<double>::quiet_NaN();
  double rms = std::numeric_limits<double>::quiet_NaN();
  Eigen::Index nan = 0, inf = 0, zeros = 0;
  const char* format = nullptr;
  Eigen::Index overflow = 0, underflow = 0, subnormal = 0;
};

namespace detail {

template <class T>
constexpr void check_stats_target() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, float16> || std::is_same_v<T, bfloat16> ||
                    std::is_same_v<T, float8_e4m3fn> || std::is_same_v<T, float8_e5m2>,
                "scalify::stats<T>: T must be float, float16, bfloat16, float8_e4m3fn or float8_e5m2");
}

/// What rounding data `d` into T (nearest even, not saturating) does.
template <class T>
void count_store(double d, tensor_stats& s) {
  if (!std::isfinite(d)) return;  // NaN and inf are counted as such
  double r;
  double smallest_normal;
  if constexpr (std::is_same_v<T, float>) {
    r = static_cast<double>(static_cast<float>(d));
    smallest_normal = static_cast<double>(std::numeric_limits<float>::min());
  } else {
    r = static_cast<double>(static_cast<float>(round_cast<T>(d, rounding::nearest_even, false)));
    smallest_normal = static_cast<double>(static_cast<float>(std::numeric_limits<T>::min()));
  }
  if (!std::isfinite(r)) {
    ++s.overflow;
  } else if (r == 0.0) {
    if (d != 0.0) ++s.underflow;
  } else if (std::abs(r) < smallest_normal) {
    ++s.subnormal;
  }
}

/// stats() and stats<T>(): `T` void for no target; `target_scale` <= 0 for x's own scale.
template <class T, class D, class S>
tensor_stats compute_stats(const ScaledArray<D, S>& x, double target_scale) {
  tensor_stats s;
  s.rows = x.rows();
  s.cols = x.cols();
  const auto& data = x.data().eval();  // a plain object by reference; an expression evaluated once
  const double scale = static_cast<double>(x.scale());
  const auto value_at = [&](Eigen::Index i, Eigen::Index j) {
    return static_cast<double>(cast_source(static_cast<typename D::Scalar>(data(i, j)))) * scale;
  };
  // Pass 1: counts, extremes, and the largest finite |value| (the pass-2 normaliser).
  double amax_finite = 0.0;
  Eigen::Index finite = 0;
  for (Eigen::Index i = 0; i < s.rows; ++i) {
    for (Eigen::Index j = 0; j < s.cols; ++j) {
      const double v = value_at(i, j);
      if constexpr (!std::is_void_v<T>) {
        const double d =
            target_scale > 0.0
                ? v / target_scale
                : static_cast<double>(cast_source(static_cast<typename D::Scalar>(data(i, j))));
        count_store<T>(d, s);
      }
      if (std::isnan(v)) {
        ++s.nan;
        continue;
      }
      if (std::isinf(v)) ++s.inf;
      if (v == 0.0) ++s.zeros;
      const double a = std::abs(v);
      s.min = std::isnan(s.min) || v < s.min ? v : s.min;
      s.max = std::isnan(s.max) || v > s.max ? v : s.max;
      s.amax = std::isnan(s.amax) || a > s.amax ? a : s.amax;
      if (!std::isinf(v)) {
        ++finite;
        amax_finite = a > amax_finite ? a : amax_finite;
      }
    }
  }
  if (finite == 0) return s;
  // Pass 2: mean and RMS of v / p, p a power of two near amax: exact scaling, no overflow.
  const double p = amax_finite > 0.0 ? pow2_round_down(amax_finite) : 1.0;
  double sum = 0.0, sum_sq = 0.0;
  for (Eigen::Index i = 0; i < s.rows; ++i) {
    for (Eigen::Index j = 0; j < s.cols; ++j) {
      const double v = value_at(i, j);
      if (!std::isfinite(v)) continue;
      const double u = v / p;
      sum += u;
      sum_sq += u * u;
    }
  }
  const double n = static_cast<double>(finite);
  s.mean = sum / n * p;
  s.rms = std::sqrt(sum_sq / n) * p;
  return s;
}

}  // namespace detail

/// Statistics of the values of `x` (storage or a lazy result), in double:
/// see tensor_stats.
///
/// **Example**: `std::cout << scalify::stats(y) << '\n';  // min, max, amax, mean, rms, nan, inf, zeros`
template <class D, class S>
tensor_stats stats(const ScaledArray<D, S>& x) {
  return detail::compute_stats<void>(x, 0.0);
}

/// stats(x), plus what storing x's data into `T` (float, float16, bfloat16,
/// float8_e4m3fn or float8_e5m2), with x's scale, would do: overflow,
/// underflow and subnormal counts (see tensor_stats).
///
/// **Example**: `auto s = scalify::stats<scalify::float8_e4m3fn>(x);  // s.overflow: values that saturate`
template <class T, class D, class S>
tensor_stats stats(const ScaledArray<D, S>& x) {
  detail::check_stats_target<T>();
  tensor_stats s = detail::compute_stats<T>(x, 0.0);
  s.format = detail::type_name<T>();
  return s;
}

/// stats<T>(x) for the data value / `scale` instead of x's own data: what
/// storing x into T with that scale would do. Throws std::invalid_argument
/// unless `scale` is finite and > 0.
///
/// **Example**: `auto s = scalify::stats<scalify::float8_e4m3fn>(x, 0.25);  // try scale 1/4`
template <class T, class D, class S>
tensor_stats stats(const ScaledArray<D, S>& x, double scale) {
  detail::check_stats_target<T>();
  detail::check_scale(scale, "scalify::stats", /*allow_zero=*/false);
  tensor_stats s = detail::compute_stats<T>(x, scale);
  s.format = detail::type_name<T>();
  return s;
}

/// The text of `s`: "stats (2 x 3): min -1.5, max 3, amax 3, mean 0.25,
/// rms 1.2; nan 1, inf 0, zeros 2", and for stats<T> "; float8_e4m3fn:
/// overflow 1, underflow 0, subnormal 2".
///
/// **Example**: `std::string line = scalify::to_string(scalify::stats(x));`
inline std::string to_string(const tensor_stats& s) {
  std::string out = "stats ";
  out += detail::shape_string(s.rows, s.cols);
  out += ": min " + detail::print_value(s.min);
  out += ", max " + detail::print_value(s.max);
  out += ", amax " + detail::print_value(s.amax);
  out += ", mean " + detail::print_value(s.mean);
  out += ", rms " + detail::print_value(s.rms);
  out += "; nan " + std::to_string(s.nan);
  out += ", inf " + std::to_string(s.inf);
  out += ", zeros " + std::to_string(s.zeros);
  if (s.format != nullptr) {
    out += "; ";
    out += s.format;
    out += ": overflow " + std::to_string(s.overflow);
    out += ", underflow " + std::to_string(s.underflow);
    out += ", subnormal " + std::to_string(s.subnormal);
  }
  return out;
}

/// Prints to_string(s).
///
/// **Example**: `std::cout << scalify::stats<scalify::float8_e4m3fn>(x) << '\n';`
template <class Traits>
std::basic_ostream<char, Traits>& operator<<(std::basic_ostream<char, Traits>& os,
                                             const tensor_stats& s) {
  return os << to_string(s);
}

}  // namespace scalify

#endif  // SCALIFY_CORE_STATS_HPP_
