// ScaledArray (core/scaled_array.hpp): factories, accessors, storage
// assignment (evaluation, rounding into narrow types, E8M0 scales), cast, and
// the error paths.
#include <catch2/catch.hpp>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <typeinfo>
#include <vector>

#include "scalify/core/scaled_array.hpp"
#include "scalify/ops/elementwise.hpp"
#include "scalify/ops/matmul.hpp"
#include "scalify/ops/reduce.hpp"
#include "scalify/ops/shape.hpp"
#include "support/scaled.hpp"

using scalify::bfloat16;
using scalify::float16;
using scalify::float8_e4m3fn;
using scalify::float8_e5m2;
using scalify::float8_e8m0fnu;
using scalify::ScaledArray;
using scalify::ScaledMatrix;
using scalify_test::RowMatrix;

namespace {
/// x rounded into T as the default store does: nearest even, saturating.
template <class T>
T saturated(float x) {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    return static_cast<T>(x);
  } else {
    return scalify::saturate_cast<T>(x);
  }
}
}  // namespace

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
        // The default store saturates: data beyond T's range becomes +-max finite.
        const double expected = static_cast<double>(saturated<TestType>(v(r, c) / scale));
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
  ScaledMatrix<float8_e4m3fn> y = x.cast<float8_e4m3fn>({.saturate = false});
  ScaledMatrix<float8_e4m3fn> z = x.cast<float8_e4m3fn>();  // the scope's store: saturating by default
  CHECK(y.scale() == 0.375f);
  int overflowed = 0;
  for (Eigen::Index i = 0; i < x.size(); ++i) {
    const float v = x.data().data()[i];
    CHECK(y.data().data()[i].bits() == float8_e4m3fn(v).bits());
    CHECK(z.data().data()[i].bits() == scalify::saturate_cast<float8_e4m3fn>(v).bits());
    overflowed += std::abs(v) > 464.0f;
  }
  CHECK(overflowed > 0);  // the two options differ on this input
}

