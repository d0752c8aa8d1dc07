// scalify: scaled matrix product with the unit-scaling rule.
//
//   matmul(a, b):  scale = sa * sb * pow2(sqrt(K)),  data = (da x db) / pow2(sqrt(K))
//   matmul(a, b, op_a, op_b):  the same for op_a(a) x op_b(b), op = trans::no / trans::yes
//
// K is the contracted size (a.cols() == b.rows()) and pow2 rounds with the
// scope's mode (config_scope; down by default). Where the scale overflows or
// underflows the scale type, it is clamped to the type's largest (smallest)
// power of two and the GEMM's alpha carries the rest (detail::scale_product). If the entries of da and db
// have unit variance, so do those of the output data. The product is computed
// now (a matrix product does not fuse into elementwise expressions), in
// float32 with float32 accumulation, by detail::gemm_f32(), which runs the
// SIMD GEMM of kernels/gemm.hpp (fp8/fp16/bf16 widened once while packing).
#ifndef SCALIFY_OPS_MATMUL_HPP_
#define SCALIFY_OPS_MATMUL_HPP_

#include <Eigen/Core>  // Eigen::Matrix, products
#include <string>      // std::string, std::to_string
#include <type_traits>  // std::remove_cv_t

#include "scalify/core/config_scope.hpp"  // current_config (threads)
#include "scalify/core/scaled_array.hpp"  // ScaledArray, ScaledMatrix
#include "scalify/errors.hpp"             // shape_error, SCALIFY_CHECK, valid_shape
#include "scalify/kernels/gemm.hpp"       // gemm, kernels::gemm_input
#include "scalify/ops/detail/common.hpp"  // shape_string, sqrt_n_factor

namespace scalify {
namespace detail {

/// C = alpha * op_a(A) * op_b(B) in float32 (op(A): M x K, op(B): K x N), the
/// data of any ScaledArray widened to float. The single entry point of scaled
/// matmuls: scalify::gemm() (kernels/gemm.hpp) for float8, float16, bfloat16
/// and float data, transposes included without a copy, on the configuration's
/// `threads` (config_scope); Eigen's product for other scalar types (double, ...).
template <class DA, class DB>
RowMatrixF gemm_f32(const DA& a, const DB& b, float alpha, trans op_a = trans::no, trans op_b = trans::no) {
  using TA = std::remove_cv_t<typename DA::Scalar>;
  using TB = std::remove_cv_t<typename DB::Scalar>;
  if constexpr (kernels::gemm_input<TA> && kernels::gemm_input<TB>) {
    return scalify::gemm<float>(a, b,
                                {.trans_a = op_a, .trans_b = op_b, .alpha = alpha, .threads = current_config().threads});
  } else {
    const RowMatrixF fa = a.template cast<float>().matrix();
    const RowMatrixF fb = b.template cast<float>().matrix();
    RowMatrixF c(op_a == trans::no ? a.rows() : a.cols(), op_b == trans::no ? b.cols() : b.rows());
    if (op_a == trans::no) {
      if (op_b == trans::no) {
        c.noalias() = fa * fb;
      } else {
        c.noalias() = fa * fb.transpose();
      }
    } else if (op_b == trans::no) {
      c.noalias() = fa.transpose() * fb;
    } else {
      c.noalias() = fa.transpose() * fb.transpose();
    }
    if (alpha != 1.0f) c *= alpha;
    return c;
  }
}

}  // namespace detail

/// Matrix product of scaled tensors with the unit-scaling rule (see the file
/// comment), with either operand used transposed: op_a(a) * op_b(b), K the
/// contracted size. The GEMM reads the transposed operand in place (a backward
/// pass's dx = dy W^T and dW = x^T dy copy nothing). Throws shape_error if the
/// inner sizes differ or the result's size overflows Eigen::Index, and
/// std::invalid_argument for a `trans` value outside the enum.
///
/// **Example**:
/// ```
/// auto dx = scalify::matmul(dy, w, scalify::trans::no, scalify::trans::yes);  // dy W^T
/// ```
template <class D1, class S1, class D2, class S2>
auto matmul(const ScaledArray<D1, S1>& a, const ScaledArray<D2, S2>& b, trans op_a, trans op_b = trans::no) {
  SCALIFY_CHECK((op_a == trans::no || op_a == trans::yes) && (op_b == trans::no || op_b == trans::yes),
                std::invalid_argument,
                "scalify::matmul: unknown trans values " + std::to_string(static_cast<int>(op_a)) + ", " +
                    std::to_string(static_cast<int>(op_b)) + " (expected trans::no or trans::yes)");
  const Eigen::Index k = op_a == trans::no ? a.cols() : a.rows();
  const Eigen::Index k_b = op_b == trans::no ? b.rows() : b.cols();
  SCALIFY_CHECK(k == k_b, shape_error,
                std::string("scalify::matmul: cannot multiply ") + (op_a == trans::no ? "" : "transpose ") +
                    detail::shape_string(a) + " by " + (op_b == trans::no ? "" : "transpose ") +
                    detail::shape_string(b) + " (inner sizes " + std::to_string(k) + " and " + std::to_string(k_b) +
                    " differ)");
  const Eigen::Index m = op_a == trans::no ? a.rows() : a.cols();
  const Eigen::Index n = op_b == trans::no ? b.cols() : b.rows();
  SCALIFY_CHECK(detail::valid_shape(m, n), shape_error,
                "scalify::matmul: the product of " + detail::shape_string(a) + " and " + detail::shape_string(b) +
                    " would be " + detail::shape_string(m, n) + ", more elements than Eigen::Index holds");
  using S = detail::result_scale_t<S1, S2>;
  const S factor = detail::sqrt_n_factor<S>(k);
  // sa * sb, then * factor; where either product leaves S's range, the data carries the rest (scale_product).
  const detail::scale_with_rest<S> ab = detail::scale_product<S>(static_cast<S>(a.scale()), static_cast<S>(b.scale()));
  const detail::scale_with_rest<S> out = detail::scale_product<S>(ab.scale, factor);
  const float alpha = 1.0f / static_cast<float>(factor) * (ab.rest * out.rest);
  return ScaledArray<detail::RowMatrixF, S>(detail::unchecked_scale, detail::gemm_f32(a.data(), b.data(), alpha, op_a, op_b), out.scale);
}

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
  return matmul(a, b, trans::no, trans::no);
}

}  // namespace scalify

#endif  // SCALIFY_OPS_MATMUL_HPP_
