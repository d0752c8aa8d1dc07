// scalify: scaled matrix product with the unit-scaling rule.
//
//   matmul(a, b):  scale = sa * sb * pow2(sqrt(K)),  data = (da x db) / pow2(sqrt(K))
//   matmul(a, b, op_a, op_b):  the same for op_a(a) x op_b(b), op = trans::no / trans::yes
//
// K is the contracted size (a.cols() == b.rows()) and pow2 rounds with the
// scope's mode (config_scope; down by default). Where the scale overflows or
// underflows the scale type, it is clamped to the type's largest (smallest)
// power of two and the GEMM's alpha carries the rest (detail::scale_product).
// If the entries of da and db have unit variance, so do those of the output
// data.
//
// matmul() returns a scaled_matmul: the product and its epilogue, computed
// when assigned into a ScaledArray (of any storage type) by one call of the
// SIMD GEMM of kernels/gemm.hpp (fp8/fp16/bf16 widened once while packing,
// float32 accumulation), whose epilogue adds a bias (`matmul(a, b) + b`),
// applies relu or GELU, casts into the storage type and measures the amax,
// in the same pass over C. It does not fuse into elementwise expressions:
// `.eval()` gives float32 data for those.
#ifndef SCALIFY_OPS_MATMUL_HPP_
#define SCALIFY_OPS_MATMUL_HPP_

#include <Eigen/Core>   // Eigen::Matrix, products
#include <cmath>        // std::isfinite
#include <limits>       // std::numeric_limits
#include <string>       // std::string, std::to_string
#include <type_traits>  // std::remove_cv_t, std::conditional_t
#include <utility>      // std::move
#include <vector>       // std::vector

#include "scalify/activation.hpp"         // activation, gelu_tanh
#include "scalify/core/detail/alias.hpp"  // alias_of (a destination that is an operand)

#include "scalify/core/config_scope.hpp"  // current_config (threads)
#include "scalify/core/scaled_array.hpp"  // ScaledArray, ScaledMatrix
#include "scalify/errors.hpp"             // shape_error, SCALIFY_CHECK, valid_shape
#include "scalify/kernels/gemm.hpp"       // gemm, kernels::gemm_input, gemm_output
#include "scalify/ops/detail/common.hpp"  // shape_string, sqrt_n_factor, add_sub_scales

namespace scalify {
namespace detail {

/// C = alpha * op_a(A) * op_b(B) in float32 (op(A): M x K, op(B): K x N) by
/// Eigen's product, for the scalar types scalify::gemm() does not take
/// (double, ...): their data widened to float.
template <class DA, class DB>
RowMatrixF eigen_product_f32(const DA& a, const DB& b, float alpha, trans op_a, trans op_b) {
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

}  // namespace detail

/// How `with_bias` sets the scale of `matmul + bias`.
enum class bias_scale {
  add_rule,  ///< the add rule (ops/elementwise.hpp): R(hi * sqrt(1 + (lo/hi)^2)) of the product's and the bias's scales
  product,   ///< the product's scale (1 if it is 0), the bias rebased onto it (what nn::linear_forward does)
};

namespace detail {

/// The epilogue's operations for the scalar types gemm() does not take
/// (double, ...): C = act(p + beta * C + bias) with p = alpha * op(A) op(B)
/// already computed (Eigen's product), and the amax, as gemm()'s epilogue
/// with the options `o`.
inline void scalar_epilogue(const RowMatrixF& p, const matrix_view<float>& c, const gemm_options& o) {
  const Eigen::Index ld = c.ld != 0 ? c.ld : (c.order == layout::row_major ? c.cols : c.rows);
  float amax = 0.0f;
  for (Eigen::Index i = 0; i < c.rows; ++i) {
    for (Eigen::Index j = 0; j < c.cols; ++j) {
      float& out = c.order == layout::row_major ? c.data[i * ld + j] : c.data[i + j * ld];
      float v = p(i, j);
      if (o.beta != 0.0f) v += o.beta * out;
      if (!o.bias.empty()) v += o.bias[static_cast<size_t>(j)];
      v = kernels::activate(v, o.act, o.act_scale);
      out = v;
      amax = std::fabs(v) > amax ? std::fabs(v) : amax;  // NaN compares false: skipped
    }
  }
  if (o.amax != nullptr) *o.amax = amax;
}

/// What a scaled_matmul is and does apart from its operands' types: its
/// sizes, scale and epilogue (alpha, bias, activation, amax) and the logic of
/// its stores. S is the result's scale type (float or double). Its code is
/// compiled once per S, whatever operand pairs a program multiplies (nn's
/// run-time formats make 25); the operands are reached through a gemm_fn,
/// one small function per operand pair and output type
/// (scaled_matmul::gemm_with).
template <class S>
class matmul_epilogue {
 public:
  using scale_type = S;

