// Rescaling ops (ops/rescale.hpp): set_scaling, stop_scaling, get_data_scale,
// dynamic_rescale_{max,l1,l2} against norms computed in double.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "scalify/ops/rescale.hpp"
#include "support/scaled.hpp"

using scalify::float16;
using scalify::float8_e4m3fn;
using scalify::ScaledArray;
using scalify::ScaledMatrix;

namespace {
double pow2_down(double x) { return std::exp2(std::floor(std::log2(x))); }
}  // namespace

TEMPLATE_TEST_CASE("set_scaling keeps the values and takes the new scale", "[ops][rescale]", float, float16,
                   float8_e4m3fn) {
  const auto x = scalify_test::random_scaled<TestType>(5, 7, 0.5f, 3);
  for (float s : {0.5f, 0.25f, 2.0f, 3.0f}) {
    ScaledMatrix<float> y = scalify::set_scaling(x, s);
    CHECK(y.scale() == s);
    scalify_test::check_close(scalify_test::values_d(y), scalify_test::values_d(x), 1e-6, 0.0, "set_scaling");
  }
  ScaledMatrix<float> zero = scalify::set_scaling(x, 0.0f);
  CHECK(zero.scale() == 0.0f);
  CHECK(zero.data().isZero());
  CHECK_THROWS_AS(scalify::set_scaling(x, -1.0f), std::invalid_argument);
  CHECK_THROWS_AS(scalify::set_scaling(x, std::nanf("")), std::invalid_argument);
}

TEST_CASE("stop_scaling and get_data_scale", "[ops][rescale]") {
  const auto x = scalify_test::random_scaled<float16>(3, 4, 0x1p19f, 2);
  const Eigen::MatrixXf v = scalify::stop_scaling(x);
  for (Eigen::Index r = 0; r < 3; ++r) {
    for (Eigen::Index c = 0; c < 4; ++c) CHECK(v(r, c) == static_cast<float>(x.data()(r, c)) * 0x1p19f);
  }
  const auto [d, s] = scalify::get_data_scale(x);
  CHECK(&d == &x.data());
  CHECK(s == 0x1p19f);
}

TEMPLATE_TEST_CASE("dynamic_rescale_* rebase by the pow2_down of a norm, floored at 2^-14", "[ops][rescale]", float,
                   float16, float8_e4m3fn) {
  for (float sigma : {1.0f, 100.0f, 1e-3f}) {
    const auto x = scalify_test::random_scaled<TestType>(9, 13, 3.0f, 4, sigma);
    const Eigen::MatrixXd d = x.data().template cast<float>().template cast<double>();
    const double max_norm = d.cwiseAbs().maxCoeff();
    const double l1_norm = d.cwiseAbs().sum() / d.size();
    const double l2_norm = std::sqrt(d.squaredNorm() / d.size());
    INFO("sigma " << sigma);
    const auto check = [&](const auto& r, double norm, const char* what) {
      const double n = std::max(pow2_down(norm), 0x1p-14);
      CHECK(r.scale() == static_cast<float>(3.0 * n));
      scalify_test::check_close(scalify_test::values_d(r), scalify_test::values_d(x), 1e-6, 0.0, what);
    };
    check(scalify::dynamic_rescale_max(x), max_norm, "max");
    check(scalify::dynamic_rescale_l1(x), l1_norm, "l1");
    check(scalify::dynamic_rescale_l2(x), l2_norm, "l2");
    const auto m = scalify::dynamic_rescale_max(x);
    if (max_norm >= 0x1p-14) {
      CHECK(m.data().cwiseAbs().maxCoeff() >= 1.0f);
      CHECK(m.data().cwiseAbs().maxCoeff() < 2.0f);
    }
  }
}

TEST_CASE("dynamic_rescale of zeros and of non-finite data", "[ops][rescale]") {
  const auto zeros = scalify::make_scaled(Eigen::MatrixXf::Zero(2, 3), 4.0f);
  const auto z = scalify::dynamic_rescale_l2(zeros);
  CHECK(z.scale() == 4.0f * 0x1p-14f);
  CHECK(z.data().isZero());
  // An inf or a NaN anywhere (first, last or middle element, column-major storage): an infinite scale, every norm.
  for (const float bad : {std::nanf(""), std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity()}) {
    for (const Eigen::Index at : {0, 5, 19}) {
      Eigen::MatrixXf v = Eigen::MatrixXf::Ones(4, 5);
      v.data()[at] = bad;
      const auto x = scalify::make_scaled(v, 1.0f);
      INFO("value " << bad << " at " << at);
      CHECK(std::isinf(scalify::dynamic_rescale_max(x).scale()));
      CHECK(std::isinf(scalify::dynamic_rescale_l1(x).scale()));
      CHECK(std::isinf(scalify::dynamic_rescale_l2(x).scale()));
    }
  }
}

