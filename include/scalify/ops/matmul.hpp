// scalify: scaled matrix product with the unit-scaling rule.
//
//   matmul(a, b):  scale = sa * sb * pow2(sqrt(K)),  data = (da x db) / pow2(sqrt(K))
//
// K is the contracted size (a.cols() == b.rows()) and pow2 rounds with the
// scope's mode (config_scope; down by default). If the entries of da and db
// have unit variance, so do those of the output data. The product is computed
// now (a matrix product does not fuse into elementwise expressions), in
// float32 with float32 accumulation, by detail::gemm_f32(), which runs the
// SIMD GEMM of kernels/gemm.hpp (fp8/fp16/bf16 widened once while packing).
#ifndef SCALIFY_OPS_MATMUL_HPP_
#define SCALIFY_OPS_MATMUL_HPP_

#include <Eigen/Core>  // Eigen::Matrix, products
#include <string>      // std::string
#include <type_traits>  // std::remove_cv_t

#include "scalify/core/scaled_array.hpp"  // ScaledArray, ScaledMatrix
#include "scalify/kernels/gemm.hpp"       // gemm, kernels::gemm_input
#include "scalify/ops/detail/common.hpp"  // shape_string, sqrt_n_factor

namespace scalify {
namespace detail {

/// C = alpha * A * B in float32 (A: M x K, B: K x N), the data of any
/// ScaledArray widened to float. The single entry point of scaled matmuls:
/// scalify::gemm() (kernels/gemm.hpp) for float8, float16, bfloat16 and float
/// data; Eigen's product for other scalar types (double, ...).
template <class DA, class DB>
RowMatrixF gemm_f32(const DA& a, const DB& b, float alpha) {
  using TA = std::remove_cv_t<typename DA::Scalar>;
  using TB = std::remove_cv_t<typename DB::Scalar>;
  if constexpr (kernels::gemm_input<TA> && kernels::gemm_input<TB>) {
    return scalify::gemm<float>(a, b, {.alpha = alpha});
  } else {
    RowMatrixF c(a.rows(), b.cols());
    c.noalias() = a.template cast<float>().matrix() * b.template cast<float>().matrix();
    if (alpha != 1.0f) c *= alpha;
    return c;
  }
}

}  // namespace detail

/// Matrix product of scaled tensors with the unit-scaling rule (see the file
/// comment). Throws shape_error if a.cols() != b.rows().
///
/// **Example**:
/// ```
/// scalify::ScaledMatrix<scalify::float8_e4m3fn> x = ..., w = ...;   // (B, K), (K, N)
/// scalify::ScaledMatrix<scalify::float16> y = scalify::matmul(x, w);  // (B, N)
/// ```
template <class D1, class S1, class D2, class S2>
auto matmul(const ScaledArray<D1, S1>& a, const ScaledArray<D2, S2>& b) {
  SCALIFY_CHECK(a.cols() == b.rows(), shape_error,
                "scalify::matmul: cannot multiply " + detail::shape_string(a) + " by " + detail::shape_string(b) +
                    " (inner sizes " + std::to_string(a.cols()) + " and " + std::to_string(b.rows()) + " differ)");
  using S = detail::result_scale_t<S1, S2>;
  const S k = detail::sqrt_n_factor<S>(a.cols());
  const S scale = static_cast<S>(a.scale()) * static_cast<S>(b.scale()) * k;
  return ScaledArray<detail::RowMatrixF, S>(detail::gemm_f32(a.data(), b.data(), 1.0f / static_cast<float>(k)),
                                            scale);
}

}  // namespace scalify

#endif  // SCALIFY_OPS_MATMUL_HPP_
