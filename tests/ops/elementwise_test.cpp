// Elementwise scaled ops (ops/elementwise.hpp): values vs a double reference
// from the unscaled inputs, output scales vs each rule computed independently,
// zero / large / non-pow2 scales, NaN and inf, rounding modes, shape errors,
// mixed scale types, and single-pass evaluation of fused expressions.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "scalify/ops/elementwise.hpp"
#include "support/scaled.hpp"

using scalify::bfloat16;
using scalify::float16;
using scalify::float8_e4m3fn;
using scalify::float8_e5m2;
using scalify::float8_e8m0fnu;
using scalify::ScaledArray;
using scalify::ScaledMatrix;
using scalify_test::RowMatrix;
using scalify_test::values_d;

namespace {

constexpr double kU32 = 0x1p-24;  // unit roundoff of float32 arithmetic
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Shapes: scalar, row, column, odd sizes.
const std::vector<std::pair<int, int>> kShapes = {{1, 1}, {1, 7}, {9, 1}, {5, 3}, {13, 17}};
// Scales: powers of two and not, tiny, large, and zero.
const std::vector<float> kScales = {1.0f, 0.375f, 3.0f, 0x1p-20f, 0x1p19f, 0.0f};

template <class T>
std::string format_name() {
  if constexpr (std::is_same_v<T, float>) return "float";
  if constexpr (std::is_same_v<T, double>) return "double";
  if constexpr (std::is_same_v<T, float16>) return "float16";
  if constexpr (std::is_same_v<T, bfloat16>) return "bfloat16";
  if constexpr (std::is_same_v<T, float8_e4m3fn>) return "float8_e4m3fn";
  if constexpr (std::is_same_v<T, float8_e5m2>) return "float8_e5m2";
  return "?";
}

template <class T>
double denorm_min() {
  return static_cast<double>(std::numeric_limits<T>::denorm_min());
}

/// Data of type T from float values (saturating, so every finite value stays finite).
template <class T>
RowMatrix<T> to_data(const RowMatrix<float>& v) {
  RowMatrix<T> m(v.rows(), v.cols());
  for (Eigen::Index i = 0; i < v.size(); ++i) {
    if constexpr (std::is_same_v<T, float>) {
      m.data()[i] = v.data()[i];
    } else {
      m.data()[i] = scalify::saturate_cast<T>(v.data()[i]);
    }
  }
  return m;
}

/// A random input whose *values* are about N(0, value_sigma): data sigma value_sigma / scale.
template <class T>
ScaledMatrix<T> value_input(int rows, int cols, float scale, uint32_t seed, float value_sigma) {
  const float sigma = scale > 0.0f ? value_sigma / scale : value_sigma;
  return scalify_test::random_scaled<T>(rows, cols, scale, seed, sigma);
}

/// A random input with data N(0, 1) moved away from zero: |d| >= 0.5 (divisors, negative powers).
template <class T>
ScaledMatrix<T> nonzero_input(int rows, int cols, float scale, uint32_t seed) {
  RowMatrix<float> v = scalify_test::random_data<float>(rows, cols, seed);
  for (Eigen::Index i = 0; i < v.size(); ++i) {
    float& x = v.data()[i];
    x = std::copysign(0.5f + std::fabs(x), x);
  }
  return ScaledMatrix<T>(to_data<T>(v), scale);
}

/// Puts NaN, +inf, -inf (as far as T can hold them) and zeros into the data.
template <class T>
void poison(ScaledMatrix<T>& x, uint32_t seed) {
  std::mt19937 gen(seed);
  const float specials[] = {std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(), 0.0f};
  for (Eigen::Index i = 0; i < x.size(); ++i) {
    if (gen() % 3 == 0) x.data().data()[i] = T(specials[gen() % 4]);
  }
}

/// pow2 rounded down, from frexp (independent of scalify::pow2_*).
double pow2_down(double v) {
  if (v == 0.0 || !std::isfinite(v)) return v;
  int e = 0;
  std::frexp(v, &e);  // v = m * 2^e, m in [0.5, 1)
  return std::ldexp(1.0, e - 1);
}
double pow2_up(double v) {
  const double d = pow2_down(v);
  return d == v || d == 0.0 || !std::isfinite(d) ? d : 2.0 * d;
}

/// The expected add/sub scale with rounding `mode`, in double, from the rule's definition.
double add_scale(double sa, double sb, scalify::pow2_mode mode) {
  const double hi = std::max(sa, sb), lo = std::min(sa, sb);
  if (hi == 0.0) return 0.0;
  const double exact = hi * std::sqrt(1.0 + (lo / hi) * (lo / hi));
  switch (mode) {
    case scalify::pow2_mode::down:
      return pow2_down(exact);
    case scalify::pow2_mode::up:
      return pow2_up(exact);
    default:
      return exact;
  }
}

bool same_scale(double actual, double expected) {
  return (std::isnan(actual) && std::isnan(expected)) || actual == expected;
}

/// Expected values as stored in T: a T without inf (e4m3fn) turns an inf *data* element into NaN.
/// `data_inf` says whether an inf value comes from inf data (true) or from an inf scale.
template <class T>
Eigen::MatrixXd as_stored(Eigen::MatrixXd expected, bool data_inf = true) {
  if constexpr (!std::numeric_limits<T>::has_infinity) {
    if (data_inf) expected = expected.unaryExpr([](double v) { return std::isinf(v) ? kNaN : v; });
  }
  return expected;
}

/// A lazy result evaluated into float storage: its float32 data, read coefficient by coefficient
/// (Eigen's public coeff()), and its scale. The ops' data are plain per-element expressions, so
/// this gives the same floats as the storage assignment, and storing them into ScaledMatrix<T>
/// gives the same codes as storing the lazy result directly (the storage assignment evaluates in
/// float and rounds once); both are checked in "ops store directly into a narrow format exactly as
/// through float storage". Doing it this way instantiates the storage assignment once per format
/// instead of once per op and format, which keeps the compile time of this file reasonable.
template <class Lazy>
ScaledMatrix<float> evaluate(const Lazy& lazy) {
  static_assert(std::is_same_v<decltype(lazy.scale()), float>);
  const auto& data = lazy.data();
  RowMatrix<float> out(data.rows(), data.cols());
  for (Eigen::Index i = 0; i < data.rows(); ++i) {
    for (Eigen::Index j = 0; j < data.cols(); ++j) out(i, j) = data.coeff(i, j);
  }
  // Unchecked, as a store keeps the scale: some rules give inf or NaN (div by a zero scale).
  return ScaledMatrix<float>(scalify::detail::unchecked_scale, std::move(out), lazy.scale());
}

/// A lazy bool expression (comparisons, is_finite) read coefficient by coefficient.
template <class Expr>
Eigen::Array<bool, Eigen::Dynamic, Eigen::Dynamic> evaluate_mask(const Expr& expr) {
  Eigen::Array<bool, Eigen::Dynamic, Eigen::Dynamic> out(expr.rows(), expr.cols());
  for (Eigen::Index i = 0; i < expr.rows(); ++i) {
    for (Eigen::Index j = 0; j < expr.cols(); ++j) out(i, j) = expr.coeff(i, j);
  }
  return out;
}

/// Checks an op's result `wide` (see evaluate()) stored into ScaledMatrix<T>: the scale exactly,
/// the values against `expected` (rel: arithmetic error beyond T's rounding; abs: absolute
/// arithmetic error; `data_inf`: an inf value comes from inf data, which e4m3fn stores as NaN, not
/// from an inf scale).
template <class T>
void check_result(const ScaledMatrix<float>& wide, double expected_scale,
                  const Eigen::MatrixXd& expected, double rel, double abs,
                  const std::string& context, bool data_inf = true) {
  INFO(context << ", expected scale " << expected_scale << ", got " << wide.scale());
  CHECK(same_scale(wide.scale(), expected_scale));
  const ScaledMatrix<T> out = wide;
  CHECK(same_scale(out.scale(), expected_scale));
  const double s = std::isfinite(expected_scale) ? expected_scale : 0.0;
  scalify_test::check_close(values_d(out), as_stored<T>(expected, data_inf),
                            rel + scalify_test::unit_roundoff<T>(), abs + s * denorm_min<T>(),
                            context);
}

std::string describe(const char* op, const std::string& format, int rows, int cols, double sa,
                     double sb) {
  std::ostringstream os;
  os << op << " " << format << " (" << rows << " x " << cols << ") scales " << sa << ", " << sb;
  return os.str();
}

double max_abs_sum(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) {
  double m = 0.0;
  for (Eigen::Index i = 0; i < a.size(); ++i) {
    const double v = std::fabs(a.data()[i]) + std::fabs(b.data()[i]);
    if (std::isfinite(v)) m = std::max(m, v);
  }
  return m;
}

double max_abs(const Eigen::MatrixXd& a) {
  return max_abs_sum(a, Eigen::MatrixXd::Zero(a.rows(), a.cols()));
}

/// sign of each value (NaN stays NaN).
Eigen::MatrixXd sign_ref(const Eigen::MatrixXd& v) {
  return v.unaryExpr([](double e) { return std::isnan(e) ? e : double((e > 0) - (e < 0)); });
}
/// v^n per element.
Eigen::MatrixXd pow_ref(const Eigen::MatrixXd& v, int n) {
  return v.unaryExpr([n](double e) { return std::pow(e, n); });
}

double nan_max(double a, double b) { return std::isnan(a) || a > b ? a : b; }
double nan_min(double a, double b) { return std::isnan(a) || a < b ? a : b; }

Eigen::MatrixXd max_ref(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) {
  return a.binaryExpr(b, &nan_max);
}
Eigen::MatrixXd min_ref(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) {
  return a.binaryExpr(b, &nan_min);
}

Eigen::Array<bool, Eigen::Dynamic, Eigen::Dynamic> random_mask(int rows, int cols, uint32_t seed) {
  std::mt19937 gen(seed);
  Eigen::Array<bool, Eigen::Dynamic, Eigen::Dynamic> m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = (gen() & 1u) != 0;
  return m;
}

/// All binary arithmetic ops on (a, b), checked against the double reference.
template <class T>
void check_binary_ops(const ScaledMatrix<T>& a, const ScaledMatrix<T>& b,
                      const ScaledMatrix<T>& divisor, uint32_t seed) {
  const std::string f = format_name<T>();
  const int rows = static_cast<int>(a.rows()), cols = static_cast<int>(a.cols());
  const double sa = a.scale(), sb = b.scale();
  const Eigen::MatrixXd va = values_d(a), vb = values_d(b), vd = values_d(divisor);
  const double sum_abs = max_abs_sum(va, vb);
  const double s_add = add_scale(sa, sb, scalify::pow2_mode::down);
  const double s_max = std::max(sa, sb);

  check_result<T>(evaluate(a + b), s_add, va + vb, 0.0, 4 * kU32 * sum_abs,
                  describe("add", f, rows, cols, sa, sb));
  check_result<T>(evaluate(scalify::add(a, b)), s_add, va + vb, 0.0, 4 * kU32 * sum_abs,
                  describe("add()", f, rows, cols, sa, sb));
  check_result<T>(evaluate(a - b), s_add, va - vb, 0.0, 4 * kU32 * sum_abs,
                  describe("sub", f, rows, cols, sa, sb));
  check_result<T>(evaluate(scalify::sub(a, b)), s_add, va - vb, 0.0, 4 * kU32 * sum_abs,
                  describe("sub()", f, rows, cols, sa, sb));
  const double s_mul = static_cast<float>(sa * sb);
  check_result<T>(evaluate(a * b), s_mul, va.cwiseProduct(vb), 4 * kU32, 0.0,
                  describe("mul", f, rows, cols, sa, sb));
  check_result<T>(evaluate(scalify::mul(a, b)), s_mul, va.cwiseProduct(vb), 4 * kU32, 0.0,
                  describe("mul()", f, rows, cols, sa, sb));
  // Divisor data is away from 0; a zero divisor scale gives scale inf (or NaN) and
  // plain-math values (+-inf, NaN): inf values come from the scale, not the data.
  const double s_div = static_cast<float>(sa / divisor.scale());
  const Eigen::MatrixXd quotient = va.cwiseQuotient(vd);
  check_result<T>(evaluate(a / divisor), s_div, quotient, 4 * kU32, 0.0,
                  describe("div", f, rows, cols, sa, divisor.scale()), /*data_inf=*/false);
  check_result<T>(evaluate(scalify::div(a, divisor)), s_div, quotient, 4 * kU32, 0.0,
                  describe("div()", f, rows, cols, sa, divisor.scale()), false);
  check_result<T>(evaluate(scalify::max(a, b)), s_max, max_ref(va, vb), 2 * kU32, 0.0,
                  describe("max", f, rows, cols, sa, sb));
  check_result<T>(evaluate(scalify::min(a, b)), s_max, min_ref(va, vb), 2 * kU32, 0.0,
                  describe("min", f, rows, cols, sa, sb));
  const auto mask = random_mask(rows, cols, seed);
  const Eigen::MatrixXd chosen = mask.select(va.array(), vb.array()).matrix();
  check_result<T>(evaluate(scalify::where(mask, a, b)), s_max, chosen, 2 * kU32, 0.0,
                  describe("where", f, rows, cols, sa, sb));
  check_result<T>(evaluate(scalify::select(mask, a, b)), s_max, chosen, 2 * kU32, 0.0,
                  describe("select", f, rows, cols, sa, sb));
}

}  // namespace

