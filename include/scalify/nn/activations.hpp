// scalify nn: activations, forward/backward pairs on scaled tensors.
//
// x, y, dx, dy are all (B, C).
//
//   relu_forward(y, x)              y = max(x, 0): data max(d, 0), scale unchanged
//   relu_backward(dx, dy, x)        dx = dy * [x > 0]: scale of dy
//   gelu_forward(y, x)              y = gelu(x) (tanh approximation), on x's scale
//   gelu_backward(dx, dy, x)        dx = dy * gelu'(x): scale of dy
//   *_ref                           the same on plain float or double matrices
//
// gelu(x) = 0.5 x (1 + tanh(k (x + 0.044715 x^3))), k = sqrt(2 / pi), the
// library's one GELU: scalify::gelu_tanh and gelu_tanh_grad (scalify/activation.hpp),
// which the GEMM epilogue's activation::gelu_tanh uses too (the same float32
// input gives the same float32 value). It is computed from the values x = d * s
// and stored on x's scale: gelu(x) ~ x for large x, ~0 for very negative x, so
// the output data stays of the input data's magnitude. The layers run the
// vector routines of kernels/gelu.hpp (the same bits) on the scope's threads.
#ifndef SCALIFY_NN_ACTIVATIONS_HPP_
#define SCALIFY_NN_ACTIVATIONS_HPP_

#include <Eigen/Core>  // Eigen::Array
#include <cstdint>     // int64_t
#include <string>      // std::string
#include <utility>     // std::move

#include "scalify/activation.hpp"            // gelu_tanh, gelu_tanh_grad
#include "scalify/core/config_scope.hpp"     // current_config
#include "scalify/core/detail/parallel.hpp"  // detail::parallel_ranges
#include "scalify/cpu.hpp"                   // active_cpu_path
#include "scalify/errors.hpp"                // SCALIFY_CHECK, shape_error
#include "scalify/kernels/gelu.hpp"          // kernels::gelu_kernels_for
#include "scalify/ops/detail/common.hpp"     // shape_string

#include "scalify/nn/tensor.hpp"  // Tensor, RefMatrix, check_shape

namespace scalify::nn {

namespace detail {

template <class T>
void check_same_ref(const char* where, const RefMatrix<T>& dy, const RefMatrix<T>& x) {
  SCALIFY_CHECK(dy.rows() == x.rows() && dy.cols() == x.cols(), shape_error,
                std::string(where) + ": dy is " + scalify::detail::shape_string(dy.rows(), dy.cols()) + ", x is " +
                    scalify::detail::shape_string(x.rows(), x.cols()));
}

/// relu's gradient, dy where x > 0 and +0 elsewhere (x NaN included), as a
/// functor that Eigen vectorizes: a compare and an and per packet, the same
/// bits as the scalar form. (Eigen 3.4's select() has no packet path.)
struct relu_grad_op {
  float operator()(float dy, float x) const { return x > 0.0f ? dy : 0.0f; }
  template <class Packet>
  Packet packetOp(const Packet& dy, const Packet& x) const {
    return Eigen::internal::pand(Eigen::internal::pcmp_lt(Eigen::internal::pzero(x), x), dy);
  }
};

}  // namespace detail
}  // namespace scalify::nn

template <>
struct Eigen::internal::functor_traits<scalify::nn::detail::relu_grad_op> {
  enum { Cost = 2, PacketAccess = packet_traits<float>::HasCmp };
};

namespace scalify::nn {

/// y = max(x, 0). x and y are (B, C); scale unchanged.
///
/// **Example**: `Tensor y; scalify::nn::relu_forward(y, x);`
inline void relu_forward(Tensor& y, const Tensor& x) { y = detail::propagated(Matrix(x.data().cwiseMax(0.0f)), x.scale()); }

/// dx = dy where x > 0, else 0. dy and x are (B, C); dx gets dy's scale.
inline void relu_backward(Tensor& dx, const Tensor& dy, const Tensor& x) {
  check_shape("scalify::nn::relu_backward: dy", dy, x.rows(), x.cols());
  dx = detail::propagated(Matrix(dy.data().binaryExpr(x.data(), detail::relu_grad_op{})), dy.scale());
}

namespace detail {

/// Elements per thread below which the GELU layers stay on one thread (a few
/// microseconds of the vector routines, well above the pool's hand-off).
inline constexpr int64_t kGeluGrain = int64_t{1} << 15;

}  // namespace detail

/// y = gelu(x) (tanh approximation), on x's scale (scale 1 if x's is 0).
/// Where the value d * s overflows float, gelu is taken of the exact value in
/// double, so the data stays d (gelu(x) = x far out) instead of inf.
///
/// **Example**: `Tensor y; scalify::nn::gelu_forward(y, x);`
inline void gelu_forward(Tensor& y, const Tensor& x) {
  const float sx = x.scale();
  Matrix out(x.rows(), x.cols());
  const float* in = x.data().data();
  float* o = out.data();
  const kernels::gelu_forward_fn f = kernels::gelu_kernels_for(active_cpu_path()).forward;
  scalify::detail::parallel_ranges(out.size(), detail::kGeluGrain, 8, current_config().threads,
                                   [&](int64_t begin, int64_t end) { f(in + begin, sx, o + begin, end - begin); });
  y = detail::propagated(std::move(out), sx > 0.0f ? sx : 1.0f);
}

/// dx = dy * gelu'(x); dx gets dy's scale.
inline void gelu_backward(Tensor& dx, const Tensor& dy, const Tensor& x) {
  check_shape("scalify::nn::gelu_backward: dy", dy, x.rows(), x.cols());
  const float sx = x.scale();
  Matrix out(x.rows(), x.cols());
  const float* g = dy.data().data();
  const float* in = x.data().data();
  float* o = out.data();
  const kernels::gelu_backward_fn f = kernels::gelu_kernels_for(active_cpu_path()).backward;
  scalify::detail::parallel_ranges(out.size(), detail::kGeluGrain, 8, current_config().threads,
                                   [&](int64_t begin, int64_t end) {
                                     f(g + begin, in + begin, sx, o + begin, end - begin);
                                   });
  dx = detail::propagated(std::move(out), dy.scale());
}

/// Reference y = max(x, 0).
template <class T>
void relu_forward_ref(RefMatrix<T>& y, const RefMatrix<T>& x) {
  y = x.cwiseMax(T(0));
}
/// Reference dx = dy * [x > 0].
template <class T>
void relu_backward_ref(RefMatrix<T>& dx, const RefMatrix<T>& dy, const RefMatrix<T>& x) {
  detail::check_same_ref("scalify::nn::relu_backward_ref", dy, x);
  dx = (x.array() > T(0)).select(dy.array(), T(0)).matrix();
}
/// Reference y = gelu(x).
template <class T>
void gelu_forward_ref(RefMatrix<T>& y, const RefMatrix<T>& x) {
  y = x.unaryExpr([](T v) { return gelu_tanh(v); });
}
/// Reference dx = dy * gelu'(x).
template <class T>
void gelu_backward_ref(RefMatrix<T>& dx, const RefMatrix<T>& dy, const RefMatrix<T>& x) {
  detail::check_same_ref("scalify::nn::gelu_backward_ref", dy, x);
  dx = dy.cwiseProduct(x.unaryExpr([](T v) { return gelu_tanh_grad(v); }));
}

}  // namespace scalify::nn

#endif  // SCALIFY_NN_ACTIVATIONS_HPP_