TEMPLATE_TEST_CASE("cast<T>() works for every data type pair, the same type included (templated code)",
                   "[core][scaled_array]", float, double, float16, bfloat16, float8_e4m3fn, float8_e5m2) {
  RowMatrix<TestType> d(1, 4);
  d << TestType(1.5f), TestType(-0.25f), TestType(0.0f), TestType(3.0f);
  const ScaledMatrix<TestType> x(d, 0.5f);
  const auto check = [&](const auto& y) {
    CHECK(y.scale() == 0.5f);
    for (int j = 0; j < 4; ++j) CHECK(static_cast<double>(y.data()(0, j)) == static_cast<double>(d(0, j)));
  };
  check(ScaledMatrix<float>(x.template cast<float>()));
  check(ScaledMatrix<double>(x.template cast<double>()));
  check(ScaledMatrix<TestType>(x.template cast<TestType>()));
  check(ScaledMatrix<float16>(x.template cast<float16>()));
  check(ScaledMatrix<float8_e4m3fn>(x.template cast<float8_e4m3fn>()));
  // double data to a narrow type rounds once, from the double: 1 + 2^-4 + 2^-30 is above the
  // e4m3fn tie 1 + 2^-4 (which rounds to even 1), so it rounds up to 1.125.
  RowMatrix<double> e(1, 1);
  e << 1.0 + 0x1p-4 + 0x1p-30;
  const ScaledMatrix<float8_e4m3fn> r = ScaledMatrix<double>(e, 1.0f).cast<float8_e4m3fn>();
  CHECK(static_cast<float>(r.data()(0, 0)) == 1.125f);
  // Double storage keeps double data: a store evaluates in double there (float elsewhere).
  const ScaledMatrix<double> kept = ScaledMatrix<double>(e, 1.0f).cast<double>();
  CHECK(kept.data()(0, 0) == 1.0 + 0x1p-4 + 0x1p-30);
  const ScaledMatrix<double, double> rebased = ScaledMatrix<double>(e, 1.0f);  // another scale type
  CHECK(rebased.data()(0, 0) == 1.0 + 0x1p-4 + 0x1p-30);
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
  ScaledMatrix<float8_e4m3fn> saturated = x;  // the default store saturates
  CHECK(static_cast<float>(saturated.data()(0, 0)) == 448.0f);
  scalify::config_scope scope({.store = {.saturate = false}});
  ScaledMatrix<float8_e4m3fn> plain = x;
  CHECK(scalify::isnan(plain.data()(0, 0)));
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

// ---------------------------------------------------------------------------
// Bad input (issue 16): results stored into fixed-size, vector and bounded
// storage, and scales that cannot represent the values. Every case throws the
// same way in every build type (these tests run in the assert-enabled and the
// -DNDEBUG builds alike, and under ASan + UBSan).

namespace {

/// Runs f and requires an exception of type E (or derived) whose message
/// contains every part; `exact_type` also requires typeid(e) == typeid(E).
template <class E>
void require_error(const std::function<void()>& f, const std::vector<std::string>& parts, bool exact_type = false) {
  try {
    f();
  } catch (const E& e) {
    const std::string message = e.what();
    INFO("message: " << message);
    if (exact_type) CHECK(typeid(e) == typeid(E));
    for (const std::string& part : parts) CHECK_THAT(message, Catch::Matchers::Contains(part));
    return;
  }
  FAIL("no exception of the expected type thrown");
}

/// A (2 x 3) float tensor, values 1..6, scale 1.
ScaledMatrix<float> two_by_three() {
  RowMatrix<float> d(2, 3);
  d << 1, 2, 3, 4, 5, 6;
  return ScaledMatrix<float>(d, 1.0f);
}

}  // namespace

TEST_CASE("storing a result into a ScaledScalar or ScaledVector of another shape throws shape_error",
          "[core][scaled_array][errors]") {
  const ScaledMatrix<float> a = two_by_three();
  using scalify::ScaledScalar;
  using scalify::ScaledVector;
  // Construction (the reproducers: an Eigen assertion in debug builds,
  // a stack-buffer-overflow write with -DNDEBUG, 2 of 6 values kept in a vector).
  require_error<scalify::shape_error>([&] { ScaledScalar<float> s = a + a; (void)s; }, {"(2 x 3)", "(1 x 1)"});
  require_error<scalify::shape_error>([&] { ScaledVector<float> v = a + a; (void)v; }, {"(2 x 3)", "(any x 1)"});
  require_error<scalify::shape_error>([&] { ScaledVector<float8_e4m3fn> v = a * a; (void)v; },
                                      {"(2 x 3)", "(any x 1)"});
  require_error<scalify::shape_error>([&] { ScaledScalar<float16> s = a; (void)s; }, {"(2 x 3)", "(1 x 1)"});
  // Assignment: the destination keeps its shape, data and scale.
  ScaledVector<float> v = scalify::block(a, 0, 0, 2, 1);  // a column fits
  REQUIRE(v.rows() == 2);
  CHECK(v.data()(1, 0) == 4.0f);
  require_error<scalify::shape_error>([&] { v = a + a; }, {"(2 x 3)"});
  require_error<scalify::shape_error>([&] { v = scalify::transpose(v); }, {"(1 x 2)"});  // aliasing path
  CHECK(v.rows() == 2);
  CHECK(v.data()(0, 0) == 1.0f);
  CHECK(v.data()(1, 0) == 4.0f);
  CHECK(v.scale() == 1.0f);
  ScaledScalar<float> s = scalify::block(a, 1, 2, 1, 1);
  CHECK(s.data()(0, 0) == 6.0f);
  require_error<scalify::shape_error>([&] { s = scalify::transpose(a); }, {"(3 x 2)", "(1 x 1)"});
  CHECK(s.data()(0, 0) == 6.0f);
  // A row vector takes (1 x n) only; a column is not transposed silently.
  using RowVectorStorage = ScaledArray<Eigen::Matrix<float, 1, Eigen::Dynamic>>;
  RowVectorStorage r = scalify::block(a, 1, 0, 1, 3);
  CHECK(r.cols() == 3);
  CHECK(r.data()(0, 2) == 6.0f);
  require_error<scalify::shape_error>([&] { r = scalify::block(a, 0, 0, 2, 1); }, {"(2 x 1)", "(1 x any)"});
}

TEST_CASE("fixed-size and bounded storage take only results of a fitting shape", "[core][scaled_array][errors]") {
  const ScaledMatrix<float> a = two_by_three();
  using Fixed23 = ScaledArray<Eigen::Matrix<float, 2, 3, Eigen::RowMajor>>;
  using Bounded = ScaledArray<Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor, 3, 3>>;
  const Fixed23 f = a * a;  // the right shape: evaluated as usual
  for (int i = 0; i < 6; ++i) CHECK(f.data().data()[i] == static_cast<float>((i + 1) * (i + 1)));
  require_error<scalify::shape_error>([&] { Fixed23 g = scalify::transpose(a); (void)g; }, {"(3 x 2)", "(2 x 3)"});
  const Bounded b = scalify::block(a, 0, 1, 2, 2);
  CHECK(b.rows() == 2);
  CHECK(b.data()(1, 1) == 6.0f);
  const ScaledMatrix<float> big = scalify::pad(a, 1, 1, 0, 0);  // (4 x 3)
  require_error<scalify::shape_error>([&] { Bounded c = big; (void)c; }, {"(4 x 3)", "(<= 3 x <= 3)"});
  // Narrow data, the E8M0-scale (rebasing) path, and a fixed-size scalar of float16.
  using FixedNarrow = ScaledArray<Eigen::Matrix<float8_e5m2, 2, 2>, float8_e8m0fnu>;
  require_error<scalify::shape_error>([&] { FixedNarrow n = a * 3.0f; (void)n; }, {"(2 x 3)", "(2 x 2)"});
}

TEST_CASE("matmul results and reductions stored into vectors and scalars are shape-checked",
          "[core][scaled_array][errors]") {
  const ScaledMatrix<float> a = two_by_three();
  RowMatrix<float> w(3, 1);
  w << 1, 0, -1;
  const ScaledMatrix<float> col(w, 1.0f);
  const scalify::ScaledVector<float> y = scalify::matmul(a, col);  // (2 x 1): fits
  CHECK(y.data()(0, 0) * y.scale() == -2.0f);
  CHECK(y.data()(1, 0) * y.scale() == -2.0f);
  require_error<scalify::shape_error>(
      [&] {
        scalify::ScaledVector<float> z = scalify::matmul(a, a, scalify::trans::yes);
        (void)z;
      },
      {"(3 x 3)", "(any x 1)"});
  const scalify::ScaledVector<float> rows = scalify::rowwise_sum(a);  // (2 x 1)
  CHECK(rows.data()(1, 0) * rows.scale() == 15.0f);
  require_error<scalify::shape_error>([&] { scalify::ScaledVector<float> c = scalify::colwise_sum(a); (void)c; },
                                      {"(1 x 3)", "(any x 1)"});
  const scalify::ScaledScalar<float> total = scalify::sum(a);
  CHECK(total.data()(0, 0) * total.scale() == 21.0f);
  require_error<scalify::shape_error>([&] { scalify::ScaledScalar<float> m = scalify::colwise_max(a); (void)m; },
                                      {"(1 x 3)", "(1 x 1)"});
}

TEST_CASE("constructing storage from another Eigen type checks its shape", "[core][scaled_array][errors]") {
  const Eigen::MatrixXf m = Eigen::MatrixXf::Constant(2, 3, 2.0f);
  require_error<scalify::shape_error>([&] { scalify::ScaledVector<float> v(m, 1.0f); (void)v; },
                                      {"(2 x 3)", "(any x 1)"});
  require_error<scalify::shape_error>([&] { scalify::ScaledScalar<float> s(m, 1.0f); (void)s; },
                                      {"(2 x 3)", "(1 x 1)"});
  const scalify::ScaledVector<float> v(m.col(1), 0.5f);  // an expression of a fitting shape
  CHECK(v.rows() == 2);
  CHECK(v.data()(1, 0) == 2.0f);
  CHECK(v.scale() == 0.5f);
  const ScaledMatrix<float> x(m * 3.0f, 0.25f);  // dynamic storage from an expression
  CHECK(x.data()(1, 2) == 6.0f);
}

TEST_CASE("as_scaled rejects a scale that cannot represent the values", "[core][scaled_array][errors]") {
  Eigen::MatrixXf v(2, 2);
  v << 0.5f, -0.75f, 1e-30f, 0.0f;
  // The cases: a float subnormal scale (values / 1e-45 overflow float),
  // and double scales that the float divisor turned into inf or 0.
  require_error<std::invalid_argument>([&] { (void)scalify::as_scaled(v, 1e-45f); },
                                       {"as_scaled", "scale 1e-45", "overflows float"});
  require_error<std::invalid_argument>([&] { (void)scalify::as_scaled(v, 1e300); },
                                       {"as_scaled", "1e+300", "rounds to 0 in float"});
  require_error<std::invalid_argument>([&] { (void)scalify::as_scaled(v, 1e-300); },
                                       {"as_scaled", "1e-300", "overflows float"});
  // A normal scale too small for large values; narrow data overflows at its own range.
  const Eigen::MatrixXf large = Eigen::MatrixXf::Constant(1, 1, 1e30f);
  require_error<std::invalid_argument>([&] { (void)scalify::as_scaled(large, 1e-20f); },
                                       {"scale 1e-20", "largest |value| 1e+30", "overflows float"});
  RowMatrix<float16> h(1, 2);
  h << float16(65504.0f), float16(1.0f);
  require_error<std::invalid_argument>([&] { (void)scalify::as_scaled(h, 0.5f); }, {"overflows float16"});
  RowMatrix<float8_e4m3fn> e(1, 2);
  e << float8_e4m3fn(240.0f), float8_e4m3fn(1.0f);  // 240 / 0.5 = 480 > 464: NaN in e4m3fn
  require_error<std::invalid_argument>([&] { (void)scalify::as_scaled(e, 0.5f); }, {"overflows float8_e4m3fn"});
  // Whatever the store's saturation: saturating would not keep values / scale either.
  {
    scalify::config_scope scope({.store = {.saturate = true}});
    require_error<std::invalid_argument>([&] { (void)scalify::as_scaled(e, 0.5f); }, {"overflows"});
  }
  // The check does not fire at the edge: 224 / 0.5 = 448, e4m3fn's largest finite value.
  RowMatrix<float8_e4m3fn> edge(1, 1);
  edge << float8_e4m3fn(224.0f);
  const auto fine = scalify::as_scaled(edge, 0.5f);
  CHECK(static_cast<float>(fine.data()(0, 0)) == 448.0f);
}

TEST_CASE("as_scaled with extreme scales that can represent the values is exact", "[core][scaled_array]") {
  // A subnormal float scale with values near it: data = values / 2^-149, exactly.
  Eigen::MatrixXf tiny(1, 3);
  tiny << 0x1p-140f, -0x3p-146f, 0.0f;
  const auto t = scalify::as_scaled(tiny, 0x1p-149f);
  CHECK(t.data()(0, 0) == 512.0f);
  CHECK(t.data()(0, 1) == -24.0f);
  CHECK(t.data()(0, 2) == 0.0f);
  // Double values with double scales far beyond float: divided in double.
  Eigen::MatrixXd d(1, 3);
  d << 3e300, -1.5e299, 7e-10;
  const auto x = scalify::as_scaled(d, 1e300);
  STATIC_REQUIRE(std::is_same_v<std::decay_t<decltype(x.scale())>, double>);
  CHECK(x.data()(0, 0) == Approx(3.0).epsilon(1e-15));
  CHECK(x.data()(0, 1) == Approx(-0.15).epsilon(1e-15));
  CHECK(x.data()(0, 2) == Approx(7e-310).epsilon(1e-6));  // a double subnormal, kept
  Eigen::MatrixXd small(1, 1);
  small << 2e-290;
  const auto y = scalify::as_scaled(small, 1e-300);
  CHECK(y.data()(0, 0) == Approx(2e10).epsilon(1e-15));
  // Float values with a double scale inside float's range: one division, as in double.
  Eigen::MatrixXf f(1, 2);
  f << 3.0f, -1e-3f;
  const auto z = scalify::as_scaled(f, 1e-30);
  CHECK(z.data()(0, 0) == static_cast<float>(3.0 / 1e-30));
  CHECK(z.data()(0, 1) == static_cast<float>(static_cast<double>(-1e-3f) / 1e-30));
  // NaN and inf values are not "lost" by a scale: they stay NaN and inf.
  Eigen::MatrixXf special(1, 2);
  special << std::numeric_limits<float>::infinity(), std::nanf("");
  const auto sp = scalify::as_scaled(special, 1e-45f);
  CHECK(sp.data()(0, 0) == std::numeric_limits<float>::infinity());
  CHECK(std::isnan(sp.data()(0, 1)));
}

TEST_CASE("storing a double scale beyond float's range keeps the values or throws", "[core][scaled_array]") {
  RowMatrix<float> d(1, 3);
  d << 1.0f, -0.5f, 0.0f;
  using DoubleScaled = ScaledArray<RowMatrix<float>, double>;
  for (double scale : {1e39, 3e-42, 1e-50, 1e-44}) {
    INFO("scale " << scale);
    const DoubleScaled x(d, scale);
    const ScaledMatrix<float> y = x;
    CHECK(std::isfinite(y.scale()));
    CHECK(y.scale() > 0.0f);
    for (int j = 0; j < 3; ++j) {
      const double expected = static_cast<double>(d(0, j)) * scale;
      const double actual = static_cast<double>(y.data()(0, j)) * static_cast<double>(y.scale());
      CHECK(actual == Approx(expected).epsilon(1e-6).margin(0));
    }
  }
  // Beyond what the float data can absorb: an error naming the scale and the type, and no change.
  ScaledMatrix<float> y(RowMatrix<float>::Constant(1, 1, 7.0f), 2.0f);
  for (double scale : {1e300, 1e-300}) {
    const DoubleScaled x(d, scale);
    require_error<std::invalid_argument>([&] { y = x; },
                                         {"ScaledArray", scalify::detail::number_string(scale), "float"});
  }
  CHECK(y.data()(0, 0) == 7.0f);
  CHECK(y.scale() == 2.0f);
}

TEST_CASE("storing into an E8M0 scale keeps zero, infinite, tiny and huge scales' values",
          "[core][scaled_array]") {
  using E8 = ScaledArray<RowMatrix<float>, float8_e8m0fnu>;
  const float inf = std::numeric_limits<float>::infinity();
  RowMatrix<float> d(1, 4);
  d << 1.0f, -2.0f, 0.0f, inf;
  // E8M0 has no zero and no inf: a scale 1 and the data times 0 (or inf), as plain math on values.
  for (float scale : {0.0f, inf}) {
    INFO("scale " << scale);
    // An inf scale only comes from an op (a constructor rejects it): d / (1 on scale 0).
    const ScaledMatrix<float> x =
        scale == 0.0f ? ScaledMatrix<float>(d, 0.0f)
                      : ScaledMatrix<float>(scalify::make_scaled(d, 1.0f) /
                                            scalify::make_scaled(RowMatrix<float>::Ones(1, 4), 0.0f));
    REQUIRE(x.scale() == scale);
    const E8 y = x;
    CHECK(static_cast<float>(y.scale()) == 1.0f);
    for (int j = 0; j < 4; ++j) {
      const float expected = d(0, j) * scale;  // 0 * inf and inf * 0 are NaN
      const float actual = y.data()(0, j) * static_cast<float>(y.scale());
      if (std::isnan(expected)) {
        CHECK(std::isnan(actual));
      } else {
        CHECK(actual == expected);
      }
    }
  }
  // Below E8M0's smallest scale 2^-127 and beyond float's range (a double scale): rebased exactly.
  RowMatrix<float> f(1, 2);
  f << 1.5f, -0.25f;
  const ScaledMatrix<float> below(f, 0x1p-140f);
  const E8 yb = below;
  CHECK(static_cast<float>(yb.scale()) == 0x1p-127f);
  CHECK(yb.data()(0, 0) == 1.5f * 0x1p-13f);
  const ScaledArray<RowMatrix<float>, double> above(f, 0x1p200);
  const E8 ya = above;
  CHECK(static_cast<float>(ya.scale()) == 0x1p127f);
  CHECK(ya.data()(0, 1) == -0.25f * 0x1p73f);
  // Too far for the float data: an error, not NaN values.
  const ScaledArray<RowMatrix<float>, double> far(f, 0x1p-300);
  require_error<std::invalid_argument>([&] { E8 z = far; (void)z; }, {"float8_e8m0fnu"});
}

TEST_CASE("cast<T>() rejects a rounding mode outside the enum", "[core][scaled_array][errors]") {
  const ScaledMatrix<float> a = two_by_three();
  require_error<std::invalid_argument>(
      [&] { (void)a.cast<float8_e4m3fn>({.round = static_cast<scalify::rounding>(3)}); },
      {"scalify::ScaledArray::cast", "rounding 3"}, /*exact_type=*/true);
}

TEST_CASE("the store rule as documented: x * x into e4m3fn saturates by default, NaN without saturation",
          "[core][scaled_array]") {
  // docs/scaled_array.md, "Overflow when storing": one default, saturating, for every store.
  const ScaledMatrix<float8_e4m3fn> x(RowMatrix<float8_e4m3fn>::Constant(1, 1, float8_e4m3fn(30.0f)), 1.0f);
  const ScaledMatrix<float8_e4m3fn> y = x * x;  // 900
  CHECK(y.scale() == 1.0f);
  CHECK(static_cast<float>(y.data()(0, 0)) == 448.0f);
  scalify::config_scope scope({.store = {.saturate = false}});
  const ScaledMatrix<float8_e4m3fn> z = x * x;
  CHECK(scalify::isnan(z.data()(0, 0)));
}

TEST_CASE("one overflow default: as_scaled of -1e6 into e4m3fn gives -448, NaN with saturate = false",
          "[core][scaled_array]") {
  Eigen::MatrixXf v(1, 4);
  v << -1e6f, 1e6f, 2.0f, std::numeric_limits<float>::quiet_NaN();
  {
    const ScaledMatrix<float8_e4m3fn> x = scalify::as_scaled(v, 4.0f);  // data -250000, 250000, 0.5, NaN
    CHECK(x.scale() == 4.0f);
    CHECK(static_cast<float>(x.data()(0, 0)) == -448.0f);
    CHECK(static_cast<float>(x.data()(0, 1)) == 448.0f);
    CHECK(static_cast<float>(x.data()(0, 2)) == 0.5f);
    CHECK(scalify::isnan(x.data()(0, 3)));  // NaN stays NaN
    const ScaledMatrix<float8_e5m2> y = scalify::as_scaled(v, 4.0f);
    CHECK(static_cast<float>(y.data()(0, 0)) == -57344.0f);
    const ScaledMatrix<float16> h = scalify::as_scaled(v, 4.0f);
    CHECK(static_cast<float>(h.data()(0, 0)) == -65504.0f);
    // x.cast<T>() follows the same default.
    const ScaledMatrix<float8_e4m3fn> c = scalify::as_scaled(v, 4.0f).cast<float8_e4m3fn>();
    CHECK(static_cast<float>(c.data()(0, 1)) == 448.0f);
  }
  {
    scalify::config_scope scope({.store = {.saturate = false}});
    const ScaledMatrix<float8_e4m3fn> x = scalify::as_scaled(v, 4.0f);
    CHECK(scalify::isnan(x.data()(0, 0)));
    const ScaledMatrix<float8_e5m2> y = scalify::as_scaled(v, 4.0f);
    CHECK(static_cast<float>(y.data()(0, 0)) == -std::numeric_limits<float>::infinity());
  }
  // Infinite values are not finite overflow: +-inf stays +-inf where the format has it, NaN in e4m3fn.
  Eigen::MatrixXf w(1, 2);
  w << std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity();
  const ScaledMatrix<float8_e5m2> y = scalify::as_scaled(w);
  CHECK(static_cast<float>(y.data()(0, 0)) == std::numeric_limits<float>::infinity());
  CHECK(static_cast<float>(y.data()(0, 1)) == -std::numeric_limits<float>::infinity());
  const ScaledMatrix<float16> h = scalify::as_scaled(w);
  CHECK(static_cast<float>(h.data()(0, 1)) == -std::numeric_limits<float>::infinity());
  const ScaledMatrix<float8_e4m3fn> x = scalify::as_scaled(w);
  CHECK(scalify::isnan(x.data()(0, 0)));
  CHECK(scalify::isnan(x.data()(0, 1)));
}

// ------------------------------------------------------------------------------
// Scale validation: every way a scale enters from outside.

TEST_CASE("constructors and set_scale reject NaN, inf and negative scales in every build type",
          "[core][scaled_array][errors]") {
  const RowMatrix<float> d = RowMatrix<float>::Ones(2, 3);
  const Eigen::MatrixXf col_major = Eigen::MatrixXf::Ones(2, 3);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (const float bad : {nan, inf, -inf, -2.0f}) {
    const std::string text = scalify::detail::number_string(bad);
    INFO("scale " << text);
    // ScaledArray(Data, Scale)
    require_error<std::invalid_argument>([&] { ScaledMatrix<float> x(d, bad); }, {"scalify::ScaledArray", text},
                                         /*exact_type=*/true);
    // ScaledArray(other Eigen type, Scale): storage from an expression or another layout
    require_error<std::invalid_argument>([&] { ScaledMatrix<float> x(col_major, bad); },
                                         {"scalify::ScaledArray", text}, /*exact_type=*/true);
    require_error<std::invalid_argument>([&] { scalify::ScaledVector<float> x(col_major.col(0), bad); },
                                         {"scalify::ScaledArray", text}, /*exact_type=*/true);
    // a double scale, and data of another type
    require_error<std::invalid_argument>([&] { ScaledMatrix<float16, double> x(d.cast<float16>(), bad); },
                                         {"scalify::ScaledArray", text}, /*exact_type=*/true);
    // a lazy ScaledArray built by hand
    require_error<std::invalid_argument>([&] { ScaledArray<std::decay_t<decltype(d.array() * 2.0f)>> x(d.array() * 2.0f, bad); },
                                         {"scalify::ScaledArray", text}, /*exact_type=*/true);
    // set_scale leaves the scale as it was
    ScaledMatrix<float8_e4m3fn> x(d.cast<float8_e4m3fn>(), 0.5f);
    require_error<std::invalid_argument>([&] { x.set_scale(bad); }, {"scalify::ScaledArray::set_scale", text},
                                         /*exact_type=*/true);
    CHECK(x.scale() == 0.5f);
    ScaledMatrix<float, double> xd(d, 0.5);
    require_error<std::invalid_argument>([&] { xd.set_scale(static_cast<double>(bad)); },
                                         {"scalify::ScaledArray::set_scale"}, /*exact_type=*/true);
    CHECK(xd.scale() == 0.5);
  }
  // The message names the value.
  CHECK_THROWS_WITH((ScaledMatrix<float>(d, -2.0f)),
                    "scalify::ScaledArray: the scale must be finite and >= 0, got -2");
  // NaN E8M0 (code 0xFF) is rejected too.
  require_error<std::invalid_argument>(
      [&] { ScaledArray<RowMatrix<float>, float8_e8m0fnu> e(d, float8_e8m0fnu::from_bits(0xFF)); },
      {"scalify::ScaledArray", "nan"}, /*exact_type=*/true);
  // Zero (a zero constant) and tiny and huge finite scales are valid.
  ScaledMatrix<float> z(d, 0.0f);
  CHECK(z.scale() == 0.0f);
  z.set_scale(0x1p-149f);
  CHECK(z.scale() == 0x1p-149f);
  z.set_scale(std::numeric_limits<float>::max());
  CHECK(z.scale() == std::numeric_limits<float>::max());
  z.set_scale(0.0f);
  CHECK(z.scale() == 0.0f);
}

TEST_CASE("ops whose rules give an inf or NaN scale still work, and their results can be stored",
          "[core][scaled_array]") {
  RowMatrix<float> d(1, 3);
  d << 2.0f, -1.0f, 0.0f;
  const ScaledMatrix<float> a(d, 1.0f);
  const ScaledMatrix<float> zero_scale(RowMatrix<float>::Ones(1, 3), 0.0f);
  const ScaledMatrix<float> q = a / zero_scale;  // div by a zero scale: scale inf, values x / 0
  CHECK(q.scale() == std::numeric_limits<float>::infinity());
  const Eigen::MatrixXf qv = q.to_dense();
  CHECK(qv(0, 0) == std::numeric_limits<float>::infinity());
  CHECK(qv(0, 1) == -std::numeric_limits<float>::infinity());
  CHECK(std::isnan(qv(0, 2)));  // 0 / 0
  const ScaledMatrix<float> n = zero_scale / zero_scale;  // 0 / 0: scale NaN
  CHECK(std::isnan(n.scale()));
  const ScaledMatrix<float> r = a / 0.0f;  // a / c with c = 0: scale inf
  CHECK(r.scale() == std::numeric_limits<float>::infinity());
  const ScaledMatrix<float> big(d, 0x1p100f);
  const ScaledMatrix<float> m = big * big;  // mul: 2^200 overflows a float scale
  CHECK(m.scale() == std::numeric_limits<float>::infinity());
  const ScaledMatrix<float> p = scalify::pow(big, 2);
  CHECK(p.scale() == std::numeric_limits<float>::infinity());
  // Copies and moves of such storage keep the scale (no check on copy).
  ScaledMatrix<float> copy = q;
  CHECK(copy.scale() == std::numeric_limits<float>::infinity());
  // Lazy results of them, and casts, also keep it.
  ScaledMatrix<float16> h = q.cast<float16>();
  CHECK(h.scale() == std::numeric_limits<float>::infinity());
}

TEST_CASE("item() returns the value of a (1 x 1) array, double for a double scale", "[core][scaled_array]") {
  RowMatrix<float16> d(1, 1);
  d << float16(1.5f);
  const ScaledMatrix<float16> x(d, 0.25f);
  STATIC_REQUIRE(std::is_same_v<decltype(x.item()), float>);
  CHECK(x.item() == 0.375f);
  const scalify::ScaledScalar<float, double> y(Eigen::Matrix<float, 1, 1>::Constant(3.0f), 1e300);
  STATIC_REQUIRE(std::is_same_v<decltype(y.item()), double>);
  CHECK(y.item() == 3e300);
  const ScaledArray<RowMatrix<float>, float8_e8m0fnu> e(RowMatrix<float>::Constant(1, 1, -3.0f),
                                                         float8_e8m0fnu(4.0f));
  STATIC_REQUIRE(std::is_same_v<decltype(e.item()), float>);
  CHECK(e.item() == -12.0f);
  // A reduction and a lazy result.
  const ScaledMatrix<float> v(RowMatrix<float>::Constant(2, 2, 1.5f), 2.0f);
  CHECK(scalify::sum(v).item() == 12.0f);
  const ScaledMatrix<float> one(RowMatrix<float>::Constant(1, 1, 3.0f), 0.5f);
  CHECK((one * one).item() == 2.25f);
  // A float scale with huge data: the value overflows float to inf, as plain float math.
  const ScaledMatrix<float> h(RowMatrix<float>::Constant(1, 1, 2.0f), 0x1p127f);
  CHECK(h.item() == std::numeric_limits<float>::infinity());
  // Any other shape throws shape_error naming it.
  require_error<scalify::shape_error>([&] { (void)v.item(); }, {"scalify::ScaledArray::item", "(2 x 2)"});
  require_error<scalify::shape_error>([&] { (void)ScaledMatrix<float>().item(); }, {"item", "(0 x 0)"});
}