  Eigen::Index rows() const { return m_; }
  Eigen::Index cols() const { return n_; }
  /// The scale of the result (before a storage with an E8M0 scale rounds it).
  S scale() const { return scale_; }

 protected:
  /// C = epilogue(alpha * op_a(A) op_b(B) + beta * C) of the operands of
  /// `self` into `c`, with the options `o` (all fields set).
  template <class TC>
  using gemm_fn = void (*)(const matmul_epilogue& self, const matrix_view<TC>& c, const gemm_options& o);

  /// op_a(A) (a_rows x a_cols as stored) times op_b(B); their scales sa and sb.
  matmul_epilogue(Eigen::Index a_rows, Eigen::Index a_cols, Eigen::Index b_rows, Eigen::Index b_cols, trans op_a,
                  trans op_b, S sa, S sb)
      : op_a_(op_a), op_b_(op_b) {
    SCALIFY_CHECK((op_a == trans::no || op_a == trans::yes) && (op_b == trans::no || op_b == trans::yes),
                  std::invalid_argument,
                  "scalify::matmul: unknown trans values " + std::to_string(static_cast<int>(op_a)) + ", " +
                      std::to_string(static_cast<int>(op_b)) + " (expected trans::no or trans::yes)");
    const Eigen::Index k = op_a == trans::no ? a_cols : a_rows;
    const Eigen::Index k_b = op_b == trans::no ? b_rows : b_cols;
    SCALIFY_CHECK(k == k_b, shape_error,
                  std::string("scalify::matmul: cannot multiply ") + (op_a == trans::no ? "" : "transpose ") +
                      shape_string(a_rows, a_cols) + " by " + (op_b == trans::no ? "" : "transpose ") +
                      shape_string(b_rows, b_cols) + " (inner sizes " + std::to_string(k) + " and " +
                      std::to_string(k_b) + " differ)");
    m_ = op_a == trans::no ? a_rows : a_cols;
    n_ = op_b == trans::no ? b_cols : b_rows;
    SCALIFY_CHECK(valid_shape(m_, n_), shape_error,
                  "scalify::matmul: the product of " + shape_string(a_rows, a_cols) + " and " +
                      shape_string(b_rows, b_cols) + " would be " + shape_string(m_, n_) +
                      ", more elements than Eigen::Index holds");
    const S factor = sqrt_n_factor<S>(k);
    // sa * sb, then * factor; where either product leaves S's range, the data carries the rest (scale_product).
    const auto ab = scale_product<S>(sa, sb);
    const auto out = scale_product<S>(ab.scale, factor);
    alpha_ = 1.0f / static_cast<float>(factor) * (ab.rest * out.rest);
    scale_ = out.scale;
  }

  /// See scaled_matmul::with_bias.
  template <class DC, class SC>
  void add_bias(const ScaledArray<DC, SC>& bias, bias_scale rule) {
    SCALIFY_CHECK(bias.rows() == 1 && bias.cols() == n_, shape_error,
                  "scalify::matmul: the bias must be (1 x " + std::to_string(n_) + "), one per column of the " +
                      shape_string(m_, n_) + " product, got " + shape_string(bias));
    SCALIFY_CHECK(act_ == activation::none && bias_.empty(), std::invalid_argument,
                  "scalify::matmul: one bias, added before the activation (relu(matmul(a, b) + bias))");
    SCALIFY_CHECK(rule == bias_scale::add_rule || rule == bias_scale::product, std::invalid_argument,
                  "scalify::matmul: unknown bias_scale " + std::to_string(static_cast<int>(rule)));
    using M = scale_math_t<S, SC>;
    const M sp = static_cast<M>(scale_), sb = static_cast<M>(scale_value(bias.scale()));
    M s;
    float factor_p, factor_b;
    if (rule == bias_scale::add_rule) {
      const auto k = elementwise::add_sub_scales(sp, sb);
      s = k.scale;
      factor_p = k.factor_a;
      factor_b = k.factor_b;
    } else {
      s = sp > M(0) ? sp : M(1);
      factor_p = s == sp ? 1.0f : static_cast<float>(safe_div(sp, s));  // an inf or NaN sp stays as it is
      factor_b = static_cast<float>(safe_div(sb, s));
    }
    scale_ = static_cast<S>(s);
    alpha_ *= factor_p;
    bias_.resize(static_cast<size_t>(n_));
    for (Eigen::Index j = 0; j < n_; ++j) {
      bias_[static_cast<size_t>(j)] = static_cast<float>(cast_source(bias.data()(0, j))) * factor_b;
    }
  }

