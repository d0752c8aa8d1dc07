// ScaledArray (core/scaled_array.hpp): factories, accessors, storage
// assignment (evaluation, rounding into narrow types, E8M0 scales), cast, and
// the error paths.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "scalify/core/scaled_array.hpp"
#include "support/scaled.hpp"

using scalify::bfloat16;
using scalify::float16;
using scalify::float8_e4m3fn;
using scalify::float8_e5m2;
using scalify::float8_e8m0fnu;
using scalify::ScaledArray;
using scalify::ScaledMatrix;
using scalify_test::RowMatrix;

TEMPLATE_TEST_CASE("as_scaled(values, scale) stores values / scale, and storing rounds once into T",
                   "[core][scaled_array]", float, double, float16, bfloat16, float8_e4m3fn, float8_e5m2) {
  const Eigen::MatrixXf v = Eigen::MatrixXf::Random(7, 9) * 50.0f;
  for (float scale : {1.0f, 0.375f, 16.0f, 0x1p-20f, 0x1p19f}) {
    INFO("scale " << scale);
    const auto x = scalify::as_scaled(v, scale);  // float data v / scale
    STATIC_REQUIRE(std::is_same_v<std::decay_t<decltype(x.scale())>, float>);
    CHECK(x.scale() == scale);
    ScaledMatrix<TestType> y = x;
    CHECK(y.scale() == scale);
    int bad = 0;
    for (Eigen::Index r = 0; r < v.rows(); ++r) {
      for (Eigen::Index c = 0; c < v.cols(); ++c) {
        CHECK(x.data()(r, c) == v(r, c) / scale);
        const double actual = static_cast<double>(y.data()(r, c));
        const double expected = static_cast<double>(static_cast<TestType>(v(r, c) / scale));
        bad += !(actual == expected || (std::isnan(actual) && std::isnan(expected)));
      }
    }
    CHECK(bad == 0);
    // Where the data fits T's range, the values are the inputs to within T's
    // rounding (relative, or half a subnormal step near zero).
    if (scale >= 1.0f && scale <= 16.0f) {
      const double half_step = 0.5 * static_cast<double>(std::numeric_limits<TestType>::denorm_min()) * scale;
      scalify_test::check_close(scalify_test::values_d(y), v.cast<double>(),
                                std::is_same_v<TestType, double> ? 1e-7 : scalify_test::unit_roundoff<TestType>(),
                                half_step, "values after the store");
    }
  }
}

TEST_CASE("factories check their scale in every build type", "[core][scaled_array][errors]") {
  const Eigen::MatrixXf v = Eigen::MatrixXf::Ones(2, 3);
  CHECK_THROWS_AS(scalify::make_scaled(v, -1.0f), std::invalid_argument);
  CHECK_THROWS_AS(scalify::make_scaled(v, std::numeric_limits<float>::infinity()), std::invalid_argument);
  CHECK_THROWS_AS(scalify::make_scaled(v, std::nanf("")), std::invalid_argument);
  CHECK_NOTHROW(scalify::make_scaled(v, 0.0f));  // zero scale: all values 0, allowed
  CHECK_THROWS_AS(scalify::as_scaled(v, 0.0f), std::invalid_argument);
  CHECK_THROWS_WITH(scalify::as_scaled(v, -2.0f), Catch::Contains("as_scaled") && Catch::Contains("-2"));
}

TEST_CASE("make_scaled keeps data as is, as_scaled(values) uses scale 1", "[core][scaled_array]") {
  const RowMatrix<float8_e4m3fn> d = scalify_test::random_data<float8_e4m3fn>(3, 4, 1);
  const auto x = scalify::make_scaled(d, 0.25f);
  CHECK(x.rows() == 3);
  CHECK(x.cols() == 4);
  CHECK(x.size() == 12);
  CHECK(x.scale() == 0.25f);
  for (Eigen::Index i = 0; i < 12; ++i) CHECK(x.data().data()[i].bits() == d.data()[i].bits());
  const Eigen::MatrixXf dense = x.to_dense();
  for (Eigen::Index r = 0; r < 3; ++r) {
    for (Eigen::Index c = 0; c < 4; ++c) CHECK(dense(r, c) == static_cast<float>(d(r, c)) * 0.25f);
  }
  const auto y = scalify::as_scaled(Eigen::MatrixXf::Constant(2, 2, 3.0f));
  CHECK(y.scale() == 1.0f);
  CHECK(y.data()(1, 1) == 3.0f);
}

