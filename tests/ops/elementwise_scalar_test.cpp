// Float constants on either side of + - * / and the compound assignments
// += -= *= /= (ops/elementwise.hpp). Scales are checked against the rules
// computed by hand here (jax-scalify's constant semantics: a constant c is the
// scaled scalar (c / 2^floor(log2|c|), 2^floor(log2|c|)), a zero constant has
// scale 0); values against a double reference.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <type_traits>

#include "scalify/core/config_scope.hpp"
#include "scalify/core/scaled_array.hpp"
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

constexpr double kInf = std::numeric_limits<double>::infinity();

/// The power-of-two part of a constant, by frexp: 2^floor(log2 |c|) (0 for 0).
double pow2_part(double c) {
  if (c == 0.0) return 0.0;
  int e = 0;
  (void)std::frexp(c, &e);  // |c| = m * 2^e, m in [0.5, 1)
  return std::ldexp(1.0, e - 1);
}

/// The add rule with the default rounding (down) by hand: pow2_round_down(hi * sqrt(1 + (lo/hi)^2)).
double add_scale(double sa, double sb) {
  const double hi = std::max(sa, sb), lo = std::min(sa, sb);
  if (hi == 0.0) return 0.0;
  return pow2_part(hi * std::sqrt(1.0 + (lo / hi) * (lo / hi)));
}

/// A lazy result's values, evaluated through float storage (as a store does), in double.
template <class D, class S>
Eigen::MatrixXd lazy_values(const ScaledArray<D, S>& x) {
  const ScaledMatrix<float, S> stored = x;
  return values_d(stored);
}

/// The float32 tolerance of an op on values va, vb: a few float roundings of the inputs' size.
double f32_abs(const Eigen::MatrixXd& va, double c) {
  return 8.0 * 0x1p-24 * (va.cwiseAbs().maxCoeff() + std::abs(c));
}

}  // namespace

TEST_CASE("x + c, c + x, x - c, c - x: add/sub rule with c's scaled scalar", "[ops][elementwise][scalar]") {
  uint32_t seed = 1;
  for (const float sa : {1.0f, 0.375f, 3.0f, 0x1p-20f, 0x1p19f}) {
    for (const float c : {1.0f, 3.0f, -0.3f, 1e-3f, -1e6f, 0x1p-30f}) {
      INFO("scale " << sa << ", c " << c);
      const auto a = scalify_test::random_scaled<float>(3, 5, sa, seed++);
      const Eigen::MatrixXd va = values_d(a);
      const double expected_scale = add_scale(sa, pow2_part(c));
      const double tol = f32_abs(va, c);
      const Eigen::MatrixXd plus = (va.array() + static_cast<double>(c)).matrix();
      const Eigen::MatrixXd minus = (va.array() - static_cast<double>(c)).matrix();
      const Eigen::MatrixXd rminus = (static_cast<double>(c) - va.array()).matrix();
      CHECK((a + c).scale() == expected_scale);
      CHECK((c + a).scale() == expected_scale);
      CHECK((a - c).scale() == expected_scale);
      CHECK((c - a).scale() == expected_scale);
      scalify_test::check_close(lazy_values(a + c), plus, 0.0, tol, "a + c");
      scalify_test::check_close(lazy_values(c + a), plus, 0.0, tol, "c + a");
      scalify_test::check_close(lazy_values(a - c), minus, 0.0, tol, "a - c");
      scalify_test::check_close(lazy_values(c - a), rminus, 0.0, tol, "c - a");
    }
  }
  // By hand: scale 1 and c = 3 = 1.5 * 2: R(2 * sqrt(1 + 1/4)) = R(2.236) = 2; data d/2 + 1.5.
  RowMatrix<float> d(1, 2);
  d << 1.0f, -4.0f;
  const ScaledMatrix<float> a(d, 1.0f);
  const auto r = a + 3.0f;
  CHECK(r.scale() == 2.0f);
  CHECK(r.data()(0, 0) == 2.0f);   // 0.5 + 1.5
  CHECK(r.data()(0, 1) == -0.5f);  // -2 + 1.5
  const auto q = 3.0f - a;
  CHECK(q.scale() == 2.0f);
  CHECK(q.data()(0, 0) == 1.0f);  // 1.5 - 0.5
  CHECK(q.data()(0, 1) == 3.5f);  // 1.5 + 2
}

