// tests/ops/reduce_test.cpp: scalify/ops/reduce.hpp against a double reference.
//
// Scales are checked exactly against the rule, computed here independently
// (R(sqrt N) from powers of four, s^N by repeated multiplication in double).
// Values are checked against sums, products and extrema of the unscaled
// inputs in double: sums within float32 accumulation error (N * 2^-24 of the
// sum of magnitudes) plus the output format's roundoff; max/min and argmax/argmin
// exactly.
#include "scalify/ops/reduce.hpp"

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "scalify/ops/shape.hpp"
#include "support/scaled.hpp"

using scalify_test::require_shape_error;

namespace {

using Eigen::Index;
using Eigen::MatrixXd;
using scalify::ScaledMatrix;
using scalify::ScaledScalar;
using scalify_test::random_scaled;
using scalify_test::data_d;
using scalify_test::describe;
using scalify_test::kScales;
using scalify_test::shape;
using scalify_test::values_d;

const std::vector<shape> kShapes = scalify_test::shapes_with_random({{1, 1}, {1, 7}, {7, 1}, {5, 3}, {13, 17}, {4, 4}, {2, 9}, {64, 64}, {100, 301}});
constexpr double kFloatEps = 0x1p-24;  // float32 unit roundoff


/// R(sqrt n) computed without sqrt: 2^k for the largest k with 4^k <= n
/// (down) or the smallest with 4^k >= n (up); float(sqrt(n)) for none; 1 for n = 0.
float expected_factor(Index n, scalify::pow2_mode mode = scalify::pow2_mode::down) {
  if (n == 0) return 1.0f;
  if (mode == scalify::pow2_mode::none)
    return static_cast<float>(std::sqrt(static_cast<double>(n)));
  int k = 0;
  if (mode == scalify::pow2_mode::down) {
    while (std::ldexp(1.0, 2 * (k + 1)) <= static_cast<double>(n)) ++k;
  } else {
    while (std::ldexp(1.0, 2 * k) < static_cast<double>(n)) ++k;
  }
  return std::ldexp(1.0f, k);
}

/// The largest power of two <= n, and n over it (N as a scaled scalar).
float count_pow2(Index n) {
  float p = 1.0f;
  while (2.0 * p <= static_cast<double>(n)) p *= 2.0f;
  return p;
}

/// s^n by repeated multiplication in double (exact for the scales used here),
/// rounded once to float.
float expected_power(float s, Index n) {
  double p = 1.0;
  for (Index k = 0; k < n; ++k) p *= static_cast<double>(s);
  return static_cast<float>(p);
}

/// Data whose products stay in range: magnitudes in [0.75, 1.5], random signs.
template <class T>
scalify_test::RowMatrix<T> unit_data(Index rows, Index cols, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> magnitude(0.75f, 1.5f);
  scalify_test::RowMatrix<T> m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) {
    const float v = (gen() & 1) ? magnitude(gen) : -magnitude(gen);
    m.data()[i] = static_cast<T>(v);
  }
  return m;
}

/// |actual - expected| <= tolerance elementwise; NaN matches NaN, inf matches
/// inf of the same sign. Prints the first misses.
void check_within(const MatrixXd& actual, const MatrixXd& expected, const MatrixXd& tolerance,
                  const std::string& context) {
  INFO(context);
  REQUIRE(actual.rows() == expected.rows());
  REQUIRE(actual.cols() == expected.cols());
  int misses = 0;
  for (Index i = 0; i < expected.rows(); ++i) {
    for (Index j = 0; j < expected.cols(); ++j) {
      const double e = expected(i, j), a = actual(i, j);
      const bool ok = std::isnan(e)   ? std::isnan(a)
                      : std::isinf(e) ? a == e
                                      : std::fabs(a - e) <= tolerance(i, j);
      if (!ok && misses++ < 5) {
        FAIL_CHECK("at (" << i << ", " << j << "): expected " << e << ", actual " << a
                          << ", tolerance " << tolerance(i, j));
      }
    }
  }
  CHECK(misses == 0);
}

/// Sums of v over rows (rowwise: one per row), columns, or everything, with the
/// matching sums of magnitudes.
struct sums {
  MatrixXd sum, magnitude;
};
sums ref_sums(const MatrixXd& v, int direction) {  // 0 all, 1 rowwise, 2 colwise
  const Index rows = direction == 2 ? 1 : direction == 1 ? v.rows() : 1;
  const Index cols = direction == 1 ? 1 : direction == 2 ? v.cols() : 1;
  sums out{MatrixXd::Zero(rows, cols), MatrixXd::Zero(rows, cols)};
  for (Index i = 0; i < v.rows(); ++i) {
    for (Index j = 0; j < v.cols(); ++j) {
      const Index oi = direction == 1 ? i : 0, oj = direction == 2 ? j : 0;
      out.sum(oi, oj) += v(i, j);
      out.magnitude(oi, oj) += std::fabs(v(i, j));
    }
  }
  return out;
}