// ------------------------------------------------------------------------------
// Binary arithmetic

TEMPLATE_TEST_CASE(
    "add, sub, mul, div, min, max, where: values and scale rules over scales and shapes",
    "[ops][elementwise]", float, float16, bfloat16, float8_e4m3fn, float8_e5m2) {
  uint32_t seed = 100;
  for (const auto& [rows, cols] : kShapes) {
    for (const float sa : kScales) {
      for (const float sb : kScales) {
        const auto a = scalify_test::random_scaled<TestType>(rows, cols, sa, seed++);
        const auto b = scalify_test::random_scaled<TestType>(rows, cols, sb, seed++);
        const auto d = nonzero_input<TestType>(rows, cols, sb, seed++);
        check_binary_ops(a, b, d, seed++);
      }
    }
  }
}

TEMPLATE_TEST_CASE("binary ops propagate NaN and inf in the data like plain math",
                   "[ops][elementwise]", float, float16, bfloat16, float8_e4m3fn, float8_e5m2) {
  uint32_t seed = 200;
  for (const auto& [sa, sb] : {std::pair<float, float>{1.0f, 1.0f},
                               {0.375f, 3.0f},
                               {0x1p19f, 0x1p-20f},
                               {0.0f, 2.0f},
                               {0.0f, 0.0f}}) {
    auto a = scalify_test::random_scaled<TestType>(7, 9, sa, seed++);
    auto b = scalify_test::random_scaled<TestType>(7, 9, sb, seed++);
    poison(a, seed++);
    poison(b, seed++);
    // A divisor with zero data would make inf data, which e4m3fn cannot store: keep it poison-free
    // except for NaN and inf (data zeros are tested with plain scales above).
    auto d = nonzero_input<TestType>(7, 9, sb, seed++);
    d.data()(0, 0) = TestType(std::numeric_limits<float>::quiet_NaN());
    d.data()(1, 1) = TestType(std::numeric_limits<float>::infinity());
    check_binary_ops(a, b, d, seed++);
  }
}