TEST_CASE("a zero constant keeps x's scale and data: x + 0, 0 + x, x - 0; 0 - x negates",
          "[ops][elementwise][scalar]") {
  for (const scalify::pow2_mode mode : {scalify::pow2_mode::down, scalify::pow2_mode::up, scalify::pow2_mode::none}) {
    scalify::config_scope scope({.rounding = mode});
    for (const float sa : {1.0f, 3.0f, 0.375f, 0x1p-149f, 0.0f}) {
      INFO("scale " << sa << ", mode " << static_cast<int>(mode));
      auto a = scalify_test::random_scaled<float>(4, 3, sa, 7);
      a.data()(0, 0) = -0.0f;
      for (const float zero : {0.0f, -0.0f}) {
        const auto p = a + zero;
        const auto p2 = zero + a;
        const auto m = a - zero;
        const auto n = zero - a;
        CHECK(p.scale() == sa);
        CHECK(p2.scale() == sa);
        CHECK(m.scale() == sa);
        CHECK(n.scale() == sa);
        for (Eigen::Index i = 0; i < a.size(); ++i) {
          const float da = a.data().data()[i];
          CHECK(p.data()(i / 3, i % 3) == da);
          CHECK(m.data()(i / 3, i % 3) == da);
          CHECK(n.data()(i / 3, i % 3) == -da);
        }
      }
      // Signs of zero as plain math: -0 + -0 = -0, -0 + 0 = +0, 0 - +0 = +0.
      CHECK(std::signbit((a + -0.0f).data()(0, 0)));
      CHECK(!std::signbit((a + 0.0f).data()(0, 0)));
      CHECK(std::signbit((a - 0.0f).data()(0, 0)));
    }
  }
}

TEST_CASE("c * x, x * c, x / c, c / x: mul/div rule with c's scaled scalar", "[ops][elementwise][scalar]") {
  uint32_t seed = 50;
  for (const float sa : {1.0f, 0.375f, 0x1p-20f, 0x1p19f}) {
    for (const float c : {1.0f, 6.0f, -0.3f, 1e-3f, -1e6f}) {
      INFO("scale " << sa << ", c " << c);
      const auto a = scalify_test::random_scaled<float>(3, 5, sa, seed++);
      const Eigen::MatrixXd va = values_d(a);
      const double pc = pow2_part(c);
      CHECK((c * a).scale() == sa * pc);
      CHECK((a * c).scale() == sa * pc);
      CHECK((a / c).scale() == sa / pc);
      CHECK((c / a).scale() == static_cast<float>(pc / sa));  // a float division, rounded once
      const double rel = 4 * 0x1p-24;
      scalify_test::check_close(lazy_values(c * a), va * static_cast<double>(c), rel, 0.0, "c * a");
      scalify_test::check_close(lazy_values(a * c), va * static_cast<double>(c), rel, 0.0, "a * c");
      scalify_test::check_close(lazy_values(a / c), va / static_cast<double>(c), rel, 0.0, "a / c");
      scalify_test::check_close(lazy_values(c / a), (static_cast<double>(c) / va.array()).matrix(), rel, 0.0,
                                "c / a");
    }
  }
  // By hand: 2 / a with a = (d = [0.5, -4], scale 8): scale 2 / 8, data 1 / d.
  RowMatrix<float> d(1, 2);
  d << 0.5f, -4.0f;
  const ScaledMatrix<float> a(d, 8.0f);
  const auto r = 2.0f / a;
  CHECK(r.scale() == 0.25f);
  CHECK(r.data()(0, 0) == 2.0f);
  CHECK(r.data()(0, 1) == -0.25f);
  // 6 / a: 6 = 1.5 * 4: scale 4 / 8, data 1.5 / d.
  CHECK((6.0f / a).scale() == 0.5f);
  CHECK((6.0f / a).data()(0, 0) == 3.0f);
}

