// scalify: reductions of scaled tensors (jax-scalify's reduce_sum, reduce_prod,
// reduce_max, reduce_min, argmax, argmin, and mean as JAX lowers it).
//
//   op (N elements, scale s)   output scale        data (float32)
//   sum                        s * R(sqrt N)       sum(d) / R(sqrt N)
//   mean                       s * R(sqrt N) / P   sum(d) / R(sqrt N) / M
//   prod                       s^N                 prod(d)
//   max, min                   s                   max(d), min(d)
//   argmax, argmin             (an Eigen::Index)   first extremum of the values d * s
//
// R(v) = pow2 rounding of v with the scope's mode (config_scope: down by
// default; detail::sqrt_n_factor). N = P * M with P = pow2_round_down(N) and M
// in [1, 2): N as a scaled scalar, so mean is scaled div(sum, N), which is how
// JAX lowers jnp.mean (jax-scalify has no mean rule of its own).
//
// Three flavours of each:
//   sum(x)          every element          -> ScaledScalar<float, S'>, evaluated now
//   rowwise_sum(x)  one value per row      -> lazy (R x 1), N = C (Eigen's x.rowwise())
//   colwise_sum(x)  one value per column   -> lazy (1 x C), N = R (Eigen's x.colwise())
// argmax/argmin and their rowwise/colwise forms return indices, evaluated now:
// a flat row-major index (NumPy's argmax), or Eigen::Matrix<Eigen::Index, ...>
// of column (rowwise) or row (colwise) indices.
//
// Arithmetic is float32, in Eigen's own order. S' is detail::result_scale_t<S>
// (float, or double for a double scale). Where sum's or mean's scale leaves S'
// (s * R(sqrt N) = inf near 2^127, s * R(sqrt N) / P = 0 or subnormal below
// 2^-126), the scale is a power of two (S''s largest; the subnormal's own; the
// smallest positive for 0) and the data carries the rest
// (detail::scale_product). Limits, as in the reference:
//   - prod's scale s^N overflows or underflows the scale type for large N
//     (float: 2^128 = inf); use a double scale, or sum logs;
//   - max/min keep s, which is right only for s >= 0 (scalify never makes a
//     negative scale: constructors, set_scale and the factories reject one);
//   - max/min/argmax/argmin of an empty axis throw shape_error (NumPy raises);
//     sum of nothing is 0, prod 1, mean NaN (scale s).
// NaN: max/min propagate it (NaN if any element is NaN); argmax/argmin return
// the first NaN, like NumPy. Unlike the reference, which compares the data,
// argmax/argmin compare the values d * s (exactly), so a zero scale gives 0.
#ifndef SCALIFY_OPS_REDUCE_HPP_
#define SCALIFY_OPS_REDUCE_HPP_

#include <Eigen/Core>  // Eigen::Array, Eigen::PropagateNaN, Eigen::Index
#include <bit>         // std::bit_floor
#include <cmath>       // std::pow, std::isnan
#include <cstdint>     // uint64_t
#include <limits>      // std::numeric_limits
#include <string>      // std::string

#include "scalify/core/scaled_array.hpp"  // ScaledArray, ScaledScalar
#include "scalify/errors.hpp"             // shape_error, SCALIFY_CHECK
#include "scalify/ops/detail/common.hpp"  // values_f, make_result, sqrt_n_factor, shape_string

