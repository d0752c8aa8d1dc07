// A matmul stored through the GEMM's fused epilogue (ops/matmul.hpp,
// scaled_matmul): the output cast into every storage type, the bias, the
// activation and the amax, in one pass, against the two-pass result (float32
// product, then the elementwise op and the store cast) and a double reference.
#include <catch2/catch.hpp>

#include <bit>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "scalify/activation.hpp"
#include "scalify/core/config_scope.hpp"
#include "scalify/ops/elementwise.hpp"
#include "scalify/ops/matmul.hpp"
#include "support/scaled.hpp"

using scalify::bfloat16;
using scalify::float16;
using scalify::float8_e4m3fn;
using scalify::float8_e5m2;
using scalify::float8_e8m0fnu;
using scalify::ScaledMatrix;

namespace {

/// The data of x as float (exact), for bit comparisons.
template <class D, class S>
Eigen::MatrixXf data_f(const scalify::ScaledArray<D, S>& x) {
  return x.data().template cast<float>();
}

/// Same bits, NaN equal to NaN.
void check_same_bits(const Eigen::MatrixXf& a, const Eigen::MatrixXf& b, const std::string& what) {
  INFO(what);
  REQUIRE(a.rows() == b.rows());
  REQUIRE(a.cols() == b.cols());
  int misses = 0;
  for (Eigen::Index i = 0; i < a.size(); ++i) {
    const float x = a.data()[i], y = b.data()[i];
    const bool same = (std::isnan(x) && std::isnan(y)) || std::bit_cast<uint32_t>(x) == std::bit_cast<uint32_t>(y);
    if (!same && misses++ < 5) FAIL_CHECK("element " << i << ": " << x << " vs " << y);
  }
  CHECK(misses == 0);
}

/// A (rows x cols) matrix whose every row is `row`'s, on row's scale: the
/// bias broadcast for the two-pass reference.
template <class T>
ScaledMatrix<T> broadcast_rows(const ScaledMatrix<T>& row, Eigen::Index rows) {
  scalify_test::RowMatrix<T> d(rows, row.cols());
  for (Eigen::Index i = 0; i < rows; ++i) d.row(i) = row.data().row(0);
  return ScaledMatrix<T>(d, row.scale());
}

/// pow2 rounded down, computed without the library.
double pow2_down(double x) { return std::exp2(std::floor(std::log2(x))); }

/// The amax a store should report: max |stored| over the non-NaN elements,
/// +inf if an element that was not NaN in `widened` (the float32 product) was
/// stored as NaN (an e4m3fn overflow).
float expected_amax(const Eigen::MatrixXf& stored, const Eigen::MatrixXf& widened) {
  float expected = 0.0f;
  for (Eigen::Index i = 0; i < stored.size(); ++i) {
    const float v = stored.data()[i];
    if (std::isnan(v)) {
      if (!std::isnan(widened.data()[i])) expected = std::numeric_limits<float>::infinity();
    } else {
      expected = std::max(expected, std::fabs(v));
    }
  }
  return expected;
}

template <class T>
struct config_store {
  scalify::config_scope scope;
  explicit config_store(scalify::convert_options store)
      : scope([&] {
          scalify::scalify_config c = scalify::current_config();
          c.store = store;
          return c;
        }()) {}
};

}  // namespace

TEMPLATE_TEST_CASE("matmul stored into each storage type: the same bits as the float32 product then the store cast",
                   "[ops][matmul][epilogue]", float, float16, bfloat16, float8_e4m3fn, float8_e5m2) {
  // Data of sigma 8 on small scales: the e4m3fn/e5m2 stores overflow in places (saturated or not).
  const int shapes[][3] = {{1, 16, 9}, {3, 40, 17}, {37, 64, 45}, {70, 33, 130}};
  uint32_t seed = 100;
  for (const bool saturate : {true, false}) {
    const config_store<TestType> store({.saturate = saturate});
    for (const auto& [m, k, n] : shapes) {
      const auto a = scalify_test::random_scaled<float8_e4m3fn>(m, k, 0.25f, seed++, 8.0f);
      const auto b = scalify_test::random_scaled<float16>(k, n, 0.5f, seed++, 8.0f);
      INFO("saturate " << saturate << ", " << m << " x " << k << " x " << n);
      float amax = -1.0f;
      const ScaledMatrix<TestType> fused = scalify::matmul(a, b).with_amax(&amax);
      const ScaledMatrix<float> wide = scalify::matmul(a, b).eval();
      const ScaledMatrix<TestType> two_pass = wide;
      CHECK(fused.scale() == two_pass.scale());
      check_same_bits(data_f(fused), data_f(two_pass), "fused vs two-pass");
      // amax: max |stored data| over the non-NaN elements, +inf if an e4m3fn store overflowed to NaN.
      CHECK(amax == expected_amax(data_f(fused), data_f(wide)));
    }
  }
}