/// The first position (flat row-major, or within each row / column) of the
/// largest (kMax) or smallest value, NaN first, as NumPy; on exact double values.
Index ref_arg(const std::vector<double>& values, bool want_max) {
  Index best = 0;
  for (Index k = 0; k < static_cast<Index>(values.size()); ++k) {
    if (std::isnan(values[k])) return k;
    if (want_max ? values[k] > values[best] : values[k] < values[best]) best = k;
  }
  return best;
}
std::vector<double> row_values(const MatrixXd& v, Index i) {
  std::vector<double> out;
  for (Index j = 0; j < v.cols(); ++j) out.push_back(v(i, j));
  return out;
}
std::vector<double> col_values(const MatrixXd& v, Index j) {
  std::vector<double> out;
  for (Index i = 0; i < v.rows(); ++i) out.push_back(v(i, j));
  return out;
}
std::vector<double> all_values(const MatrixXd& v) {
  std::vector<double> out;
  for (Index i = 0; i < v.rows(); ++i) {
    for (Index j = 0; j < v.cols(); ++j) out.push_back(v(i, j));
  }
  return out;
}

}  // namespace

// ------------------------------------------------------------------------------
// sum and mean

TEMPLATE_TEST_CASE("sum: scale s * R(sqrt N), values within float32 accumulation error",
                   "[ops][reduce]", SCALIFY_STORAGE_FORMATS) {
  using T = TestType;
  const double u = scalify_test::unit_roundoff<T>();
  const double tiny = static_cast<double>(std::numeric_limits<T>::denorm_min());
  uint32_t seed = 1;
  for (const shape sh : kShapes) {
    for (const float s : kScales) {
      const auto x = random_scaled<T>(sh.rows, sh.cols, s, seed++);
      const MatrixXd v = values_d(x);
      const Index n = x.size();
      const std::string what = describe("sum", sh.rows, sh.cols, s);
      INFO(what);

      const auto y = scalify::sum(x);
      static_assert(std::is_same_v<decltype(y), const ScaledScalar<float, float>>);
      const float scale = s * expected_factor(n);
      REQUIRE(y.scale() == scale);
      const sums ref = ref_sums(v, 0);
      const double tol = static_cast<double>(n) * kFloatEps * ref.magnitude(0, 0);
      check_within(values_d(y), ref.sum, MatrixXd::Constant(1, 1, tol), what);
      // Stored into T: one more rounding of the data.
      const ScaledScalar<T> stored = y;
      CHECK(stored.scale() == scale);
      check_within(values_d(stored), ref.sum,
                   MatrixXd::Constant(1, 1, tol + u * std::fabs(ref.sum(0, 0)) + tiny * scale),
                   what + " stored");

      // mean = sum / N with N as a scaled scalar (P, M): the same data divided by M.
      const auto m = scalify::mean(x);
      const float p = count_pow2(n);
      const float mantissa = static_cast<float>(static_cast<double>(n) / p);
      REQUIRE(m.scale() == s * expected_factor(n) / p);
      CHECK(m.data()(0, 0) == y.data()(0, 0) / mantissa);
      check_within(
          values_d(m), ref.sum / static_cast<double>(n),
          MatrixXd::Constant(
              1, 1, tol / static_cast<double>(n) + 4 * kFloatEps * std::fabs(ref.sum(0, 0)) / n),
          what + " mean");

      // Rowwise and colwise: one value per row (N = cols) or column (N = rows).
      for (const int direction : {1, 2}) {
        const bool rowwise = direction == 1;
        const Index len = rowwise ? x.cols() : x.rows();
        const sums r = ref_sums(v, direction);
        const MatrixXd tols = static_cast<double>(len) * kFloatEps * r.magnitude;
        const float pscale = s * expected_factor(len);
        const MatrixXd got =
            rowwise ? values_d(scalify::rowwise_sum(x)) : values_d(scalify::colwise_sum(x));
        const double got_scale =
            rowwise ? scalify::rowwise_sum(x).scale() : scalify::colwise_sum(x).scale();
        CHECK(got_scale == pscale);
        check_within(got, r.sum, tols, what + (rowwise ? " rowwise" : " colwise"));

        const float mscale = s * expected_factor(len) / count_pow2(len);
        const float mmant = static_cast<float>(static_cast<double>(len) / count_pow2(len));
        const auto rm = scalify::rowwise_mean(x);
        const auto cm = scalify::colwise_mean(x);
        CHECK((rowwise ? rm.scale() : cm.scale()) == mscale);
        const MatrixXd mean_data = rowwise ? data_d(rm) : data_d(cm);
        const MatrixXd sum_data =
            rowwise ? data_d(scalify::rowwise_sum(x)) : data_d(scalify::colwise_sum(x));
        CHECK(mean_data == (sum_data.cast<float>() / mmant).cast<double>());
        check_within(rowwise ? values_d(rm) : values_d(cm), r.sum / static_cast<double>(len),
                     (tols + 4 * kFloatEps * r.sum.cwiseAbs()) / static_cast<double>(len),
                     what + (rowwise ? " rowwise mean" : " colwise mean"));
      }
    }
  }
}

