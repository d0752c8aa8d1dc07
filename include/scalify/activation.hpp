// scalify: the activation functions, one enum and one formula for the whole
// library (the GEMM's fused epilogue, kernels/epilogue.hpp, and the nn layers,
// nn/activations.hpp, both use these).
//
//   activation            none | relu | gelu_tanh
//   gelu_tanh(x)          0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))
//   gelu_tanh_grad(x)     its derivative
//
// GELU is the tanh approximation of Hendrycks & Gimpel 2016 (arXiv 1606.08415,
// eq. 3), as GPT-2, llm.c and PyTorch's `gelu(approximate='tanh')` use, not the
// exact x * Phi(x) with erf: its largest difference from the erf form is about
// 4.7e-4 (near |x| = 2.7). Both functions are written once, here, in the
// order of operations above, so every caller computes the same bits for the
// same input and type. Non-finite inputs: gelu_tanh(+inf) = +inf,
// gelu_tanh(-inf) = -0 (not -inf * 0 = NaN), NaN stays NaN; the derivative is
// exactly 1 / 0 where tanh has saturated to +-1.
#ifndef SCALIFY_ACTIVATION_HPP_
#define SCALIFY_ACTIVATION_HPP_

#include <cmath>     // std::tanh, std::isinf, std::isfinite
#include <concepts>  // std::floating_point

namespace scalify {

/// An activation function: the GEMM epilogue's `gemm_options::act` and the
/// nn MLP's `mlp_config::act`. (scalify::nn names the same enum, so
/// `using namespace scalify; using namespace scalify::nn;` sees one `activation`.)
///
/// **Example**: `scalify::gemm(x, w, y, {.act = scalify::activation::gelu_tanh});`
enum class activation {
  none,       ///< identity
  relu,       ///< max(x, 0)
  gelu_tanh,  ///< gelu_tanh(x): 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))
};

/// GELU, tanh approximation (see the file comment), in T's arithmetic.
///
/// **Example**: `float y = scalify::gelu_tanh(1.0f);  // 0.841192`
template <std::floating_point T>
T gelu_tanh(T x) {
  const T k = T(0.7978845608028654);  // sqrt(2 / pi)
  const T t = std::tanh(k * (x + T(0.044715) * x * x * x));
  // Far in the negative tail t is exactly -1 and gelu(x) is -0, also for x = -inf (not -inf * 0 = NaN).
  if (t == T(-1)) return -T(0);
  return T(0.5) * x * (T(1) + t);
}

/// d gelu_tanh / dx, in T's arithmetic.
///
/// **Example**: `float g = scalify::gelu_tanh_grad(0.0f);  // 0.5`
template <std::floating_point T>
T gelu_tanh_grad(T x) {
  const T k = T(0.7978845608028654);  // sqrt(2 / pi)
  const T t = std::tanh(k * (x + T(0.044715) * x * x * x));
  // Where t is exactly +-1 the second term is 0 (it was 0 * inf = NaN once x^2 overflows, |x| > ~1e19
  // in float): the derivative is exactly 1 or 0, as the formula gives wherever it is finite.
  if (t * t == T(1)) return t > T(0) ? T(1) : T(0);
  return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * k * (T(1) + T(3) * T(0.044715) * x * x);
}

/// GELU of the value d * s of data d on scale s, returned as data on s (on 1
/// if s is 0: the values are then 0). Where d * s overflows float, the GELU
/// is taken of the exact value in double, so the result stays d (gelu(x) = x
/// far out) instead of inf. The nn GELU layer and the GEMM epilogue's GELU
/// on a scale (gemm_options::act_scale) both use it.
///
/// **Example**: `float y = scalify::gelu_tanh_on_scale(1.0f, 0.5f);  // gelu(0.5) / 0.5`
inline float gelu_tanh_on_scale(float d, float s) {
  const float divisor = s > 0.0f ? s : 1.0f;
  const float v = d * s;
  if (std::isinf(v) && std::isfinite(d)) [[unlikely]] {
    return static_cast<float>(gelu_tanh(static_cast<double>(d) * s) / divisor);
  }
  return gelu_tanh(v) / divisor;
}

}  // namespace scalify

#endif  // SCALIFY_ACTIVATION_HPP_
