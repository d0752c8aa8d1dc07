// scalify: shape ops on scaled tensors (jax-scalify's transpose, reshape,
// slice, rev, pad, broadcast_in_dim and concatenate rules).
//
//   op                                 output scale   data (lazy, float32)
//   transpose(x)                       s              d^T
//   reshape(x, rows, cols)             s              d in row-major element order (NumPy)
//   block(x, i, j, r, c), slice(...)   s              d.block(i, j, r, c)
//   reverse(x, axis)                   s              d with rows, cols or both reversed
//   pad(x, top, bottom, left, right)   s              d surrounded by zeros
//   broadcast_rows(x, n)               s              a (1 x C) row n times -> (n x C)
//   broadcast_cols(x, n)               s              a (R x 1) column n times -> (R x n)
//   concatenate_rows(a, b)             max(sa, sb)    [da * sa/s ; db * sb/s]  (a above b)
//   concatenate_cols(a, b)             max(sa, sb)    [da * sa/s , db * sb/s]  (a left of b)
//
// Shapes are (rows x cols). Every op returns a lazy ScaledArray: the scale is
// computed at once, the data is an Eigen array expression over the operands'
// data widened to float, evaluated when the result is assigned into storage
// (like Eigen, it refers to the operands' storage until then). Shape ops never
// round: stored back into the operand's format, the data is bit-exact (for
// concatenate, the operand with the larger scale is; the other is multiplied
// by a power of two when both scales are powers of two, exact unless it
// underflows the format).
//
// The output scale type is detail::result_scale_t<S...>: float, or double when
// a scale is double (an E8M0 scale becomes float; storing it rounds it back).
// Errors (shape_error, in every build type) name the op and the shapes.
#ifndef SCALIFY_OPS_SHAPE_HPP_
#define SCALIFY_OPS_SHAPE_HPP_

#include <Eigen/Core>   // Eigen::ArrayXXf, Eigen::Index
#include <algorithm>    // std::max
#include <string>       // std::string, std::to_string
#include <type_traits>  // std::remove_cvref_t

#include "scalify/core/scaled_array.hpp"  // ScaledArray
#include "scalify/errors.hpp"             // shape_error, SCALIFY_CHECK, checked_add, valid_shape
#include "scalify/ops/detail/common.hpp"  // values_f, make_result, safe_div, shape_string