TEST_CASE("sum and mean follow the scope's pow2 rounding", "[ops][reduce]") {
  const auto x = random_scaled<scalify::float16>(6, 7, 0.5f, 7);  // N = 42: sqrt 6.48, down 4, up 8
  const sums ref = ref_sums(values_d(x), 0);
  for (const scalify::pow2_mode mode :
       {scalify::pow2_mode::down, scalify::pow2_mode::up, scalify::pow2_mode::none}) {
    const scalify::config_scope scope({.rounding = mode});
    INFO("mode " << static_cast<int>(mode));
    const float r = expected_factor(42, mode);
    const auto y = scalify::sum(x);
    CHECK(y.scale() == 0.5f * r);
    CHECK(std::fabs(values_d(y)(0, 0) - ref.sum(0, 0)) <=
          42 * kFloatEps * ref.magnitude(0, 0) + 2 * kFloatEps * std::fabs(ref.sum(0, 0)));
    CHECK(scalify::mean(x).scale() == 0.5f * r / 32.0f);
    CHECK(scalify::rowwise_sum(x).scale() == 0.5f * expected_factor(7, mode));
    CHECK(scalify::colwise_mean(x).scale() == 0.5f * expected_factor(6, mode) / 4.0f);
  }
  // Stochastic: down or up, deterministic for a seed, and both happen.
  std::vector<float> first, second;
  for (std::vector<float>* run : {&first, &second}) {
    const scalify::config_scope scope({.rounding = scalify::pow2_mode::stochastic, .seed = 1234});
    for (int k = 0; k < 64; ++k) run->push_back(scalify::sum(x).scale());
  }
  CHECK(first == second);
  int ups = 0;
  for (const float scale : first) {
    CHECK((scale == 2.0f || scale == 4.0f));
    ups += scale == 4.0f;
  }
  CHECK(ups > 0);
  CHECK(ups < 64);
}

TEST_CASE("sum of the reference test: rand(5) * 2 gives scale 4; mean of 128 elements: s * 8 / 128",
          "[ops][reduce]") {
  const auto x = random_scaled<scalify::float16>(1, 5, 2.0f, 3);
  CHECK(scalify::sum(x).scale() == 4.0f);
  CHECK(scalify::prod(x).scale() == 32.0f);
  CHECK(scalify::max(x).scale() == 2.0f);
  CHECK(scalify::min(x).scale() == 2.0f);
  const auto y = random_scaled<scalify::float16>(8, 16, 1.0f, 4);
  CHECK(scalify::mean(y).scale() == 8.0f / 128.0f);
  CHECK(scalify::mean(y).data()(0, 0) == scalify::sum(y).data()(0, 0));  // M = 1
}

// ------------------------------------------------------------------------------
// prod

