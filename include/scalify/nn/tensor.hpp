// scalify nn: the tensor types of the layers, number formats chosen at run
// time, and the casts and matmul the layers build on.
//
//   Tensor            ScaledMatrix<float>: activations and gradients between layers
//   dtype             float32 | float16 | bfloat16 | e4m3fn | e5m2 (run-time choice)
//   AnyTensor         a ScaledMatrix of any of those data types (std::variant)
//   cast_to(x, t)     x's data rounded into t (the configured store: saturating
//                     by default), scale unchanged
//   matmul_any(a, b)  scalify::matmul on two AnyTensors (op_a, op_b, a bias fused into the
//                     GEMM's epilogue on request): the data stays in its
//                     narrow type and goes to the float8 GEMM as it is
//   rescale(x, mode)  dynamic_rescale_{max,l1,l2} or nothing
//
// Layers (nn/linear.hpp, ...) keep activations in float32 data with a scale;
// the narrow formats are used for the matmul operands, which is where the
// bandwidth and the arithmetic are.
#ifndef SCALIFY_NN_TENSOR_HPP_
#define SCALIFY_NN_TENSOR_HPP_

#include <Eigen/Core>   // Eigen::Matrix
#include <algorithm>    // std::max
#include <stdexcept>    // std::invalid_argument
#include <string>       // std::string, std::to_string
#include <string_view>  // std::string_view
#include <utility>      // std::move
#include <variant>      // std::variant, std::visit

#include "scalify/core/config_scope.hpp"  // config_scope, current_config
#include "scalify/core/scaled_array.hpp"  // ScaledMatrix
#include "scalify/errors.hpp"             // format_error, shape_error, SCALIFY_CHECK, valid_shape
#include "scalify/formats/float16.hpp"    // float16, bfloat16
#include "scalify/formats/float8.hpp"     // float8_e4m3fn, float8_e5m2
#include "scalify/ops/detail/common.hpp"  // RowMatrixF, shape_string
#include "scalify/ops/matmul.hpp"         // matmul
#include "scalify/ops/rescale.hpp"        // dynamic_rescale_*

