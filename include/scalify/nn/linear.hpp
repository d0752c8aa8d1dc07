// scalify nn: the fully connected layer, y = x W + b, with scaled float8
// matmuls.
//
// B = batch size, I = input features, O = output features.
//
//   linear_init(params, I, O, seed)          unit-scaled init: W data ~ N(0, 1), scale 1/sqrt(I); b = 0
//   linear_forward(y, cache, x, params, cfg)             y = x W + b          (the matmul in cfg.forward)
//   linear_backward(dx, grads, dy, cache, params, cfg)   dx = dy W^T          (cfg.grad_input)
//                                                        dW += x^T dy         (cfg.grad_weight)
//                                                        db += sum_b dy
//   linear_forward_ref / linear_backward_ref             the same in plain float or double
//
// Each of the three matmuls casts its two operands to the formats of its
// linear_config entry (fp32, fp16, bf16, e4m3fn, e5m2), saturating: the default
// (linear_config::fp8()) is e4m3fn activations and weights, e5m2 output
// gradients. The matmul follows the unit-scaling rule (ops/matmul.hpp), so
// with unit-variance data the output data is unit-variance too and the scale
// carries the magnitude. The output gradient's scale, set by the loss, is
// not predicted by the rules: `grad_rescale` rebases it (dynamic_rescale_*)
// before its float8 casts.
#ifndef SCALIFY_NN_LINEAR_HPP_
#define SCALIFY_NN_LINEAR_HPP_

#include <Eigen/Core>  // Eigen::Index
#include <cmath>       // std::sqrt
#include <cstdint>     // uint64_t
#include <random>      // std::mt19937_64, std::normal_distribution
#include <string>      // std::string

#include "scalify/errors.hpp"             // shape_error, SCALIFY_CHECK, checked_mul
#include "scalify/nn/tensor.hpp"          // Tensor, AnyTensor, cast_to, matmul_any
#include "scalify/ops/detail/common.hpp"  // sqrt_n_factor

namespace scalify::nn {

/// The formats of the two operands of one matmul.
struct matmul_formats {
  dtype lhs = dtype::float32;
  dtype rhs = dtype::float32;
};

/// Number formats and scaling of a Linear layer.
///
/// | field | matmul | operands |
/// |---|---|---|
/// | `forward` | y = x W | x, W |
/// | `grad_input` | dx = dy W^T | dy, W^T |
/// | `grad_weight` | dW = x^T dy | x^T, dy |
/// | `input_rescale` | | rebasing of x before its casts (default none: propagated scale) |
/// | `grad_rescale` | | rebasing of dy before its casts |
/// | `scaled` | | false: "naive" low precision, every operand and result on scale 1 |
///
/// **Example**: `auto cfg = scalify::nn::linear_config::fp8();  cfg.grad_weight.rhs = dtype::float16;`
struct linear_config {
  matmul_formats forward{dtype::float32, dtype::float32};
  matmul_formats grad_input{dtype::float32, dtype::float32};
  matmul_formats grad_weight{dtype::float32, dtype::float32};
  rescale_mode input_rescale = rescale_mode::none;
  rescale_mode grad_rescale = rescale_mode::none;
  bool scaled = true;