TEMPLATE_TEST_CASE("prod: scale s^N, values within float32 product error", "[ops][reduce]",
                   SCALIFY_STORAGE_FORMATS) {
  using T = TestType;
  uint32_t seed = 300;
  const std::vector<shape> shapes = {{1, 1}, {1, 7}, {7, 1}, {5, 3}, {3, 5}, {4, 6}, {5, 6}};
  for (const shape sh : shapes) {
    for (const float s : {1.0f, 0.375f, 3.0f, 0.5f, 0.0f}) {
      const ScaledMatrix<T> x(unit_data<T>(sh.rows, sh.cols, seed++), s);
      const MatrixXd v = values_d(x);
      const std::string what = describe("prod", sh.rows, sh.cols, s);
      INFO(what);
      double ref = 1.0;
      for (Index k = 0; k < v.size(); ++k) ref *= v.data()[k];
      const auto y = scalify::prod(x);
      REQUIRE(y.scale() == expected_power(s, x.size()));
      const double tol = static_cast<double>(x.size() + 2) * kFloatEps * std::fabs(ref);
      check_within(values_d(y), MatrixXd::Constant(1, 1, ref), MatrixXd::Constant(1, 1, tol), what);

      for (const bool rowwise : {true, false}) {
        const Index len = rowwise ? x.cols() : x.rows();
        MatrixXd expected = MatrixXd::Ones(rowwise ? x.rows() : 1, rowwise ? 1 : x.cols());
        for (Index i = 0; i < x.rows(); ++i) {
          for (Index j = 0; j < x.cols(); ++j)
            expected(rowwise ? i : 0, rowwise ? 0 : j) *= v(i, j);
        }
        const auto yr = scalify::rowwise_prod(x);
        const auto yc = scalify::colwise_prod(x);
        CHECK((rowwise ? yr.scale() : yc.scale()) == expected_power(s, len));
        check_within(rowwise ? values_d(yr) : values_d(yc), expected,
                     static_cast<double>(len + 2) * kFloatEps * expected.cwiseAbs(),
                     what + (rowwise ? " rowwise" : " colwise"));
      }
    }
  }
}

TEST_CASE("prod's scale s^N overflows float like the reference; a double scale holds it",
          "[ops][reduce]") {
  const scalify_test::RowMatrix<float> d = unit_data<float>(1, 7, 5);
  double ref = 1.0;
  for (Index k = 0; k < 7; ++k) ref *= d(0, k);
  const ScaledMatrix<float> x(d, 0x1p19f);
  CHECK(std::isinf(scalify::prod(x).scale()));  // 2^133: documented limit
  const ScaledMatrix<float, double> xd(d, 0x1p19);
  const auto y = scalify::prod(xd);
  static_assert(std::is_same_v<decltype(y)::scale_type, double>);
  CHECK(y.scale() == 0x1p133);
  CHECK(std::fabs(values_d(y)(0, 0) - ref * 0x1p133) <= 9 * kFloatEps * std::fabs(ref) * 0x1p133);
  // 2^-20 over 7 elements is 2^-140, a float subnormal; over 8, 2^-160 underflows to 0.
  const ScaledMatrix<float> small(unit_data<float>(1, 8, 6), 0x1p-20f);
  CHECK(scalify::prod(scalify::block(small, 0, 0, 1, 7)).scale() == 0x1p-140f);
  CHECK(scalify::prod(small).scale() == 0.0f);
  CHECK(scalify::prod(ScaledMatrix<float, double>(small.data(), 0x1p-20)).scale() == 0x1p-160);
}

// ------------------------------------------------------------------------------
// max and min

TEMPLATE_TEST_CASE("max and min keep the scale and are exact", "[ops][reduce]",
                   SCALIFY_STORAGE_FORMATS) {
  using T = TestType;
  uint32_t seed = 400;
  for (const shape sh : kShapes) {
    for (const float s : kScales) {
      const auto x = random_scaled<T>(sh.rows, sh.cols, s, seed++);
      const MatrixXd v = values_d(x), d = data_d(x);
      const std::string what = describe("max/min", sh.rows, sh.cols, s);
      INFO(what);
      const auto mx = scalify::max(x);
      const auto mn = scalify::min(x);
      CHECK(mx.scale() == s);
      CHECK(mn.scale() == s);
      CHECK(static_cast<double>(mx.data()(0, 0)) == d.maxCoeff());
      CHECK(static_cast<double>(mn.data()(0, 0)) == d.minCoeff());
      CHECK(values_d(mx)(0, 0) == v.maxCoeff());
      CHECK(values_d(mn)(0, 0) == v.minCoeff());
      const auto rmax = scalify::rowwise_max(x);
      const auto rmin = scalify::rowwise_min(x);
      const auto cmax = scalify::colwise_max(x);
      const auto cmin = scalify::colwise_min(x);
      CHECK(rmax.scale() == s);
      CHECK(cmin.scale() == s);
      CHECK(data_d(rmax) == d.rowwise().maxCoeff());
      CHECK(data_d(rmin) == d.rowwise().minCoeff());
      CHECK(data_d(cmax) == d.colwise().maxCoeff());
      CHECK(data_d(cmin) == d.colwise().minCoeff());
    }
  }
}