TEMPLATE_TEST_CASE("matmul + bias, relu and gelu in the epilogue equal the two-pass ops", "[ops][matmul][epilogue]",
                   float, float16, float8_e4m3fn, float8_e5m2) {
  uint32_t seed = 300;
  const int m = 29, k = 48, n = 35;
  // Power-of-two scales: the add rule's rebasing factors are powers of two, so the
  // fused sums round exactly as the two-pass ones do.
  for (auto [sa, sb, sbias] : {std::tuple<float, float, float>{0.5f, 0.25f, 1.0f},
                               {4.0f, 2.0f, 0.125f},
                               {0x1p-10f, 1.0f, 0x1p-12f}}) {
    INFO("scales " << sa << ", " << sb << ", bias " << sbias);
    const auto a = scalify_test::random_scaled<float8_e4m3fn>(m, k, sa, seed++);
    const auto b = scalify_test::random_scaled<float8_e5m2>(k, n, sb, seed++);
    const auto bias = scalify_test::random_scaled<float>(1, n, sbias, seed++, 4.0f);
    const ScaledMatrix<float> product = scalify::matmul(a, b).eval();
    const ScaledMatrix<float> sum = scalify::add(product, broadcast_rows(bias, m));

    // The add rule, independently: R(hi * sqrt(1 + (lo/hi)^2)) with R = pow2 down.
    const double hi = std::max<double>(product.scale(), sbias), lo = std::min<double>(product.scale(), sbias);
    const double s = pow2_down(hi * std::sqrt(1.0 + (lo / hi) * (lo / hi)));

    const ScaledMatrix<TestType> biased = scalify::matmul(a, b) + bias;
    CHECK(biased.scale() == static_cast<float>(s));
    const ScaledMatrix<TestType> biased_two_pass = sum;
    check_same_bits(data_f(biased), data_f(biased_two_pass), "matmul + bias");
    const ScaledMatrix<TestType> biased_left = bias + scalify::matmul(a, b);
    check_same_bits(data_f(biased_left), data_f(biased), "bias + matmul");
    // And the values against a double reference (sums of exact products).
    Eigen::MatrixXd expected = scalify_test::values_d(a) * scalify_test::values_d(b);
    expected.rowwise() += scalify_test::values_d(bias).row(0);
    const double tol = scalify_test::unit_roundoff<TestType>() * 2 + 1e-6;
    scalify_test::check_close(scalify_test::values_d(biased), expected, tol, tol * s * 0.5, "values");

    // relu keeps the scale: max(v, 0) of the two-pass data.
    const ScaledMatrix<TestType> rectified = scalify::relu(scalify::matmul(a, b) + bias);
    CHECK(rectified.scale() == static_cast<float>(s));
    const ScaledMatrix<TestType> rectified_two_pass =
        ScaledMatrix<float>(sum.data().cwiseMax(0.0f), sum.scale());
    check_same_bits(data_f(rectified), data_f(rectified_two_pass), "relu(matmul + bias)");

    // GELU of the values, on the same scale: scalify::gelu_tanh_on_scale of the two-pass data.
    const ScaledMatrix<TestType> g = scalify::gelu(scalify::matmul(a, b) + bias);
    CHECK(g.scale() == static_cast<float>(s));
    const float ss = sum.scale();
    const ScaledMatrix<TestType> g_two_pass =
        ScaledMatrix<float>(sum.data().unaryExpr([ss](float d) { return scalify::gelu_tanh_on_scale(d, ss); }), ss);
    check_same_bits(data_f(g), data_f(g_two_pass), "gelu(matmul + bias)");
    // ... and its values against gelu of the double reference.
    Eigen::MatrixXd g_expected = expected.unaryExpr([](double v) { return scalify::gelu_tanh(v); });
    scalify_test::check_close(scalify_test::values_d(g), g_expected, tol, tol * s * 0.5, "gelu values");
  }
}