namespace scalify {
namespace detail {

/// N as a scaled scalar (P, M): P = pow2_round_down(N) exactly, M = N / P in
/// [1, 2) rounded once to float. N = 0 gives (1, 0), so that mean of nothing
/// keeps the scale and its data is 0 / 0 = NaN.
template <class F>
struct count_parts {
  F pow2;
  float mantissa;
};
template <class F>
count_parts<F> split_count(Eigen::Index n) {
  if (n <= 0) return {F(1), 0.0f};
  const uint64_t p = std::bit_floor(static_cast<uint64_t>(n));
  return {static_cast<F>(p), static_cast<float>(static_cast<double>(n) / static_cast<double>(p))};
}

/// s^n, computed in double and rounded once to F (0^0 = 1).
template <class F>
F scale_power(F s, Eigen::Index n) {
  return static_cast<F>(std::pow(static_cast<double>(s), static_cast<double>(n)));
}

/// A float in a ScaledScalar.
template <class F>
ScaledScalar<float, F> scalar_result(float data, F scale) {
  Eigen::Matrix<float, 1, 1> d;
  d(0, 0) = data;
  return ScaledScalar<float, F>(unchecked_scale, d, scale);  // prod: s^N may overflow
}

/// max / min that return NaN if either operand is NaN (Eigen's partial
/// reductions have no PropagateNaN option).
struct nan_max_op {
  float operator()(const float& a, const float& b) const { return a > b || std::isnan(a) ? a : b; }
};
struct nan_min_op {
  float operator()(const float& a, const float& b) const { return a < b || std::isnan(a) ? a : b; }
};

/// Throws shape_error naming `op` when a reduction without identity would
/// reduce over nothing (`length` elements per output).
template <class D, class S>
void check_reduced_length(const char* op, const ScaledArray<D, S>& x, Eigen::Index length,
                          const char* what) {
  SCALIFY_CHECK(length > 0, shape_error,
                std::string("scalify::") + op + ": cannot reduce " + what + " of " +
                    shape_string(x) + ": they are empty and " + op + " has no identity");
}

/// The key that orders elements as their values d * s do, exactly (no
/// overflow): d itself for a positive finite scale, -d for a negative one,
/// and d * s (0, +-inf or NaN) for a zero, infinite or NaN scale.
inline double value_key(float d, double s) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  if (s > 0 && s < kInf) return d;
  if (s < 0 && s > -kInf) return -static_cast<double>(d);
  return static_cast<double>(d) * s;
}

/// Position of the first largest (kMax) or smallest value among n values
/// p[0], p[stride], ...; the first NaN wins (NumPy). n >= 1.
template <bool kMax>
Eigen::Index first_extremum(const float* p, Eigen::Index n, Eigen::Index stride, double s) {
  Eigen::Index best = 0;
  double best_key = value_key(p[0], s);
  if (std::isnan(best_key)) return 0;
  for (Eigen::Index k = 1; k < n; ++k) {
    const double key = value_key(p[k * stride], s);
    if (std::isnan(key)) return k;
    if (kMax ? key > best_key : key < best_key) {
      best = k;
      best_key = key;
    }
  }
  return best;
}

using RowMajorArrayXXf = Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <bool kMax, class D, class S>
Eigen::Index arg_all(const char* op, const ScaledArray<D, S>& x) {
  check_reduced_length(op, x, x.size(), "the elements");
  const RowMajorArrayXXf d = values_f(x);  // evaluated once, in the order of the flat index
  return first_extremum<kMax>(d.data(), d.size(), 1, static_cast<double>(scale_value(x.scale())));
}

template <bool kMax, class D, class S>
Eigen::Matrix<Eigen::Index, Eigen::Dynamic, 1> arg_rowwise(const char* op,
                                                           const ScaledArray<D, S>& x) {
  check_reduced_length(op, x, x.cols(), "the rows");
  const RowMajorArrayXXf d = values_f(x);
  Eigen::Matrix<Eigen::Index, Eigen::Dynamic, 1> out(x.rows());
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    out(i) = first_extremum<kMax>(d.data() + i * d.cols(), d.cols(), 1,
                                  static_cast<double>(scale_value(x.scale())));
  }
  return out;
}

template <bool kMax, class D, class S>
Eigen::Matrix<Eigen::Index, 1, Eigen::Dynamic> arg_colwise(const char* op,
                                                           const ScaledArray<D, S>& x) {
  check_reduced_length(op, x, x.rows(), "the columns");
  const RowMajorArrayXXf d = values_f(x);
  Eigen::Matrix<Eigen::Index, 1, Eigen::Dynamic> out(x.cols());
  for (Eigen::Index j = 0; j < x.cols(); ++j) {
    out(j) = first_extremum<kMax>(d.data() + j, d.rows(), d.cols(),
                                  static_cast<double>(scale_value(x.scale())));
  }
  return out;
}

