// scalify: helpers shared by the scaled ops (scalify/ops/*.hpp).
//
// Every op follows one pattern:
//   1. check arguments (shapes, scales) and throw shape_error naming the op and
//      both shapes, in every build type;
//   2. compute the output scale (scalar work only) with the op's rule;
//   3. build the data as a lazy Eigen *array* expression of float, over the
//      operands' data widened to float (values_f), and return
//      ScaledArray<decltype(expr), scale type>. Nothing is evaluated until the
//      result is assigned into storage (core/scaled_array.hpp).
#ifndef SCALIFY_OPS_DETAIL_COMMON_HPP_
#define SCALIFY_OPS_DETAIL_COMMON_HPP_

#include <Eigen/Core>  // Eigen::Index
#include <cmath>       // std::sqrt, std::isfinite, std::isinf, std::isnan, std::fabs
#include <limits>      // std::numeric_limits
#include <string>      // std::string, std::to_string
#include <utility>     // std::move

#include "scalify/core/config_scope.hpp"  // config_pow2_round
#include "scalify/core/pow2.hpp"          // pow2_round_down
#include "scalify/core/scaled_array.hpp"  // ScaledArray, shape_string
#include "scalify/errors.hpp"             // shape_error, SCALIFY_CHECK

namespace scalify::detail {

/// Row-major float32 storage, the type of evaluated intermediate data.
using RowMatrixF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// "(3 x 4)" for a ScaledArray (shape_string(rows, cols) is in core/scaled_array.hpp).
template <class D, class S>
std::string shape_string(const ScaledArray<D, S>& a) {
  return shape_string(a.rows(), a.cols());
}

/// Throws shape_error unless a and b have the same shape.
template <class D1, class S1, class D2, class S2>
void check_same_shape(const char* op, const ScaledArray<D1, S1>& a, const ScaledArray<D2, S2>& b) {
  SCALIFY_CHECK(a.rows() == b.rows() && a.cols() == b.cols(), shape_error,
                std::string("scalify::") + op + ": shapes " + shape_string(a) + " and " + shape_string(b) +
                    " differ");
}

/// The data of `a` as a lazy float array expression (widened exactly).
/// `.matrix().array()` keeps a plain Array by reference: a bare `.array()` of
/// an Array is the Array itself, which `auto` would copy, and expressions built
/// on that temporary copy (which nest plain objects by reference) would dangle.
template <class D, class S>
auto values_f(const ScaledArray<D, S>& a) {
  return a.data().matrix().array().template cast<float>();
}

/// The output scale type of an op on scales S...: double if any is double,
/// else float (E8M0 scales compute in float; storing rounds them back).
template <class... S>
using result_scale_t = scale_math_t<S...>;

/// a / b, or 0 when b == 0 (jax-scalify's safe_div): rebasing a zero-scale
/// operand onto a zero output scale contributes zeros, not NaN.
template <class F>
constexpr F safe_div(F a, F b) {
  return b == F(0) ? F(0) : a / b;
}

/// Wraps a lazy expression and its scale into a ScaledArray. The scale is not
/// checked: some rules legitimately give inf or NaN (div by a zero scale, an
/// overflowing mul, pow or prod; see docs/scaled_array.md, "Valid scales").
template <class S, class Expr>
auto make_result(Expr&& expr, S scale) {
  using E = std::decay_t<Expr>;
  return ScaledArray<E, S>(unchecked_scale, std::forward<Expr>(expr), scale);
}

/// A scale computed by a rule, and the factor left for the data.
template <class F>
struct scale_with_rest {
  F scale;
  float rest;  ///< the data is multiplied by this (1 unless the scale was clamped)
};

/// s * k, the scale a rule computes from a scale s and a factor k > 0 of its
/// own (matmul's R(sqrt K), sum's R(sqrt N), mean's R(sqrt N) / P), in F.
/// Where the product overflows F (inf) or falls below F's normal range (0, or
/// a subnormal, which keeps fewer bits than s and k: 2^-139 * 0.3 in float
/// keeps 9) although s and k are finite and positive, the scale is a power of
/// two (F's largest; the subnormal's own; F's smallest positive for 0) and the
/// data carries the rest, formed in double, so the values stay finite
/// (nonzero) and exact to float wherever they fit: sum of four 0.5 * 2^127 is
/// 2^127, not inf.
template <class F>
scale_with_rest<F> scale_product(F s, F k) {
  const F p = s * k;
  const bool usable = std::isfinite(s) && s > F(0) && std::isfinite(k) && k > F(0);
  if (usable && (std::isinf(p) || p < std::numeric_limits<F>::min())) [[unlikely]] {
    const F limit = std::isinf(p) ? pow2_round_down(std::numeric_limits<F>::max())
                    : p == F(0)   ? std::numeric_limits<F>::denorm_min()
                                  : pow2_round_down(p);
    const float rest = static_cast<float>(static_cast<double>(s) / static_cast<double>(limit) * static_cast<double>(k));
    if (std::isfinite(rest) && rest > 0.0f) return {limit, rest};
  }
  return {p, 1.0f};
}

/// max |float(stored)| over the non-NaN elements of `stored`, the data a
/// two-pass store cast from the float32 `wide` (same shape): +inf where an
/// element that was not NaN in `wide` was stored as NaN (an e4m3fn overflow).
/// The amax the GEMM's epilogue reports for a one-pass store
/// (kernels/epilogue.hpp), for the products whose store takes two passes.
template <class Stored, class Wide>
float stored_amax(const Stored& stored, const Wide& wide) {
  constexpr bool kRowMajor = (Stored::Flags & Eigen::RowMajorBit) != 0;  // read `stored` in its order
  const Eigen::Index outer = kRowMajor ? stored.rows() : stored.cols();
  const Eigen::Index inner = kRowMajor ? stored.cols() : stored.rows();
  float amax = 0.0f;
  for (Eigen::Index o = 0; o < outer; ++o) {
    for (Eigen::Index q = 0; q < inner; ++q) {
      const Eigen::Index i = kRowMajor ? o : q, j = kRowMajor ? q : o;
      const float a = std::fabs(static_cast<float>(stored(i, j)));
      if (std::isnan(a)) {
        if (!std::isnan(wide(i, j))) return std::numeric_limits<float>::infinity();
      } else if (a > amax) {
        amax = a;
      }
    }
  }
  return amax;
}

/// pow2(sqrt(n)) with the scope's rounding mode: the unit-scaling factor of a
/// contraction or sum over n terms.
/// (n == 0 gives 1: an empty sum is 0 at any scale.)
template <class F>
F sqrt_n_factor(Eigen::Index n) {
  if (n <= 0) return F(1);
  return config_pow2_round(static_cast<F>(std::sqrt(static_cast<double>(n))));
}

}  // namespace scalify::detail