TEST_CASE("matmul + bias with bias_scale::product keeps the product's scale", "[ops][matmul][epilogue]") {
  const auto a = scalify_test::random_scaled<float>(6, 10, 0.3f, 1);
  const auto b = scalify_test::random_scaled<float>(10, 7, 0.7f, 2);
  const auto bias = scalify_test::random_scaled<float>(1, 7, 3.0f, 3);
  const auto p = scalify::matmul(a, b);
  const ScaledMatrix<float> y = p.with_bias(bias, scalify::bias_scale::product);
  CHECK(y.scale() == p.scale());
  Eigen::MatrixXd expected = scalify_test::values_d(a) * scalify_test::values_d(b);
  expected.rowwise() += scalify_test::values_d(bias).row(0);
  scalify_test::check_close(scalify_test::values_d(y), expected, 1e-5, 1e-5, "values");

  // A product on scale 0 (values 0): the result is the bias, on scale 1.
  const ScaledMatrix<float> zero_a(scalify_test::random_data<float>(6, 10, 4), 0.0f);
  const ScaledMatrix<float> z = scalify::matmul(zero_a, b).with_bias(bias, scalify::bias_scale::product);
  CHECK(z.scale() == 1.0f);
  Eigen::MatrixXd bias_rows = scalify_test::values_d(bias).replicate(6, 1);
  scalify_test::check_close(scalify_test::values_d(z), bias_rows, 1e-6, 0.0, "zero-scale product + bias");
}

TEST_CASE("matmul stored into its own operand goes through a temporary", "[ops][matmul][epilogue]") {
  auto x = scalify_test::random_scaled<float16>(24, 24, 0.5f, 11);
  const auto w = scalify_test::random_scaled<float16>(24, 24, 0.25f, 12);
  const ScaledMatrix<float16> expected = scalify::matmul(x, w);
  x = scalify::matmul(x, w);
  CHECK(x.scale() == expected.scale());
  check_same_bits(data_f(x), data_f(expected), "x = matmul(x, w)");
  auto y = scalify_test::random_scaled<float>(24, 24, 2.0f, 13);
  const ScaledMatrix<float> expected_t = scalify::relu(scalify::matmul(w, y, scalify::trans::no, scalify::trans::yes));
  y = scalify::relu(scalify::matmul(w, y, scalify::trans::no, scalify::trans::yes));
  check_same_bits(data_f(y), data_f(expected_t), "y = relu(w y^T)");
}

TEST_CASE("matmul stores into column-major storage and E8M0 scales", "[ops][matmul][epilogue]") {
  const auto a = scalify_test::random_scaled<bfloat16>(9, 20, 0.375f, 21);  // not a power of two
  const auto b = scalify_test::random_scaled<float8_e4m3fn>(20, 13, 1.0f, 22);
  const Eigen::MatrixXd expected = scalify_test::values_d(a) * scalify_test::values_d(b);

  scalify::ScaledArray<Eigen::Matrix<float16, -1, -1>> col(Eigen::Matrix<float16, -1, -1>(), 1.0f);
  col = scalify::matmul(a, b);
  const ScaledMatrix<float16> row = scalify::matmul(a, b);
  CHECK(col.scale() == row.scale());
  check_same_bits(data_f(col), data_f(row), "column-major vs row-major storage");

  // An E8M0 scale cannot hold 0.375 * 1 * 4: the scale is rounded to a power of two and the data rebased.
  const ScaledMatrix<float16, float8_e8m0fnu> e8 = scalify::matmul(a, b);
  const ScaledMatrix<float16, float8_e8m0fnu> e8_two_pass = scalify::matmul(a, b).eval();
  CHECK(static_cast<float>(e8.scale()) == static_cast<float>(e8_two_pass.scale()));
  const double tol = 2 * scalify_test::unit_roundoff<float16>();
  scalify_test::check_close(scalify_test::values_d(e8), expected, tol, 1e-6, "E8M0-scaled values");
  scalify_test::check_close(scalify_test::values_d(e8), scalify_test::values_d(e8_two_pass), tol, 1e-6,
                            "E8M0: fused vs two-pass");
}