  /// See scaled_matmul::with_activation.
  void set_activation(activation act) {
    SCALIFY_CHECK(act_ == activation::none, std::invalid_argument,
                  "scalify::matmul: one activation per product (this one already has one)");
    SCALIFY_CHECK(act == activation::none || act == activation::relu || act == activation::gelu_tanh,
                  std::invalid_argument,
                  "scalify::matmul: unknown activation " + std::to_string(static_cast<int>(act)));
    act_ = act;
    if (act == activation::gelu_tanh && scale_ == S(0)) {
      // The values are 0, and so are GELU's: data 0 on scale 1, as nn::gelu_forward.
      alpha_ = 0.0f;
      for (float& v : bias_) v = 0.0f;
      scale_ = S(1);
    }
  }

  void set_amax(float* amax) { amax_ = amax; }

  /// See scaled_matmul::eval.
  ScaledArray<RowMatrixF, S> eval(gemm_fn<float> gemm) const {
    RowMatrixF c;
    c.resize(m_, n_);
    const float act_scale = float_scale(scale_);
    const bool gelu_in_double = act_ == activation::gelu_tanh && act_scale == 0.0f;
    run(view_of(c), 1.0f, gelu_in_double ? activation::none : act_, act_scale, false, gemm);
    if (gelu_in_double) {
      // A scale that is not a positive float (a double beyond float's range, inf, NaN): GELU of the values in double.
      const double sv = static_cast<double>(scale_), divisor = sv > 0.0 ? sv : 1.0;
      c = c.unaryExpr([sv, divisor](float d) { return static_cast<float>(gelu_tanh(d * sv) / divisor); });
      if (amax_ != nullptr) *amax_ = c.array().isNaN().select(0.0f, c.array().abs()).maxCoeff();
    }
    return ScaledArray<RowMatrixF, S>(unchecked_scale, std::move(c), scale_);
  }

  /// See scaled_matmul::accumulate_into; `aliased`: acc is an operand.
  template <class D>
  void accumulate(ScaledArray<D, float>& acc, bool aliased, gemm_fn<float> gemm) const {
    SCALIFY_CHECK(act_ == activation::none, std::invalid_argument,
                  "scalify::matmul: accumulate_into cannot apply an activation (it would see acc + product)");
    if (acc.size() == 0 || acc.scale() == 0.0f) {
      store(acc, aliased, gemm, gemm);
      return;
    }
    SCALIFY_CHECK(acc.rows() == m_ && acc.cols() == n_, shape_error,
                  "scalify::matmul: cannot accumulate a " + shape_string(m_, n_) + " product into a " +
                      shape_string(acc) + " tensor");
    SCALIFY_CHECK(!aliased, std::invalid_argument, "scalify::matmul: the accumulator is an operand of the product");
    const float sa = acc.scale(), sp = static_cast<float>(scale_);
    const float s = std::isnan(sp) || sp > sa ? sp : sa;
    const float factor = s == sp ? 1.0f : sp / s;  // an inf or NaN sp: as nn::accumulate
    const std::vector<float> bias = scaled_bias(factor);
    gemm_options o = options();
    o.alpha = alpha_ * factor;
    o.beta = sa / s;
    o.bias = bias;
    gemm(*this, view_of(acc.data()), o);
    acc.set_scale(unchecked_scale, s);
  }

