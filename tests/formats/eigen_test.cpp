// Eigen integration of the float8 types (formats/eigen.hpp): matrices of fp8,
// casts both ways, NumTraits constants, numext classification.
#include <catch2/catch.hpp>

#include <Eigen/Core>
#include <cmath>
#include <sstream>

#include "scalify/formats/cast.hpp"
#include "scalify/formats/eigen.hpp"

using scalify::float8_e4m3fn;
using scalify::float8_e5m2;

TEMPLATE_TEST_CASE("Eigen matrices of float8 cast element by element like the scalar cast", "[formats][eigen]",
                   float8_e4m3fn, float8_e5m2) {
  Eigen::MatrixXf x = Eigen::MatrixXf::Random(7, 5) * 600.0f;  // some beyond e4m3fn's 448
  x(0, 0) = 0.0f;
  x(1, 0) = -0.0f;
  x(2, 0) = std::nanf("");
  x(3, 0) = INFINITY;

  using Matrix = Eigen::Matrix<TestType, Eigen::Dynamic, Eigen::Dynamic>;
  const Matrix y = x.cast<TestType>();
  REQUIRE(y.rows() == 7);
  REQUIRE(y.cols() == 5);
  const Eigen::MatrixXf back = y.template cast<float>();
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    for (Eigen::Index j = 0; j < x.cols(); ++j) {
      INFO("x(" << i << "," << j << ") = " << x(i, j));
      CHECK(y(i, j).bits() == TestType(x(i, j)).bits());
      const float expected = static_cast<float>(TestType(x(i, j)));
      if (std::isnan(expected)) {
        CHECK(std::isnan(back(i, j)));
      } else {
        CHECK(back(i, j) == expected);
        CHECK(std::signbit(back(i, j)) == std::signbit(expected));
      }
    }
  }
}

TEST_CASE("Eigen expressions on float8 matrices round each operation like the scalar operators",
          "[formats][eigen]") {
  Eigen::Matrix<float8_e4m3fn, 3, 3> a, b;
  for (int i = 0; i < 9; ++i) {
    a(i) = float8_e4m3fn(0.25f * static_cast<float>(i + 1));
    b(i) = float8_e4m3fn(1.5f - 0.125f * static_cast<float>(i));
  }
  const Eigen::Matrix<float8_e4m3fn, 3, 3> sum = a + b;
  const Eigen::Matrix<float8_e4m3fn, 3, 3> prod = a.cwiseProduct(b);
  for (int i = 0; i < 9; ++i) {
    CHECK(sum(i).bits() == float8_e4m3fn(float(a(i)) + float(b(i))).bits());
    CHECK(prod(i).bits() == float8_e4m3fn(float(a(i)) * float(b(i))).bits());
  }
}

TEST_CASE("NumTraits of float8 come from std::numeric_limits", "[formats][eigen]") {
  using NT = Eigen::NumTraits<float8_e4m3fn>;
  CHECK(static_cast<float>(NT::highest()) == 448.0f);
  CHECK(static_cast<float>(NT::lowest()) == -448.0f);
  CHECK(static_cast<float>(NT::epsilon()) == 0.125f);
  CHECK(NT::IsSigned == 1);
  CHECK(NT::IsInteger == 0);
  CHECK(NT::RequireInitialization == 0);
  using NT5 = Eigen::NumTraits<float8_e5m2>;
  CHECK(static_cast<float>(NT5::highest()) == 57344.0f);
  CHECK(std::isinf(static_cast<float>(NT5::infinity())));
  CHECK(Eigen::NumTraits<scalify::float8_e8m0fnu>::IsSigned == 0);
}

TEST_CASE("Eigen::numext classifies float8 values", "[formats][eigen]") {
  CHECK((Eigen::numext::isnan)(float8_e4m3fn::from_bits(0x7F)));
  CHECK((Eigen::numext::isnan)(float8_e4m3fn::from_bits(0xFF)));
  CHECK_FALSE((Eigen::numext::isinf)(float8_e4m3fn::from_bits(0x7E)));
  CHECK((Eigen::numext::isinf)(float8_e5m2::from_bits(0xFC)));
  CHECK_FALSE((Eigen::numext::isfinite)(float8_e5m2::from_bits(0x7D)));
  CHECK((Eigen::numext::isfinite)(float8_e5m2::from_bits(0x7B)));
}

TEST_CASE("Eigen prints float8 matrices as their float values", "[formats][eigen]") {
  Eigen::Matrix<float8_e4m3fn, 1, 3> m;
  m << float8_e4m3fn(1.0f), float8_e4m3fn(-0.3f), float8_e4m3fn(448.0f);
  std::ostringstream os;
  os << m;
  CHECK(os.str().find("-0.3125") != std::string::npos);
  CHECK(os.str().find("448") != std::string::npos);
}