TEST_CASE("max and min propagate NaN wherever it is", "[ops][reduce]") {
  const float nan = std::numeric_limits<float>::quiet_NaN(),
              inf = std::numeric_limits<float>::infinity();
  for (const Index n : {Index{1}, Index{2}, Index{7}, Index{33}}) {
    for (Index at = 0; at < n; ++at) {
      scalify_test::RowMatrix<float> d =
          scalify_test::random_data<float>(3, n, static_cast<uint32_t>(n * 100 + at));
      d(1, at) = nan;
      d(2, at) = inf;
      const ScaledMatrix<float> x(d, 2.0f);
      INFO("NaN at (1, " << at << ") of (3 x " << n << ")");
      CHECK(std::isnan(scalify::max(x).data()(0, 0)));
      CHECK(std::isnan(scalify::min(x).data()(0, 0)));
      const ScaledMatrix<float> rmax = scalify::rowwise_max(x), rmin = scalify::rowwise_min(x);
      CHECK(std::isnan(rmax.data()(1, 0)));
      CHECK(std::isnan(rmin.data()(1, 0)));
      CHECK(rmax.data()(2, 0) == inf);
      CHECK(rmax.data()(0, 0) == d.row(0).maxCoeff());
      const ScaledMatrix<float> cmax = scalify::colwise_max(x), cmin = scalify::colwise_min(x);
      CHECK(std::isnan(cmax.data()(0, at)));
      CHECK(std::isnan(cmin.data()(0, at)));
    }
  }
}

// ------------------------------------------------------------------------------
// argmax and argmin

TEMPLATE_TEST_CASE("argmax and argmin: first extremum of the values, row-major", "[ops][reduce]",
                   SCALIFY_STORAGE_FORMATS) {
  using T = TestType;
  uint32_t seed = 500;
  for (const shape sh : kShapes) {
    for (const float s : kScales) {
      // A small sigma makes ties common in the narrow formats.
      const auto x = random_scaled<T>(sh.rows, sh.cols, s, seed++, 0.25f);
      const MatrixXd v = values_d(x);
      const std::string what = describe("argmax", sh.rows, sh.cols, s);
      INFO(what);
      CHECK(scalify::argmax(x) == ref_arg(all_values(v), true));
      CHECK(scalify::argmin(x) == ref_arg(all_values(v), false));
      if (s == 0.0f) {
        CHECK(scalify::argmax(x) == 0);
        CHECK(scalify::argmin(x) == 0);
      }
      const Eigen::Matrix<Index, Eigen::Dynamic, 1> rmax = scalify::rowwise_argmax(x),
                                                    rmin = scalify::rowwise_argmin(x);
      const Eigen::Matrix<Index, 1, Eigen::Dynamic> cmax = scalify::colwise_argmax(x),
                                                    cmin = scalify::colwise_argmin(x);
      REQUIRE(rmax.size() == x.rows());
      REQUIRE(cmax.size() == x.cols());
      for (Index i = 0; i < x.rows(); ++i) {
        CHECK(rmax(i) == ref_arg(row_values(v, i), true));
        CHECK(rmin(i) == ref_arg(row_values(v, i), false));
      }
      for (Index j = 0; j < x.cols(); ++j) {
        CHECK(cmax(j) == ref_arg(col_values(v, j), true));
        CHECK(cmin(j) == ref_arg(col_values(v, j), false));
      }
    }
  }
}