  /// See scaled_matmul::store_into; `aliased`: out is an operand. `gemm`
  /// writes out's scalar type, `gemm_f32` float (the two-pass stores).
  template <class D, class S2>
  void store(ScaledArray<D, S2>& out, bool aliased, gemm_fn<typename D::Scalar> gemm, gemm_fn<float> gemm_f32) const {
    using T = typename D::Scalar;
    check_storable<D>(m_, n_);
    using Math = scale_math_t<S2, S>;
    const auto fit = fit_scale<S2>(static_cast<Math>(scale_), "scalify::ScaledArray");
    const float act_scale = float_scale(static_cast<Math>(fit.scale));
    const convert_options& to_store = current_config().store;
    if ((std::is_same_v<T, float> || to_store.round == rounding::nearest_even) &&
        (act_ != activation::gelu_tanh || act_scale > 0.0f)) {
      if (aliased) {
        D result;  // the destination is an operand: write elsewhere first
        result.resize(m_, n_);
        run(view_of(result), fit.factor, act_, act_scale, to_store.saturate, gemm);
        out.data() = std::move(result);
      } else {
        out.data().resize(m_, n_);
        run(view_of(out.data()), fit.factor, act_, act_scale, to_store.saturate, gemm);
      }
      out.set_scale(unchecked_scale, fit.scale);
      return;
    }
    // Two passes: float32 data, then ScaledArray's store cast; the amax is of
    // the stored data, as the one-pass epilogue's.
    const ScaledArray<RowMatrixF, S> wide = eval(gemm_f32);
    out = wide;
    if (amax_ != nullptr) *amax_ = stored_amax(out.data(), wide.data());
  }

 private:
  /// `s` as the epilogue's act_scale: a positive normal float, else 0.
  template <class F>
  static float float_scale(F s) {
    const float f = static_cast<float>(s);
    return std::isfinite(f) && f >= std::numeric_limits<float>::min() ? f : 0.0f;
  }

  /// A view of plain storage `c`, m x n.
  template <class C>
  matrix_view<typename C::Scalar> view_of(C& c) const {
    constexpr layout kOrder = (int(C::Flags) & Eigen::RowMajorBit) != 0 ? layout::row_major : layout::col_major;
    return {c.data(), m_, n_, 0, kOrder};
  }

  /// The bias times `factor` (empty if there is none).
  std::vector<float> scaled_bias(float factor) const {
    std::vector<float> bias = bias_;
    for (float& v : bias) v *= factor;
    return bias;
  }

  /// gemm_options with the transposes, the amax and the scope's threads.
  gemm_options options() const {
    gemm_options o;
    o.trans_a = op_a_;
    o.trans_b = op_b_;
    o.amax = amax_;
    o.threads = current_config().threads;
    return o;
  }

  /// C = act(factor * (alpha * (a x b) + bias)), GELU on act_scale (> 0 if act is GELU).
  template <class TC>
  void run(const matrix_view<TC>& c, float factor, activation act, float act_scale, bool saturate,
           gemm_fn<TC> gemm) const {
    const std::vector<float> bias = scaled_bias(factor);
    gemm_options o = options();
    o.alpha = alpha_ * factor;
    o.bias = bias;
    o.act = act;
    o.act_scale = act == activation::gelu_tanh ? act_scale : 1.0f;
    o.saturate = saturate;
    gemm(*this, c, o);
  }

  trans op_a_, op_b_;
  Eigen::Index m_ = 0, n_ = 0;
  S scale_{};
  float alpha_ = 1.0f;
  std::vector<float> bias_;  ///< on scale_ (empty: no bias)
  activation act_ = activation::none;
  float* amax_ = nullptr;
};

}  // namespace detail

/// A scaled matrix product and its epilogue, not yet computed: what matmul()
/// returns. Assigning it into a ScaledArray of any storage type computes it
/// once, through scalify::gemm, whose epilogue applies the bias, the
/// activation, the cast into the storage type (with the scope's store options)
/// and, if asked, the amax of the stored data: one pass over C.
///
///   matmul(a, b)                    scale s = sa * sb * R(sqrt K), data (da x db) / R(sqrt K)
///   matmul(a, b) + bias             bias (1 x N, added to every row): scale by the add rule
///                                   (with_bias(bias, bias_scale::product): s kept)
///   relu(...), gelu(...)            scale kept (1 if 0 for GELU); GELU of the values
///   .with_amax(&m)                  m = max |stored data| (values: m * scale), NaN skipped
///   .eval()                         a ScaledArray of float32 data now
///
/// Like an Eigen product it refers to its operands (storage by reference,
/// lazy results by value): assign it before they go away. A destination
/// that is also an operand (`x = matmul(x, w)`) is written through a
/// temporary. Stores with stochastic or toward-zero rounding into a narrow
/// type, into double storage, or of operands that are not float8, float16,
/// bfloat16 or float, take two passes (eval(), then the store cast).
///
/// **Example**:
/// ```
/// ScaledMatrix<float8_e4m3fn> h = scalify::relu(scalify::matmul(x, w1) + b1);  // one pass over h
/// float amax = 0;
/// ScaledMatrix<float16> y = scalify::matmul(h, w2).with_amax(&amax);
/// ```
template <class DA, class SA, class DB, class SB>
class scaled_matmul : public detail::matmul_epilogue<detail::result_scale_t<SA, SB>> {
  using base = detail::matmul_epilogue<detail::result_scale_t<SA, SB>>;