TEST_CASE("to_dense computes in float: a large scale with small fp16 data does not overflow",
          "[core][scaled_array]") {
  RowMatrix<float16> d(1, 3);
  d << float16(0.5f), float16(-2.0f), float16(0.0f);
  const auto x = scalify::make_scaled(d, 0x1p19f);
  const Eigen::MatrixXf v = x.to_dense();
  CHECK(v(0, 0) == 0x1p18f);
  CHECK(v(0, 1) == -0x1p20f);
  CHECK(v(0, 2) == 0.0f);
}

TEST_CASE("make_scaled_scalar gives data with 1 <= abs(data) < 2 and a power-of-two scale", "[core][scaled_array]") {
  for (float x : {5.0f, 3.0f, 0.3f, -3.0f, 1e-30f, 65504.0f}) {
    const auto s = scalify::make_scaled_scalar(x);
    INFO("x = " << x);
    CHECK(s.data()(0, 0) * s.scale() == x);
    CHECK(std::fabs(s.data()(0, 0)) >= 1.0f);
    CHECK(std::fabs(s.data()(0, 0)) < 2.0f);
    CHECK(s.scale() == std::exp2(std::floor(std::log2(std::fabs(x)))));
  }
  const auto z = scalify::make_scaled_scalar(0.0f);
  CHECK(z.scale() == 0.0f);
  CHECK(z.data()(0, 0) == 0.0f);
}

TEST_CASE("cast<T>() changes the data type only, rounding once with the given options", "[core][scaled_array]") {
  const auto x = scalify_test::random_scaled<float>(5, 6, 0.375f, 3, 300.0f);
  ScaledMatrix<float8_e4m3fn> y = x.cast<float8_e4m3fn>();
  ScaledMatrix<float8_e4m3fn> z = x.cast<float8_e4m3fn>({.saturate = true});
  CHECK(y.scale() == 0.375f);
  for (Eigen::Index i = 0; i < x.size(); ++i) {
    const float v = x.data().data()[i];
    CHECK(y.data().data()[i].bits() == float8_e4m3fn(v).bits());
    CHECK(z.data().data()[i].bits() == scalify::saturate_cast<float8_e4m3fn>(v).bits());
  }
}

TEST_CASE("storing into an E8M0 scale rounds the scale and rebases the data", "[core][scaled_array]") {
  const auto x = scalify_test::random_scaled<float>(4, 4, 3.0f, 5);  // 3 is not a power of two
  ScaledArray<RowMatrix<float>, float8_e8m0fnu> y = x;
  const float s = static_cast<float>(y.scale());
  CHECK(s == 2.0f);  // 3 = 1.5 * 2: a tie, to the even exponent
  scalify_test::check_close(scalify_test::values_d(y), scalify_test::values_d(x), 1e-6, 0, "E8M0 store");
}

TEST_CASE("the scope's store options apply when a result is stored", "[core][scaled_array]") {
  const auto x = scalify::make_scaled(Eigen::MatrixXf::Constant(2, 2, 1000.0f), 1.0f);
  ScaledMatrix<float8_e4m3fn> plain = x;
  CHECK(scalify::isnan(plain.data()(0, 0)));
  scalify::config_scope scope({.store = {.saturate = true}});
  ScaledMatrix<float8_e4m3fn> saturated = x;
  CHECK(static_cast<float>(saturated.data()(0, 0)) == 448.0f);
}

TEST_CASE("storage assignment evaluates large tensors in chunks like the element-by-element cast",
          "[core][scaled_array]") {
  // Shapes that exercise the chunking: many rows, one long row, one long column, column-major storage.
  for (auto [r, c] : {std::pair<int, int>{1000, 37}, {1, 20000}, {20000, 1}, {3, 3}}) {
    const auto x = scalify_test::random_scaled<float>(r, c, 0.5f, 7, 100.0f);
    ScaledMatrix<float8_e5m2> y = x;
    ScaledArray<Eigen::Matrix<float16, Eigen::Dynamic, Eigen::Dynamic>> z = x;  // column-major
    INFO(r << " x " << c);
    REQUIRE(y.rows() == r);
    REQUIRE(z.cols() == c);
    int bad = 0;
    for (int i = 0; i < r; ++i) {
      for (int j = 0; j < c; ++j) {
        const float v = x.data()(i, j);
        bad += y.data()(i, j).bits() != float8_e5m2(v).bits();
        bad += scalify::float16_bits(z.data()(i, j)) != scalify::float16_bits(float16(v));
      }
    }
    CHECK(bad == 0);
  }
}