namespace scalify::nn {

/// Row-major float32 matrix (plain values, e.g. a batch of images).
using Matrix = scalify::detail::RowMatrixF;
/// Activations and gradients between layers: float32 data with a per-tensor scale.
using Tensor = ScaledMatrix<float>;

/// Plain row-major matrix of T: the type of the float32/float64 reference paths.
template <class T>
using RefMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// A number format chosen at run time.
enum class dtype { float32, float16, bfloat16, e4m3fn, e5m2 };

namespace detail {
/// True for the five dtype values (false for e.g. `dtype(99)`).
constexpr bool valid_dtype(dtype t) {
  return t == dtype::float32 || t == dtype::float16 || t == dtype::bfloat16 || t == dtype::e4m3fn ||
         t == dtype::e5m2;
}
/// The exception for a dtype value outside the enum (e.g. `dtype(99)`), naming `where` and the value.
inline std::invalid_argument bad_dtype(const char* where, dtype t) {
  return std::invalid_argument(std::string(where) + ": unknown dtype " + std::to_string(static_cast<int>(t)) +
                               " (expected fp32, fp16, bf16, e4m3fn or e5m2)");
}
}  // namespace detail

/// "fp32", "fp16", "bf16", "e4m3fn", "e5m2". Throws std::invalid_argument for
/// a value outside the enum.
///
/// **Example**: `std::string s = scalify::nn::dtype_name(scalify::nn::dtype::e5m2);  // "e5m2"`
inline const char* dtype_name(dtype t) {
  switch (t) {
    case dtype::float32: return "fp32";
    case dtype::float16: return "fp16";
    case dtype::bfloat16: return "bf16";
    case dtype::e4m3fn: return "e4m3fn";
    case dtype::e5m2: return "e5m2";
  }
  throw detail::bad_dtype("scalify::nn::dtype_name", t);
}

/// Parses a dtype_name() (also "float32", "float16", "bfloat16", "e4m3", "e5m2").
/// Throws format_error for anything else.
///
/// **Example**: `auto t = scalify::nn::parse_dtype("e4m3fn");`
inline dtype parse_dtype(std::string_view s) {
  if (s == "fp32" || s == "float32") return dtype::float32;
  if (s == "fp16" || s == "float16") return dtype::float16;
  if (s == "bf16" || s == "bfloat16") return dtype::bfloat16;
  if (s == "e4m3fn" || s == "e4m3") return dtype::e4m3fn;
  if (s == "e5m2") return dtype::e5m2;
  throw format_error("scalify::nn::parse_dtype: unknown format '" + std::string(s) +
                     "' (expected fp32, fp16, bf16, e4m3fn or e5m2)");
}

/// A scaled matrix whose data type is one of the dtypes.
using AnyTensor = std::variant<ScaledMatrix<float>, ScaledMatrix<float16>, ScaledMatrix<bfloat16>,
                               ScaledMatrix<float8_e4m3fn>, ScaledMatrix<float8_e5m2>>;

/// How a tensor is rebased before a narrowing cast.
enum class rescale_mode {
  none,  ///< keep the propagated scale
  max,   ///< dynamic_rescale_max: max |data| in [1, 2)
  l1,    ///< dynamic_rescale_l1: mean |data| in [1, 2)
  l2,    ///< dynamic_rescale_l2: RMS of the data in [1, 2)
};

namespace detail {
/// True for the four rescale_mode values.
constexpr bool valid_rescale_mode(rescale_mode m) {
  return m == rescale_mode::none || m == rescale_mode::max || m == rescale_mode::l1 || m == rescale_mode::l2;
}
}  // namespace detail

/// `x` rebased with `mode` (same values). Throws std::invalid_argument for a
/// mode outside the enum.
///
/// **Example**: `Tensor g = scalify::nn::rescale(dy, scalify::nn::rescale_mode::l1);`
inline Tensor rescale(const Tensor& x, rescale_mode mode) {
  switch (mode) {
    case rescale_mode::none: return x;
    case rescale_mode::max: return dynamic_rescale_max(x);
    case rescale_mode::l1: return dynamic_rescale_l1(x);
    case rescale_mode::l2: return dynamic_rescale_l2(x);
  }
  throw std::invalid_argument("scalify::nn::rescale: unknown rescale_mode " + std::to_string(static_cast<int>(mode)) +
                              " (expected none, max, l1 or l2)");
}

namespace detail {

/// Stores `x` into ScaledMatrix<T> with `options` (bulk SIMD cast).
template <class T, class D, class S>
ScaledMatrix<T> store_as(const ScaledArray<D, S>& x, const convert_options& options) {
  scalify_config config = current_config();
  config.store = options;
  config_scope scope(config);
  ScaledMatrix<T> out = x;
  return out;
}

/// `x` (any ScaledArray: storage or a lazy result) stored into `t` with
/// `options` (float32: evaluated as it is); std::invalid_argument naming
/// `where` for a dtype outside the enum.
template <class D, class S>
AnyTensor store_any(const ScaledArray<D, S>& x, dtype t, const convert_options& options, const char* where) {
  switch (t) {
    case dtype::float32: return Tensor(x);
    case dtype::float16: return store_as<float16>(x, options);
    case dtype::bfloat16: return store_as<bfloat16>(x, options);
    case dtype::e4m3fn: return store_as<float8_e4m3fn>(x, options);
    case dtype::e5m2: return store_as<float8_e5m2>(x, options);
  }
  throw bad_dtype(where, t);
}

}  // namespace detail

/// `x` with its data rounded into `t` with `options` (by default the
/// configuration's `store` options, which saturate: the scale, not the
/// format's range, carries the magnitude); the scale is unchanged. Throws
/// std::invalid_argument for a dtype or rounding mode outside its enum.
///
/// **Example**: `AnyTensor x8 = scalify::nn::cast_to(x, scalify::nn::dtype::e4m3fn);`
inline AnyTensor cast_to(const Tensor& x, dtype t, const convert_options& options = current_config().store) {
  scalify::detail::check_convert_options(options, "scalify::nn::cast_to");
  return detail::store_any(x, t, options, "scalify::nn::cast_to");
}

/// The values of `x` rounded into `t` and widened back to float data (same
/// scale): what a tensor stored in `t` holds. Throws as cast_to().
///
/// **Example**: `Tensor x16 = scalify::nn::round_to(x, scalify::nn::dtype::float16);`
inline Tensor round_to(const Tensor& x, dtype t, const convert_options& options = current_config().store) {
  if (t == dtype::float32) return x;
  return std::visit([](const auto& v) { return Tensor(v); }, cast_to(x, t, options));
}

/// Rows and columns of an AnyTensor.
inline Eigen::Index rows_of(const AnyTensor& x) {
  return std::visit([](const auto& v) { return v.rows(); }, x);
}
inline Eigen::Index cols_of(const AnyTensor& x) {
  return std::visit([](const auto& v) { return v.cols(); }, x);
}

namespace detail {

/// The one visit of the 25 pairs of operand types: out = op_a(a) op_b(b) (+ bias
/// on the product's scale), or out += it (nn::accumulate's rule) if `accumulate`.
inline void matmul_any_into(Tensor& out, const AnyTensor& a, const AnyTensor& b, trans op_a, trans op_b,
                            const Tensor* bias, bool accumulate) {
  std::visit(
      [&](const auto& x, const auto& y) {
        const auto product = matmul(x, y, op_a, op_b);
        if (accumulate) {
          product.accumulate_into(out);
        } else if (bias != nullptr) {
          out = product.with_bias(*bias, bias_scale::product);
        } else {
          out = product;
        }
      },
      a, b);
}

}  // namespace detail

/// matmul_any of op_a(a) and op_b(b) (a transposed operand is read in place by
/// the GEMM, not copied), plus `bias` (1 x N, or null) rebased onto the
/// product's scale (bias_scale::product) and added in the GEMM's epilogue.
/// Throws shape_error if the inner sizes differ or the bias does not fit.
///
/// **Example**: `Tensor y = scalify::nn::matmul_any(x8, w8, scalify::trans::no, scalify::trans::no, &b);`
inline Tensor matmul_any(const AnyTensor& a, const AnyTensor& b, trans op_a, trans op_b,
                         const Tensor* bias = nullptr) {
  Tensor out;
  detail::matmul_any_into(out, a, b, op_a, op_b, bias, false);
  return out;
}

/// acc += op_a(a) op_b(b), both rebased onto the larger scale (accumulate's
/// rule), in the GEMM's epilogue: no temporary product. An empty or
/// zero-scale acc becomes the product. Throws shape_error on mismatched shapes.
///
/// **Example**: `scalify::nn::accumulate_matmul(dw, x8, dy8, scalify::trans::yes, scalify::trans::no);`
inline void accumulate_matmul(Tensor& acc, const AnyTensor& a, const AnyTensor& b, trans op_a, trans op_b) {
  detail::matmul_any_into(acc, a, b, op_a, op_b, nullptr, true);
}

/// scalify::matmul(a, b) whatever the data types: scale sa * sb * pow2(sqrt(K)).
/// Throws shape_error if a.cols() != b.rows().
///
/// **Example**: `Tensor y = scalify::nn::matmul_any(cast_to(x, dtype::e4m3fn), cast_to(w, dtype::e4m3fn));`
inline Tensor matmul_any(const AnyTensor& a, const AnyTensor& b) { return matmul_any(a, b, trans::no, trans::no); }

namespace detail {
/// "3" or "any" (for -1).
inline std::string dim_string(Eigen::Index n) {
  if (n < 0) return std::string("any");
  return std::to_string(n);
}
}  // namespace detail

namespace detail {
/// A layer's result: `data` with a scale made by a scale rule from its inputs'
/// scales. Not checked: as in the ops, an inf or NaN input scale propagates
/// (a NaN pixel's inf gradient scale), for the optimizers to detect and skip.
inline Tensor propagated(Matrix data, float scale) {
  return Tensor(scalify::detail::unchecked_scale, std::move(data), scale);
}
}  // namespace detail

/// Throws shape_error with `what` unless `x` is rows x cols (-1: any).
inline void check_shape(const char* what, const Tensor& x, Eigen::Index rows, Eigen::Index cols) {
  if ((rows < 0 || x.rows() == rows) && (cols < 0 || x.cols() == cols)) return;
  std::string message(what);
  message += ": got ";
  message += scalify::detail::shape_string(x);
  message += ", expected (";
  message += detail::dim_string(rows);
  message += " x ";
  message += detail::dim_string(cols);
  message += ")";
  throw shape_error(message);
}

namespace detail {
/// Throws shape_error with `what` if `x` has no rows. Linear, LayerNorm,
/// attention and the loss reject an empty batch alike: the loss's mean over
/// no rows has no value, so a step on one is a caller's mistake wherever it
/// shows.
inline void check_batch(const char* what, const Tensor& x) {
  if (x.rows() > 0) return;
  throw shape_error(std::string(what) + ": got " + scalify::detail::shape_string(x) +
                    ", an empty batch (expected at least 1 row)");
}
}  // namespace detail

/// `acc += d`, both rebased onto the larger of their scales (scalify's add
/// rule for power-of-two scales); an empty or zero-scale `acc` is replaced by `d`. The explicit accumulation of parameter gradients.
///
/// **Example**: `scalify::nn::accumulate(dw, scalify::matmul(xt, dy));`
inline void accumulate(Tensor& acc, const Tensor& d) {
  if (acc.size() == 0 || acc.scale() == 0.0f) {
    acc = d;
    return;
  }
  SCALIFY_CHECK(acc.rows() == d.rows() && acc.cols() == d.cols(), shape_error,
                "scalify::nn::accumulate: " + scalify::detail::shape_string(acc) + " += " +
                    scalify::detail::shape_string(d));
  // Rebase both onto the larger scale (a power of two of it keeps the sums exact when scales are).
  const float s = std::max(acc.scale(), d.scale());
  Matrix data = acc.data() * (acc.scale() / s) + d.data() * (d.scale() / s);
  acc = detail::propagated(std::move(data), s);
}

/// The values of `x` on scale 1 (data = values): the input of the unscaled
/// ("naive") paths.
inline Tensor unscaled(const Tensor& x) { return Tensor(x.data() * x.scale(), 1.0f); }

/// A zero tensor of the given shape (data 0, scale 0: adding to it keeps the
/// other scale). Throws shape_error for a negative size or when rows * cols
/// overflows Eigen::Index.
///
/// **Example**: `Tensor dw = scalify::nn::zeros(784, 512);`
inline Tensor zeros(Eigen::Index rows, Eigen::Index cols) {
  SCALIFY_CHECK(scalify::detail::valid_shape(rows, cols), shape_error,
                "scalify::nn::zeros: invalid shape " + scalify::detail::shape_string(rows, cols) +
                    " (sizes must be >= 0 and rows * cols must fit Eigen::Index)");
  return Tensor(Matrix::Zero(rows, cols), 0.0f);
}

/// Makes `t` zeros(rows, cols), in t's own memory when it already has that
/// shape: a gradient cleared every step gets no new allocation (and no page
/// faults). Throws as zeros().
///
/// **Example**: `scalify::nn::set_zeros(g.dw, 784, 512);`
inline void set_zeros(Tensor& t, Eigen::Index rows, Eigen::Index cols) {
  if (t.rows() != rows || t.cols() != cols) {
    t = zeros(rows, cols);
    return;
  }
  t.data().setZero();
  t.set_scale(0.0f);
}

}  // namespace scalify::nn

#endif  // SCALIFY_NN_TENSOR_HPP_