 public:
  using scale_type = typename base::scale_type;
  using deferred_result_tag = void;  // stores itself into ScaledArray (detail::deferred_result)

  scaled_matmul(const ScaledArray<DA, SA>& a, const ScaledArray<DB, SB>& b, trans op_a, trans op_b)
      : base(a.rows(), a.cols(), b.rows(), b.cols(), op_a, op_b, static_cast<scale_type>(a.scale()),
             static_cast<scale_type>(b.scale())),
        a_(a.data()),
        b_(b.data()) {}

  /// The product plus `bias` (1 x N, added to every row), the scale set by
  /// `rule`. Throws shape_error for another bias shape, and
  /// std::invalid_argument after an activation or a first bias.
  template <class DC, class SC>
  scaled_matmul with_bias(const ScaledArray<DC, SC>& bias, bias_scale rule = bias_scale::add_rule) const {
    scaled_matmul r = *this;
    r.add_bias(bias, rule);
    return r;
  }

  /// The activation of the result (after the bias), on its scale: relu keeps
  /// the scale; GELU is taken of the values, the scale kept (1 if it is 0),
  /// as nn::gelu_forward. Throws std::invalid_argument after another activation.
  scaled_matmul with_activation(activation act) const {
    scaled_matmul r = *this;
    r.set_activation(act);
    return r;
  }

  /// The same product; storing it sets *amax to max |stored data| over the
  /// non-NaN elements (+inf if an e4m3fn store overflowed to NaN): the
  /// values' amax is *amax times the stored scale. For dynamic rescaling.
  scaled_matmul with_amax(float* amax) const {
    scaled_matmul r = *this;
    r.set_amax(amax);
    return r;
  }

  /// Computes the result now, as float32 data with scale().
  ScaledArray<detail::RowMatrixF, scale_type> eval() const { return base::eval(&gemm_with<float>); }

  /// acc += the result, both rebased onto the larger of the two scales (the
  /// rule of nn::accumulate), in the GEMM's epilogue: C = beta * C + alpha *
  /// op(A) op(B) straight into acc's float data, no temporary and no second
  /// pass. An empty or zero-scale acc becomes the result. Throws shape_error
  /// unless acc has the result's shape, and std::invalid_argument when acc is
  /// an operand (accumulate into a copy).
  ///
  /// **Example**: `scalify::matmul(x, dy, trans::yes, trans::no).accumulate_into(dw);  // dw += x^T dy`
  template <class D>
  void accumulate_into(ScaledArray<D, float>& acc) const
    requires std::is_same_v<typename D::Scalar, float>
  {
    base::accumulate(acc, reads(acc.data()), &gemm_with<float>);
  }

  /// Internal (ScaledArray's deferred assignment): computes the result into
  /// `out`, the data rounded once into its scalar type with the scope's store
  /// options; the scale as Scale holds it, the data rebased if it cannot
  /// (an E8M0 scale; see ScaledArray's assignment).
  template <class D, class S>
  void store_into(ScaledArray<D, S>& out) const {
    using T = typename D::Scalar;
    if constexpr (std::is_same_v<T, float> || (kFusable && kernels::gemm_output<T>)) {
      base::store(out, reads(out.data()), &gemm_with<T>, &gemm_with<float>);
    } else {
      out = eval();  // two passes: float32 data, then ScaledArray's store cast
    }
  }

 private:
  template <class X>
  using operand = std::conditional_t<detail::eigen_plain<X>, const X&, const X>;
  static constexpr bool kFusable = kernels::gemm_input<std::remove_cv_t<typename DA::Scalar>> &&
                                   kernels::gemm_input<std::remove_cv_t<typename DB::Scalar>>;

  /// True if `data` (a destination) is read by either operand.
  template <class D>
  bool reads(const D& data) const {
    const auto target = detail::alias_target_of(data);
    return detail::alias_of(a_, target) != detail::alias_kind::none ||
           detail::alias_of(b_, target) != detail::alias_kind::none;
  }

