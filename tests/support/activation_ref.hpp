// tests/support/activation_ref.hpp: the activations of scalify/activation.hpp
// in double, written out from their formulas (not from scalify's code), for the
// activation and GEMM tests and the GEMM fuzzer.
#pragma once

#include <cmath>

#include "scalify/activation.hpp"

namespace scalify_test {

/// GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))).
inline double gelu_ref(double x) {
  const double pi = 3.14159265358979323846;
  return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / pi) * (x + 0.044715 * x * x * x)));
}

/// `v` through activation `a`.
inline double activation_ref(double v, scalify::activation a) {
  switch (a) {
    case scalify::activation::none: return v;
    case scalify::activation::relu: return v > 0 ? v : 0;
    case scalify::activation::gelu_tanh: return gelu_ref(v);
  }
  return v;
}

}  // namespace scalify_test

namespace scalify_test {

/// d gelu_ref / dx, differentiated by hand: 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 * 0.044715 x^2),
/// t = tanh(k (x + 0.044715 x^3)).
inline double gelu_grad_ref(double x) {
  const double k = std::sqrt(2.0 / 3.14159265358979323846);
  const double t = std::tanh(k * (x + 0.044715 * x * x * x));
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * x * x);
}

}  // namespace scalify_test
