// tests/support/scaled.hpp: random scaled tensors and a double-precision
// reference for the scaled-op tests (tests/core, tests/ops).
//
// The reference never calls scalify's ops: values are computed in double from
// the unscaled inputs (data widened exactly, times the scale), and compared
// with a tolerance derived from the storage format's mantissa bits.
#pragma once

#include <Eigen/Core>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "scalify/core/scaled_array.hpp"
#include "scalify/errors.hpp"
#include "scalify/ops/detail/common.hpp"  // shape_string

namespace scalify_test {

template <class T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Unit roundoff of T: half the gap after 1 (float 2^-24, float16 2^-11,
/// bfloat16 2^-8, e4m3fn 2^-4, e5m2 2^-3).
template <class T>
constexpr double unit_roundoff() {
  return std::ldexp(1.0, -std::numeric_limits<T>::digits);
}

/// Random data of type T: normal(0, sigma) rounded into T with saturation, so
/// every element is finite.
template <class T>
RowMatrix<T> random_data(Eigen::Index rows, Eigen::Index cols, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, sigma);
  RowMatrix<T> m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) {
    const float v = dist(gen);
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      m.data()[i] = v;
    } else {
      m.data()[i] = scalify::saturate_cast<T>(v);
    }
  }
  return m;
}

/// A random ScaledMatrix<T> with the given scale.
template <class T, class S = float>
scalify::ScaledMatrix<T, S> random_scaled(Eigen::Index rows, Eigen::Index cols, S scale, uint32_t seed,
                                          float sigma = 1.0f) {
  return scalify::ScaledMatrix<T, S>(random_data<T>(rows, cols, seed, sigma), scale);
}

/// The exact values data * scale of any ScaledArray, in double.
template <class D, class S>
Eigen::MatrixXd values_d(const scalify::ScaledArray<D, S>& x) {
  Eigen::MatrixXd v = x.data().template cast<float>().template cast<double>();
  return v * static_cast<double>(x.scale());
}

/// Checks |actual - expected| <= rel * |expected| + abs elementwise (NaN must
/// match NaN, inf must match inf of the same sign); prints the first misses
/// with index, expected and actual.
inline void check_close(const Eigen::MatrixXd& actual, const Eigen::MatrixXd& expected, double rel, double abs,
                        const std::string& context) {
  INFO(context);
  REQUIRE(actual.rows() == expected.rows());
  REQUIRE(actual.cols() == expected.cols());
  int misses = 0;
  for (Eigen::Index i = 0; i < expected.rows(); ++i) {
    for (Eigen::Index j = 0; j < expected.cols(); ++j) {
      const double e = expected(i, j), a = actual(i, j);
      bool ok;
      if (std::isnan(e)) {
        ok = std::isnan(a);
      } else if (std::isinf(e)) {
        ok = a == e;
      } else {
        ok = std::fabs(a - e) <= rel * std::fabs(e) + abs;
      }
      if (!ok && misses++ < 5) {
        std::ostringstream os;
        os.precision(10);
        os << "at (" << i << ", " << j << "): expected " << e << ", actual " << a << " (rel " << rel << ", abs "
           << abs << ")";
        FAIL_CHECK(os.str());
      }
    }
  }
  CHECK(misses == 0);
}

/// Runs f and requires a scalify::shape_error whose message contains every part.
inline void require_shape_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
  } catch (const scalify::shape_error& e) {
    const std::string message = e.what();
    INFO("message: " << message);
    for (const std::string& part : parts) CHECK_THAT(message, Catch::Matchers::Contains(part));
    return;
  }
  FAIL("no scalify::shape_error thrown");
}

/// The storage formats the op tests run over (a Catch2 TEMPLATE_TEST_CASE list).
#define SCALIFY_STORAGE_FORMATS \
  float, scalify::float16, scalify::bfloat16, scalify::float8_e4m3fn, scalify::float8_e5m2

struct shape {
  Eigen::Index rows, cols;
};

/// The fixed corner cases `fixed` (1 x 1, rows, columns, odd sizes) plus four
/// random shapes up to 40 x 40 (the same in every program).
inline std::vector<shape> shapes_with_random(std::vector<shape> fixed) {
  std::mt19937 gen(2024);
  std::uniform_int_distribution<int> size(1, 40);
  for (int k = 0; k < 4; ++k) fixed.push_back({size(gen), size(gen)});
  return fixed;
}

/// Scales of the op tests: 1, non-powers of two, very small and large powers of two, zero.
inline const std::vector<float> kScales = {1.0f, 0.375f, 3.0f, 0x1p-20f, 0x1p19f, 0.0f};

/// The data of x widened exactly to double (the scale left out).
template <class D, class S>
Eigen::MatrixXd data_d(const scalify::ScaledArray<D, S>& x) {
  return x.data().template cast<float>().template cast<double>();
}

/// "op of (R x C), scale s", for INFO messages.
inline std::string describe(const char* op, Eigen::Index rows, Eigen::Index cols, double scale) {
  return std::string(op) + " of " + scalify::detail::shape_string(rows, cols) + ", scale " + std::to_string(scale);
}

}  // namespace scalify_test
