// scalify: elementwise scaled ops. Each op computes its output scale at once
// and returns a lazy ScaledArray whose data is a float32 Eigen array
// expression; assigning it into storage (ScaledMatrix<T>) evaluates it once.
//
// The rules are jax-scalify's scaled lax rules (graphcore-research/jax-scalify,
// jax_scalify/lax), with one fix for zero scales: rebasing onto a zero output
// scale uses safe_div (x/0 := 0), so all-zero operands give 0, not NaN.
// Notation: a = (da, sa), b = (db, sb), value = d*s; R = the scope's pow2
// rounding (down by default); lo/hi = min/max of the two scales.
// A float constant c is a scaled scalar (jax-scalify's make_scaled_scalar):
// c = mc * pc with pc = pow2_round_down(|c|), |mc| in [1, 2); a zero constant
// has scale 0 (jax-scalify's broadcasted-zero rule); inf/NaN c is (c, 1).
//
//   op                        output scale                         output data (float32)
//   ------------------------  -----------------------------------  ---------------------------------
//   add(a, b), a + b          s = R(hi * sqrt(1 + (lo/hi)^2))      da*(sa/s) + db*(sb/s)
//   sub(a, b), a - b          as add                               da*(sa/s) - db*(sb/s)
//   mul(a, b), a * b          sa * sb                              da * db
//   div(a, b), a / b          sa / sb (inf or NaN if sb == 0)      da / db
//   a + c, c + a, a - c       add rule with (mc, pc); c == 0: sa   da*(sa/s) +- mc*(pc/s)
//   c - a                     as a - c                             mc*(pc/s) - da*(sa/s)
//   c * a, a * c              sa * pc (0 for c == 0)               da * mc
//   a / c                     sa / pc (inf for c == 0)             da / mc
//   c / a                     pc / sa (inf or NaN if sa == 0)      mc / da
//   a += b, -=, *=, /=        as a + b, ... (b ScaledArray or c)   stored back into a (store cast)
//   neg(a), -a                sa                                   -da
//   abs(a)                    sa                                   |da|
//   sign(a)                   1                                    sign(da * sign(sa))
//   min(a, b), max(a, b)      max(sa, sb)                          min/max(da*(sa/s), db*(sb/s)), NaN wins
//   where(c, a, b), select    max(sa, sb)                          c ? da*(sa/s) : db*(sb/s)
//   max/min(a, c), where(m, a, c), and with c first: the rules above with (mc, pc); c == 0: sa, data as is
//   exp, log, sin, cos        1                                    f(da*sa), the value in float (double
//                                                                  for a double scale)
//   sqrt(a)                   sqrt(sa), not re-rounded             sqrt(da); sqrt(da*0) if sa == 0
//   pow(a, n), int n          sa^n                                 da^n by repeated squaring
//   eq ne lt le gt ge         -- (lazy Eigen bool array)           da*sa OP db*sb, in double
//   is_finite(a)              -- (lazy Eigen bool array)           isfinite(da) && isfinite(sa)
//
// Binary ops need equal shapes (no broadcasting) and throw shape_error naming
// the op and both shapes. Like Eigen, a lazy result refers to its operands'
// storage: assign it before they go away.
#ifndef SCALIFY_OPS_ELEMENTWISE_HPP_
#define SCALIFY_OPS_ELEMENTWISE_HPP_

#include <Eigen/Core>   // Eigen::ArrayBase, Eigen::DenseBase
#include <algorithm>    // std::max, std::min
#include <cmath>        // std::sqrt, std::pow, std::isnan, std::isfinite
#include <limits>       // std::numeric_limits
#include <string>       // std::string (error messages)
#include <type_traits>  // std::is_same_v

#include "scalify/core/config_scope.hpp"  // config_pow2_round
#include "scalify/core/pow2.hpp"          // pow2_decompose, pow2_round_down
#include "scalify/core/scaled_array.hpp"  // ScaledArray
#include "scalify/errors.hpp"             // shape_error, SCALIFY_CHECK
#include "scalify/ops/detail/common.hpp"  // values_f, safe_div, make_result, check_same_shape