TEST_CASE("constants 0, inf and NaN, and zero scales, follow plain math on the values",
          "[ops][elementwise][scalar]") {
  RowMatrix<float> d(1, 3);
  d << 2.0f, -1.0f, 0.0f;
  const ScaledMatrix<float> a(d, 4.0f);
  // A zero constant has scale 0 (jax-scalify): 0 * a has scale 0.
  CHECK((0.0f * a).scale() == 0.0f);
  CHECK((a * 0.0f).scale() == 0.0f);
  // a / 0: scale inf, values +-inf and NaN for 0 / 0.
  const Eigen::MatrixXd q = lazy_values(a / 0.0f);
  CHECK((a / 0.0f).scale() == kInf);
  CHECK(q(0, 0) == kInf);
  CHECK(q(0, 1) == -kInf);
  CHECK(std::isnan(q(0, 2)));
  // 0 / a: scale 0, values 0 (NaN where a is 0).
  const Eigen::MatrixXd z = lazy_values(0.0f / a);
  CHECK((0.0f / a).scale() == 0.0f);
  CHECK(z(0, 0) == 0.0);
  CHECK(std::isnan(z(0, 2)));
  // c / x with a zero scale: scale inf (NaN for c = 0).
  const ScaledMatrix<float> zs(d, 0.0f);
  CHECK((2.0f / zs).scale() == kInf);
  CHECK(std::isnan((0.0f / zs).scale()));
  // inf and NaN constants: (c, scale 1); the scale stays finite.
  const float inf = std::numeric_limits<float>::infinity();
  CHECK((a * inf).scale() == 4.0f);
  const Eigen::MatrixXd ai = lazy_values(a * inf);
  CHECK(ai(0, 0) == kInf);
  CHECK(ai(0, 1) == -kInf);
  CHECK(std::isnan(ai(0, 2)));  // 0 * inf
  const Eigen::MatrixXd pi = lazy_values(a + inf);
  CHECK(pi(0, 1) == kInf);
  CHECK(std::isnan(lazy_values(a - std::nanf(""))(0, 0)));
  CHECK(lazy_values(a / inf)(0, 0) == 0.0);
  // make_scaled_scalar of inf and NaN: data c, scale 1 (was an inf or NaN scale).
  CHECK(scalify::make_scaled_scalar(inf).scale() == 1.0f);
  CHECK(scalify::make_scaled_scalar(-inf).data()(0, 0) == -inf);
  CHECK(std::isnan(scalify::make_scaled_scalar(std::nanf("")).data()(0, 0)));
}

TEST_CASE("scalar operators: double, int and float constants, no ambiguity with the other operators",
          "[ops][elementwise][scalar]") {
  RowMatrix<float> d(1, 2);
  d << 1.0f, 2.0f;
  const ScaledMatrix<float> a(d, 1.0f);
  const ScaledMatrix<float> b(d, 2.0f);
  // Double and int constants convert to float.
  CHECK(lazy_values(a + 1.0)(0, 1) == 3.0);
  CHECK(lazy_values(1 + a)(0, 0) == 2.0);
  CHECK(lazy_values(2.0 * a)(0, 1) == 4.0);
  CHECK(lazy_values(a / 2)(0, 1) == 1.0);
  CHECK(lazy_values(3 - a)(0, 1) == 1.0);
  CHECK(lazy_values(4.0 / a)(0, 1) == 2.0);
  // Mixed expressions.
  const ScaledMatrix<float> r = 2.0f * a + b * 0.5f - 1.0f;  // 2d + d - 1 = 3d - 1
  CHECK(values_d(r)(0, 0) == 2.0);
  CHECK(values_d(r)(0, 1) == 5.0);
  const ScaledMatrix<float> neg = -a + 1.0f;
  CHECK(values_d(neg)(0, 1) == -1.0);
  // Eigen's own operators are untouched.
  const Eigen::MatrixXf m = Eigen::MatrixXf::Ones(2, 2) * 2.0f + Eigen::MatrixXf::Ones(2, 2);
  CHECK(m(0, 0) == 3.0f);
  const Eigen::ArrayXf v = 1.0f + Eigen::ArrayXf::Ones(3) / 2.0f;
  CHECK(v(0) == 1.5f);
}

// ------------------------------------------------------------------------------
// Compound assignment

