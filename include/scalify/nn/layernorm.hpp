// scalify nn: layer normalisation over the features of each row.
//
// x, y, dx, dy are (B, C); gamma (weight) and beta (bias) are (1, C).
//
//   layernorm_forward(y, cache, x, params)         y = (x - mean) * rstd * gamma + beta
//   layernorm_backward(dx, grads, dy, cache, params)
//        dx      = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),  dxhat = dy * gamma
//        dgamma += sum_b dy * xhat,   dbeta += sum_b dy
//
// mean and rstd = 1 / sqrt(var + eps) are per row. They are computed from x's
// data, in double, with the scale folded into eps: var(x) + eps =
// s_x^2 (var(data) + eps / s_x^2), so xhat = (data - mean) / sqrt(var(data) +
// eps / s_x^2) is x's whatever s_x (no float overflow of data * s_x, no
// rounding of the values before the statistics), and a constant row gives
// xhat = 0 exactly (its mean in double is exact for C < 2^29). xhat itself
// is computed in float, (data - hi - lo) * rstd with the mean split as hi +
// lo (vectorised; data - hi is exact where it cancels). With u = 2^-24, y is
// within 6u (|xhat gamma| + |beta|) of the double-precision formula on the
// same float data, scale, gamma and beta: 4u from xhat's roundings, 2u from
// the product and the sum, and the double statistics' error, about
// C 2^-53 |mean| / sigma in xhat (tests/nn/layers_test.cpp: at most 2.7u
// seen, C = 768, means up to 10^4 sigma). y is normalised, so it is stored on
// scale 1. dx is about dy / sigma(x): it is stored on scale s_dy / s_x,
// which keeps its data near dy's.
#ifndef SCALIFY_NN_LAYERNORM_HPP_
#define SCALIFY_NN_LAYERNORM_HPP_

#include <Eigen/Core>  // Eigen::VectorXf
#include <cmath>       // std::sqrt, std::isfinite
#include <limits>      // std::numeric_limits
#include <stdexcept>   // std::invalid_argument
#include <string>      // std::string, std::to_string

#include "scalify/errors.hpp"             // SCALIFY_CHECK, shape_error, checked_mul

#include "scalify/nn/tensor.hpp"          // Tensor, RefMatrix, accumulate
#include "scalify/ops/detail/common.hpp"  // sqrt_n_factor

