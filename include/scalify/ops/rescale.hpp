// scalify: moving values between scales.
//
//   set_scaling(x, s)        scale s, data d * (sx / s) (0 when s == 0)  lazy
//   stop_scaling(x)          the plain values d * s, as a float matrix
//   get_data_scale(x)        {data, scale}
//   dynamic_rescale_max(x)   scale sx * n, data d / n with n = pow2_down(max|d|)
//   dynamic_rescale_l1(x)    ... n = pow2_down(mean |d|)
//   dynamic_rescale_l2(x)    ... n = pow2_down(sqrt(mean d^2))
//
// The dynamic rescales floor n at kRescaleEps = 2^-14 (pow2_down of 1e-4, as
// jax-scalify does), so all-zero data keeps a finite scale. n is always
// rounded down, whatever the scope's mode (as the reference does). They
// evaluate x (the norm needs the data) and return float32 storage.
#ifndef SCALIFY_OPS_RESCALE_HPP_
#define SCALIFY_OPS_RESCALE_HPP_

#include <Eigen/Core>  // Eigen::MatrixXf
#include <algorithm>   // std::max
#include <cmath>       // std::sqrt, std::isfinite
#include <limits>      // std::numeric_limits
#include <stdexcept>   // std::invalid_argument
#include <type_traits> // std::is_same_v
#include <utility>     // std::pair, std::move

#include "scalify/core/pow2.hpp"          // pow2_round_down
#include "scalify/core/scaled_array.hpp"  // ScaledArray, check_scale, number_string
#include "scalify/errors.hpp"             // SCALIFY_CHECK
#include "scalify/ops/detail/common.hpp"  // values_f, safe_div, RowMatrixF