TEST_CASE("argmax and argmin: ties, NaN, inf and unusual scales", "[ops][reduce]") {
  const float nan = std::numeric_limits<float>::quiet_NaN(),
              inf = std::numeric_limits<float>::infinity();
  scalify_test::RowMatrix<float> d(2, 4);
  d << 1, 3, -2, 3,  //
      -2, 0, 3, 1;
  const ScaledMatrix<float> x(d, 0.5f);
  CHECK(scalify::argmax(x) == 1);  // the first of three 3s, row-major
  CHECK(scalify::argmin(x) == 2);  // the first of two -2s
  CHECK(scalify::rowwise_argmax(x) == Eigen::Matrix<Index, 2, 1>(1, 2));
  CHECK(scalify::colwise_argmin(x) == Eigen::Matrix<Index, 1, 4>(1, 1, 0, 1));

  // Zero scale: every value is 0, so index 0.
  CHECK(scalify::argmax(ScaledMatrix<float>(d, 0.0f)) == 0);
  CHECK(scalify::argmin(ScaledMatrix<float>(d, 0.0f)) == 0);
  // ... unless a value is inf * 0 = NaN: the first NaN.
  scalify_test::RowMatrix<float> e = d;
  e(1, 1) = -inf;
  e(1, 3) = inf;
  CHECK(scalify::argmax(ScaledMatrix<float>(e, 0.0f)) == 5);
  CHECK(scalify::argmax(ScaledMatrix<float>(e, 1.0f)) == 7);
  CHECK(scalify::argmin(ScaledMatrix<float>(e, 1.0f)) == 5);
  // NaN data: the first NaN wins, as in NumPy.
  e(0, 2) = nan;
  CHECK(scalify::argmax(ScaledMatrix<float>(e, 1.0f)) == 2);
  CHECK(scalify::argmin(ScaledMatrix<float>(e, 1.0f)) == 2);
  CHECK(scalify::rowwise_argmax(ScaledMatrix<float>(e, 1.0f)) == Eigen::Matrix<Index, 2, 1>(2, 3));
  CHECK(scalify::colwise_argmin(ScaledMatrix<float>(e, 1.0f)) ==
        Eigen::Matrix<Index, 1, 4>(1, 1, 0, 0));
  // A NaN scale (only an op makes one, e.g. 0 / 0 scales) makes every value NaN.
  const ScaledMatrix<float> nan_scaled(scalify::detail::unchecked_scale, d, nan);
  CHECK(scalify::argmax(nan_scaled) == 0);
  // A negative scale cannot be constructed (constructors throw); the internal unchecked path still
  // orders the values, which reverses the order of the data.
  const ScaledMatrix<float> negative(scalify::detail::unchecked_scale, d, -1.0f);
  CHECK(scalify::argmax(negative) == 2);
  CHECK(scalify::argmin(negative) == 1);
  CHECK_THROWS_AS(ScaledMatrix<float>(d, -1.0f), std::invalid_argument);
  // A huge double scale: the values overflow double, the order is still the data's.
  scalify_test::RowMatrix<float> big(1, 3);
  big << 1e10f, 3e10f, 2e10f;
  CHECK(scalify::argmax(ScaledMatrix<float, double>(big, 1e300)) == 1);
  // Lazy inputs.
  CHECK(scalify::argmax(scalify::transpose(x)) == 2);  // (4 x 2): 3 at (1, 0)
  CHECK(scalify::rowwise_argmin(scalify::reverse(x, scalify::axis::cols)) ==
        Eigen::Matrix<Index, 2, 1>(1, 3));
}

// ------------------------------------------------------------------------------
// Empty arrays, lazy and unusual inputs, errors

TEST_CASE("reductions of empty arrays: identities, NaN means, and errors", "[ops][reduce]") {
  const auto e03 = random_scaled<float>(0, 3, 0.5f, 1);
  const auto e30 = random_scaled<float>(3, 0, 0.5f, 2);
  const auto e00 = random_scaled<float>(0, 0, 0.5f, 3);
  CHECK(scalify::sum(e03).data()(0, 0) == 0.0f);
  CHECK(scalify::sum(e03).scale() == 0.5f);
  CHECK(std::isnan(scalify::mean(e00).data()(0, 0)));
  CHECK(scalify::mean(e00).scale() == 0.5f);
  CHECK(scalify::prod(e30).data()(0, 0) == 1.0f);
  CHECK(scalify::prod(e30).scale() == 1.0f);

  // Reducing an empty axis: the identity (sum 0, prod 1) or NaN (mean).
  const ScaledMatrix<float> rs = scalify::rowwise_sum(e30);
  CHECK(rs.data() == Eigen::MatrixXf::Zero(3, 1));
  CHECK(rs.scale() == 0.5f);
  const ScaledMatrix<float> cp = scalify::colwise_prod(e03);
  CHECK(cp.data() == Eigen::MatrixXf::Ones(1, 3));
  CHECK(cp.scale() == 1.0f);
  const ScaledMatrix<float> rm = scalify::rowwise_mean(e30);
  CHECK(rm.data().array().isNaN().all());
  CHECK(rm.scale() == 0.5f);
  // No outputs at all.
  CHECK(ScaledMatrix<float>(scalify::colwise_sum(e30)).cols() == 0);
  CHECK(ScaledMatrix<float>(scalify::rowwise_max(e03)).rows() == 0);
  CHECK(scalify::rowwise_argmax(e03).size() == 0);
  CHECK(scalify::colwise_argmin(e30).size() == 0);

  // No identity: max, min, argmax and argmin of nothing throw.
  require_shape_error([&] { (void)scalify::max(e03); }, {"scalify::max", "(0 x 3)"});
  require_shape_error([&] { (void)scalify::min(e30); }, {"scalify::min", "(3 x 0)"});
  require_shape_error([&] { (void)scalify::argmax(e00); }, {"scalify::argmax", "(0 x 0)"});
  require_shape_error([&] { (void)scalify::argmin(e03); }, {"scalify::argmin", "(0 x 3)"});
  require_shape_error([&] { (void)scalify::rowwise_max(e30); },
                      {"scalify::rowwise_max", "(3 x 0)"});
  require_shape_error([&] { (void)scalify::colwise_min(e03); },
                      {"scalify::colwise_min", "(0 x 3)"});
  require_shape_error([&] { (void)scalify::rowwise_argmax(e30); },
                      {"scalify::rowwise_argmax", "(3 x 0)"});
  require_shape_error([&] { (void)scalify::colwise_argmin(e03); },
                      {"scalify::colwise_argmin", "(0 x 3)"});
  require_shape_error([&] { (void)scalify::rowwise_min(e00); },
                      {"scalify::rowwise_min", "(0 x 0)"});
}