namespace scalify {

/// Which axis reverse() flips: `rows` reverses the order of the rows (NumPy
/// axis 0, upside down), `cols` the order of the columns (axis 1, left to
/// right), `both` both.
enum class axis { rows, cols, both };

namespace detail {

/// How an index functor keeps an operand expression: by value (an Eigen
/// expression is a few pointers into storage), or evaluated once when Eigen
/// itself would evaluate it before nesting (products), so that reading one
/// coefficient costs O(1).
template <class E>
using held_expression_t = std::remove_cvref_t<typename Eigen::internal::nested_eval<E, 1>::type>;

/// x's scale as the output scale of an op that keeps it.
template <class D, class S>
result_scale_t<S> unchanged_scale(const ScaledArray<D, S>& x) {
  return scale_value(x.scale());
}

/// "(2, 3)"
inline std::string index_string(Eigen::Index i, Eigen::Index j) {
  std::string s(1, '(');  // appended piecewise: GCC 12 warns (-Wrestrict) on "(" + std::string at -O3
  s += std::to_string(i);
  s += ", ";
  s += std::to_string(j);
  s += ')';
  return s;
}

/// Coefficients of two operands side by side (`kStackRows`: a above b, else a
/// left of b), each multiplied by its rebasing factor.
template <class A, class B, bool kStackRows>
struct concatenate_op {
  A a;
  B b;
  float factor_a, factor_b;
  Eigen::Index split;  // rows (or cols) of a
  float operator()(Eigen::Index i, Eigen::Index j) const {
    if constexpr (kStackRows) {
      return i < split ? factor_a * a.coeff(i, j) : factor_b * b.coeff(i - split, j);
    } else {
      return j < split ? factor_a * a.coeff(i, j) : factor_b * b.coeff(i, j - split);
    }
  }
};

/// x's coefficients with the order of the rows and/or columns reversed.
/// (Not an Eigen IndexedView with a run-time step of -1: Eigen 3.4 marks such a
/// view of a direct-access array as direct access without giving it data(), so
/// a block of it, as used when storing into a narrow format, fails to compile.)
template <class X>
struct reverse_op {
  X x;
  bool flip_rows, flip_cols;
  float operator()(Eigen::Index i, Eigen::Index j) const {
    return x.coeff(flip_rows ? x.rows() - 1 - i : i, flip_cols ? x.cols() - 1 - j : j);
  }
};

/// x's coefficients at offset (top, left), zeros elsewhere.
template <class X>
struct pad_op {
  X x;
  Eigen::Index top, left;
  float operator()(Eigen::Index i, Eigen::Index j) const {
    const Eigen::Index r = i - top, c = j - left;
    return r >= 0 && r < x.rows() && c >= 0 && c < x.cols() ? x.coeff(r, c) : 0.0f;
  }
};

template <class D, class S>
auto block_impl(const char* op, const ScaledArray<D, S>& x, Eigen::Index i, Eigen::Index j,
                Eigen::Index rows, Eigen::Index cols) {
  // Written so that nothing overflows: i + rows is never formed.
  SCALIFY_CHECK(i >= 0 && j >= 0 && rows >= 0 && cols >= 0 && i <= x.rows() && j <= x.cols() &&
                    rows <= x.rows() - i && cols <= x.cols() - j,
                shape_error,
                std::string("scalify::") + op + ": a block of " + shape_string(rows, cols) +
                    " at " + index_string(i, j) + " does not fit in " + shape_string(x));
  return make_result(values_f(x).block(i, j, rows, cols), unchanged_scale(x));
}

template <bool kStackRows, class D1, class S1, class D2, class S2>
auto concatenate_impl(const char* op, const ScaledArray<D1, S1>& a, const ScaledArray<D2, S2>& b) {
  if constexpr (kStackRows) {
    SCALIFY_CHECK(a.cols() == b.cols(), shape_error,
                  std::string("scalify::") + op + ": shapes " + shape_string(a) + " and " +
                      shape_string(b) + " differ in cols");
  } else {
    SCALIFY_CHECK(a.rows() == b.rows(), shape_error,
                  std::string("scalify::") + op + ": shapes " + shape_string(a) + " and " +
                      shape_string(b) + " differ in rows");
  }
  Eigen::Index rows = a.rows(), cols = a.cols();
  SCALIFY_CHECK((kStackRows ? checked_add(a.rows(), b.rows(), rows)
                            : checked_add(a.cols(), b.cols(), cols)) &&
                    valid_shape(rows, cols),
                shape_error,
                std::string("scalify::") + op + ": the result of " + shape_string(a) + " and " +
                    shape_string(b) + " has more elements than Eigen::Index holds");
  using Math = result_scale_t<S1, S2>;
  const Math sa = static_cast<Math>(scale_value(a.scale()));
  const Math sb = static_cast<Math>(scale_value(b.scale()));
  const Math scale = std::max(sa, sb);
  using A = held_expression_t<decltype(values_f(a))>;
  using B = held_expression_t<decltype(values_f(b))>;
  using Op = concatenate_op<A, B, kStackRows>;
  const Op functor{A(values_f(a)), B(values_f(b)), static_cast<float>(safe_div(sa, scale)),
                   static_cast<float>(safe_div(sb, scale)), kStackRows ? a.rows() : a.cols()};
  return make_result(Eigen::ArrayXXf::NullaryExpr(rows, cols, functor), scale);
}

}  // namespace detail

/// The transpose: (R x C) -> (C x R), scale unchanged.
///
/// **Example**:
/// ```
/// ScaledMatrix<float8_e4m3fn> xt = scalify::transpose(x);
/// ```
template <class D, class S>
auto transpose(const ScaledArray<D, S>& x) {
  return detail::make_result(detail::values_f(x).transpose(), detail::unchanged_scale(x));
}

/// The same elements in row-major order (like NumPy's reshape) as a
/// (rows x cols) tensor, scale unchanged. One of rows, cols may be -1: it is
/// inferred from the size. Throws shape_error when the sizes do not match.
///
/// **Example**:
/// ```
/// auto y = scalify::reshape(x, 2, -1);  // x (3 x 4) -> (2 x 6): y(0, 4) == x(1, 0)
/// ```
template <class D, class S>
auto reshape(const ScaledArray<D, S>& x, Eigen::Index rows, Eigen::Index cols) {
  const Eigen::Index size = x.size();
  const auto fail = [&] {
    return std::string("scalify::reshape: cannot reshape ") + detail::shape_string(x) + " (" +
           std::to_string(size) + " elements) into " + detail::shape_string(rows, cols);
  };
  SCALIFY_CHECK(rows >= -1 && cols >= -1 && !(rows == -1 && cols == -1), shape_error, fail());
  if (rows == -1) {
    SCALIFY_CHECK(cols > 0 && size % cols == 0, shape_error, fail());
    rows = size / cols;
  } else if (cols == -1) {
    SCALIFY_CHECK(rows > 0 && size % rows == 0, shape_error, fail());
    cols = size / rows;
  }
  // rows * cols could overflow: compare by division.
  SCALIFY_CHECK(rows == 0 || cols == 0 ? size == 0 : size % rows == 0 && size / rows == cols,
                shape_error, fail());
  return detail::make_result(detail::values_f(x).template reshaped<Eigen::RowMajor>(rows, cols),
                             detail::unchanged_scale(x));
}

/// The (rows x cols) block whose top-left element is x(i, j), scale
/// unchanged. Throws shape_error unless the block fits in x.
///
/// **Example**:
/// ```
/// auto top = scalify::block(x, 0, 0, 2, x.cols());  // the first two rows
/// ```
template <class D, class S>
auto block(const ScaledArray<D, S>& x, Eigen::Index i, Eigen::Index j, Eigen::Index rows,
           Eigen::Index cols) {
  return detail::block_impl("block", x, i, j, rows, cols);
}

/// Same as block() (jax-scalify's slice, without strides).
///
/// **Example**: `auto row = scalify::slice(x, 3, 0, 1, x.cols());`
template <class D, class S>
auto slice(const ScaledArray<D, S>& x, Eigen::Index i, Eigen::Index j, Eigen::Index rows,
           Eigen::Index cols) {
  return detail::block_impl("slice", x, i, j, rows, cols);
}

/// x with the order of its rows, its columns or both reversed (NumPy's flip),
/// scale unchanged. The axis is chosen at run time; every axis gives the same
/// expression type. Throws std::invalid_argument for a value outside the enum.
///
/// **Example**:
/// ```
/// auto y = scalify::reverse(x, scalify::axis::rows);  // y(0, j) == x(R - 1, j)
/// ```
template <class D, class S>
auto reverse(const ScaledArray<D, S>& x, axis a = axis::both) {
  SCALIFY_CHECK(a == axis::rows || a == axis::cols || a == axis::both, std::invalid_argument,
                "scalify::reverse: unknown axis " + std::to_string(static_cast<int>(a)) +
                    " (expected axis::rows, axis::cols or axis::both)");
  using X = detail::held_expression_t<decltype(detail::values_f(x))>;
  const detail::reverse_op<X> functor{X(detail::values_f(x)), a != axis::cols, a != axis::rows};
  return detail::make_result(Eigen::ArrayXXf::NullaryExpr(x.rows(), x.cols(), functor),
                             detail::unchanged_scale(x));
}

/// x surrounded by zeros: `top` rows above, `bottom` below, `left` columns to
/// the left, `right` to the right; (R x C) -> (top + R + bottom x left + C +
/// right), scale unchanged. Throws shape_error for a negative amount, or when
/// the padded shape or its number of elements overflows Eigen::Index.
///
/// **Example**:
/// ```
/// auto y = scalify::pad(x, 1, 1, 0, 2);  // (3 x 4) -> (5 x 6), y(1, 0) == x(0, 0)
/// ```
template <class D, class S>
auto pad(const ScaledArray<D, S>& x, Eigen::Index top, Eigen::Index bottom, Eigen::Index left,
         Eigen::Index right) {
  const auto amounts = [&] {
    return "top " + std::to_string(top) + ", bottom " + std::to_string(bottom) + ", left " +
           std::to_string(left) + ", right " + std::to_string(right) + " for " +
           detail::shape_string(x);
  };
  SCALIFY_CHECK(top >= 0 && bottom >= 0 && left >= 0 && right >= 0, shape_error,
                "scalify::pad: the amounts must be >= 0, got " + amounts());
  // top + R + bottom and left + C + right, and their product, must fit Eigen::Index.
  Eigen::Index rows = 0, cols = 0;
  SCALIFY_CHECK(
      detail::checked_add(top, x.rows(), rows) && detail::checked_add(rows, bottom, rows) &&
          detail::checked_add(left, x.cols(), cols) && detail::checked_add(cols, right, cols) &&
          detail::valid_shape(rows, cols),
      shape_error, "scalify::pad: the padded shape overflows Eigen::Index with " + amounts());
  using X = detail::held_expression_t<decltype(detail::values_f(x))>;
  const detail::pad_op<X> functor{X(detail::values_f(x)), top, left};
  return detail::make_result(Eigen::ArrayXXf::NullaryExpr(rows, cols, functor),
                             detail::unchanged_scale(x));
}

/// A (1 x C) row repeated `n` times: (n x C), scale unchanged. Throws
/// shape_error unless x has one row, n >= 0 and n * C fits Eigen::Index.
///
/// **Example**:
/// ```
/// auto bias_rows = scalify::broadcast_rows(bias, batch);  // (1 x C) -> (batch x C)
/// ```
template <class D, class S>
auto broadcast_rows(const ScaledArray<D, S>& x, Eigen::Index n) {
  SCALIFY_CHECK(
      x.rows() == 1 && n >= 0 && detail::valid_shape(n, x.cols()), shape_error,
      "scalify::broadcast_rows: expected a row (1 x C) and n >= 0 with n * C elements fitting "
      "Eigen::Index, got " +
          detail::shape_string(x) + " and n = " + std::to_string(n));
  return detail::make_result(detail::values_f(x).replicate(n, 1), detail::unchanged_scale(x));
}

/// A (R x 1) column repeated `n` times: (R x n), scale unchanged. Throws
/// shape_error unless x has one column, n >= 0 and R * n fits Eigen::Index.
///
/// **Example**:
/// ```
/// auto y = scalify::broadcast_cols(v, 4);  // (R x 1) -> (R x 4)
/// ```
template <class D, class S>
auto broadcast_cols(const ScaledArray<D, S>& x, Eigen::Index n) {
  SCALIFY_CHECK(
      x.cols() == 1 && n >= 0 && detail::valid_shape(x.rows(), n), shape_error,
      "scalify::broadcast_cols: expected a column (R x 1) and n >= 0 with R * n elements fitting "
      "Eigen::Index, got " +
          detail::shape_string(x) + " and n = " + std::to_string(n));
  return detail::make_result(detail::values_f(x).replicate(1, n), detail::unchanged_scale(x));
}

/// a stacked above b: (Ra x C), (Rb x C) -> (Ra + Rb x C). The scale is
/// max(sa, sb); each operand's data is multiplied by its scale over that
/// (safe_div: a zero scale contributes zeros). Throws shape_error when the
/// column counts differ or the result's size overflows Eigen::Index.
///
/// **Example**:
/// ```
/// ScaledMatrix<float16> ab = scalify::concatenate_rows(a, b);
/// ```
template <class D1, class S1, class D2, class S2>
auto concatenate_rows(const ScaledArray<D1, S1>& a, const ScaledArray<D2, S2>& b) {
  return detail::concatenate_impl<true>("concatenate_rows", a, b);
}

/// a to the left of b: (R x Ca), (R x Cb) -> (R x Ca + Cb). Scale and data
/// as concatenate_rows(). Throws shape_error when the row counts differ.
///
/// **Example**:
/// ```
/// ScaledMatrix<float16> ab = scalify::concatenate_cols(a, b);
/// ```
template <class D1, class S1, class D2, class S2>
auto concatenate_cols(const ScaledArray<D1, S1>& a, const ScaledArray<D2, S2>& b) {
  return detail::concatenate_impl<false>("concatenate_cols", a, b);
}

}  // namespace scalify

#endif  // SCALIFY_OPS_SHAPE_HPP_