// Partial reductions share their rules; kRowwise picks Eigen's direction.
template <bool kRowwise, class X>
auto partial(const X& values) {
  if constexpr (kRowwise) {
    return values.rowwise();
  } else {
    return values.colwise();
  }
}

template <bool kRowwise, class D, class S>
auto partial_sum(const ScaledArray<D, S>& x) {
  using F = result_scale_t<S>;
  const F r = sqrt_n_factor<F>(kRowwise ? x.cols() : x.rows());
  const scale_with_rest<F> out = scale_product<F>(scale_value(x.scale()), r);
  return make_result(partial<kRowwise>(values_f(x)).sum() / static_cast<float>(r) * out.rest,
                     out.scale);
}

template <bool kRowwise, class D, class S>
auto partial_mean(const ScaledArray<D, S>& x) {
  using F = result_scale_t<S>;
  const Eigen::Index n = kRowwise ? x.cols() : x.rows();
  const F r = sqrt_n_factor<F>(n);
  const count_parts<F> count = split_count<F>(n);
  const scale_with_rest<F> out = scale_product<F>(scale_value(x.scale()), r / count.pow2);
  return make_result(
      partial<kRowwise>(values_f(x)).sum() / static_cast<float>(r) / count.mantissa * out.rest,
      out.scale);
}

template <bool kRowwise, class D, class S>
auto partial_prod(const ScaledArray<D, S>& x) {
  return make_result(partial<kRowwise>(values_f(x)).prod(),
                     scale_power(scale_value(x.scale()), kRowwise ? x.cols() : x.rows()));
}

template <bool kRowwise, class Op, class D, class S>
auto partial_extremum(const char* op, const ScaledArray<D, S>& x) {
  check_reduced_length(op, x, kRowwise ? x.cols() : x.rows(),
                       kRowwise ? "the rows" : "the columns");
  const result_scale_t<S> scale = scale_value(x.scale());
  return make_result(partial<kRowwise>(values_f(x)).redux(Op()), scale);
}

}  // namespace detail

// ------------------------------------------------------------------------------
// Over every element: evaluated now, one ScaledScalar.

/// The sum of all N elements: scale s * R(sqrt N), data sum(d) / R(sqrt N),
/// with R the scope's pow2 rounding (down by default). Empty: 0, scale s.
///
/// **Example**:
/// ```
/// auto total = scalify::sum(x);  // x (8 x 16), scale 0.5: scale 0.5 * 8 = 4
/// float v = total.data()(0, 0) * total.scale();
/// ```
template <class D, class S>
ScaledScalar<float, detail::result_scale_t<S>> sum(const ScaledArray<D, S>& x) {
  using F = detail::result_scale_t<S>;
  const F r = detail::sqrt_n_factor<F>(x.size());
  const float total = detail::values_f(x).sum();
  const detail::scale_with_rest<F> out =
      detail::scale_product<F>(detail::scale_value(x.scale()), r);
  return detail::scalar_result(total / static_cast<float>(r) * out.rest, out.scale);
}

/// The mean of all N elements, as sum(x) divided by N as a scaled scalar
/// (P = pow2_round_down(N), M = N / P): scale s * R(sqrt N) / P, data
/// sum(d) / R(sqrt N) / M. Empty: NaN (data NaN, scale s).
///
/// **Example**:
/// ```
/// auto m = scalify::mean(x);  // x (8 x 16), scale 1: scale 8 / 128, data sum(d) / 8
/// ```
template <class D, class S>
ScaledScalar<float, detail::result_scale_t<S>> mean(const ScaledArray<D, S>& x) {
  using F = detail::result_scale_t<S>;
  const F r = detail::sqrt_n_factor<F>(x.size());
  const detail::count_parts<F> count = detail::split_count<F>(x.size());
  const float total = detail::values_f(x).sum();
  const detail::scale_with_rest<F> out =
      detail::scale_product<F>(detail::scale_value(x.scale()), r / count.pow2);
  return detail::scalar_result(total / static_cast<float>(r) / count.mantissa * out.rest,
                               out.scale);
}