TEST_CASE("matmul stored with stochastic rounding takes two passes, the same bits", "[ops][matmul][epilogue]") {
  const auto a = scalify_test::random_scaled<float>(12, 30, 1.0f, 31);
  const auto b = scalify_test::random_scaled<float>(30, 14, 1.0f, 32);
  const config_store<float8_e5m2> store({.saturate = true, .round = scalify::rounding::stochastic, .seed = 7});
  const ScaledMatrix<float8_e5m2> fused = scalify::matmul(a, b) + scalify_test::random_scaled<float>(1, 14, 1.0f, 33);
  const ScaledMatrix<float> wide = scalify::matmul(a, b) + scalify_test::random_scaled<float>(1, 14, 1.0f, 33);
  const ScaledMatrix<float8_e5m2> two_pass = wide;
  check_same_bits(data_f(fused), data_f(two_pass), "stochastic store");
}

TEST_CASE("matmul's amax is of the stored data when the store takes two passes", "[ops][matmul][epilogue]") {
  // Stochastic and toward-zero stores into float8 take two passes (float32
  // product, then the store cast); the amax must still be max |stored data|,
  // measured after the store's saturation and its rebasing onto an E8M0 scale
  // (the product's scale 0.375 * 1 * 8 = 3 becomes 2: data * 1.5).
  const auto a = scalify_test::random_scaled<float8_e4m3fn>(9, 64, 0.375f, 41, 8.0f);
  const auto b = scalify_test::random_scaled<float16>(64, 21, 1.0f, 42, 8.0f);
  const ScaledMatrix<float> wide = scalify::matmul(a, b).eval();
  for (const auto round : {scalify::rounding::stochastic, scalify::rounding::toward_zero}) {
    for (const bool saturate : {true, false}) {
      INFO("rounding " << static_cast<int>(round) << ", saturate " << saturate);
      const config_store<float8_e4m3fn> store({.saturate = saturate, .round = round, .seed = 9});
      float amax = -1.0f;
      const ScaledMatrix<float8_e4m3fn> y = scalify::matmul(a, b).with_amax(&amax);
      CHECK(amax == expected_amax(data_f(y), data_f(wide)));
      float amax_e8 = -1.0f;
      const ScaledMatrix<float8_e4m3fn, float8_e8m0fnu> y8 = scalify::matmul(a, b).with_amax(&amax_e8);
      CHECK(static_cast<float>(y8.scale()) == 2.0f);
      CHECK(amax_e8 == expected_amax(data_f(y8), data_f(wide)));
    }
  }
}

TEST_CASE("matmul of double data: bias and activation outside the GEMM", "[ops][matmul][epilogue]") {
  const auto a = scalify_test::random_scaled<double>(5, 8, 0.5f, 41);
  const auto b = scalify_test::random_scaled<double>(8, 6, 0.5f, 42);
  const auto bias = scalify_test::random_scaled<float>(1, 6, 0.25f, 43);
  float amax = -1.0f;
  const ScaledMatrix<float> y = scalify::relu(scalify::matmul(a, b) + bias).with_amax(&amax);
  Eigen::MatrixXd expected = scalify_test::values_d(a) * scalify_test::values_d(b);
  expected.rowwise() += scalify_test::values_d(bias).row(0);
  expected = expected.cwiseMax(0.0);
  scalify_test::check_close(scalify_test::values_d(y), expected, 1e-5, 1e-6, "values");
  CHECK(amax == y.data().cwiseAbs().maxCoeff());
}

