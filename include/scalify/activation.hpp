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
// 4.7e-4 (near |x| = 2.7).
//
// How it is evaluated. With z = k x (1 + 0.044715 x^2), k = sqrt(2 / pi), and
// s = sigmoid(2z) = (1 + tanh z) / 2, gelu(x) = x s and gelu'(x) = s + x s (1 - s)
// 2 dz/dx. Both need only e = exp(-2|z|) <= 1:
//
//   s = 1 / (1 + e) for z >= 0, e / (1 + e) for z < 0;   s (1 - s) = e / (1 + e)^2
//
// so nothing cancels in either tail (1 + tanh z does, for z < 0). In float the
// exponential is a polynomial (Cody-Waite reduction by ln 2, Taylor to degree
// 7, 2^n from the rounding's bits) and every multiply-add is an explicit fma,
// so the vector routines of kernels/gelu.hpp compute the same bits on every
// CPU path, whatever the compiler contracts (NaN results agree as NaN, not in
// sign or payload); larger types use std::exp. In float, gelu_tanh is within
// 4 u |x| of the formula evaluated exactly and gelu_tanh_grad within 8 u
// (u = 2^-24; the largest errors found, over every float in [0.125, 10) of
// either sign, are 2.07 u |x| and 3.63 u). Far in the negative tail, where gelu
// is tiny, its error relative to gelu(x) itself grows (z's rounding, times 2|z|
// in the exponent: ~200 u at x = -10); relative to |x| it stays in the bound.
//
// Non-finite and far inputs: gelu_tanh(+inf) = +inf, gelu_tanh(-inf) = -0 (not
// -inf * 0 = NaN), NaN stays NaN; where |z| > 43.5 (|x| > ~10.0; 354 in
// double), e is taken as 0 and the derivative is exactly 1 or 0.
//
// The float functions call std::fma: one instruction where the translation
// unit is compiled with FMA (-mfma, -march=haswell or later), else a libm call
// (then the scalar GELU costs ~2x libm's tanhf). The library's own array
// routines run the AVX2 + FMA code on every SIMD path.
#ifndef SCALIFY_ACTIVATION_HPP_
#define SCALIFY_ACTIVATION_HPP_

#include <bit>          // std::bit_cast
#include <cmath>        // std::exp, std::fabs, std::fma, std::isinf, std::isfinite
#include <concepts>     // std::floating_point
#include <cstdint>      // uint32_t
#include <type_traits>  // std::is_same_v

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