/// The product of all N elements: scale s^N (overflows the scale type for
/// large N: float 2^128 is inf), data prod(d). Empty: 1.
///
/// **Example**:
/// ```
/// auto p = scalify::prod(x);  // x (1 x 5), scale 2: scale 32
/// ```
template <class D, class S>
ScaledScalar<float, detail::result_scale_t<S>> prod(const ScaledArray<D, S>& x) {
  return detail::scalar_result(detail::values_f(x).prod(),
                               detail::scale_power(detail::scale_value(x.scale()), x.size()));
}

/// The largest element: scale s (valid for s >= 0), data max(d); NaN if any
/// element is NaN. Throws shape_error for an empty x.
///
/// **Example**:
/// ```
/// float amax = scalify::max(scalify::abs(x)).data()(0, 0);  // in units of x.scale()
/// ```
template <class D, class S>
ScaledScalar<float, detail::result_scale_t<S>> max(const ScaledArray<D, S>& x) {
  detail::check_reduced_length("max", x, x.size(), "the elements");
  return detail::scalar_result(detail::values_f(x).template maxCoeff<Eigen::PropagateNaN>(),
                               detail::scale_value(x.scale()));
}

/// The smallest element: scale s (valid for s >= 0), data min(d); NaN if any
/// element is NaN. Throws shape_error for an empty x.
///
/// **Example**: `auto lo = scalify::min(x);`
template <class D, class S>
ScaledScalar<float, detail::result_scale_t<S>> min(const ScaledArray<D, S>& x) {
  detail::check_reduced_length("min", x, x.size(), "the elements");
  return detail::scalar_result(detail::values_f(x).template minCoeff<Eigen::PropagateNaN>(),
                               detail::scale_value(x.scale()));
}

/// The flat row-major index (i * cols + j, like NumPy) of the first largest
/// value d * s, compared exactly: on the data for s > 0, so a zero scale gives
/// 0 (all values are 0) unless some d * 0 is NaN. The first NaN wins. Throws
/// shape_error for an empty x.
///
/// **Example**:
/// ```
/// Eigen::Index k = scalify::argmax(x);  // row k / x.cols(), column k % x.cols()
/// ```
template <class D, class S>
Eigen::Index argmax(const ScaledArray<D, S>& x) {
  return detail::arg_all<true>("argmax", x);
}

/// As argmax(), for the first smallest value.
///
/// **Example**: `Eigen::Index k = scalify::argmin(x);`
template <class D, class S>
Eigen::Index argmin(const ScaledArray<D, S>& x) {
  return detail::arg_all<false>("argmin", x);
}

// ------------------------------------------------------------------------------
// One value per row (R x 1) or per column (1 x C): lazy, like Eigen's
// x.rowwise().sum(). The rules above with N = C (rowwise) or N = R (colwise).

/// The sum of each row: (R x 1), scale s * R(sqrt C), data rowwise sum / R(sqrt C).
///
/// **Example**: `ScaledVector<float> row_sums = scalify::rowwise_sum(x);`
template <class D, class S>
auto rowwise_sum(const ScaledArray<D, S>& x) {
  return detail::partial_sum<true>(x);
}

/// The sum of each column: (1 x C), scale s * R(sqrt R), data colwise sum / R(sqrt R).
///
/// **Example**: `ScaledMatrix<float> col_sums = scalify::colwise_sum(x);  // (1 x C)`
template <class D, class S>
auto colwise_sum(const ScaledArray<D, S>& x) {
  return detail::partial_sum<false>(x);
}

/// The mean of each row: (R x 1), as mean() with N = C. A (R x 0) input gives NaN.
///
/// **Example**: `ScaledVector<float> row_means = scalify::rowwise_mean(x);`
template <class D, class S>
auto rowwise_mean(const ScaledArray<D, S>& x) {
  return detail::partial_mean<true>(x);
}

/// The mean of each column: (1 x C), as mean() with N = R. A (0 x C) input gives NaN.
///
/// **Example**: `ScaledMatrix<float> col_means = scalify::colwise_mean(x);`
template <class D, class S>
auto colwise_mean(const ScaledArray<D, S>& x) {
  return detail::partial_mean<false>(x);
}