  /// Every matmul in float32.
  static linear_config fp32() { return {}; }
  /// Every operand in `t` (scaled).
  static linear_config uniform(dtype t) {
    linear_config c;
    c.forward = c.grad_input = c.grad_weight = {t, t};
    return c;
  }
  /// Scaled float16 operands.
  static linear_config fp16() { return uniform(dtype::float16); }
  /// e4m3fn activations and weights, e5m2 output gradients rebased by their RMS.
  static linear_config fp8() {
    linear_config c;
    c.forward = {dtype::e4m3fn, dtype::e4m3fn};
    c.grad_input = {dtype::e5m2, dtype::e4m3fn};
    c.grad_weight = {dtype::e4m3fn, dtype::e5m2};
    c.grad_rescale = rescale_mode::l2;
    return c;
  }
  /// Plain float16 without scaling (for comparison: gradients underflow).
  static linear_config fp16_naive() {
    linear_config c = uniform(dtype::float16);
    c.scaled = false;
    return c;
  }
};

/// Parameters: W is (I, O), b is (1, O).
struct linear_params {
  Tensor w;
  Tensor b;
};

/// Gradients of the parameters, same shapes; accumulated by linear_backward
/// (clear them with linear_zero_grad).
struct linear_grads {
  Tensor dw;
  Tensor db;
};

/// What the forward pass keeps for the backward pass: the matmul operands in
/// their forward formats, and x (as rebased, float data) when the backward
/// pass casts it into another format than the forward pass (else x is
/// empty: x_fwd is what dW = x^T dy reads).
struct linear_cache {
  Tensor x;
  AnyTensor x_fwd;
  AnyTensor w_fwd;
};

/// Unit-scaled init: W data ~ N(0, 1) (float32, from std::mt19937_64(seed)),
/// W scale 1/sqrt(I) (so values ~ N(0, 1/I)); b = 0 with scale 1.
/// Throws std::invalid_argument unless I, O > 0 and W's I * O floats fit
/// in memory's address range (Eigen::Index bytes); a W too large for the
/// machine's memory throws std::bad_alloc.
///
/// **Example**: `linear_params p; scalify::nn::linear_init(p, 784, 512, 42);`
inline void linear_init(linear_params& p, Eigen::Index in, Eigen::Index out, uint64_t seed) {
  Eigen::Index elements = 0, bytes = 0;
  SCALIFY_CHECK(in > 0 && out > 0 && scalify::detail::checked_mul(in, out, elements) &&
                    scalify::detail::checked_mul(elements, static_cast<Eigen::Index>(sizeof(float)), bytes),
                std::invalid_argument,
                "scalify::nn::linear_init: sizes must be > 0 and I * O floats must fit Eigen::Index bytes, got " +
                    std::to_string(in) + " x " + std::to_string(out));
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Matrix w(in, out);
  for (Eigen::Index i = 0; i < w.size(); ++i) w.data()[i] = normal(gen);
  p.w = Tensor(std::move(w), 1.0f / std::sqrt(static_cast<float>(in)));
  p.b = Tensor(Matrix::Zero(1, out), 1.0f);
}

/// Sets the gradients to zero tensors of the parameters' shapes.
inline void linear_zero_grad(linear_grads& g, const linear_params& p) {
  set_zeros(g.dw, p.w.rows(), p.w.cols());
  set_zeros(g.db, 1, p.b.cols());
}

namespace detail {

/// Throws std::invalid_argument naming `where`, the field and its value unless
/// every format and rescale mode of `cfg` is one of its enum's values.
inline void check_linear_config(const char* where, const linear_config& cfg) {
  const auto check_dtype = [&](const char* field, dtype t) {
    SCALIFY_CHECK(valid_dtype(t), std::invalid_argument,
                  std::string(where) + ": linear_config." + field + " is an unknown dtype " +
                      std::to_string(static_cast<int>(t)) + " (expected fp32, fp16, bf16, e4m3fn or e5m2)");
  };
  check_dtype("forward.lhs", cfg.forward.lhs);
  check_dtype("forward.rhs", cfg.forward.rhs);
  check_dtype("grad_input.lhs", cfg.grad_input.lhs);
  check_dtype("grad_input.rhs", cfg.grad_input.rhs);
  check_dtype("grad_weight.lhs", cfg.grad_weight.lhs);
  check_dtype("grad_weight.rhs", cfg.grad_weight.rhs);
  const auto check_mode = [&](const char* field, rescale_mode m) {
    SCALIFY_CHECK(valid_rescale_mode(m), std::invalid_argument,
                  std::string(where) + ": linear_config." + field + " is an unknown rescale_mode " +
                      std::to_string(static_cast<int>(m)) + " (expected none, max, l1 or l2)");
  };
  check_mode("input_rescale", cfg.input_rescale);
  check_mode("grad_rescale", cfg.grad_rescale);
}

inline void check_linear_params(const char* where, const linear_params& p) {
  SCALIFY_CHECK(p.w.size() > 0 && p.b.rows() == 1 && p.b.cols() == p.w.cols(), shape_error,
                std::string(where) + ": W is " + scalify::detail::shape_string(p.w) + " and b is " +
                    scalify::detail::shape_string(p.b) + ", expected (I x O) and (1 x O)");
}

/// Naive mode: the result on scale 1, rounded into the narrower operand format
/// without saturation (overflow gives inf, as plain float16 does).
inline Tensor naive_result(const Tensor& y, matmul_formats f) {
  const dtype t = (f.lhs == dtype::float32) ? f.rhs : f.lhs;
  return round_to(unscaled(y), t, {});
}

}  // namespace detail

/// y = x W + b. x is (B, I), W is (I, O), b is (1, O), y is (B, O). Fills
/// `cache` for linear_backward. Throws shape_error on mismatched shapes or
/// B = 0, and std::invalid_argument for a format or rescale mode of `cfg` outside its enum.
///
/// **Example**: `Tensor y; linear_cache c; scalify::nn::linear_forward(y, c, x, p, linear_config::fp8());`
inline void linear_forward(Tensor& y, linear_cache& cache, const Tensor& x, const linear_params& p,
                           const linear_config& cfg) {
  detail::check_linear_config("scalify::nn::linear_forward", cfg);
  detail::check_linear_params("scalify::nn::linear_forward", p);
  check_shape("scalify::nn::linear_forward: x", x, -1, p.w.rows());
  detail::check_batch("scalify::nn::linear_forward: x", x);
  const convert_options cast = cfg.scaled ? convert_options{.saturate = true} : convert_options{};
  // x as the matmuls see it: x itself (no copy) unless it is rebased.
  Tensor rebased;
  const bool as_is = cfg.scaled && cfg.input_rescale == rescale_mode::none;
  if (!as_is) rebased = cfg.scaled ? rescale(x, cfg.input_rescale) : unscaled(x);
  const Tensor& xr = as_is ? x : rebased;
  cache.x_fwd = cast_to(xr, cfg.forward.lhs, cast);
  if (cfg.grad_weight.lhs != cfg.forward.lhs) {
    cache.x = as_is ? x : std::move(rebased);
  } else {
    cache.x = Tensor();
  }
  cache.w_fwd = cast_to(cfg.scaled ? p.w : unscaled(p.w), cfg.forward.rhs, cast);
  // The bias, rebased onto the product's scale, is added in the GEMM's epilogue (no second pass over y).
  y = matmul_any(cache.x_fwd, cache.w_fwd, trans::no, trans::no, &p.b);
  if (!cfg.scaled) y = detail::naive_result(y, cfg.forward);
}

/// The backward pass of linear_forward. dy is (B, O). Sets `*dx` = dy W^T
/// (B, I) unless dx is null (the first layer needs no input gradient);
/// accumulates g.dw += x^T dy (I, O) and g.db += sum over the batch of dy (1, O).
/// Throws shape_error, before any gradient changes, unless dy is (B, O) of
/// the forward pass that filled `cache` (B > 0).
///
/// **Example**: `scalify::nn::linear_backward(&dx, g, dy, c, p, cfg);`
inline void linear_backward(Tensor* dx, linear_grads& g, const Tensor& dy, const linear_cache& cache,
                            const linear_params& p, const linear_config& cfg) {
  detail::check_linear_config("scalify::nn::linear_backward", cfg);
  detail::check_linear_params("scalify::nn::linear_backward", p);
  check_shape("scalify::nn::linear_backward: dy", dy, rows_of(cache.x_fwd), p.w.cols());
  detail::check_batch("scalify::nn::linear_backward: dy", dy);  // also: a cache that no forward pass filled
  SCALIFY_CHECK(cfg.grad_weight.lhs == cfg.forward.lhs || cache.x.rows() == rows_of(cache.x_fwd), shape_error,
                "scalify::nn::linear_backward: the cache holds no x for linear_config.grad_weight.lhs (was the "
                "forward pass run with another config?)");
  const convert_options cast = cfg.scaled ? convert_options{.saturate = true} : convert_options{};
  // dy as the matmuls see it: dy itself (no copy) unless it is rebased, or
  // unless dx is dy (then dx's store would overwrite it before dW and db read it).
  Tensor rebased;
  const bool as_is = cfg.scaled && cfg.grad_rescale == rescale_mode::none && dx != &dy;
  if (!as_is) rebased = cfg.scaled ? rescale(dy, cfg.grad_rescale) : unscaled(dy);
  const Tensor& dys = as_is ? dy : rebased;

  // Operands already cast in the right format are used where they are (by
  // reference: no copy); the others are cast into these.
  AnyTensor dy_q, w_cast, x_cast, dy_cast;
  // dx = dy W^T: (B, O) x (O, I)
  bool have_dy_q = false;
  if (dx != nullptr) {
    dy_q = cast_to(dys, cfg.grad_input.lhs, cast);
    have_dy_q = true;
    // W as cast for the forward pass when the formats agree, used transposed in place; else cast
    // as the forward pass casts it (naive mode: its values on scale 1).
    const AnyTensor& w_q = (cfg.grad_input.rhs == cfg.forward.rhs)
                               ? cache.w_fwd
                               : (w_cast = cast_to(cfg.scaled ? p.w : unscaled(p.w), cfg.grad_input.rhs, cast));
    *dx = matmul_any(dy_q, w_q, trans::no, trans::yes);
    if (!cfg.scaled) *dx = detail::naive_result(*dx, cfg.grad_input);
  }

  // dW += x^T dy: (I, B) x (B, O)
  const AnyTensor& x_q = (cfg.grad_weight.lhs == cfg.forward.lhs)
                             ? cache.x_fwd
                             : (x_cast = cast_to(cache.x, cfg.grad_weight.lhs, cast));
  const AnyTensor& dy_w = (have_dy_q && cfg.grad_weight.rhs == cfg.grad_input.lhs)
                              ? dy_q
                              : (dy_cast = cast_to(dys, cfg.grad_weight.rhs, cast));
  if (g.dw.size() == 0) g.dw = zeros(p.w.rows(), p.w.cols());
  if (cfg.scaled) {
    accumulate_matmul(g.dw, x_q, dy_w, trans::yes, trans::no);  // in the GEMM's epilogue (beta)
  } else {
    accumulate(g.dw, detail::naive_result(matmul_any(x_q, dy_w, trans::yes, trans::no), cfg.grad_weight));
  }

  // db += sum_b dy, with the sum's unit-scaling rule: scale s * pow2(sqrt(B))
  const float k = scalify::detail::sqrt_n_factor<float>(dys.rows());
  Tensor db = detail::propagated(Matrix(dys.data().colwise().sum() / k), dys.scale() * k);
  if (!cfg.scaled) db = round_to(unscaled(db), cfg.grad_weight.rhs, {});
  if (g.db.size() == 0) g.db = zeros(1, p.b.cols());
  accumulate(g.db, db);
}

/// Reference forward in plain T (float or double): y = x W + b.
template <class T>
void linear_forward_ref(RefMatrix<T>& y, const RefMatrix<T>& x, const RefMatrix<T>& w, const RefMatrix<T>& b) {
  SCALIFY_CHECK(x.cols() == w.rows() && b.rows() == 1 && b.cols() == w.cols(), shape_error,
                "scalify::nn::linear_forward_ref: x " + scalify::detail::shape_string(x.rows(), x.cols()) + ", W " +
                    scalify::detail::shape_string(w.rows(), w.cols()) + ", b " +
                    scalify::detail::shape_string(b.rows(), b.cols()));
  y = x * w;
  y.rowwise() += b.row(0);
}

/// Reference backward in plain T: dx = dy W^T (if dx), dw += x^T dy, db += sum_b dy.
template <class T>
void linear_backward_ref(RefMatrix<T>* dx, RefMatrix<T>& dw, RefMatrix<T>& db, const RefMatrix<T>& dy,
                         const RefMatrix<T>& x, const RefMatrix<T>& w) {
  SCALIFY_CHECK(dy.rows() == x.rows() && dy.cols() == w.cols() && x.cols() == w.rows() && dw.rows() == w.rows() &&
                    dw.cols() == w.cols() && db.rows() == 1 && db.cols() == w.cols(),
                shape_error, "scalify::nn::linear_backward_ref: mismatched shapes");
  if (dx != nullptr) *dx = dy * w.transpose();
  dw += x.transpose() * dy;
  db += dy.colwise().sum();
}

}  // namespace scalify::nn

#endif  // SCALIFY_NN_LINEAR_HPP_