namespace detail {

/// The constants of the float GELU, shared by gelu_terms<float> and the
/// vector routines of kernels/gelu.hpp.
struct gelu_f32_constants {
  static constexpr float k = 0x1.988454p-1f;     ///< sqrt(2 / pi)
  static constexpr float kc = 0x1.2444f2p-5f;    ///< k * 0.044715
  static constexpr float k2 = 0x1.988454p+0f;    ///< 2 k
  static constexpr float kc6 = 0x1.b6676cp-3f;   ///< 6 k * 0.044715: 2 dz/dx = k2 + kc6 x^2
  static constexpr float t_max = 43.5f;          ///< |z| beyond: e = exp(-2|z|) < 2^-125 is taken as 0
  static constexpr float log2e = 0x1.715476p+0f;
  static constexpr float round_magic = 0x1.8p23f;  ///< v + 1.5 * 2^23 rounds v (|v| < 2^22) to an integer
  static constexpr float ln2_hi = 0x1.62e430p-1f;  ///< ln 2 = ln2_hi + ln2_lo
  static constexpr float ln2_lo = -0x1.05c610p-29f;
  /// 1 / i! for i = 7, 6, ..., 2 (Horner's order)
  static constexpr float inv_fact[6] = {0x1.a01a02p-13f, 0x1.6c16c2p-10f, 0x1.111112p-7f,
                                        0x1.555556p-5f,  0x1.555556p-3f,  0x1p-1f};
};
static_assert((std::bit_cast<uint32_t>(gelu_f32_constants::round_magic) << 23) == 0);

/// What gelu_tanh and gelu_tanh_grad share (see the file comment).
template <class T>
struct gelu_terms {
  T x2;      ///< x * x
  T z;       ///< x (k + k 0.044715 x^2)
  T e;       ///< exp(-2|z|), or 0 if `big`
  T den;     ///< 1 + e
  bool big;  ///< |z| > t_max (43.5 in float, 354 in wider types); false for NaN
};

/// The terms of x. In float, in this order with these roundings (the vector
/// routines repeat it lane by lane).
template <std::floating_point T>
gelu_terms<T> make_gelu_terms(T x) {
  gelu_terms<T> g;
  g.x2 = x * x;
  if constexpr (std::is_same_v<T, float>) {
    using C = gelu_f32_constants;
    g.z = x * std::fma(C::kc, g.x2, C::k);
    const float t = std::fabs(g.z);
    g.big = t > C::t_max;
    if (g.big) {
      g.e = 0.0f;
      g.den = 1.0f;
      return g;
    }
    // exp(a), a = -2t in [-87, 0]: a = n ln 2 + f with n = round(a log2 e) in [-126, 0] and |f| <= ln 2 / 2.
    const float a = t * -2.0f;
    const float j = std::fma(a, C::log2e, C::round_magic);  // round_magic + n, exactly
    const float n = j - C::round_magic;
    float f = std::fma(n, -C::ln2_hi, a);
    f = std::fma(n, -C::ln2_lo, f);
    float p = C::inv_fact[0];
    for (int i = 1; i < 6; ++i) p = std::fma(p, f, C::inv_fact[i]);
    p = std::fma(p, f, 1.0f);
    p = std::fma(p, f, 1.0f);  // exp(f)
    // 2^n: j's bits are round_magic's plus n, and round_magic's bits shifted up by 23 are 0.
    const float two_n = std::bit_cast<float>((std::bit_cast<uint32_t>(j) << 23) + (127u << 23));
    g.e = p * two_n;
    g.den = std::fma(p, two_n, 1.0f);
  } else {
    const T k = T(0.7978845608028654);  // sqrt(2 / pi)
    g.z = x * (k + k * T(0.044715) * g.x2);
    const T t = std::fabs(g.z);
    g.big = t > T(354);
    g.e = g.big ? T(0) : std::exp(T(-2) * t);
    g.den = T(1) + g.e;
  }
  return g;
}

}  // namespace detail

/// GELU, tanh approximation (see the file comment), in T's arithmetic.
///
/// **Example**: `float y = scalify::gelu_tanh(1.0f);  // 0.841192`
template <std::floating_point T>
T gelu_tanh(T x) {
  const detail::gelu_terms<T> g = detail::make_gelu_terms(x);
  // x s: x / (1 + e) for z >= 0, x e / (1 + e) for z < 0 (-0 far out, also for x = -inf).
  const T num = !(g.z < T(0)) ? x : g.big ? -T(0) : x * g.e;
  return num / g.den;
}

/// d gelu_tanh / dx, in T's arithmetic.
///
/// **Example**: `float g = scalify::gelu_tanh_grad(0.0f);  // 0.5`
template <std::floating_point T>
T gelu_tanh_grad(T x) {
  const detail::gelu_terms<T> g = detail::make_gelu_terms(x);
  const T q = T(1) / g.den;
  const T eq = g.e * q;
  const T s = g.z < T(0) ? eq : q;  // sigmoid(2z)
  // Exactly 1 or 0 far out (the term below would be inf * 0 once x^2 overflows).
  if (g.big) return s;
  // s + x (2k + 6 k 0.044715 x^2) s (1 - s), with s (1 - s) = e q^2.
  if constexpr (std::is_same_v<T, float>) {
    using C = detail::gelu_f32_constants;
    return std::fma(x * std::fma(C::kc6, g.x2, C::k2), eq * q, s);
  } else {
    const T k = T(0.7978845608028654);
    return s + x * (T(2) * k + T(6) * k * T(0.044715) * g.x2) * (eq * q);
  }
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