TEST_CASE("add/sub scale: the reference's examples", "[ops][elementwise]") {
  // jax-scalify test_scaled_ops_l2: [-1, 2]*4 +- [1.5, 4.5]*2 -> scale 4 (4*sqrt(1.25) rounded
  // down).
  RowMatrix<float> da(1, 2), db(1, 2);
  da << -1.0f, 2.0f;
  db << 1.5f, 4.5f;
  const ScaledMatrix<float16> a(da.cast<float16>(), 4.0f), b(db.cast<float16>(), 2.0f);
  const ScaledMatrix<float16> sum = a + b, diff = a - b;
  CHECK(sum.scale() == 4.0f);
  CHECK(diff.scale() == 4.0f);
  CHECK(sum.to_dense()(0, 0) == -1.0f);  // -4 + 3
  CHECK(sum.to_dense()(0, 1) == 17.0f);  // 8 + 9
  CHECK(diff.to_dense()(0, 1) == -1.0f);
  // mul [-2, 2]*3 x [1.5, 1.5]*2 -> scale 6; div -> scale 1.5 (not rounded).
  RowMatrix<float> dc(1, 2), dd(1, 2);
  dc << -2.0f, 2.0f;
  dd << 1.5f, 1.5f;
  const ScaledMatrix<float> c(dc, 3.0f), d(dd, 2.0f);
  CHECK((c * d).scale() == 6.0f);
  CHECK((c / d).scale() == 1.5f);
  // Scales 2 and 1024 stay finite and exact (the ratio form of the rule).
  const ScaledMatrix<float> e(dc, 2.0f), g(dd, 1024.0f);
  CHECK((e + g).scale() == 1024.0f);
  // Huge scales do not overflow: max * sqrt(1 + r^2), not sqrt(sa^2 + sb^2).
  const ScaledMatrix<float> h(dc, 0x1p120f), k(dd, 0x1p120f);
  CHECK((h + k).scale() == 0x1p120f);
}

TEST_CASE("add/sub follow the scope's pow2 rounding mode, decided when the op is called",
          "[ops][elementwise]") {
  using scalify::pow2_mode;
  uint32_t seed = 300;
  for (const auto& [sa, sb] : {std::pair<float, float>{4.0f, 2.0f},
                               {2.0f, 2.0f},
                               {3.0f, 0.375f},
                               {0x1p19f, 0x1p-20f},
                               {4.0f, 0.0f},
                               {0.0f, 0.0f},
                               {0.375f, 0.375f}}) {
    const auto a = scalify_test::random_scaled<float>(3, 5, sa, seed++);
    const auto b = scalify_test::random_scaled<float>(3, 5, sb, seed++);
    for (const pow2_mode mode : {pow2_mode::down, pow2_mode::up, pow2_mode::none}) {
      INFO("scales " << sa << ", " << sb << ", mode " << static_cast<int>(mode));
      const double expected = add_scale(sa, sb, mode);
      auto sum = [&] {
        scalify::config_scope scope({.rounding = mode});
        return a + b;  // the scale is computed here, inside the scope
      }();
      const auto diff = [&] {
        scalify::config_scope scope({.rounding = mode});
        return scalify::sub(a, b);
      }();
      if (mode == pow2_mode::none) {
        // Not a power of two: the float computation is within an ulp or so of the exact value.
        CHECK(std::fabs(sum.scale() - expected) <= 2 * kU32 * expected);
        CHECK(std::fabs(diff.scale() - expected) <= 2 * kU32 * expected);
      } else {
        CHECK(sum.scale() == expected);
        CHECK(diff.scale() == expected);
      }
      // Assigned outside the scope: the scale was fixed eagerly, the data is evaluated now.
      const ScaledMatrix<float> s = sum, d = diff;
      CHECK(s.scale() == sum.scale());
      const double err = 4 * kU32 * max_abs_sum(values_d(a), values_d(b));
      scalify_test::check_close(values_d(s), values_d(a) + values_d(b), 0.0, err, "sum");
      scalify_test::check_close(values_d(d), values_d(a) - values_d(b), 0.0, err, "difference");
    }
  }
}

TEST_CASE("add under stochastic pow2 rounding picks down or up, reproducibly per seed",
          "[ops][elementwise]") {
  const auto a = scalify_test::random_scaled<float>(2, 3, 3.0f, 1);
  const auto b = scalify_test::random_scaled<float>(2, 3, 0.375f, 2);
  std::vector<float> first, second;
  for (int run = 0; run < 2; ++run) {
    scalify::config_scope scope({.rounding = scalify::pow2_mode::stochastic, .seed = 7});
    for (int i = 0; i < 64; ++i) (run == 0 ? first : second).push_back((a + b).scale());
  }
  CHECK(first == second);
  int ups = 0;
  for (const float s : first) {
    CHECK((s == 2.0f || s == 4.0f));  // 3.023 rounds to 2 or 4
    ups += s == 4.0f;
  }
  CHECK(ups > 0);  // P(up) = 0.51: all 64 equal would be a broken generator
  CHECK(ups < 64);
}

// ------------------------------------------------------------------------------
// Unary ops