namespace scalify {
namespace detail::elementwise {

/// `s` as the result scale type M (E8M0 scales widen exactly to float).
template <class M, class S>
constexpr M scale_as(S s) {
  return static_cast<M>(scale_value(s));
}

/// The data of `x` widened to the type its values are formed in: float (so a
/// large scale with small narrow data does not overflow the narrow type), or
/// double when the scale is double.
template <class D, class S>
auto data_in_math(const ScaledArray<D, S>& x) {
  if constexpr (std::is_same_v<S, double>) {
    return x.data().matrix().array().template cast<double>();
  } else {
    return values_f(x);
  }
}

/// The values d * s in double: exact for float or narrow data and float or E8M0 scales
/// (the data is widened exactly, straight to double).
template <class D, class S>
auto values_double(const ScaledArray<D, S>& x) {
  return x.data().array().template cast<double>() * static_cast<double>(x.scale());
}

/// Plain std:: math per element. Eigen 3.4's vectorized float versions get special values
/// wrong (exp(-inf) and exp(x < -88.4) give 2.9e-39 instead of 0, sqrt(inf) gives NaN,
/// sqrt(-0) gives +0, subnormals are flushed in log and sqrt), and these ops promise plain float
/// math. Narrow data is widened element by element anyway, so nothing is lost there.
template <class F>
struct exp_op {
  F operator()(F x) const { return std::exp(x); }
};
template <class F>
struct sin_op {
  F operator()(F x) const { return std::sin(x); }
};
template <class F>
struct cos_op {
  F operator()(F x) const { return std::cos(x); }
};
template <class F>
struct sqrt_op {
  F operator()(F x) const { return std::sqrt(x); }
};

/// f(d * s) for one element, from its data d (widened to V) and the scale s:
/// the value is formed in V and f applied as plain math on it would. Where
/// d * s overflows V although d and s are finite, f is applied to the exact
/// value instead, formed in double (exact for float and E8M0 scales), so a
/// value beyond float's range gives f of that value (sin(2^130) is not NaN).
template <template <class> class Op, class V>
struct value_op {
  V s;
  float operator()(V d) const {
    const V v = d * s;
    if (std::isinf(v) && std::isfinite(d) && std::isfinite(s)) [[unlikely]] {
      return static_cast<float>(Op<double>{}(static_cast<double>(d) * static_cast<double>(s)));
    }
    return static_cast<float>(Op<V>{}(v));
  }
};

/// log(d * s) for one element, as value_op; where d * s leaves V's normal
/// range (overflows, or underflows to a subnormal or 0) although d and s are
/// finite and nonzero, jax-scalify's split log(d) + log(s) in double, which
/// stays finite: log(2 * 2^127) = 128 ln 2, log(2^-10 * 2^-140) = -150 ln 2.
template <class V>
struct log_value_op {
  V s;
  double log_s;  // log(s), used only for a finite s > 0
  float operator()(V d) const {
    const V v = d * s;
    if (!std::isnormal(v) && std::isfinite(d) && d != V(0) && s > V(0) && std::isfinite(s))
        [[unlikely]] {
      return static_cast<float>(std::log(static_cast<double>(d)) + log_s);
    }
    return static_cast<float>(std::log(v));
  }
};

/// f(d * s) as a float expression: the value-space functions (value_op).
template <template <class> class Op, class D, class S>
auto map_values(const ScaledArray<D, S>& x) {
  auto d = data_in_math(x);
  using V = typename decltype(d)::Scalar;
  return d.unaryExpr(value_op<Op, V>{static_cast<V>(scale_value(x.scale()))});
}

/// log(d * s) as a float expression (log_value_op).
template <class D, class S>
auto map_log(const ScaledArray<D, S>& x) {
  auto d = data_in_math(x);
  using V = typename decltype(d)::Scalar;
  const V s = static_cast<V>(scale_value(x.scale()));
  const double log_s = s > V(0) && std::isfinite(s) ? std::log(static_cast<double>(s)) : 0.0;
  return d.unaryExpr(log_value_op<V>{s, log_s});
}

/// max(a, b) with NaN propagation (NaN if either is NaN), like jnp.maximum.
struct max_op {
  float operator()(float a, float b) const { return std::isnan(a) || a > b ? a : b; }
};
/// min(a, b) with NaN propagation, like jnp.minimum.
struct min_op {
  float operator()(float a, float b) const { return std::isnan(a) || a < b ? a : b; }
};

/// d^n by repeated squaring in float; n < 0 gives 1 / d^-n; n == 0 gives 1
/// (also for NaN), like lax.integer_pow.
struct int_pow_op {
  int n;
  float operator()(float d) const {
    unsigned m = n < 0 ? 0u - static_cast<unsigned>(n) : static_cast<unsigned>(n);
    float result = 1.0f;
    float base = d;
    while (m != 0) {
      if (m & 1u) result *= base;
      m >>= 1;
      if (m != 0) base *= base;
    }
    return n < 0 ? 1.0f / result : result;
  }
};

/// Shapes of a where() condition and its operands must agree.
template <class C, class D, class S>
void check_condition_shape(const C& cond, const ScaledArray<D, S>& a) {
  SCALIFY_CHECK(cond.rows() == a.rows() && cond.cols() == a.cols(), shape_error,
                "scalify::where: condition shape " + shape_string(cond.rows(), cond.cols()) +
                    " and operand shape " + shape_string(a) + " differ");
}

}  // namespace detail::elementwise

// ------------------------------------------------------------------------------
// Arithmetic

/// a + b. Output scale `R(max * sqrt(1 + (min/max)^2))` (R: the scope's pow2
/// rounding; with power-of-two scales and the default `down`, max(sa, sb));
/// data `da*(sa/s) + db*(sb/s)` in float32, where a zero scale contributes 0.
///
/// **Example**: `ScaledMatrix<float8_e4m3fn> z = scalify::add(x, y);  // or x + y`
template <class D1, class S1, class D2, class S2>
auto add(const ScaledArray<D1, S1>& a, const ScaledArray<D2, S2>& b) {
  detail::check_same_shape("add", a, b);
  using M = detail::result_scale_t<S1, S2>;
  namespace ew = detail::elementwise;
  const auto k = ew::add_sub_scales(ew::scale_as<M>(a.scale()), ew::scale_as<M>(b.scale()));
  return detail::make_result(detail::values_f(a) * k.factor_a + detail::values_f(b) * k.factor_b,
                             k.scale);
}

/// a - b, with add's scale rule.
///
/// **Example**: `ScaledMatrix<float16> d = scalify::sub(x, y);  // or x - y`
template <class D1, class S1, class D2, class S2>
auto sub(const ScaledArray<D1, S1>& a, const ScaledArray<D2, S2>& b) {
  detail::check_same_shape("sub", a, b);
  using M = detail::result_scale_t<S1, S2>;
  namespace ew = detail::elementwise;
  const auto k = ew::add_sub_scales(ew::scale_as<M>(a.scale()), ew::scale_as<M>(b.scale()));
  return detail::make_result(detail::values_f(a) * k.factor_a - detail::values_f(b) * k.factor_b,
                             k.scale);
}

/// a * b (elementwise; matmul is scalify::matmul). Output scale `sa * sb`,
/// data `da * db`.
///
/// **Example**: `ScaledMatrix<float8_e4m3fn> z = x * y + w;  // one fused pass`
template <class D1, class S1, class D2, class S2>
auto mul(const ScaledArray<D1, S1>& a, const ScaledArray<D2, S2>& b) {
  detail::check_same_shape("mul", a, b);
  using M = detail::result_scale_t<S1, S2>;
  namespace ew = detail::elementwise;
  const M s = ew::scale_as<M>(a.scale()) * ew::scale_as<M>(b.scale());
  return detail::make_result(detail::values_f(a) * detail::values_f(b), s);
}

/// a / b. Output scale `sa / sb` (plain division, not rounded: 3 / 2 gives
/// 1.5), data `da / db`. A zero `sb` gives scale inf (NaN if sa is 0 too), so
/// the values are those of plain math on values: +-inf for x / 0, NaN for
/// 0 / 0 (except where da / db itself under- or overflows float).
///
/// **Example**: `ScaledMatrix<float> q = scalify::div(x, y);  // or x / y`
template <class D1, class S1, class D2, class S2>
auto div(const ScaledArray<D1, S1>& a, const ScaledArray<D2, S2>& b) {
  detail::check_same_shape("div", a, b);
  using M = detail::result_scale_t<S1, S2>;
  namespace ew = detail::elementwise;
  const M s = ew::scale_as<M>(a.scale()) / ew::scale_as<M>(b.scale());
  return detail::make_result(detail::values_f(a) / detail::values_f(b), s);
}

/// -x. Scale unchanged, data `-d`.
///
/// **Example**: `ScaledMatrix<float8_e5m2> n = scalify::neg(g);  // or -g`
template <class D, class S>
auto neg(const ScaledArray<D, S>& x) {
  using M = detail::result_scale_t<S>;
  return detail::make_result(-detail::values_f(x), detail::elementwise::scale_as<M>(x.scale()));
}

/// |x|. Scale unchanged (scales are >= 0), data `|d|`.
///
/// **Example**: `ScaledMatrix<float16> m = scalify::abs(x);`
template <class D, class S>
auto abs(const ScaledArray<D, S>& x) {
  using M = detail::result_scale_t<S>;
  return detail::make_result(detail::values_f(x).abs(),
                             detail::elementwise::scale_as<M>(x.scale()));
}

/// sign(x) in {-1, 0, 1} (NaN stays NaN). Output scale 1; data `sign(d)`, or
/// `sign(d * 0)` when the scale is 0 (so 0 as in plain math, not the
/// reference's sign(d)).
///
/// **Example**: `ScaledMatrix<float8_e4m3fn> s = scalify::sign(x);  // s.scale() == 1`
template <class D, class S>
auto sign(const ScaledArray<D, S>& x) {
  using M = detail::result_scale_t<S>;
  const M s = detail::elementwise::scale_as<M>(x.scale());
  // sign(d * sign(s)): sign(d) for s > 0, sign(d * 0) for s == 0, NaN for a NaN scale.
  const float k = s > M(0)    ? 1.0f
                  : s < M(0)  ? -1.0f
                  : s == M(0) ? 0.0f
                              : std::numeric_limits<float>::quiet_NaN();
  return detail::make_result((detail::values_f(x) * k).sign(), M(1));
}

/// Elementwise maximum (NaN if either value is NaN). Output scale
/// `max(sa, sb)`, not rounded; data `max(da*(sa/s), db*(sb/s))`.
///
/// **Example**: `ScaledMatrix<float16> r = scalify::max(x, zeros);  // ReLU`
template <class D1, class S1, class D2, class S2>
auto max(const ScaledArray<D1, S1>& a, const ScaledArray<D2, S2>& b) {
  detail::check_same_shape("max", a, b);
  using M = detail::result_scale_t<S1, S2>;
  namespace ew = detail::elementwise;
  const auto k = ew::max_scales(ew::scale_as<M>(a.scale()), ew::scale_as<M>(b.scale()));
  return detail::make_result(
      (detail::values_f(a) * k.factor_a).binaryExpr(detail::values_f(b) * k.factor_b, ew::max_op{}),
      k.scale);
}

/// Elementwise minimum (NaN if either value is NaN), with max's scale rule.
///
/// **Example**: `ScaledMatrix<float16> r = scalify::min(x, y);`
template <class D1, class S1, class D2, class S2>
auto min(const ScaledArray<D1, S1>& a, const ScaledArray<D2, S2>& b) {
  detail::check_same_shape("min", a, b);
  using M = detail::result_scale_t<S1, S2>;
  namespace ew = detail::elementwise;
  const auto k = ew::max_scales(ew::scale_as<M>(a.scale()), ew::scale_as<M>(b.scale()));
  return detail::make_result(
      (detail::values_f(a) * k.factor_a).binaryExpr(detail::values_f(b) * k.factor_b, ew::min_op{}),
      k.scale);
}

/// `cond ? a : b` per element. `cond` is an Eigen bool matrix, array or
/// expression of the same shape (it is nested like an Eigen operand: a plain
/// matrix by reference, an expression by value). Output scale `max(sa, sb)`;
/// data `cond ? da*(sa/s) : db*(sb/s)` (all-zero scales give 0, not NaN).
///
/// **Example**: `ScaledMatrix<float8_e4m3fn> r = scalify::where(scalify::gt(x, y), x, y);`
template <class C, class D1, class S1, class D2, class S2>
auto where(const Eigen::DenseBase<C>& cond, const ScaledArray<D1, S1>& a,
           const ScaledArray<D2, S2>& b) {
  static_assert(
      std::is_same_v<typename C::Scalar, bool>,
      "scalify::where(cond, a, b): cond must hold bool, e.g. (m.array() > 0) or scalify::lt(a, b)");
  detail::check_same_shape("where", a, b);
  detail::elementwise::check_condition_shape(cond, a);
  using M = detail::result_scale_t<S1, S2>;
  namespace ew = detail::elementwise;
  const auto k = ew::max_scales(ew::scale_as<M>(a.scale()), ew::scale_as<M>(b.scale()));
  return detail::make_result(
      cond.derived().select(detail::values_f(a) * k.factor_a, detail::values_f(b) * k.factor_b),
      k.scale);
}

/// Alias of where(cond, a, b).
///
/// **Example**: `ScaledMatrix<float> r = scalify::select(mask, x, y);`
template <class C, class D1, class S1, class D2, class S2>
auto select(const Eigen::DenseBase<C>& cond, const ScaledArray<D1, S1>& a,
            const ScaledArray<D2, S2>& b) {
  return where(cond, a, b);
}

// ------------------------------------------------------------------------------
// Value-space functions: the value d*s is formed in float (double for a double
// scale), so a large scale with small narrow data neither overflows the narrow
// type nor gives 0 * inf; NaN and inf follow plain float math. A value beyond
// float's range is not lost: where d*s overflows (log: leaves the normal range)
// the function is taken of the exact value, in double (value_op, log_value_op).

/// e^x. Output scale 1; data `exp(d * s)`.
/// `exp([0, -32768] * 2^19)` is `[1, 0]`; a zero scale gives 1 (NaN for inf data).
///
/// **Example**: `ScaledMatrix<float16> e = scalify::exp(x);  // e.scale() == 1`
template <class D, class S>
auto exp(const ScaledArray<D, S>& x) {
  using M = detail::result_scale_t<S>;
  return detail::make_result(detail::elementwise::map_values<detail::elementwise::exp_op>(x), M(1));
}

/// Natural log. Output scale 1; data `log(d * s)`: `log(0 * 2^19) = -inf`,
/// negative values give NaN; a zero scale gives -inf (plain log(0)). Values
/// beyond float's range stay finite: where d * s over- or underflows float,
/// the data is `log(d) + log(s)` in double (jax-scalify's form), e.g.
/// `log(2 * 2^127) = 128 ln 2` instead of inf.
///
/// **Example**: `ScaledMatrix<float> l = scalify::log(x);  // l.scale() == 1`
template <class D, class S>
auto log(const ScaledArray<D, S>& x) {
  using M = detail::result_scale_t<S>;
  return detail::make_result(detail::elementwise::map_log(x), M(1));
}

/// sin(x). Output scale 1; data `sin(d * s)` (of the exact value, in double,
/// where d * s overflows float).
///
/// **Example**: `ScaledMatrix<bfloat16> y = scalify::sin(x);`
template <class D, class S>
auto sin(const ScaledArray<D, S>& x) {
  using M = detail::result_scale_t<S>;
  return detail::make_result(detail::elementwise::map_values<detail::elementwise::sin_op>(x), M(1));
}

/// cos(x). Output scale 1; data `cos(d * s)` (as sin for values beyond float).
///
/// **Example**: `ScaledMatrix<bfloat16> y = scalify::cos(x);`
template <class D, class S>
auto cos(const ScaledArray<D, S>& x) {
  using M = detail::result_scale_t<S>;
  return detail::make_result(detail::elementwise::map_values<detail::elementwise::cos_op>(x), M(1));
}

/// Square root. Output scale `sqrt(s)` (not re-rounded, so it may not be a
/// power of two); data `sqrt(d)`, or `sqrt(d * 0)` when s == 0 (so -0 and not
/// NaN for negative data, as plain math on the zero values).
///
/// **Example**: `ScaledMatrix<float16> r = scalify::sqrt(x);  // scale 4 -> 2`
template <class D, class S>
auto sqrt(const ScaledArray<D, S>& x) {
  using M = detail::result_scale_t<S>;
  const M s = detail::elementwise::scale_as<M>(x.scale());
  const float k = s == M(0) ? 0.0f : 1.0f;
  return detail::make_result(
      (detail::values_f(x) * k).unaryExpr(detail::elementwise::sqrt_op<float>{}),
      static_cast<M>(std::sqrt(s)));
}

/// x^n for an integer n. Output scale `s^n` (s^0 = 1, 0^-n = inf); data `d^n`
/// by repeated squaring in float (n < 0: `1 / d^-n`; n == 0: 1, also for NaN).
///
/// **Example**: `ScaledMatrix<float16> y = scalify::pow(x, 2);  // scale s*s`
template <class D, class S>
auto pow(const ScaledArray<D, S>& x, int n) {
  using M = detail::result_scale_t<S>;
  // In double, exact for small n and power-of-two scales, then rounded once.
  const M s = static_cast<M>(std::pow(static_cast<double>(x.scale()), n));
  return detail::make_result(detail::values_f(x).unaryExpr(detail::elementwise::int_pow_op{n}), s);
}

// ------------------------------------------------------------------------------
// Comparisons and predicates: lazy Eigen bool arrays (no scale).

/// Defines a comparison of the values d*s, computed in double (exact for float
/// and narrow data with float scales). NaN compares unequal to everything.
#define SCALIFY_DEFINE_SCALED_COMPARISON(name, op)                                         \
  template <class D1, class S1, class D2, class S2>                                        \
  auto name(const ScaledArray<D1, S1>& a, const ScaledArray<D2, S2>& b) {                  \
    detail::check_same_shape(#name, a, b);                                                 \
    return detail::elementwise::values_double(a) op detail::elementwise::values_double(b); \
  }

/// a == b on values, a lazy Eigen bool array.
///
/// **Example**: `bool same = scalify::eq(x, y).all();`
SCALIFY_DEFINE_SCALED_COMPARISON(eq, ==)
/// a != b on values (true where either is NaN).
///
/// **Example**: `Eigen::Index n_differ = scalify::ne(x, y).count();`
SCALIFY_DEFINE_SCALED_COMPARISON(ne, !=)
/// a < b on values.
///
/// **Example**: `ScaledMatrix<float16> m = scalify::where(scalify::lt(x, y), x, y);  // min`
SCALIFY_DEFINE_SCALED_COMPARISON(lt, <)
/// a <= b on values.
///
/// **Example**: `Eigen::Array<bool, -1, -1> mask = scalify::le(x, y);`
SCALIFY_DEFINE_SCALED_COMPARISON(le, <=)
/// a > b on values.
///
/// **Example**: `ScaledMatrix<float16> relu = scalify::where(scalify::gt(x, zeros), x, zeros);`
SCALIFY_DEFINE_SCALED_COMPARISON(gt, >)
/// a >= b on values.
///
/// **Example**: `bool dominated = scalify::ge(x, y).all();`
SCALIFY_DEFINE_SCALED_COMPARISON(ge, >=)

#undef SCALIFY_DEFINE_SCALED_COMPARISON

/// True where the value is finite: `isfinite(d) && isfinite(s)` (d*s is never
/// formed, so a large scale with finite data stays finite; a zero scale with
/// inf data gives false, as 0 * inf is NaN). A lazy Eigen bool array.
///
/// **Example**: `bool ok = scalify::is_finite(g).all();`
template <class D, class S>
auto is_finite(const ScaledArray<D, S>& x) {
  // d * 1 keeps d (inf and NaN included); d * NaN is NaN: all false for a non-finite scale.
  const double k = std::isfinite(static_cast<double>(x.scale()))
                       ? 1.0
                       : std::numeric_limits<double>::quiet_NaN();
  return (x.data().array().template cast<double>() * k).isFinite();
}

// ------------------------------------------------------------------------------
// Operators

/// a + b: see add().
template <class D1, class S1, class D2, class S2>
auto operator+(const ScaledArray<D1, S1>& a, const ScaledArray<D2, S2>& b) {
  return add(a, b);
}
/// a - b: see sub().
template <class D1, class S1, class D2, class S2>
auto operator-(const ScaledArray<D1, S1>& a, const ScaledArray<D2, S2>& b) {
  return sub(a, b);
}
/// a * b elementwise (not matmul): see mul().
template <class D1, class S1, class D2, class S2>
auto operator*(const ScaledArray<D1, S1>& a, const ScaledArray<D2, S2>& b) {
  return mul(a, b);
}
/// a / b elementwise: see div().
template <class D1, class S1, class D2, class S2>
auto operator/(const ScaledArray<D1, S1>& a, const ScaledArray<D2, S2>& b) {
  return div(a, b);
}
/// -x: see neg().
template <class D, class S>
auto operator-(const ScaledArray<D, S>& x) {
  return neg(x);
}

// ------------------------------------------------------------------------------
// Float constants on either side: c is the scaled scalar (mc, pc) of
// detail::scalar_parts (jax-scalify's make_scaled_scalar; 0 has scale 0), and
// the op's rule applies as if c were a tensor of that value (a broadcast keeps
// the scale). A double or int constant converts to float first.

namespace detail::elementwise {

/// c / d for a constant c (the data of c / a).
struct scalar_div_op {
  float c;
  float operator()(float d) const { return c / d; }
};

/// a + c (sign = +1) or c - a (sign = -1): the add rule with c's scaled
/// scalar. A zero constant keeps a's scale exactly (the rule gives sa for a
/// power-of-two sa; here a non-power-of-two sa is not rounded either) and
/// adds c itself to the data (so -0 + -0 stays -0, as in plain math).
template <class D, class S>
auto add_constant(const ScaledArray<D, S>& a, float c, float sign) {
  using M = result_scale_t<S>;
  const M sa = scale_as<M>(a.scale());
  if (c == 0.0f) return make_result(values_f(a) * sign + c, sa);
  const auto [pc, mc] = scalar_parts(c);
  const auto k = add_sub_scales(sa, static_cast<M>(pc));
  return make_result(values_f(a) * (sign * k.factor_a) + mc * k.factor_b, k.scale);
}

}  // namespace detail::elementwise

/// x + c for a float c (a scaled scalar): add's rule, e.g. scale 1 and 3
/// give R(3 * sqrt(1 + 1/9)); `x + 0.0f` keeps x's scale and data.
///
/// **Example**: `ScaledMatrix<float16> y = x + 1.0f;`
template <class D, class S>
auto operator+(const ScaledArray<D, S>& x, float c) {
  return detail::elementwise::add_constant(x, c, 1.0f);
}
/// c + x: the same as x + c.
///
/// **Example**: `ScaledMatrix<float16> y = 1.0f + x;`
template <class D, class S>
auto operator+(float c, const ScaledArray<D, S>& x) {
  return detail::elementwise::add_constant(x, c, 1.0f);
}
/// x - c for a float c: x + (-c), sub's rule.
///
/// **Example**: `ScaledMatrix<float16> y = x - 0.5f;`
template <class D, class S>
auto operator-(const ScaledArray<D, S>& x, float c) {
  return detail::elementwise::add_constant(x, -c, 1.0f);
}
/// c - x for a float c: sub's rule, data `mc*(pc/s) - d*(sx/s)`; `0.0f - x`
/// keeps x's scale (data 0 - d).
///
/// **Example**: `ScaledMatrix<float16> y = 1.0f - x;`
template <class D, class S>
auto operator-(float c, const ScaledArray<D, S>& x) {
  return detail::elementwise::add_constant(x, c, -1.0f);
}

/// c * x for a float c, taken as the scaled scalar (mantissa(c), pow2(c)):
/// output scale `s * pow2_round_down(|c|)` (exact for power-of-two s), data
/// `d * mantissa(c)` with |mantissa| in [1, 2). c = 0 gives scale 0; an
/// infinite or NaN c gives scale s and data d * c.
///
/// **Example**: `ScaledMatrix<float8_e4m3fn> y = 6.0f * x;  // scale 4*s, data 1.5*d`
template <class D, class S>
auto operator*(float c, const ScaledArray<D, S>& x) {
  using M = detail::result_scale_t<S>;
  const auto [p, m] = detail::scalar_parts(c);
  const M s = detail::elementwise::scale_as<M>(x.scale()) * static_cast<M>(p);
  return detail::make_result(detail::values_f(x) * m, s);
}
/// x * c for a float c: same as c * x.
///
/// **Example**: `ScaledMatrix<float16> y = x * 0.3f;  // scale s/4, data 1.2*d`
template <class D, class S>
auto operator*(const ScaledArray<D, S>& x, float c) {
  return c * x;
}
/// x / c for a float c: output scale `s / pow2_round_down(|c|)`, data
/// `d / mantissa(c)`. c = 0 follows div(): scale inf (NaN if s == 0), values
/// +-inf or NaN as plain math; an infinite or NaN c: scale s, data d / c.
///
/// **Example**: `ScaledMatrix<float16> y = x / 8.0f;  // scale s/8, data unchanged`
template <class D, class S>
auto operator/(const ScaledArray<D, S>& x, float c) {
  using M = detail::result_scale_t<S>;
  const auto [p, m] = detail::scalar_parts(c);
  const M s = detail::elementwise::scale_as<M>(x.scale()) / static_cast<M>(p);
  return detail::make_result(detail::values_f(x) / m, s);
}
/// c / x for a float c: div's rule, output scale `pow2_round_down(|c|) / s`,
/// data `mantissa(c) / d`. s = 0 gives scale inf (NaN if c == 0 too).
///
/// **Example**: `ScaledMatrix<float16> r = 1.0f / x;  // scale 1/s, data 1/d`
template <class D, class S>
auto operator/(float c, const ScaledArray<D, S>& x) {
  using M = detail::result_scale_t<S>;
  const auto [p, m] = detail::scalar_parts(c);
  const M s = static_cast<M>(p) / detail::elementwise::scale_as<M>(x.scale());
  return detail::make_result(detail::values_f(x).unaryExpr(detail::elementwise::scalar_div_op{m}), s);
}

// ------------------------------------------------------------------------------
// Constants in max, min and where: c is the scaled scalar (mc, pc) as above,
// and the rule of the two-tensor op applies: scale max(sa, pc), so a zero
// constant (scale 0) keeps a's scale and data exactly: max(x, 0) is ReLU on
// x's scale, where(mask, x, 0) a mask on it.

namespace detail::elementwise {

/// op(d, c) or op(c, d) for a constant c (the data of max/min against a constant).
template <class Op>
struct with_constant_op {
  Op op;
  float c;
  bool c_first;
  float operator()(float d) const { return c_first ? op(c, d) : op(d, c); }
};

/// max/min of a and the constant c: scale max(sa, pc), data op(da*(sa/s), mc*(pc/s)).
template <class Op, class D, class S>
auto extreme_with_constant(const ScaledArray<D, S>& a, float c, bool c_first) {
  using M = result_scale_t<S>;
  const auto [pc, mc] = scalar_parts(c);
  const auto k = max_scales(scale_as<M>(a.scale()), static_cast<M>(pc));
  return make_result((values_f(a) * k.factor_a).unaryExpr(with_constant_op<Op>{Op{}, mc * k.factor_b, c_first}),
                     k.scale);
}

/// cond ? a : c, or cond ? c : a if CFirst: scale max(sa, pc).
template <bool CFirst, class C, class D, class S>
auto where_constant(const Eigen::DenseBase<C>& cond, const ScaledArray<D, S>& a, float c) {
  static_assert(std::is_same_v<typename C::Scalar, bool>,
                "scalify::where(cond, a, c): cond must hold bool, e.g. (m.array() > 0) or scalify::lt(a, b)");
  check_condition_shape(cond, a);
  using M = result_scale_t<S>;
  const auto [pc, mc] = scalar_parts(c);
  const auto k = max_scales(scale_as<M>(a.scale()), static_cast<M>(pc));
  const auto data = values_f(a) * k.factor_a;
  using Data = std::remove_cv_t<decltype(data)>;
  const auto constant = Data::PlainObject::Constant(a.rows(), a.cols(), mc * k.factor_b);
  if constexpr (CFirst) {
    return make_result(cond.derived().select(constant, data), k.scale);
  } else {
    return make_result(cond.derived().select(data, constant), k.scale);
  }
}

}  // namespace detail::elementwise

/// max(x, c) for a float c (a scaled scalar): scale max(sx, pc), data
/// max(dx*(sx/s), mc*(pc/s)); NaN wins. `max(x, 0.0f)` is ReLU on x's scale.
///
/// **Example**: `ScaledMatrix<float8_e4m3fn> h = scalify::max(x, 0.0f);`
template <class D, class S>
auto max(const ScaledArray<D, S>& x, float c) {
  return detail::elementwise::extreme_with_constant<detail::elementwise::max_op>(x, c, false);
}
/// max(c, x): as max(x, c).
template <class D, class S>
auto max(float c, const ScaledArray<D, S>& x) {
  return detail::elementwise::extreme_with_constant<detail::elementwise::max_op>(x, c, true);
}
/// min(x, c) for a float c, with max's scale rule.
///
/// **Example**: `ScaledMatrix<float> y = scalify::min(x, 6.0f);  // clip at 6`
template <class D, class S>
auto min(const ScaledArray<D, S>& x, float c) {
  return detail::elementwise::extreme_with_constant<detail::elementwise::min_op>(x, c, false);
}
/// min(c, x): as min(x, c).
template <class D, class S>
auto min(float c, const ScaledArray<D, S>& x) {
  return detail::elementwise::extreme_with_constant<detail::elementwise::min_op>(x, c, true);
}
/// `cond ? x : c` for a float c: scale max(sx, pc); `where(mask, x, 0.0f)`
/// keeps x's scale and data where mask is true, 0 elsewhere.
///
/// **Example**: `ScaledMatrix<float> masked = scalify::where(keep, scores, 0.0f);`
template <class C, class D, class S>
auto where(const Eigen::DenseBase<C>& cond, const ScaledArray<D, S>& x, float c) {
  return detail::elementwise::where_constant<false>(cond, x, c);
}
/// `cond ? c : x` for a float c.
template <class C, class D, class S>
auto where(const Eigen::DenseBase<C>& cond, float c, const ScaledArray<D, S>& x) {
  return detail::elementwise::where_constant<true>(cond, x, c);
}

// ------------------------------------------------------------------------------
// Compound assignment: x op= y is x = x op y. The scale follows the op's rule
// and the data is stored back into x's type with the scope's store options
// (saturating by default), in place (the expression reads x only at the
// position being written). Only storage can be assigned to.

namespace detail::elementwise {
template <class D>
constexpr void check_compound_target() {
  static_assert(eigen_plain<D>,
                "scalify: +=, -=, *= and /= store into the left operand, which must be storage "
                "(ScaledMatrix<T>, ScaledVector<T>, ...), not a lazy op result: assign the result first");
}
}  // namespace detail::elementwise

/// x = x + y (add's rule), stored back into x. shape_error (x unchanged) when the shapes differ.
///
/// **Example**: `acc += grad;  // ScaledMatrix<float16> acc`
template <class D1, class S1, class D2, class S2>
ScaledArray<D1, S1>& operator+=(ScaledArray<D1, S1>& x, const ScaledArray<D2, S2>& y) {
  detail::elementwise::check_compound_target<D1>();
  return x = add(x, y);
}
/// x = x - y (sub's rule), stored back into x.
///
/// **Example**: `w -= update;`
template <class D1, class S1, class D2, class S2>
ScaledArray<D1, S1>& operator-=(ScaledArray<D1, S1>& x, const ScaledArray<D2, S2>& y) {
  detail::elementwise::check_compound_target<D1>();
  return x = sub(x, y);
}
/// x = x * y elementwise (mul's rule), stored back into x.
///
/// **Example**: `x *= mask;`
template <class D1, class S1, class D2, class S2>
ScaledArray<D1, S1>& operator*=(ScaledArray<D1, S1>& x, const ScaledArray<D2, S2>& y) {
  detail::elementwise::check_compound_target<D1>();
  return x = mul(x, y);
}
/// x = x / y elementwise (div's rule), stored back into x.
///
/// **Example**: `x /= norms;`
template <class D1, class S1, class D2, class S2>
ScaledArray<D1, S1>& operator/=(ScaledArray<D1, S1>& x, const ScaledArray<D2, S2>& y) {
  detail::elementwise::check_compound_target<D1>();
  return x = div(x, y);
}
/// x = x + c for a float c, stored back into x.
///
/// **Example**: `x += 1.0f;`
template <class D, class S>
ScaledArray<D, S>& operator+=(ScaledArray<D, S>& x, float c) {
  detail::elementwise::check_compound_target<D>();
  return x = x + c;
}
/// x = x - c for a float c, stored back into x.
///
/// **Example**: `x -= 0.5f;`
template <class D, class S>
ScaledArray<D, S>& operator-=(ScaledArray<D, S>& x, float c) {
  detail::elementwise::check_compound_target<D>();
  return x = x - c;
}
/// x = x * c for a float c (scale * pow2(c), data * mantissa(c)), stored back into x.
///
/// **Example**: `w *= 0.5f;  // scale halves, data unchanged`
template <class D, class S>
ScaledArray<D, S>& operator*=(ScaledArray<D, S>& x, float c) {
  detail::elementwise::check_compound_target<D>();
  return x = x * c;
}
/// x = x / c for a float c, stored back into x.
///
/// **Example**: `g /= 128.0f;  // scale / 128, data unchanged`
template <class D, class S>
ScaledArray<D, S>& operator/=(ScaledArray<D, S>& x, float c) {
  detail::elementwise::check_compound_target<D>();
  return x = x / c;
}

}  // namespace scalify

#endif  // SCALIFY_OPS_ELEMENTWISE_HPP_