TEST_CASE("dynamic_rescale_l1 and l2 of finite data whose float sums would overflow keep a finite scale",
          "[ops][rescale]") {
  // |d| summed, or d^2, beyond float's range although every element is finite:
  // the norm, its power of two and the values stay finite (double reference).
  struct data_case {
    Eigen::Index rows, cols;
    float value;
  };
  for (const data_case c : {data_case{2, 2, 1e20f}, data_case{1, 1000, 1e18f}, data_case{2, 2, 3e38f},
                            data_case{3, 5, -std::numeric_limits<float>::max()}}) {
    Eigen::MatrixXf v = Eigen::MatrixXf::Constant(c.rows, c.cols, c.value);
    v(0, 0) = c.value / 4;  // not all equal
    const auto x = scalify::make_scaled(v, 0.5f);
    const Eigen::MatrixXd d = v.cast<double>();
    const double l1 = d.cwiseAbs().sum() / static_cast<double>(d.size());
    const double l2 = std::sqrt(d.cwiseAbs2().sum() / static_cast<double>(d.size()));
    INFO(c.rows << " x " << c.cols << " of " << c.value);
    const auto check = [&](const auto& r, double norm, const char* what) {
      INFO(what);
      CHECK(r.scale() == static_cast<float>(0.5 * pow2_down(norm)));
      CHECK(r.data().allFinite());
      scalify_test::check_close(scalify_test::values_d(r), scalify_test::values_d(x), 1e-6, 0.0, what);
    };
    check(scalify::dynamic_rescale_l1(x), l1, "l1");
    check(scalify::dynamic_rescale_l2(x), l2, "l2");
  }
}

TEST_CASE("dynamic_rescale reads float Array and column-major storage in place, same result", "[ops][rescale]") {
  const auto x = scalify_test::random_scaled<float>(6, 7, 0.5f, 21, 30.0f);
  const scalify::ScaledArray<Eigen::ArrayXXf> a(x.data().array(), 0.5f);   // column-major Array
  const auto rx = scalify::dynamic_rescale_l2(x), ra = scalify::dynamic_rescale_l2(a);
  CHECK(rx.scale() == ra.scale());
  CHECK(rx.data() == ra.data());
  const auto mx = scalify::dynamic_rescale_max(x), ma = scalify::dynamic_rescale_max(a);
  CHECK(mx.scale() == ma.scale());
  CHECK(mx.data() == ma.data());
}

TEST_CASE("set_scaling rejects rebasing factors beyond float and keeps extreme ones that fit", "[ops][rescale]") {
  const auto x = scalify_test::random_scaled<float>(2, 3, 1.0f, 9);
  // sx / s = 7e44 overflows float; 1 / 1e300 (a double scale) is 0 in float.
  CHECK_THROWS_AS(scalify::set_scaling(x, 1e-45f), std::invalid_argument);
  CHECK_THROWS_WITH(scalify::set_scaling(x, 1e-45f),
                    Catch::Contains("set_scaling") && Catch::Contains("onto 1e-45"));
  CHECK_THROWS_AS(scalify::set_scaling(x, 1e300), std::invalid_argument);
  CHECK_THROWS_WITH(scalify::set_scaling(x, 1e300), Catch::Contains("1e+300"));
  // Allowed: a zero target (zeroes the tensor), a zero-scale source, and large factors that fit.
  const ScaledMatrix<float> zeroed = scalify::set_scaling(x, 0.0f);
  CHECK(zeroed.data().isZero());
  const ScaledMatrix<float> from_zero = scalify::set_scaling(scalify_test::random_scaled<float>(2, 3, 0.0f, 9), 1e-45f);
  CHECK(from_zero.data().isZero());
  const ScaledMatrix<float> tiny = scalify::set_scaling(x, 0x1p-120f);
  CHECK(tiny.scale() == 0x1p-120f);
  scalify_test::check_close(scalify_test::values_d(tiny), scalify_test::values_d(x), 1e-7, 0, "rebased by 2^120");
  const ScaledArray<Eigen::Matrix<float, -1, -1, Eigen::RowMajor>, double> far = scalify::set_scaling(x, 1e-30);
  scalify_test::check_close(scalify_test::values_d(far), scalify_test::values_d(x), 1e-7, 0, "double scale 1e-30");
}