TEMPLATE_TEST_CASE("neg, abs, sign, sqrt, pow, scalar * and /: values and scale rules",
                   "[ops][elementwise]", float, float16, bfloat16, float8_e4m3fn, float8_e5m2) {
  const std::string f = format_name<TestType>();
  uint32_t seed = 400;
  for (const auto& [rows, cols] : kShapes) {
    for (const float s : kScales) {
      const auto x = scalify_test::random_scaled<TestType>(rows, cols, s, seed++);
      const Eigen::MatrixXd v = values_d(x);
      const auto name = [&, r = rows, c = cols](const char* op) {
        return describe(op, f, r, c, s, s);
      };

      check_result<TestType>(evaluate(-x), s, -v, 0.0, 0.0, name("-x"));
      check_result<TestType>(evaluate(scalify::neg(x)), s, -v, 0.0, 0.0, name("neg"));
      check_result<TestType>(evaluate(scalify::abs(x)), s, v.cwiseAbs(), 0.0, 0.0, name("abs"));
      // sign of the values: 0 for a zero scale (not sign(data)), scale 1.
      check_result<TestType>(evaluate(scalify::sign(x)), 1.0, sign_ref(v), 0.0, 0.0, name("sign"));
      // sqrt: scale sqrt(s) (correctly rounded float), negative data NaN; zero scale gives zeros.
      check_result<TestType>(evaluate(scalify::sqrt(x)), static_cast<float>(std::sqrt(double(s))),
                             v.cwiseSqrt(), 2 * kU32, 0.0, name("sqrt"));

      const auto y = nonzero_input<TestType>(rows, cols, s, seed++);
      const Eigen::MatrixXd w = values_d(y);
      for (const int n : {-2, -1, 0, 1, 2, 3}) {
        // Scale s^n rounded once to float (0^-n = inf, s^0 = 1); data d^n.
        const double expected_scale = static_cast<float>(std::pow(static_cast<long double>(s), n));
        const Eigen::MatrixXd expected = pow_ref(w, n);
        check_result<TestType>(evaluate(scalify::pow(y, n)), expected_scale, expected,
                               (std::abs(n) + 2) * kU32, 0.0,
                               name(("pow " + std::to_string(n)).c_str()), /*data_inf=*/false);
      }

      // c * x: scale s * pow2_down(|c|), data d * mantissa(c).
      for (const float c : {6.0f, 0.3f, -3.0f, 1.0f, -0.375f, 0.0f}) {
        const double sc = static_cast<float>(double(s) * pow2_down(std::fabs(double(c))));
        const Eigen::MatrixXd expected = v * double(c);
        check_result<TestType>(evaluate(c * x), sc, expected, 2 * kU32, 0.0,
                               name(("c * x, c = " + std::to_string(c)).c_str()));
        check_result<TestType>(evaluate(x * c), sc, expected, 2 * kU32, 0.0,
                               name(("x * c, c = " + std::to_string(c)).c_str()));
      }
      // x / c: scale s / pow2_down(|c|), data d / mantissa(c); c = 0 gives inf data.
      for (const float c : {6.0f, 0.3f, -3.0f, 1.0f, 0.0f}) {
        const double sc = static_cast<float>(double(s) / pow2_down(std::fabs(double(c))));
        check_result<TestType>(evaluate(x / c), sc, v / double(c), 2 * kU32, 0.0,
                               name(("x / c, c = " + std::to_string(c)).c_str()),
                               /*data_inf=*/true);
      }
    }
  }
}

TEMPLATE_TEST_CASE("exp, log, sin, cos work on values: output scale 1", "[ops][elementwise]", float,
                   float16, bfloat16, float8_e4m3fn, float8_e5m2) {
  const std::string f = format_name<TestType>();
  uint32_t seed = 500;
  for (const auto& [rows, cols] : kShapes) {
    for (const float s : kScales) {
      const auto name = [&, r = rows, c = cols](const char* op) {
        return describe(op, f, r, c, s, s);
      };
      // Values about N(0, 1) whatever the scale, so exp fits every format (e^4.5 < 448).
      const auto x = value_input<TestType>(rows, cols, s, seed++, 1.0f);
      const Eigen::MatrixXd v = values_d(x);
      // The value d*s is formed in float: exact except for float data with a scale that is
      // not a power of two (one rounding, |v| * 2^-24).
      const double arg = kU32 * max_abs(v);
      check_result<TestType>(evaluate(scalify::exp(x)), 1.0, v.array().exp().matrix(),
                             8 * kU32 + 2 * arg, 0.0, name("exp"));
      check_result<TestType>(evaluate(scalify::log(x)), 1.0, v.array().log().matrix(), 8 * kU32,
                             4 * kU32, name("log"));
      const auto z = value_input<TestType>(rows, cols, s, seed++, 3.0f);
      const Eigen::MatrixXd u = values_d(z);
      const double arg3 = kU32 * max_abs(u);
      check_result<TestType>(evaluate(scalify::sin(z)), 1.0, u.array().sin().matrix(), 4 * kU32,
                             4 * kU32 + arg3, name("sin"));
      check_result<TestType>(evaluate(scalify::cos(z)), 1.0, u.array().cos().matrix(), 4 * kU32,
                             4 * kU32 + arg3, name("cos"));
    }
  }
}

TEMPLATE_TEST_CASE("unary ops propagate NaN and inf in the data like plain math",
                   "[ops][elementwise]", float, float16, bfloat16, float8_e4m3fn, float8_e5m2) {
  const std::string f = format_name<TestType>();
  uint32_t seed = 600;
  for (const float s : {1.0f, 0.375f, 0.0f, 0x1p19f}) {
    auto x = value_input<TestType>(6, 7, s, seed++, 1.0f);
    poison(x, seed++);
    const Eigen::MatrixXd v = values_d(x);
    const auto name = [&](const char* op) { return describe(op, f, 6, 7, s, s); };
    check_result<TestType>(evaluate(-x), s, -v, 0.0, 0.0, name("neg"));
    check_result<TestType>(evaluate(scalify::abs(x)), s, v.cwiseAbs(), 0.0, 0.0, name("abs"));
    check_result<TestType>(evaluate(scalify::sign(x)), 1.0, sign_ref(v), 0.0, 0.0, name("sign"));
    check_result<TestType>(evaluate(scalify::sqrt(x)), static_cast<float>(std::sqrt(double(s))),
                           v.cwiseSqrt(), 2 * kU32, 0.0, name("sqrt"));
    check_result<TestType>(evaluate(scalify::exp(x)), 1.0, v.array().exp().matrix(), 8 * kU32, 0.0,
                           name("exp"));
    check_result<TestType>(evaluate(scalify::log(x)), 1.0, v.array().log().matrix(), 8 * kU32,
                           4 * kU32, name("log"));
    check_result<TestType>(evaluate(scalify::sin(x)), 1.0, v.array().sin().matrix(), 4 * kU32,
                           4 * kU32, name("sin"));
    check_result<TestType>(evaluate(scalify::cos(x)), 1.0, v.array().cos().matrix(), 4 * kU32,
                           4 * kU32, name("cos"));
    check_result<TestType>(evaluate(scalify::pow(x, 2)), static_cast<float>(double(s) * s),
                           v.cwiseProduct(v), 3 * kU32, 0.0, name("pow 2"));
    check_result<TestType>(evaluate(scalify::pow(x, 0)), 1.0, Eigen::MatrixXd::Ones(6, 7), 0.0, 0.0,
                           name("pow 0"));
    check_result<TestType>(evaluate(x * 6.0f), s * 4.0, v * 6.0, 2 * kU32, 0.0, name("x * 6"));
  }
}