namespace {

/// y data in [1, 3): a divisor away from zero.
template <class T>
ScaledMatrix<T> divisor(Eigen::Index rows, Eigen::Index cols, float scale, uint32_t seed) {
  auto y = scalify_test::random_scaled<T>(rows, cols, scale, seed);
  for (Eigen::Index i = 0; i < y.size(); ++i) {
    const float v = static_cast<float>(y.data().data()[i]);
    y.data().data()[i] = T(1.0f + std::min(std::abs(v), 2.0f) * 0.875f);
  }
  return y;
}

template <class T>
void check_compound(float sx, float sy, uint32_t seed) {
  const double u = scalify_test::unit_roundoff<T>();
  const double dmin = static_cast<double>(static_cast<float>(std::numeric_limits<T>::denorm_min()));
  const auto x0 = scalify_test::random_scaled<T>(6, 7, sx, seed);
  const auto y = divisor<T>(6, 7, sy, seed + 1);
  const Eigen::MatrixXd vx = values_d(x0), vy = values_d(y);
  const double big = vx.cwiseAbs().maxCoeff() + vy.cwiseAbs().maxCoeff();
  const std::string name = scalify::detail::type_name<T>();
  const auto check = [&](const ScaledMatrix<T>& x, double scale, const Eigen::MatrixXd& expected, const char* op,
                         bool sum) {
    INFO(name << " " << op << ", sx " << sx << ", sy " << sy);
    CHECK(x.scale() == scale);
    // T's rounding of each result, plus float32 cancellation for sums.
    const double abs = scale * dmin + (sum ? 8.0 * 0x1p-24 * big : 0.0);
    scalify_test::check_close(values_d(x), expected, 2.0 * u, abs, std::string(name) + " " + op);
  };
  {
    ScaledMatrix<T> x = x0;
    const auto* before = x.data().data();
    x += y;
    CHECK(x.data().data() == before);  // in place
    check(x, add_scale(sx, sy), vx + vy, "+=", true);
  }
  {
    ScaledMatrix<T> x = x0;
    x -= y;
    check(x, add_scale(sx, sy), vx - vy, "-=", true);
  }
  {
    ScaledMatrix<T> x = x0;
    x *= y;
    check(x, static_cast<double>(sx) * sy, vx.cwiseProduct(vy), "*=", false);
  }
  {
    ScaledMatrix<T> x = x0;
    x /= y;
    check(x, static_cast<double>(sx) / sy, vx.cwiseQuotient(vy), "/=", false);
  }
  {
    ScaledMatrix<T> x = x0;
    x += 1.5f;
    check(x, add_scale(sx, 1.0), (vx.array() + 1.5).matrix(), "+= 1.5", true);
  }
  {
    ScaledMatrix<T> x = x0;
    x -= 0.0f;  // a zero constant: unchanged
    CHECK(x.scale() == sx);
    const bool unchanged = x.data() == x0.data();
    CHECK(unchanged);
  }
  {
    ScaledMatrix<T> x = x0;
    x *= 6.0f;  // scale * 4, data * 1.5
    check(x, 4.0 * sx, vx * 6.0, "*= 6", false);
  }
  {
    ScaledMatrix<T> x = x0;
    x /= 8.0f;  // scale / 8, data exactly unchanged
    CHECK(x.scale() == sx / 8.0f);
    const bool unchanged = x.data() == x0.data();
    CHECK(unchanged);
  }
}

}  // namespace

TEMPLATE_TEST_CASE("+=, -=, *=, /= on every storage type against a double reference",
                   "[ops][elementwise][compound]", SCALIFY_STORAGE_FORMATS) {
  uint32_t seed = 300;
  for (const auto& [sx, sy] : {std::pair<float, float>{1.0f, 1.0f}, {0.5f, 2.0f}, {0x1p-20f, 0x1p10f}}) {
    check_compound<TestType>(sx, sy, seed);
    seed += 2;
  }
}

TEST_CASE("compound assignment: E8M0 and double scales, overflow saturates, shape errors leave x",
          "[ops][elementwise][compound]") {
  // E8M0 storage: x /= 3 has scale s / 2 (a power of two) and data / 1.5.
  ScaledArray<RowMatrix<float>, float8_e8m0fnu> e(RowMatrix<float>::Constant(1, 2, 3.0f), float8_e8m0fnu(4.0f));
  e /= 3.0f;
  CHECK(static_cast<float>(e.scale()) == 2.0f);
  CHECK(e.data()(0, 0) == 2.0f);
  // x *= y with a scale that is not a power of two into E8M0: rebased, values kept.
  ScaledArray<RowMatrix<float>, float8_e8m0fnu> f(RowMatrix<float>::Constant(1, 1, 1.0f), float8_e8m0fnu(2.0f));
  f *= ScaledMatrix<float>(RowMatrix<float>::Constant(1, 1, 1.0f), 3.0f);
  CHECK(f.item() == 6.0f);
  // Double scales stay double.
  ScaledMatrix<float, double> g(RowMatrix<float>::Constant(1, 1, 1.0f), 1e300);
  g *= 2.0f;
  CHECK(g.scale() == 2e300);
  // e4m3fn data beyond 448 saturates by default: 30 * 30 = 900 -> 448.
  ScaledMatrix<float8_e4m3fn> h(RowMatrix<float8_e4m3fn>::Constant(1, 1, float8_e4m3fn(30.0f)), 1.0f);
  h *= h;
  CHECK(static_cast<float>(h.data()(0, 0)) == 448.0f);
  // Shape mismatch: shape_error naming the op, x unchanged.
  ScaledMatrix<float> x(RowMatrix<float>::Constant(2, 2, 1.0f), 1.0f);
  const ScaledMatrix<float> y(RowMatrix<float>::Constant(2, 3, 1.0f), 1.0f);
  scalify_test::require_shape_error([&] { x += y; }, {"scalify::add", "(2 x 2)", "(2 x 3)"});
  scalify_test::require_shape_error([&] { x /= y; }, {"scalify::div"});
  CHECK(x.scale() == 1.0f);
  CHECK((x.data().array() == 1.0f).all());
  // Chained: the operators return x.
  ScaledMatrix<float> c(RowMatrix<float>::Constant(1, 1, 1.0f), 1.0f);
  (c += 1.0f) *= 2.0f;
  CHECK(c.item() == 4.0f);
}