namespace scalify {

/// The floor of the norms of dynamic_rescale_*: 2^-14 = pow2_round_down(1e-4).
inline constexpr float kRescaleEps = 0x1p-14f;

/// Rebases `x` onto `scale` (same values): data d * (sx / scale), the factor
/// computed in double if either scale is double, applied in float. A zero
/// `scale` zeroes the tensor (jax-scalify's convention: data 0, scale 0).
/// Throws std::invalid_argument for a negative or non-finite scale, and when
/// x's scale is finite and > 0 but the factor sx / scale is beyond float
/// (inf, or 0: every value would become inf or 0), e.g. rebasing scale 1 onto
/// 1e-45. Data beyond the storage type's range when stored follows the
/// store's rules, as for any result.
///
/// **Example**: `scalify::ScaledMatrix<scalify::float8_e4m3fn> y = scalify::set_scaling(x, 0.5f);`
template <class D, class S, class S2>
  requires detail::scale_type<S2>
auto set_scaling(const ScaledArray<D, S>& x, S2 scale) {
  detail::check_scale(scale, "scalify::set_scaling", /*allow_zero=*/true);
  using R = detail::result_scale_t<S, S2>;
  const R from = static_cast<R>(x.scale()), to = static_cast<R>(scale);
  const float factor = static_cast<float>(detail::safe_div(from, to));
  SCALIFY_CHECK(!(std::isfinite(from) && from > R(0) && to > R(0)) || (std::isfinite(factor) && factor > 0.0f),
                std::invalid_argument,
                "scalify::set_scaling: rebasing from scale " + detail::number_string(static_cast<double>(from)) +
                    " onto " + detail::number_string(static_cast<double>(to)) + " multiplies the data by " +
                    detail::number_string(static_cast<double>(from / to)) +
                    ", beyond float's range (every value would become inf or 0)");
  return detail::make_result(detail::values_f(x) * factor, scale);
}

/// The plain values data * scale as a float matrix.
///
/// **Example**: `Eigen::MatrixXf v = scalify::stop_scaling(y);`
template <class D, class S>
Eigen::MatrixXf stop_scaling(const ScaledArray<D, S>& x) {
  return x.to_dense();
}

/// The (data, scale) pair of `x`; the data by reference.
///
/// **Example**: `auto [d, s] = scalify::get_data_scale(x);`
template <class D, class S>
std::pair<const D&, S> get_data_scale(const ScaledArray<D, S>& x) {
  return {x.data(), x.scale()};
}

namespace detail {

enum class rescale_norm { max, l1, l2 };

/// The norm of `d` (float data) that dynamic_rescale rebases by: max |d|,
/// mean |d| or sqrt(mean d^2); +inf if any element is inf or NaN. The sums
/// run in float (vectorized), and again in double when the float sum is not
/// finite: |d| and d^2 of finite data can overflow float (an RMS of 1e18 over
/// 1000 elements), which inf or NaN data makes the double sum do as well.
template <rescale_norm kNorm, class M>
double rescale_norm_of(const M& d) {
  if (d.size() == 0) return 0.0;
  const double count = static_cast<double>(d.size());
  double norm;
  if constexpr (kNorm == rescale_norm::max) {
    norm = d.cwiseAbs().maxCoeff();
    // Eigen's maxCoeff skips NaN on some paths: (d * 0) sums to NaN exactly
    // when an element is inf or NaN (one vectorized pass, not allFinite's scalar one).
    if (std::isnan((d.array() * 0.0f).sum())) norm = std::numeric_limits<double>::infinity();
  } else if constexpr (kNorm == rescale_norm::l1) {
    const float sum = d.cwiseAbs().sum();
    norm = (std::isfinite(sum) ? sum : d.cwiseAbs().template cast<double>().sum()) / count;
  } else {
    const float sum = d.squaredNorm();
    norm = std::sqrt((std::isfinite(sum) ? sum : d.template cast<double>().squaredNorm()) / count);
  }
  // A sum with an inf or NaN element is inf or NaN itself; a finite one stays
  // below 2^128 (at most max |d|).
  return std::isfinite(norm) ? norm : std::numeric_limits<double>::infinity();
}

template <rescale_norm kNorm, class D, class S>
auto dynamic_rescale(const ScaledArray<D, S>& x) {
  using R = result_scale_t<S>;
  const auto rebase = [&x](const auto& d) {
    // The power of two of the double norm, exact in float (from 2^-14 to 2^127, or inf).
    const float n = std::max(static_cast<float>(pow2_round_down(rescale_norm_of<kNorm>(d))), kRescaleEps);
    const R scale = static_cast<R>(x.scale()) * static_cast<R>(n);
    RowMatrixF data = d * (1.0f / n);
    return ScaledArray<RowMatrixF, R>(unchecked_scale, std::move(data), scale);  // inf for inf/NaN data
  };
  if constexpr (std::is_same_v<typename D::Scalar, float> && eigen_plain<D>) {
    return rebase(x.data().matrix());  // float storage: read in place
  } else {
    return rebase(RowMatrixF(x.data().template cast<float>()));
  }
}

}  // namespace detail

/// Rebases `x` so that max |data| is in [1, 2): n = pow2_round_down(max |d|)
/// (floored at kRescaleEps), scale * n, data / n. Values are unchanged.
/// NaN or inf data gives an infinite scale (as in the reference).
///
/// **Example**: `auto g = scalify::dynamic_rescale_max(grad);`
template <class D, class S>
auto dynamic_rescale_max(const ScaledArray<D, S>& x) {
  return detail::dynamic_rescale<detail::rescale_norm::max>(x);
}
/// As dynamic_rescale_max with n = pow2_round_down(mean |d|).
template <class D, class S>
auto dynamic_rescale_l1(const ScaledArray<D, S>& x) {
  return detail::dynamic_rescale<detail::rescale_norm::l1>(x);
}
/// As dynamic_rescale_max with n = pow2_round_down(sqrt(mean d^2)) (the RMS).
template <class D, class S>
auto dynamic_rescale_l2(const ScaledArray<D, S>& x) {
  return detail::dynamic_rescale<detail::rescale_norm::l2>(x);
}

}  // namespace scalify

#endif  // SCALIFY_OPS_RESCALE_HPP_