namespace scalify::detail::elementwise {

/// The max of two scales, NaN if either is NaN.
template <class M>
constexpr M max_scale(M a, M b) {
  return std::isnan(a) || a > b ? a : b;
}

/// add/sub: the scale rule and the rebasing factors of both operands.
template <class M>
struct add_scales {
  M scale;
  float factor_a, factor_b;
};
template <class M>
add_scales<M> add_sub_scales(M sa, M sb) {
  const M hi = max_scale(sa, sb);
  const M lo = std::isnan(sa) || std::isnan(sb) ? hi : std::min(sa, sb);
  const M ratio = safe_div(lo, hi);  // in [0, 1]: no overflow for large scales
  M s = config_pow2_round(static_cast<M>(hi * std::sqrt(M(1) + ratio * ratio)));
  // hi * sqrt(2) or rounding up can overflow M although hi is finite: an inf
  // scale would turn every value into 0 * inf = NaN. M's largest power of two
  // keeps the rebasing factors below 2, and the values where they fit.
  if (std::isinf(s) && std::isfinite(hi)) s = pow2_round_down(std::numeric_limits<M>::max());
  return {s, static_cast<float>(safe_div(sa, s)), static_cast<float>(safe_div(sb, s))};
}

/// min/max/where: the output scale max(sa, sb) and the rebasing factors.
template <class M>
add_scales<M> max_scales(M sa, M sb) {
  const M s = max_scale(sa, sb);
  return {s, static_cast<float>(safe_div(sa, s)), static_cast<float>(safe_div(sb, s))};
}

}  // namespace scalify::detail::elementwise

#endif  // SCALIFY_OPS_DETAIL_COMMON_HPP_