namespace scalify::nn {

/// gamma and beta are (1, C).
struct layernorm_params {
  Tensor gamma;
  Tensor beta;
};
/// Gradients of gamma and beta, accumulated by layernorm_backward.
struct layernorm_grads {
  Tensor dgamma;
  Tensor dbeta;
};
/// xhat (B, C) and rstd (B) of the forward pass; rstd is that of x's data,
/// 1 / sqrt(var(data) + eps / x_scale^2) (the values' rstd is rstd / x_scale).
struct layernorm_cache {
  Matrix xhat;
  Eigen::VectorXf rstd;
  float x_scale = 1.0f;
};

/// gamma = 1, beta = 0 (scale 1), both (1, C). Throws std::invalid_argument
/// unless C > 0 and C floats fit Eigen::Index bytes.
///
/// **Example**: `layernorm_params p; scalify::nn::layernorm_init(p, 512);`
inline void layernorm_init(layernorm_params& p, Eigen::Index channels) {
  Eigen::Index bytes = 0;
  SCALIFY_CHECK(channels > 0 && scalify::detail::checked_mul(channels, static_cast<Eigen::Index>(sizeof(float)), bytes),
                std::invalid_argument,
                "scalify::nn::layernorm_init: channels must be > 0 (and C floats fit Eigen::Index bytes), got " +
                    std::to_string(channels));
  p.gamma = Tensor(Matrix::Ones(1, channels), 1.0f);
  p.beta = Tensor(Matrix::Zero(1, channels), 1.0f);
}

namespace detail {
inline void check_layernorm(const char* where, const Tensor& x, const layernorm_params& p) {
  SCALIFY_CHECK(p.gamma.rows() == 1 && p.beta.rows() == 1 && p.gamma.cols() == x.cols() &&
                    p.beta.cols() == x.cols() && x.cols() > 0,
                shape_error,
                std::string(where) + ": x " + scalify::detail::shape_string(x) + ", gamma " +
                    scalify::detail::shape_string(p.gamma) + ", beta " + scalify::detail::shape_string(p.beta));
  check_batch(where, x);
}
}  // namespace detail

/// y = layernorm(x) * gamma + beta (see the file comment); y on scale 1.
/// Throws shape_error unless x is (B, C) with B > 0 and gamma, beta (1, C).
///
/// **Example**: `scalify::nn::layernorm_forward(y, cache, x, params);`
inline void layernorm_forward(Tensor& y, layernorm_cache& cache, const Tensor& x, const layernorm_params& p,
                              float eps = 1e-5f) {
  detail::check_layernorm("scalify::nn::layernorm_forward", x, p);
  const Eigen::Index B = x.rows(), C = x.cols();
  // Statistics of the data, the scale folded into eps (file comment). A zero
  // scale makes every value 0 (xhat 0, the values' rstd 1 / sqrt(eps)); an
  // infinite or NaN one makes them non-finite (y NaN, as the values give).
  const float s = x.scale();
  const double sx = s == 0.0f ? 1.0 : static_cast<double>(s);
  const double eps_data = static_cast<double>(eps) / (sx * sx);  // no overflow in double: sx^2 <= 2^256
  const bool finite_scale = std::isfinite(sx);
  cache.xhat.resize(B, C);
  cache.rstd.resize(B);
  cache.x_scale = s;
  const auto gamma = (p.gamma.data() * p.gamma.scale()).row(0);
  const auto beta = (p.beta.data() * p.beta.scale()).row(0);
  Matrix out(B, C);
  Eigen::RowVectorXd row(C);  // one row of data in double: the statistics' two passes read it
  for (Eigen::Index b = 0; b < B; ++b) {
    if (s == 0.0f) {
      row.setZero();
    } else {
      row = x.data().row(b).cast<double>();
    }
    const double mean = row.mean();
    const double var = (row.array() - mean).square().mean();
    const double rstd = finite_scale ? 1.0 / std::sqrt(var + eps_data) : std::numeric_limits<double>::quiet_NaN();
    cache.rstd(b) = static_cast<float>(rstd);
    // (data - mean) * rstd in float (vectorised): the mean as hi + lo, data - hi exact where it cancels.
    const float hi = static_cast<float>(mean), lo = static_cast<float>(mean - static_cast<double>(hi));
    if (s == 0.0f) {
      cache.xhat.row(b).setZero();
    } else {
      cache.xhat.row(b) = ((x.data().row(b).array() - hi) - lo) * cache.rstd(b);
    }
    out.row(b) = cache.xhat.row(b).cwiseProduct(gamma) + beta;
  }
  y = Tensor(std::move(out), 1.0f);
}

/// Backward of layernorm_forward: sets dx (B, C), accumulates g.dgamma and g.dbeta
/// (dx may be dy). Throws shape_error, before any gradient changes, unless dy
/// is (B, C) of the forward pass and g's gradients are empty or (1, C).
inline void layernorm_backward(Tensor& dx, layernorm_grads& g, const Tensor& dy, const layernorm_cache& cache,
                               const layernorm_params& p) {
  check_shape("scalify::nn::layernorm_backward: dy", dy, cache.xhat.rows(), cache.xhat.cols());
  detail::check_layernorm("scalify::nn::layernorm_backward", dy, p);
  const Eigen::Index B = dy.rows(), C = dy.cols();
  const auto grad_ok = [&](const Tensor& t) { return t.size() == 0 || (t.rows() == 1 && t.cols() == C); };
  SCALIFY_CHECK(grad_ok(g.dgamma) && grad_ok(g.dbeta), shape_error,
                "scalify::nn::layernorm_backward: dgamma " + scalify::detail::shape_string(g.dgamma) + " and dbeta " +
                    scalify::detail::shape_string(g.dbeta) + ", expected empty or (1 x " + std::to_string(C) + ")");
  const auto gamma = (p.gamma.data() * p.gamma.scale()).row(0);
  // Work on dy's data with the data's rstd; dx's values are s_dy * data * rstd / s_x: stored on s_dy / s_x.
  const float sx = cache.x_scale > 0.0f ? cache.x_scale : 1.0f;
  Matrix out(B, C);
  for (Eigen::Index b = 0; b < B; ++b) {
    const Eigen::RowVectorXf dxhat = dy.data().row(b).cwiseProduct(gamma);
    const float m1 = dxhat.mean();
    const float m2 = dxhat.cwiseProduct(cache.xhat.row(b)).mean();
    out.row(b) = (dxhat.array() - m1 - cache.xhat.row(b).array() * m2) * cache.rstd(b);
  }
  // dgamma and dbeta read dy before dx is stored: dx may be dy.
  const float k = scalify::detail::sqrt_n_factor<float>(B);
  if (g.dgamma.size() == 0) g.dgamma = zeros(1, C);
  if (g.dbeta.size() == 0) g.dbeta = zeros(1, C);
  accumulate(g.dgamma,
             detail::propagated(Matrix(dy.data().cwiseProduct(cache.xhat).colwise().sum() / k), dy.scale() * k));
  accumulate(g.dbeta, detail::propagated(Matrix(dy.data().colwise().sum() / k), dy.scale() * k));
  dx = detail::propagated(std::move(out), dy.scale() / sx);
}

/// Reference forward in plain T; returns xhat and rstd through the cache arguments.
template <class T>
void layernorm_forward_ref(RefMatrix<T>& y, RefMatrix<T>& xhat, Eigen::Matrix<T, Eigen::Dynamic, 1>& rstd,
                           const RefMatrix<T>& x, const RefMatrix<T>& gamma, const RefMatrix<T>& beta,
                           T eps = T(1e-5)) {
  SCALIFY_CHECK(gamma.rows() == 1 && beta.rows() == 1 && gamma.cols() == x.cols() && beta.cols() == x.cols(),
                shape_error, "scalify::nn::layernorm_forward_ref: gamma and beta must be (1 x C) for x " +
                                 scalify::detail::shape_string(x.rows(), x.cols()));
  const Eigen::Index B = x.rows();
  xhat.resize(B, x.cols());
  rstd.resize(B);
  y.resize(B, x.cols());
  for (Eigen::Index b = 0; b < B; ++b) {
    const T mean = x.row(b).mean();
    const T var = (x.row(b).array() - mean).square().mean();
    rstd(b) = T(1) / std::sqrt(var + eps);
    xhat.row(b) = (x.row(b).array() - mean) * rstd(b);
    y.row(b) = xhat.row(b).cwiseProduct(gamma.row(0)) + beta.row(0);
  }
}

/// Reference backward in plain T (dgamma, dbeta accumulated).
template <class T>
void layernorm_backward_ref(RefMatrix<T>& dx, RefMatrix<T>& dgamma, RefMatrix<T>& dbeta, const RefMatrix<T>& dy,
                            const RefMatrix<T>& xhat, const Eigen::Matrix<T, Eigen::Dynamic, 1>& rstd,
                            const RefMatrix<T>& gamma) {
  SCALIFY_CHECK(xhat.rows() == dy.rows() && xhat.cols() == dy.cols() && rstd.size() == dy.rows() &&
                    gamma.rows() == 1 && gamma.cols() == dy.cols() && dgamma.rows() == 1 &&
                    dgamma.cols() == dy.cols() && dbeta.rows() == 1 && dbeta.cols() == dy.cols(),
                shape_error, "scalify::nn::layernorm_backward_ref: mismatched shapes for dy " +
                                 scalify::detail::shape_string(dy.rows(), dy.cols()));
  dx.resize(dy.rows(), dy.cols());
  for (Eigen::Index b = 0; b < dy.rows(); ++b) {
    const Eigen::Matrix<T, 1, Eigen::Dynamic> dxhat = dy.row(b).cwiseProduct(gamma.row(0));
    const T m1 = dxhat.mean();
    const T m2 = dxhat.cwiseProduct(xhat.row(b)).mean();
    dx.row(b) = (dxhat.array() - m1 - xhat.row(b).array() * m2) * rstd(b);
  }
  dgamma += dy.cwiseProduct(xhat).colwise().sum();
  dbeta += dy.colwise().sum();
}

}  // namespace scalify::nn

#endif  // SCALIFY_NN_LAYERNORM_HPP_
