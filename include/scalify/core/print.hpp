// scalify: printing ScaledArrays.
//
//   to_string(x)     "ScaledArray (2 x 3) float8_e4m3fn, scale 0.25 (float)" and the
//                    values data * scale, one row per line, aligned, %g with 6 digits
//   os << x          the same text (this header brings <iosfwd> only: the caller
//                    that prints has <ostream> or <iostream> already)
//
// A dimension of more than 8 is elided Eigen/NumPy style: its first and last 3
// rows (columns) and a row (column) of "...". Lazy op results print too: the
// elements shown are evaluated (in float, as a store would) and nothing else.
// The fmt formatter, with the same text, is in scalify/core/fmt.hpp (opt-in).
#ifndef SCALIFY_CORE_PRINT_HPP_
#define SCALIFY_CORE_PRINT_HPP_

#include <Eigen/Core>  // Eigen::Index
#include <algorithm>   // std::max
#include <charconv>    // std::to_chars
#include <cmath>       // std::isnan
#include <cstddef>     // size_t
#include <iosfwd>      // std::basic_ostream (declared only)
#include <string>      // std::string, operator<<(std::ostream&, const std::string&)
#include <vector>      // std::vector

#include "scalify/core/scaled_array.hpp"  // ScaledArray, detail::type_name, detail::number_string
#include "scalify/formats/cast.hpp"       // detail::cast_source

namespace scalify {
namespace detail {

/// Rows (columns) shown at each end of an elided dimension.
inline constexpr Eigen::Index kPrintEdgeItems = 3;
/// Dimensions up to this size are printed in full.
inline constexpr Eigen::Index kPrintFullSize = 8;

/// A value as printed: %g with 6 significant digits (the precision of Eigen's
/// and iostream's default), "nan" whatever its sign, "inf", "-inf".
inline std::string print_value(double v) {
  if (std::isnan(v)) return "nan";
  char buffer[32];
  const auto r = std::to_chars(buffer, buffer + sizeof buffer, v, std::chars_format::general, 6);
  return std::string(buffer, r.ptr);
}

/// A scale as printed: the shortest text that reads back as the same scale.
inline std::string print_scale(double s) { return std::isnan(s) ? std::string("nan") : number_string(s); }

/// The indices printed along a dimension of size n; -1 marks the "..." slot.
inline std::vector<Eigen::Index> print_indices(Eigen::Index n) {
  std::vector<Eigen::Index> out;
  if (n <= kPrintFullSize) {
    for (Eigen::Index i = 0; i < n; ++i) out.push_back(i);
    return out;
  }
  for (Eigen::Index i = 0; i < kPrintEdgeItems; ++i) out.push_back(i);
  out.push_back(-1);
  for (Eigen::Index i = n - kPrintEdgeItems; i < n; ++i) out.push_back(i);
  return out;
}

/// "ScaledArray (2 x 3) float8_e4m3fn, scale 0.25 (float)"; "lazy float" for
/// an op result not yet stored.
template <class D, class S>
std::string print_header(const ScaledArray<D, S>& x) {
  std::string s = "ScaledArray ";
  s += shape_string(x.rows(), x.cols());
  s += ScaledArray<D, S>::is_storage ? " " : " lazy ";
  s += type_name<typename D::Scalar>();
  s += ", scale ";
  s += print_scale(static_cast<double>(x.scale()));
  s += " (";
  s += type_name<S>();
  s += ')';
  return s;
}

/// The value data * scale of one element, in double (exact for float and
/// narrow data with a float or E8M0 scale).
template <class D, class S>
double print_element(const ScaledArray<D, S>& x, Eigen::Index i, Eigen::Index j) {
  const typename D::Scalar d = x.data()(i, j);
  return static_cast<double>(cast_source(d)) * static_cast<double>(x.scale());
}

}  // namespace detail

/// The text of `x`: a header line with its shape, data type and scale, then
/// its values (data * scale), one row per line, right-aligned; dimensions
/// larger than 8 show their first and last 3 entries around "...".
///
/// **Example**: `std::string s = scalify::to_string(x);  // "ScaledArray (2 x 2) float16, ..."`
template <class D, class S>
std::string to_string(const ScaledArray<D, S>& x) {
  std::string out = detail::print_header(x);
  const auto rows = detail::print_indices(x.rows());
  const auto cols = detail::print_indices(x.cols());
  std::vector<std::string> cells;
  cells.reserve(rows.size() * cols.size());
  size_t width = 0;
  for (const Eigen::Index i : rows) {
    for (const Eigen::Index j : cols) {
      cells.push_back(i < 0 || j < 0 ? std::string("...")
                                     : detail::print_value(detail::print_element(x, i, j)));
      width = std::max(width, cells.back().size());
    }
  }
  size_t k = 0;
  for (size_t r = 0; r < rows.size(); ++r) {
    out += '\n';
    for (size_t c = 0; c < cols.size(); ++c, ++k) {
      out.append(width + (c == 0 ? 0 : 1) - cells[k].size(), ' ');
      out += cells[k];
    }
  }
  return out;
}

/// Prints to_string(x) (no trailing newline, like Eigen).
///
/// **Example**: `std::cout << x << '\n';`
template <class Traits, class D, class S>
std::basic_ostream<char, Traits>& operator<<(std::basic_ostream<char, Traits>& os,
                                             const ScaledArray<D, S>& x) {
  return os << to_string(x);
}

}  // namespace scalify

#endif  // SCALIFY_CORE_PRINT_HPP_
