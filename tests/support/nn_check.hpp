// tests/support/nn_check.hpp: helpers of the nn layer tests (tests/nn): random
// matrices, Tensors from and to double values, and central finite differences.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>

#include "scalify/nn/tensor.hpp"

namespace scalify_test {

namespace nn = scalify::nn;
using MatD = nn::RefMatrix<double>;

/// Normal(0, sigma) entries from std::mt19937(seed), in double.
inline MatD random_matrix(Eigen::Index r, Eigen::Index c, uint32_t seed, double sigma = 1.0) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> dist(0.0, sigma);
  MatD m(r, c);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = dist(gen);
  return m;
}

/// A Tensor holding `v` (rounded to float) on `scale`.
inline nn::Tensor to_tensor(const MatD& v, float scale) {
  return nn::Tensor(nn::Matrix((v / static_cast<double>(scale)).cast<float>()), scale);
}

/// The values data * scale of `t`, in double.
inline MatD values(const nn::Tensor& t) { return t.data().cast<double>() * static_cast<double>(t.scale()); }

/// Normwise relative error of `got` against `want`.
inline double rel_error(const MatD& got, const MatD& want) {
  return (got - want).norm() / std::max(want.norm(), 1e-30);
}

/// The worst |grad[i] - numeric| / (|numeric| + floor) over the elements i =
/// 0, stride, 2 stride, ... of x (n of them, float or double, changed in place
/// and restored), numeric the central difference (L(x + h) - L(x - h)) / (2 h
/// value_per_data): x is data whose values are `value_per_data` times it (a
/// Tensor's scale; 1 for plain values), so the value moves by h value_per_data.
template <class T, class Loss>
double fd_worst(T* x, Eigen::Index n, Eigen::Index stride, double h, double value_per_data, const Loss& loss,
                const double* grad, double floor) {
  double worst = 0.0;
  for (Eigen::Index i = 0; i < n; i += stride) {
    const T keep = x[i];
    x[i] = static_cast<T>(keep + h);
    const double lp = loss();
    x[i] = static_cast<T>(keep - h);
    const double lm = loss();
    x[i] = keep;
    const double numeric = (lp - lm) / (2.0 * h * value_per_data);
    worst = std::max(worst, std::abs(grad[i] - numeric) / (std::abs(numeric) + floor));
  }
  return worst;
}

}  // namespace scalify_test