TEMPLATE_TEST_CASE("exp and log of small data with a large scale: no overflow, no 0 * inf",
                   "[ops][elementwise]", float, float16, bfloat16, float8_e5m2, float8_e4m3fn) {
  // [0, -32768] * 2^19 = [0, -2^34] (e4m3fn holds at most 448: [0, -448] * 2^19).
  const float big = std::is_same_v<TestType, float8_e4m3fn> ? 448.0f : 32768.0f;
  RowMatrix<float> d(1, 4);
  d << 0.0f, -big, big, 1.0f;
  const ScaledMatrix<TestType> x(to_data<TestType>(d), 0x1p19f);
  const ScaledMatrix<TestType> e = scalify::exp(x);
  CHECK(e.scale() == 1.0f);
  CHECK(e.to_dense()(0, 0) == 1.0f);
  CHECK(e.to_dense()(0, 1) == 0.0f);
  const ScaledMatrix<float> l = evaluate(scalify::log(x));
  CHECK(l.scale() == 1.0f);
  const Eigen::MatrixXf lv = l.to_dense();
  CHECK(lv(0, 0) == -std::numeric_limits<float>::infinity());  // log(0 * 2^19) = -inf
  CHECK(std::isnan(lv(0, 1)));                                 // log of a negative value
  CHECK(lv(0, 2) ==
        Approx(std::log(double(big)) + 19 * std::log(2.0)).epsilon(1e-6));  // 34 ln 2 for 32768
  CHECK(lv(0, 3) == Approx(19 * std::log(2.0)).epsilon(1e-6));
  // In the storage format too (e4m3fn has no -inf: NaN).
  const ScaledMatrix<TestType> ls = evaluate(scalify::log(x));
  const Eigen::MatrixXf lsv = ls.to_dense();
  if constexpr (std::numeric_limits<TestType>::has_infinity) {
    CHECK(lsv(0, 0) == -std::numeric_limits<float>::infinity());
  } else {
    CHECK(std::isnan(lsv(0, 0)));
  }
  // sin/cos/comparisons see the true values too.
  const ScaledMatrix<float> sn = evaluate(scalify::sin(x));
  CHECK(sn.to_dense()(0, 3) == Approx(std::sin(0x1p19)).margin(1e-6));
  CHECK(scalify::is_finite(x).all());
}

TEST_CASE("zero scales give the plain result, no NaN where plain math has none",
          "[ops][elementwise]") {
  RowMatrix<float> d(1, 4);
  d << -2.0f, 0.0f, 1.5f, -0.5f;
  const ScaledMatrix<float8_e4m3fn> z(to_data<float8_e4m3fn>(d), 0.0f);
  const ScaledMatrix<float8_e4m3fn> one(to_data<float8_e4m3fn>(d), 1.0f);
  const auto all_zero = [](const ScaledMatrix<float>& x) {
    return (x.to_dense().array() == 0.0f).all();
  };
  CHECK(all_zero(evaluate(scalify::sign(z))));  // the reference gives sign(data) with scale 1
  CHECK(all_zero(evaluate(scalify::sqrt(z))));  // the reference gives NaN for negative data
  CHECK(all_zero(evaluate(scalify::where(d.array() > 0, z, z))));  // the reference divides 0 / 0
  CHECK(all_zero(evaluate(z + z)));
  CHECK(all_zero(evaluate(z - z)));
  CHECK(all_zero(evaluate(z * one)));
  CHECK(all_zero(evaluate(scalify::max(z, z))));
  CHECK(all_zero(evaluate(scalify::min(z, z))));
  CHECK(all_zero(evaluate(0.0f * one)));
  CHECK((z + z).scale() == 0.0f);
  CHECK((z + one).scale() == 1.0f);
  CHECK((scalify::log(z).to_dense().array() == -std::numeric_limits<float>::infinity()).all());
  CHECK((scalify::exp(z).to_dense().array() == 1.0f).all());
  CHECK((scalify::cos(z).to_dense().array() == 1.0f).all());
  CHECK(scalify::eq(z, 0.0f * one).all());
  // Division by a zero scale is plain division by zero: +-inf, NaN for 0 / 0.
  const ScaledMatrix<float8_e4m3fn> zero_ones(
      RowMatrix<float8_e4m3fn>::Constant(1, 4, float8_e4m3fn(1.0f)), 0.0f);
  const Eigen::MatrixXf q = (one / zero_ones).to_dense();
  CHECK((one / zero_ones).scale() == std::numeric_limits<float>::infinity());
  CHECK(q(0, 0) == -std::numeric_limits<float>::infinity());
  CHECK(std::isnan(q(0, 1)));
  CHECK(q(0, 2) == std::numeric_limits<float>::infinity());
  CHECK(std::isnan((z / zero_ones).scale()));  // 0 / 0
  CHECK((z / zero_ones).to_dense().array().isNaN().all());
}

// ------------------------------------------------------------------------------
// Comparisons and is_finite

TEMPLATE_TEST_CASE("eq, ne, lt, le, gt, ge compare values; is_finite", "[ops][elementwise]", float,
                   float16, bfloat16, float8_e4m3fn, float8_e5m2) {
  using Mask = Eigen::Array<bool, Eigen::Dynamic, Eigen::Dynamic>;
  uint32_t seed = 700;
  for (const auto& [rows, cols] : kShapes) {
    for (const auto& [sa, sb] : {std::pair<float, float>{1.0f, 1.0f},
                                 {2.0f, 4.0f},
                                 {0.375f, 3.0f},
                                 {0x1p19f, 0x1p-20f},
                                 {0.0f, 1.0f},
                                 {0.0f, 0.0f}}) {
      INFO(format_name<TestType>()
           << " (" << rows << " x " << cols << ") scales " << sa << ", " << sb);
      auto a = scalify_test::random_scaled<TestType>(rows, cols, sa, seed++);
      // b: a's values (some equal after rebasing) and random ones.
      auto b = scalify_test::random_scaled<TestType>(rows, cols, sb, seed++);
      if (sa == sb) {
        for (Eigen::Index i = 0; i < a.size(); i += 2) b.data().data()[i] = a.data().data()[i];
      }
      if (rows * cols > 4) {
        poison(a, seed++);
        poison(b, seed++);
      }
      const Eigen::ArrayXXd va = values_d(a).array(), vb = values_d(b).array();
      const Mask eq = evaluate_mask(scalify::eq(a, b)), ne = evaluate_mask(scalify::ne(a, b)),
                 lt = evaluate_mask(scalify::lt(a, b)), le = evaluate_mask(scalify::le(a, b)),
                 gt = evaluate_mask(scalify::gt(a, b)), ge = evaluate_mask(scalify::ge(a, b));
      CHECK((eq == (va == vb)).all());
      CHECK((ne == (va != vb)).all());
      CHECK((lt == (va < vb)).all());
      CHECK((le == (va <= vb)).all());
      CHECK((gt == (va > vb)).all());
      CHECK((ge == (va >= vb)).all());
      // is_finite: isfinite(d) && isfinite(s); a zero scale with inf data is NaN, not finite.
      const Mask fin = evaluate_mask(scalify::is_finite(a));
      CHECK((fin == va.isFinite()).all());
    }
  }
}