TEST_CASE("matmul's epilogue requests reject bad arguments", "[ops][matmul][epilogue][errors]") {
  const auto a = scalify_test::random_scaled<float>(4, 5, 1.0f, 51);
  const auto b = scalify_test::random_scaled<float>(5, 3, 1.0f, 52);
  const auto row2 = scalify_test::random_scaled<float>(1, 2, 1.0f, 53);
  const auto full = scalify_test::random_scaled<float>(4, 3, 1.0f, 54);
  const auto row3 = scalify_test::random_scaled<float>(1, 3, 1.0f, 55);
  CHECK_THROWS_AS(scalify::matmul(a, b) + row2, scalify::shape_error);
  CHECK_THROWS_WITH(scalify::matmul(a, b) + row2, Catch::Contains("(1 x 3)") && Catch::Contains("(1 x 2)"));
  CHECK_THROWS_AS(scalify::matmul(a, b) + full, scalify::shape_error);
  CHECK_THROWS_AS(scalify::relu(scalify::matmul(a, b)) + row3, std::invalid_argument);
  CHECK_THROWS_AS((scalify::matmul(a, b) + row3) + row3, std::invalid_argument);
  CHECK_THROWS_AS(scalify::gelu(scalify::relu(scalify::matmul(a, b))), std::invalid_argument);
  CHECK_THROWS_AS(scalify::matmul(a, b).with_activation(static_cast<scalify::activation>(7)), std::invalid_argument);
  CHECK_THROWS_AS(scalify::matmul(a, b).with_bias(row3, static_cast<scalify::bias_scale>(5)), std::invalid_argument);
  // A destination that cannot take the shape: shape_error, nothing written.
  scalify::ScaledVector<float> v(Eigen::VectorXf::Constant(4, 3.0f), 2.0f);
  CHECK_THROWS_AS(v = scalify::matmul(a, b), scalify::shape_error);
  CHECK(v.scale() == 2.0f);
  CHECK((v.data().array() == 3.0f).all());
}

TEST_CASE("matmul accumulate_into adds the product on the larger scale in the epilogue", "[ops][matmul][epilogue]") {
  const auto a = scalify_test::random_scaled<float8_e4m3fn>(40, 16, 0.3f, 61);
  const auto b = scalify_test::random_scaled<float8_e5m2>(40, 24, 0.7f, 62);
  for (const float acc_scale : {0.001f, 1.0f, 100.0f}) {
    INFO("accumulator scale " << acc_scale);
    auto acc = scalify_test::random_scaled<float>(16, 24, acc_scale, 63);
    Eigen::MatrixXd expected = scalify_test::values_d(acc);
    const auto p = scalify::matmul(a, b, scalify::trans::yes, scalify::trans::no);  // a^T b: (16 x 24)
    expected += scalify_test::values_d(a).transpose() * scalify_test::values_d(b);
    float amax = -1.0f;
    p.with_amax(&amax).accumulate_into(acc);
    CHECK(acc.scale() == std::max(acc_scale, static_cast<float>(p.scale())));
    scalify_test::check_close(scalify_test::values_d(acc), expected, 1e-5, 1e-6 * expected.cwiseAbs().maxCoeff(),
                              "acc + a^T b");
    CHECK(amax == acc.data().cwiseAbs().maxCoeff());
  }
  // An empty or zero-scale accumulator becomes the product.
  ScaledMatrix<float> empty;
  scalify::matmul(a, b, scalify::trans::yes, scalify::trans::no).accumulate_into(empty);
  const ScaledMatrix<float> stored = scalify::matmul(a, b, scalify::trans::yes, scalify::trans::no);
  CHECK(empty.scale() == stored.scale());
  check_same_bits(data_f(empty), data_f(stored), "empty accumulator");

  auto wrong = scalify_test::random_scaled<float>(16, 23, 1.0f, 64);
  CHECK_THROWS_AS(scalify::matmul(a, b, scalify::trans::yes, scalify::trans::no).accumulate_into(wrong),
                  scalify::shape_error);
  auto square = scalify_test::random_scaled<float>(8, 8, 1.0f, 65);
  const auto before = square.data();
  CHECK_THROWS_AS(scalify::matmul(square, square).accumulate_into(square), std::invalid_argument);
  CHECK((square.data().array() == before.array()).all());
  CHECK_THROWS_AS(scalify::relu(scalify::matmul(a, b, scalify::trans::yes, scalify::trans::no)).accumulate_into(square),
                  std::invalid_argument);
}