TEMPLATE_TEST_CASE("partial reductions are lazy and store into every format", "[ops][reduce]",
                   scalify::float16, scalify::float8_e4m3fn) {
  using T = TestType;
  const double u = scalify_test::unit_roundoff<T>();
  const double tiny = static_cast<double>(std::numeric_limits<T>::denorm_min());
  const ScaledMatrix<T> x(unit_data<T>(9, 14, 600), 0.25f);  // products stay in range
  const auto check = [&](const auto& lazy, const char* what) {
    static_assert(!std::decay_t<decltype(lazy)>::is_storage, "partial reductions are lazy");
    const ScaledMatrix<T> stored = lazy;
    const MatrixXd expected = values_d(lazy);
    CHECK(stored.scale() == lazy.scale());
    const MatrixXd tolerance =
        (u * expected.cwiseAbs()).array() + tiny * static_cast<double>(lazy.scale());
    check_within(values_d(stored), expected, tolerance, what);
  };
  check(scalify::rowwise_sum(x), "rowwise_sum");
  check(scalify::colwise_sum(x), "colwise_sum");
  check(scalify::rowwise_mean(x), "rowwise_mean");
  check(scalify::colwise_mean(x), "colwise_mean");
  check(scalify::rowwise_prod(x), "rowwise_prod");
  check(scalify::colwise_prod(x), "colwise_prod");
  check(scalify::rowwise_max(x), "rowwise_max");
  check(scalify::colwise_max(x), "colwise_max");
  check(scalify::rowwise_min(x), "rowwise_min");
  check(scalify::colwise_min(x), "colwise_min");
  // max/min are exact.
  const ScaledMatrix<T> rmax = scalify::rowwise_max(x);
  CHECK(data_d(rmax) == data_d(x).rowwise().maxCoeff());
}