TEST_CASE("comparisons are exact in double; is_finite never forms d*s", "[ops][elementwise]") {
  // Equal values from different data and scales.
  RowMatrix<float> one(1, 1), almost(1, 1);
  one << 1.0f;
  almost << 1.0f + 0x1p-23f;
  const ScaledMatrix<float> a(one, 1.0f + 0x1p-23f), b(almost, 1.0f);
  CHECK(scalify::eq(a, b).all());  // both exactly 1 + 2^-23
  // (1 + 2^-23)^2 = 1 + 2^-22 + 2^-46 rounds to 1 + 2^-22 in float, but not in double.
  RowMatrix<float> next(1, 1);
  next << 1.0f + 0x1p-22f;
  const ScaledMatrix<float> c(almost, 1.0f + 0x1p-23f), d(next, 1.0f);
  CHECK(scalify::gt(c, d).all());
  CHECK(scalify::ne(c, d).all());
  CHECK(!scalify::eq(c, d).any());
  CHECK(!scalify::le(c, d).any());
  // Finite float data with a scale near FLT_MAX: d*s overflows float but is finite in double.
  RowMatrix<float> big(1, 1);
  big << 1e30f;
  const ScaledMatrix<float> e(big, 1e30f);
  CHECK(scalify::is_finite(e).all());
  const ScaledMatrix<float> nan_scale = e / scalify::make_scaled(big, 0.0f) * 0.0f;  // scale inf * 0 = NaN
  REQUIRE(std::isnan(nan_scale.scale()));
  CHECK(!scalify::is_finite(nan_scale).any());
}

// ------------------------------------------------------------------------------
// Errors

TEST_CASE("binary ops and where throw shape_error naming the op and both shapes",
          "[ops][elementwise]") {
  using Catch::Matchers::Contains;
  const auto a = scalify_test::random_scaled<float16>(2, 3, 1.0f, 1);
  const auto b = scalify_test::random_scaled<float16>(3, 2, 1.0f, 2);
  const auto check = [](const char* op, auto&& call) {
    INFO(op);
    try {
      call();
      FAIL("no exception");
    } catch (const scalify::shape_error& e) {
      const std::string what = e.what();
      CHECK_THAT(what, Contains(std::string("scalify::") + op));
      CHECK_THAT(what, Contains("(2 x 3)"));
      CHECK_THAT(what, Contains("(3 x 2)"));
    }
  };
  check("add", [&] { (void)(a + b); });
  check("add", [&] { (void)scalify::add(a, b); });
  check("sub", [&] { (void)(a - b); });
  check("sub", [&] { (void)scalify::sub(a, b); });
  check("mul", [&] { (void)(a * b); });
  check("mul", [&] { (void)scalify::mul(a, b); });
  check("div", [&] { (void)(a / b); });
  check("div", [&] { (void)scalify::div(a, b); });
  check("min", [&] { (void)scalify::min(a, b); });
  check("max", [&] { (void)scalify::max(a, b); });
  check("eq", [&] { (void)scalify::eq(a, b); });
  check("ne", [&] { (void)scalify::ne(a, b); });
  check("lt", [&] { (void)scalify::lt(a, b); });
  check("le", [&] { (void)scalify::le(a, b); });
  check("gt", [&] { (void)scalify::gt(a, b); });
  check("ge", [&] { (void)scalify::ge(a, b); });
  const Eigen::Array<bool, Eigen::Dynamic, Eigen::Dynamic> mask23 = random_mask(2, 3, 1),
                                                           mask32 = random_mask(3, 2, 1);
  check("where", [&] { (void)scalify::where(mask23, a, b); });
  check("where", [&] { (void)scalify::select(mask23, a, b); });
  check("where",
        [&] { (void)scalify::where(mask32, a, a); });  // condition (3 x 2), operands (2 x 3)
  // Fused expressions check every op.
  check("add", [&] { (void)(a * a + b); });
  // No error for equal shapes.
  CHECK_NOTHROW(scalify::where(mask23, a, a));
}

// ------------------------------------------------------------------------------
// Types: mixed scales, every storage format, composition, single evaluation

TEST_CASE("mixed scale types: double wins, E8M0 computes in float", "[ops][elementwise]") {
  const auto a = scalify_test::random_scaled<float8_e4m3fn, double>(4, 5, 0.375, 1);
  const auto b = scalify_test::random_scaled<float, float>(4, 5, 3.0f, 2);
  const auto c =
      scalify_test::random_scaled<float16, float8_e8m0fnu>(4, 5, float8_e8m0fnu(0x1p-3f), 3);
  const Eigen::MatrixXd va = values_d(a), vb = values_d(b), vc = values_d(c);
  const double tol = 8 * kU32 * (max_abs(va) + max_abs(vb) + max_abs(vc));

  const auto ab = a + b;
  STATIC_REQUIRE(std::is_same_v<decltype(ab.scale()), double>);
  CHECK(ab.scale() == 2.0);  // pow2_down(3 * sqrt(1 + 1/64))
  scalify_test::check_close(values_d(ab), va + vb, 0.0, tol, "double + float");

  const auto bc = b * c;
  STATIC_REQUIRE(std::is_same_v<decltype(bc.scale()), float>);
  CHECK(bc.scale() == 0.375f);
  scalify_test::check_close(values_d(bc), vb.cwiseProduct(vc), 4 * kU32, 0.0, "float * e8m0");

  const auto ca = scalify::max(c, a);
  STATIC_REQUIRE(std::is_same_v<decltype(ca.scale()), double>);
  CHECK(ca.scale() == 0.375);
  scalify_test::check_close(values_d(ca), max_ref(va, vc), 2 * kU32, 0.0, "max(e8m0, double)");

  const auto e = scalify::exp(c);
  STATIC_REQUIRE(std::is_same_v<decltype(e.scale()), float>);
  const auto l = scalify::log(a);  // value formed in double
  STATIC_REQUIRE(std::is_same_v<decltype(l.scale()), double>);
  scalify_test::check_close(values_d(l), va.array().log().matrix(), 4 * kU32, 4 * kU32,
                            "log with a double scale");
  STATIC_REQUIRE(std::is_same_v<decltype((2.0f * c).scale()), float>);
  STATIC_REQUIRE(std::is_same_v<decltype(scalify::sqrt(a).scale()), double>);

  // Stored with an E8M0 scale: a scale that is not a power of two is rounded and the data rebased.
  const ScaledMatrix<float8_e5m2, float8_e8m0fnu> stored = a * b;  // scale 1.125
  scalify_test::check_close(values_d(stored), va.cwiseProduct(vb),
                            2 * scalify_test::unit_roundoff<float8_e5m2>(), 0.0,
                            "stored with an E8M0 scale");
}