/// The product of each row: (R x 1), scale s^C, data rowwise product.
///
/// **Example**: `ScaledVector<float> p = scalify::rowwise_prod(x);`
template <class D, class S>
auto rowwise_prod(const ScaledArray<D, S>& x) {
  return detail::partial_prod<true>(x);
}

/// The product of each column: (1 x C), scale s^R, data colwise product.
///
/// **Example**: `ScaledMatrix<float> p = scalify::colwise_prod(x);`
template <class D, class S>
auto colwise_prod(const ScaledArray<D, S>& x) {
  return detail::partial_prod<false>(x);
}

/// The largest element of each row: (R x 1), scale s, NaN propagates. Throws
/// shape_error when the rows are empty (C == 0).
///
/// **Example**: `ScaledVector<float> row_max = scalify::rowwise_max(x);`
template <class D, class S>
auto rowwise_max(const ScaledArray<D, S>& x) {
  return detail::partial_extremum<true, detail::nan_max_op>("rowwise_max", x);
}

/// The largest element of each column: (1 x C), scale s, NaN propagates.
/// Throws shape_error when the columns are empty (R == 0).
///
/// **Example**: `ScaledMatrix<float> col_max = scalify::colwise_max(x);`
template <class D, class S>
auto colwise_max(const ScaledArray<D, S>& x) {
  return detail::partial_extremum<false, detail::nan_max_op>("colwise_max", x);
}

/// The smallest element of each row: (R x 1), scale s, NaN propagates.
/// Throws shape_error when the rows are empty (C == 0).
///
/// **Example**: `ScaledVector<float> row_min = scalify::rowwise_min(x);`
template <class D, class S>
auto rowwise_min(const ScaledArray<D, S>& x) {
  return detail::partial_extremum<true, detail::nan_min_op>("rowwise_min", x);
}

/// The smallest element of each column: (1 x C), scale s, NaN propagates.
/// Throws shape_error when the columns are empty (R == 0).
///
/// **Example**: `ScaledMatrix<float> col_min = scalify::colwise_min(x);`
template <class D, class S>
auto colwise_min(const ScaledArray<D, S>& x) {
  return detail::partial_extremum<false, detail::nan_min_op>("colwise_min", x);
}

/// For each row, the column of its first largest value, as argmax():
/// (R x 1). Throws shape_error when the rows are empty (C == 0).
///
/// **Example**: `Eigen::Matrix<Eigen::Index, -1, 1> labels = scalify::rowwise_argmax(logits);`
template <class D, class S>
Eigen::Matrix<Eigen::Index, Eigen::Dynamic, 1> rowwise_argmax(const ScaledArray<D, S>& x) {
  return detail::arg_rowwise<true>("rowwise_argmax", x);
}

/// For each column, the row of its first largest value, as argmax(): (1 x C).
/// Throws shape_error when the columns are empty (R == 0).
///
/// **Example**: `auto rows = scalify::colwise_argmax(x);  // Eigen::Matrix<Eigen::Index, 1, -1>`
template <class D, class S>
Eigen::Matrix<Eigen::Index, 1, Eigen::Dynamic> colwise_argmax(const ScaledArray<D, S>& x) {
  return detail::arg_colwise<true>("colwise_argmax", x);
}

/// For each row, the column of its first smallest value, as argmin(): (R x 1).
/// Throws shape_error when the rows are empty (C == 0).
///
/// **Example**: `auto cols = scalify::rowwise_argmin(x);`
template <class D, class S>
Eigen::Matrix<Eigen::Index, Eigen::Dynamic, 1> rowwise_argmin(const ScaledArray<D, S>& x) {
  return detail::arg_rowwise<false>("rowwise_argmin", x);
}

/// For each column, the row of its first smallest value, as argmin(): (1 x C).
/// Throws shape_error when the columns are empty (R == 0).
///
/// **Example**: `auto rows = scalify::colwise_argmin(x);`
template <class D, class S>
Eigen::Matrix<Eigen::Index, 1, Eigen::Dynamic> colwise_argmin(const ScaledArray<D, S>& x) {
  return detail::arg_colwise<false>("colwise_argmin", x);
}

}  // namespace scalify

#endif  // SCALIFY_OPS_REDUCE_HPP_