TEST_CASE("reductions of lazy inputs, other storage and other scale types", "[ops][reduce]") {
  const auto x = random_scaled<scalify::bfloat16>(6, 5, 0.75f, 700);
  const MatrixXd v = values_d(x);
  const sums all = ref_sums(v, 0), rows = ref_sums(v, 1);
  // Lazy operands: a transpose sums the same, rowwise over it is colwise over x.
  const auto t = scalify::transpose(x);
  CHECK(scalify::sum(t).scale() == scalify::sum(x).scale());
  CHECK(std::fabs(values_d(scalify::sum(t))(0, 0) - all.sum(0, 0)) <=
        30 * kFloatEps * all.magnitude(0, 0));
  const auto ct = scalify::colwise_sum(t);
  CHECK(ct.scale() == 0.75f * expected_factor(5));
  check_within(values_d(ct), rows.sum.transpose(), 5 * kFloatEps * rows.magnitude.transpose(),
               "colwise_sum(transpose)");
  CHECK(scalify::max(scalify::pad(x, 1, 1, 1, 1)).data()(0, 0) ==
        std::max(0.0, data_d(x).maxCoeff()));
  CHECK(scalify::argmax(scalify::reshape(x, 1, -1)) == scalify::argmax(x));
  CHECK(scalify::rowwise_argmax(scalify::concatenate_cols(x, x)) == scalify::rowwise_argmax(x));

  // Column-major storage and plain Eigen::Array data.
  const Eigen::MatrixXf cm = scalify_test::random_data<float>(4, 3, 701);
  const auto xc = scalify::make_scaled(cm, 2.0f);
  CHECK(scalify::argmax(xc) == ref_arg(all_values(cm.cast<double>()), true));
  check_within(values_d(scalify::rowwise_sum(xc)), ref_sums(values_d(xc), 1).sum,
               3 * kFloatEps * ref_sums(values_d(xc), 1).magnitude, "rowwise_sum column-major");
  const Eigen::ArrayXXf arr = cm.array();
  const auto xa = scalify::make_scaled(arr, 2.0f);
  const ScaledMatrix<float> ra = scalify::rowwise_sum(xa);
  check_within(values_d(ra), ref_sums(values_d(xc), 1).sum,
               3 * kFloatEps * ref_sums(values_d(xc), 1).magnitude, "rowwise_sum of an Array");
  const ScaledMatrix<float> ca = scalify::colwise_max(xa);
  CHECK(ca.data() == cm.colwise().maxCoeff());

  // Double scales stay double; E8M0 scales compute in float.
  const ScaledMatrix<float, double> xd(scalify_test::random_data<float>(3, 3, 702), 0x1p-200);
  const auto sd = scalify::sum(xd);
  static_assert(std::is_same_v<decltype(sd)::scale_type, double>);
  CHECK(sd.scale() == 0x1p-200 * 2);
  CHECK(scalify::mean(xd).scale() == 0x1p-200 * 2 / 8);
  CHECK(scalify::rowwise_sum(xd).scale() == 0x1p-200);
  const ScaledMatrix<scalify::float8_e4m3fn, scalify::float8_e8m0fnu> xe(
      scalify_test::random_data<scalify::float8_e4m3fn>(4, 4, 703),
      scalify::float8_e8m0fnu(0.125f));
  const auto se = scalify::sum(xe);
  static_assert(std::is_same_v<decltype(se)::scale_type, float>);
  CHECK(se.scale() == 0.5f);
  CHECK(scalify::max(xe).scale() == 0.125f);
  const ScaledMatrix<scalify::float8_e4m3fn, scalify::float8_e8m0fnu> back =
      scalify::colwise_max(xe);
  CHECK(static_cast<float>(back.scale()) == 0.125f);
}

TEST_CASE("sum and mean keep values whose scale rule leaves the scale type's range", "[ops][reduce]") {
  // sum: s * R(sqrt N) overflows float at s = 2^127 (an inf scale turned the values into inf);
  // mean: s * R(sqrt N) / P underflows it at s = 2^-149 (a zero scale turned them into 0).
  scalify_test::RowMatrix<float> d = scalify_test::RowMatrix<float>::Constant(4, 4, 0.0625f);  // 16 elements, sum 1
  d(0, 0) = 0.125f;
  d(3, 3) = 0.0f;                                                   // sum still 1
  for (double s : {0x1p127, 0x1p-149}) {
    INFO("scale " << s);
    const ScaledMatrix<float> x(d, static_cast<float>(s));
    const double total = d.cast<double>().sum() * s;  // the exact sum of the values
    const auto sm = scalify::sum(x);
    const auto mn = scalify::mean(x);
    CHECK(std::isfinite(sm.scale()));
    CHECK(sm.scale() > 0.0f);
    CHECK(static_cast<double>(sm.data()(0, 0)) * sm.scale() == Approx(total).epsilon(1e-6));
    CHECK(static_cast<double>(mn.data()(0, 0)) * mn.scale() == Approx(total / 16).epsilon(1e-6));
    // Partial reductions: one value per row or column.
    const ScaledMatrix<float> rs = scalify::rowwise_sum(x);
    const ScaledMatrix<float> cm = scalify::colwise_mean(x);
    const Eigen::VectorXd row_sums = d.cast<double>().rowwise().sum() * s;
    const Eigen::RowVectorXd col_means = d.cast<double>().colwise().mean() * s;
    for (int i = 0; i < 4; ++i) {
      CHECK(static_cast<double>(rs.data()(i, 0)) * rs.scale() == Approx(row_sums(i)).epsilon(1e-6));
      CHECK(static_cast<double>(cm.data()(0, i)) * cm.scale() == Approx(col_means(i)).epsilon(1e-6));
    }
  }
  // Ordinary scales are untouched by this: the rule's scale exactly (s * 4 for N = 16).
  const ScaledMatrix<float> y(d, 0.5f);
  CHECK(scalify::sum(y).scale() == 2.0f);
  CHECK(scalify::mean(y).scale() == 2.0f / 16);
}