TEMPLATE_TEST_CASE("fused expressions store into every format, double included",
                   "[ops][elementwise]", float, double, float16, bfloat16, float8_e4m3fn,
                   float8_e5m2) {
  // 130 x 70 = 9100 elements: more than one chunk of the narrow stores.
  for (const auto& [rows, cols] : {std::pair<int, int>{130, 70}, {1, 1}, {3, 1}}) {
    const auto x = scalify_test::random_scaled<float8_e4m3fn>(rows, cols, 0.5f, 1);
    const auto y = scalify_test::random_scaled<float16>(rows, cols, 3.0f, 2);
    const auto w = scalify_test::random_scaled<bfloat16, double>(rows, cols, 0x1p-3, 3);
    const Eigen::MatrixXd vx = values_d(x), vy = values_d(y), vw = values_d(w);
    const ScaledMatrix<TestType> z = x * y + w;
    // x*y: scale 1.5; + w: pow2_down(1.5 * sqrt(1 + (0.125/1.5)^2)) = 1.
    CHECK(z.scale() == 1.0f);
    const Eigen::MatrixXd expected = vx.cwiseProduct(vy) + vw;
    const double u =
        std::is_same_v<TestType, double> ? 0.0 : scalify_test::unit_roundoff<TestType>();
    scalify_test::check_close(
        values_d(z), expected, u,
        8 * kU32 * max_abs_sum(vx.cwiseProduct(vy), vw) + denorm_min<TestType>(),
        format_name<TestType>() + " x * y + w");
    // Longer chains through temporaries, assigned later (expressions nest by value).
    const auto lazy = scalify::where(scalify::gt(x, y), -x, scalify::abs(y) / 2.0f) * 3.0f -
                      scalify::sqrt(scalify::abs(x));
    const ScaledMatrix<TestType> chain = lazy;
    const Eigen::MatrixXd ax = vx.cwiseAbs(), ay = vy.cwiseAbs();
    Eigen::MatrixXd expected_chain(rows, cols);
    for (Eigen::Index i = 0; i < vx.size(); ++i) {
      const double pick = vx(i) > vy(i) ? -vx(i) : ay(i) / 2.0;
      expected_chain(i) = pick * 3.0 - std::sqrt(ax(i));
    }
    scalify_test::check_close(values_d(chain), expected_chain, u + 8 * kU32,
                              16 * kU32 * (max_abs(vx) + max_abs(vy)) + 4 * denorm_min<TestType>(),
                              format_name<TestType>() + " chain");
  }
}

namespace {

/// Direct and via-float stores agree bit for bit (codes and scale).
void check_same_codes(const ScaledMatrix<float8_e4m3fn>& direct,
                      const ScaledMatrix<float8_e4m3fn>& via, const char* op) {
  INFO(op);
  CHECK(same_scale(direct.scale(), via.scale()));
  REQUIRE(direct.size() == via.size());
  int differ = 0;
  for (Eigen::Index i = 0; i < direct.size(); ++i)
    differ += direct.data().data()[i].bits() != via.data().data()[i].bits();
  CHECK(differ == 0);
}

/// The float storage assignment and evaluate() give the same floats (NaN matching NaN).
void check_same_floats(const ScaledMatrix<float>& assigned, const ScaledMatrix<float>& read,
                       const char* op) {
  INFO(op);
  CHECK(same_scale(assigned.scale(), read.scale()));
  REQUIRE(assigned.size() == read.size());
  int differ = 0;
  for (Eigen::Index i = 0; i < read.size(); ++i) {
    const float p = assigned.data().data()[i], q = read.data().data()[i];
    differ += !(p == q || (std::isnan(p) && std::isnan(q)));
  }
  CHECK(differ == 0);
}

template <class Lazy>
void check_direct_store(const Lazy& lazy, const char* op) {
  const ScaledMatrix<float8_e4m3fn> direct = lazy;
  const ScaledMatrix<float> wide = lazy;
  check_same_codes(direct, ScaledMatrix<float8_e4m3fn>(wide), op);
  check_same_floats(wide, evaluate(lazy), op);
}

}  // namespace

TEST_CASE("ops store directly into a narrow format exactly as through float storage",
          "[ops][elementwise]") {
  // 97 x 89 = 8633 elements: more than one chunk of the narrow store.
  // float inputs: Eigen vectorizes what it can (narrow inputs are widened element by element).
  auto a = scalify_test::random_scaled<float>(97, 89, 0.375f, 1);
  auto b = scalify_test::random_scaled<float>(97, 89, 3.0f, 2);
  poison(a, 3);
  const auto mask = random_mask(97, 89, 4);
  // One op of each kind of expression: Eigen binary op, custom binary functor, select,
  // value-space function, custom unary functor, scalar operand. With float inputs the storage
  // assignment vectorizes what Eigen can, evaluate() reads coefficients: they must agree,
  // special values (poison) included.
  check_direct_store(a + b, "add");
  check_direct_store(scalify::max(a, b), "max");
  check_direct_store(scalify::where(mask, a, b), "where");
  check_direct_store(scalify::exp(a), "exp");
  check_direct_store(scalify::sqrt(a), "sqrt");
  check_direct_store(a / 6.0f, "x / c");
}

namespace {

/// An Eigen functor that counts its calls (the data of a lazy leaf).
struct counting_identity {
  long* calls;
  float operator()(float v) const {
    ++*calls;
    return v;
  }
};

}  // namespace