TEMPLATE_TEST_CASE("max, min and where with a constant: max's scale rule with c's scaled scalar; 0 keeps x",
                   "[ops][elementwise][scalar]", SCALIFY_STORAGE_FORMATS) {
  uint32_t seed = 90;
  for (const float sa : {1.0f, 0.375f, 3.0f, 0x1p-20f, 0x1p19f, 0.0f}) {
    const auto a = scalify_test::random_scaled<TestType>(5, 4, sa, seed++);
    const Eigen::MatrixXd va = values_d(a);
    Eigen::Array<bool, -1, -1, Eigen::RowMajor> mask(5, 4);
    for (Eigen::Index i = 0; i < mask.size(); ++i) mask.data()[i] = (i * 7) % 3 == 0;
    for (const float c : {0.0f, 1.5f, -6.0f, 0x1p-30f, 1e30f}) {
      INFO("scale " << sa << ", constant " << c);
      const double s = std::max(static_cast<double>(sa), pow2_part(c));  // max's rule, c = (c / pc, pc)
      const Eigen::MatrixXd vc = Eigen::MatrixXd::Constant(5, 4, c);
      const auto check = [&](const auto& r, const Eigen::MatrixXd& want, const char* what) {
        INFO(what);
        CHECK(static_cast<double>(r.scale()) == s);
        scalify_test::check_close(lazy_values(r), want, 4 * 0x1p-24, 0.0, what);
      };
      check(scalify::max(a, c), va.cwiseMax(vc), "max(a, c)");
      check(scalify::max(c, a), va.cwiseMax(vc), "max(c, a)");
      check(scalify::min(a, c), va.cwiseMin(vc), "min(a, c)");
      check(scalify::min(c, a), va.cwiseMin(vc), "min(c, a)");
      const Eigen::MatrixXd m = mask.cast<double>().matrix();
      check(scalify::where(mask, a, c), m.cwiseProduct(va) + (1.0 - m.array()).matrix().cwiseProduct(vc),
            "where(mask, a, c)");
      check(scalify::where(mask, c, a), m.cwiseProduct(vc) + (1.0 - m.array()).matrix().cwiseProduct(va),
            "where(mask, c, a)");
      if (c == 0.0f && sa != 0.0f) {
        // A zero constant: x's scale, and x's data where x is kept, bit for bit
        // (with sa == 0 too every value is 0, and max's rule zeroes the data).
        const auto relu = scalify::max(a, 0);
        const auto masked = scalify::where(mask, a, 0.0);
        CHECK(relu.scale() == a.scale());
        CHECK(masked.scale() == a.scale());
        for (Eigen::Index i = 0; i < a.size(); ++i) {
          const float d = static_cast<float>(a.data().data()[i]);
          CHECK(relu.data()(i / 4, i % 4) == std::max(d, 0.0f));
          CHECK(masked.data()(i / 4, i % 4) == (mask.data()[i] ? d : 0.0f));
        }
      }
    }
  }
}

TEST_CASE("max and where with a constant: NaN wins, inf constants, shapes checked", "[ops][elementwise][scalar]") {
  auto a = scalify_test::random_scaled<float>(3, 2, 2.0f, 3);
  a.data()(0, 0) = std::nanf("");
  CHECK(std::isnan(lazy_values(scalify::max(a, 1.0f))(0, 0)));
  CHECK(std::isnan(lazy_values(scalify::min(1.0f, a))(0, 0)));
  CHECK(lazy_values(scalify::max(a, std::numeric_limits<float>::infinity()))(1, 1) == kInf);
  CHECK(std::isnan(lazy_values(scalify::max(a, std::nanf("")))(1, 1)));
  const Eigen::Array<bool, -1, -1> wrong = Eigen::Array<bool, -1, -1>::Constant(2, 3, true);
  scalify_test::require_shape_error([&] { (void)scalify::where(wrong, a, 0.0f); }, {"where", "(2 x 3)", "(3 x 2)"});
  scalify_test::require_shape_error([&] { (void)scalify::where(wrong, 0.0f, a); }, {"where"});
}