  /// The base's gemm_fn for this pair of operands: scalify::gemm, or for
  /// other scalar types Eigen's product and the epilogue after it.
  template <class TC>
  static void gemm_with(const base& self, const matrix_view<TC>& c, const gemm_options& o) {
    const auto& p = static_cast<const scaled_matmul&>(self);
    if constexpr (kFusable) {
      detail::gemm_impl::with_view(p.a_, [&](auto va) {
        detail::gemm_impl::with_view(p.b_, [&](auto vb) { scalify::gemm(va, vb, c, o); });
      });
    } else {
      static_assert(std::is_same_v<TC, float>, "scalify::matmul: only float results leave the GEMM's types");
      detail::scalar_epilogue(detail::eigen_product_f32(p.a_, p.b_, o.alpha, o.trans_a, o.trans_b), c, o);
    }
  }

  operand<DA> a_;
  operand<DB> b_;
};

/// Matrix product of scaled tensors with the unit-scaling rule (see the file
/// comment), with either operand used transposed: op_a(a) * op_b(b), K the
/// contracted size. The GEMM reads the transposed operand in place (a backward
/// pass's dx = dy W^T and dW = x^T dy copy nothing). Returns a scaled_matmul,
/// computed when assigned (ScaledArray of any storage) or eval()'d. Throws
/// shape_error if the inner sizes differ or the result's size overflows
/// Eigen::Index, and std::invalid_argument for a `trans` value outside the enum.
///
/// **Example**:
/// ```
/// ScaledMatrix<float8_e5m2> dx = scalify::matmul(dy, w, scalify::trans::no, scalify::trans::yes);  // dy W^T
/// ```
template <class D1, class S1, class D2, class S2>
scaled_matmul<D1, S1, D2, S2> matmul(const ScaledArray<D1, S1>& a, const ScaledArray<D2, S2>& b, trans op_a,
                                     trans op_b = trans::no) {
  return scaled_matmul<D1, S1, D2, S2>(a, b, op_a, op_b);
}

/// Matrix product of scaled tensors with the unit-scaling rule (see the file
/// comment). Throws shape_error if a.cols() != b.rows().
///
/// **Example**:
/// ```
/// scalify::ScaledMatrix<scalify::float8_e4m3fn> x = ..., w = ...;   // (B, K), (K, N)
/// scalify::ScaledMatrix<scalify::float16> y = scalify::matmul(x, w);  // (B, N), cast in the GEMM's epilogue
/// ```
template <class D1, class S1, class D2, class S2>
scaled_matmul<D1, S1, D2, S2> matmul(const ScaledArray<D1, S1>& a, const ScaledArray<D2, S2>& b) {
  return scaled_matmul<D1, S1, D2, S2>(a, b, trans::no, trans::no);
}

/// product + bias (1 x N, broadcast over the rows), with the add rule, fused
/// into the GEMM's epilogue. **Example**: `ScaledMatrix<float16> y = matmul(x, w) + b;`
template <class DA, class SA, class DB, class SB, class DC, class SC>
scaled_matmul<DA, SA, DB, SB> operator+(const scaled_matmul<DA, SA, DB, SB>& p, const ScaledArray<DC, SC>& bias) {
  return p.with_bias(bias);
}
template <class DA, class SA, class DB, class SB, class DC, class SC>
scaled_matmul<DA, SA, DB, SB> operator+(const ScaledArray<DC, SC>& bias, const scaled_matmul<DA, SA, DB, SB>& p) {
  return p.with_bias(bias);
}

/// relu of a product (after its bias), fused into the GEMM's epilogue; the
/// scale is kept. **Example**: `ScaledMatrix<float8_e4m3fn> h = relu(matmul(x, w) + b);`
template <class DA, class SA, class DB, class SB>
scaled_matmul<DA, SA, DB, SB> relu(const scaled_matmul<DA, SA, DB, SB>& p) {
  return p.with_activation(activation::relu);
}

/// GELU (tanh form) of the values of a product (after its bias), fused into
/// the GEMM's epilogue; the scale is kept (1 if it is 0).
/// **Example**: `ScaledMatrix<float8_e4m3fn> h = gelu(matmul(x, w) + b);`
template <class DA, class SA, class DB, class SB>
scaled_matmul<DA, SA, DB, SB> gelu(const scaled_matmul<DA, SA, DB, SB>& p) {
  return p.with_activation(activation::gelu_tanh);
}

}  // namespace scalify

#endif  // SCALIFY_OPS_MATMUL_HPP_