TEMPLATE_TEST_CASE("a fused expression evaluates each data element once, on assignment",
                   "[ops][elementwise]", float, float8_e4m3fn) {
  const int rows = 37, cols = 300;  // 11100 elements: two chunks of the narrow store
  long calls = 0;
  const RowMatrix<float> raw = scalify_test::random_data<float>(rows, cols, 1);
  const auto counted = raw.unaryExpr(counting_identity{&calls});
  // A lazy leaf: its data is an Eigen expression that counts the coefficients it produces.
  const ScaledArray<std::remove_const_t<decltype(counted)>, float> x(counted, 0.25f);
  const auto y = scalify_test::random_scaled<float8_e5m2>(rows, cols, 2.0f, 2);
  const auto w = scalify_test::random_scaled<float16>(rows, cols, 1.0f, 3);

  const auto lazy = x * y + w;
  CHECK(calls == 0);  // nothing evaluated yet: only the scales
  const ScaledMatrix<TestType> z = lazy;
  CHECK(calls == rows * cols);
  const Eigen::MatrixXd expected =
      (raw.cast<double>() * 0.25).cwiseProduct(values_d(y)) + values_d(w);
  CHECK(z.scale() == 1.0f);  // x*y has scale 0.5: pow2_down(1 * sqrt(1 + 0.5^2)) = 1
  scalify_test::check_close(values_d(z), expected, scalify_test::unit_roundoff<TestType>(),
                            8 * kU32 * max_abs(expected) + denorm_min<TestType>(), "x * y + w");

  calls = 0;
  const ScaledMatrix<TestType> e = scalify::exp(x) - scalify::where(scalify::lt(y, w), y, w) * 2.0f;
  CHECK(calls == rows * cols);
}

// ---------------------------------------------------------------------------
// Values beyond float's range (issue 16): nothing is lost silently.

TEMPLATE_TEST_CASE("log of values beyond float's range stays finite: log(d) + log(s)",
                   "[ops][elementwise]", float, float16, bfloat16, float8_e5m2, float8_e4m3fn) {
  // d * 2^127 overflows float for |d| >= 2; d * 2^-149 underflows it for |d| < 0.5.
  RowMatrix<float> d(1, 5);
  d << 2.0f, 1.5f, -3.0f, 0.0f, 0.25f;
  const RowMatrix<TestType> data = to_data<TestType>(d);
  for (double scale : {0x1p127, 0x1p-149, 1.0}) {
    INFO("scale " << scale);
    const ScaledMatrix<TestType> x(data, static_cast<float>(scale));
    const ScaledMatrix<float> l = evaluate(scalify::log(x));
    CHECK(l.scale() == 1.0f);
    for (int j = 0; j < 5; ++j) {
      // Reference in double from the exact value's parts: log|d| + log s.
      const double dj = static_cast<double>(static_cast<float>(data(0, j)));
      const double expected = dj > 0 ? std::log(dj) + std::log(scale) : dj == 0 ? -HUGE_VAL : kNaN;
      const double actual = l.data()(0, j);
      INFO("d = " << dj);
      if (std::isnan(expected)) {
        CHECK(std::isnan(actual));
      } else if (std::isinf(expected)) {
        CHECK(actual == expected);
      } else {
        CHECK(actual == Approx(expected).epsilon(2 * kU32));
      }
    }
  }
  // A zero scale is plain log of the zero values, whatever the sign of d: -inf.
  const ScaledMatrix<TestType> z(data, 0.0f);
  const Eigen::MatrixXf lz = evaluate(scalify::log(z)).to_dense();
  CHECK(lz(0, 2) == -std::numeric_limits<float>::infinity());
}

TEST_CASE("log with a double scale: values beyond double's range too", "[ops][elementwise]") {
  RowMatrix<float> d(1, 3);
  d << 1e10f, 0.5f, 1e-30f;
  const ScaledArray<RowMatrix<float>, double> x(d, 1e300);  // 1e310 overflows double
  const ScaledMatrix<float, double> l = scalify::log(x);
  CHECK(l.scale() == 1.0);
  for (int j = 0; j < 3; ++j) {
    const double expected = std::log(static_cast<double>(d(0, j))) + std::log(1e300);
    CHECK(l.data()(0, j) == Approx(expected).epsilon(2 * kU32));
  }
  const ScaledArray<RowMatrix<float>, double> tiny(d, 1e-300);  // 1e-330 underflows double
  const ScaledMatrix<float, double> lt = scalify::log(tiny);
  CHECK(lt.data()(0, 2) == Approx(std::log(1e-30) + std::log(1e-300)).epsilon(2 * kU32));
}

TEST_CASE("sin, cos and exp of values beyond float's range are those of the exact values",
          "[ops][elementwise]") {
  RowMatrix<float> d(1, 4);
  d << 2.0f, -3.0f, 1.5f, 0.5f;  // times 2^127: 2^128, -3 * 2^127, 1.5 * 2^127 (fits), 2^126
  const ScaledMatrix<float> x(d, 0x1p127f);
  const Eigen::MatrixXf s = evaluate(scalify::sin(x)).to_dense();
  const Eigen::MatrixXf c = evaluate(scalify::cos(x)).to_dense();
  const Eigen::MatrixXf e = evaluate(scalify::exp(x)).to_dense();
  for (int j = 0; j < 4; ++j) {
    const double v = static_cast<double>(d(0, j)) * 0x1p127;  // exact in double
    INFO("value " << v);
    CHECK(s(0, j) == Approx(std::sin(v)).margin(1e-6));
    CHECK(c(0, j) == Approx(std::cos(v)).margin(1e-6));
    CHECK(e(0, j) ==
          (v > 0 ? std::numeric_limits<float>::infinity() : 0.0f));  // exp overflows legitimately
  }
}

TEST_CASE("add and sub near float's largest scale do not turn finite values into NaN",
          "[ops][elementwise]") {
  // hi * sqrt(2) and rounding up overflow float; the scale is clamped to 2^127.
  const float max = std::numeric_limits<float>::max();
  RowMatrix<float> d(1, 3);
  d << 0.25f, -0.5f, 0.0f;
  for (float scale : {0x1p127f, max}) {
    for (auto mode : {scalify::pow2_mode::down, scalify::pow2_mode::up, scalify::pow2_mode::none}) {
      scalify::config_scope scope({.rounding = mode});
      INFO("scale " << scale << ", mode " << static_cast<int>(mode));
      const ScaledMatrix<float> a(d, scale);
      const ScaledMatrix<float> b(d, scale);
      const ScaledMatrix<float> sum = a + b;
      const ScaledMatrix<float> diff = a - b;
      CHECK(std::isfinite(sum.scale()));
      // Reference: 2 * d * scale in double; fits float here (|value| <= max).
      scalify_test::check_close(values_d(sum), 2.0 * d.cast<double>() * static_cast<double>(scale),
                                2 * kU32, 0, "a + b");
      scalify_test::check_close(values_d(diff), Eigen::MatrixXd::Zero(1, 3), 0, 0, "a - b");
    }
  }
  // The same with double scales at double's largest.
  const double dmax = std::numeric_limits<double>::max();
  const ScaledArray<RowMatrix<float>, double> a(d, dmax);
  const ScaledArray<RowMatrix<float>, double> sum = scalify::add(a, a);
  CHECK(std::isfinite(sum.scale()));
  CHECK(static_cast<double>(sum.data()(0, 0)) * sum.scale() == Approx(0.5 * dmax).epsilon(1e-7));
}
