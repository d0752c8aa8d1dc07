// Scaled matmul (ops/matmul.hpp): values vs a double-precision product of the
// unscaled inputs, the unit-scaling scale rule exactly, rounding modes, errors.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <tuple>

#include "scalify/ops/matmul.hpp"
#include "scalify/ops/shape.hpp"
#include "support/scaled.hpp"

using scalify::bfloat16;
using scalify::float16;
using scalify::float8_e4m3fn;
using scalify::float8_e5m2;
using scalify::ScaledMatrix;

namespace {

/// pow2 of sqrt(K), rounded down, computed independently of the library.
double expected_factor_down(int k) { return std::exp2(std::floor(std::log2(std::sqrt(static_cast<double>(k))))); }

}  // namespace

TEMPLATE_TEST_CASE("matmul: values equal the double product, scale = sa * sb * pow2_down(sqrt K)", "[ops][matmul]",
                   float, float16, bfloat16, float8_e4m3fn, float8_e5m2) {
  const int shapes[][3] = {{1, 1, 1}, {3, 5, 2}, {1, 64, 7}, {17, 33, 1}, {31, 129, 15}, {64, 256, 64}};
  uint32_t seed = 1;
  for (const auto& [m, k, n] : shapes) {
    for (auto [sa, sb] : {std::pair<float, float>{1.0f, 1.0f}, {2.0f, 4.0f}, {0.375f, 3.0f}, {0x1p-20f, 0x1p19f}}) {
      const auto a = scalify_test::random_scaled<TestType>(m, k, sa, seed++);
      const auto b = scalify_test::random_scaled<TestType>(k, n, sb, seed++);
      const auto c = scalify::matmul(a, b).eval();
      INFO(m << "x" << k << " * " << k << "x" << n << ", scales " << sa << ", " << sb);
      CHECK(c.scale() == static_cast<float>(double(sa) * double(sb) * expected_factor_down(k)));
      const Eigen::MatrixXd expected = scalify_test::values_d(a) * scalify_test::values_d(b);
      // float32 accumulation of k products of exactly representable inputs.
      const double sum_abs = (scalify_test::values_d(a).cwiseAbs() * scalify_test::values_d(b).cwiseAbs()).maxCoeff();
      scalify_test::check_close(scalify_test::values_d(c), expected, 1e-6, 4.0 * k * 0x1p-24 * sum_abs, "float result");
      // Stored into the operands' format: one more rounding of the data.
      ScaledMatrix<TestType> stored = c;
      CHECK(stored.scale() == c.scale());
      scalify_test::check_close(scalify_test::values_d(stored), expected, scalify_test::unit_roundoff<TestType>(),
                                4.0 * k * 0x1p-24 * sum_abs +
                                    static_cast<double>(std::numeric_limits<TestType>::denorm_min()) * c.scale(),
                                "stored result");
    }
  }
}

TEST_CASE("matmul: unit-variance inputs give unit-variance output data", "[ops][matmul]") {
  const int k = 1024;
  const auto a = scalify_test::random_scaled<float>(64, k, 1.0f, 11);
  const auto b = scalify_test::random_scaled<float>(k, 64, 1.0f, 12);
  const auto c = scalify::matmul(a, b).eval();
  CHECK(c.scale() == 32.0f);  // sqrt(1024) = 32
  const double rms = std::sqrt(c.data().cast<double>().squaredNorm() / c.size());
  CHECK(rms > 0.8);
  CHECK(rms < 1.25);
}

TEST_CASE("matmul follows the scope's pow2 rounding mode", "[ops][matmul]") {
  const auto a = scalify_test::random_scaled<float>(2, 5, 1.0f, 1);
  const auto b = scalify_test::random_scaled<float>(5, 3, 1.0f, 2);
  CHECK(scalify::matmul(a, b).scale() == 2.0f);  // pow2_down(sqrt 5 = 2.236)
  {
    scalify::config_scope up({.rounding = scalify::pow2_mode::up});
    CHECK(scalify::matmul(a, b).scale() == 4.0f);
  }
  {
    scalify::config_scope none({.rounding = scalify::pow2_mode::none});
    const auto c = scalify::matmul(a, b).eval();
    CHECK(c.scale() == static_cast<float>(std::sqrt(5.0)));
    scalify_test::check_close(scalify_test::values_d(c), scalify_test::values_d(a) * scalify_test::values_d(b), 1e-6,
                              1e-6, "none");
  }
}

TEST_CASE("matmul with a zero scale gives zeros, no NaN", "[ops][matmul]") {
  const auto a = scalify_test::random_scaled<float8_e4m3fn>(4, 6, 0.0f, 1);
  const auto b = scalify_test::random_scaled<float8_e4m3fn>(6, 2, 8.0f, 2);
  const auto c = scalify::matmul(a, b).eval();
  CHECK(c.scale() == 0.0f);
  CHECK(c.to_dense().isZero());
}

TEST_CASE("matmul rejects mismatched inner sizes naming both shapes", "[ops][matmul][errors]") {
  const auto a = scalify_test::random_scaled<float>(3, 4, 1.0f, 1);
  const auto b = scalify_test::random_scaled<float>(5, 2, 1.0f, 2);
  CHECK_THROWS_AS(scalify::matmul(a, b), scalify::shape_error);
  CHECK_THROWS_WITH(scalify::matmul(a, b), Catch::Contains("(3 x 4)") && Catch::Contains("(5 x 2)"));
}

TEMPLATE_TEST_CASE("matmul(a, b, op_a, op_b): op(a) x op(b) vs the double product, same bits as a copied transpose",
                   "[ops][matmul]", float, float16, float8_e4m3fn, float8_e5m2, double) {
  using scalify::trans;
  const int shapes[][3] = {{1, 1, 1}, {3, 5, 2}, {17, 33, 1}, {31, 129, 15}, {64, 40, 70}};
  uint32_t seed = 100;
  for (const auto& [m, k, n] : shapes) {
    for (const trans op_a : {trans::no, trans::yes}) {
      for (const trans op_b : {trans::no, trans::yes}) {
        // Stored as op(x) requires: a is (k x m) when used transposed, b is (n x k).
        const auto a = op_a == trans::no ? scalify_test::random_scaled<TestType>(m, k, 0.5f, seed++)
                                         : scalify_test::random_scaled<TestType>(k, m, 0.5f, seed++);
        const auto b = op_b == trans::no ? scalify_test::random_scaled<TestType>(k, n, 3.0f, seed++)
                                         : scalify_test::random_scaled<TestType>(n, k, 3.0f, seed++);
        const auto c = scalify::matmul(a, b, op_a, op_b).eval();
        INFO(m << "x" << k << "x" << n << ", op_a " << (op_a == trans::yes) << ", op_b " << (op_b == trans::yes));
        REQUIRE(c.rows() == m);
        REQUIRE(c.cols() == n);
        CHECK(c.scale() == static_cast<float>(0.5 * 3.0 * expected_factor_down(k)));
        const Eigen::MatrixXd va = scalify_test::values_d(a), vb = scalify_test::values_d(b);
        const Eigen::MatrixXd oa = op_a == trans::no ? va : Eigen::MatrixXd(va.transpose());
        const Eigen::MatrixXd ob = op_b == trans::no ? vb : Eigen::MatrixXd(vb.transpose());
        const Eigen::MatrixXd expected = oa * ob;
        const double sum_abs = (oa.cwiseAbs() * ob.cwiseAbs()).maxCoeff();
        scalify_test::check_close(scalify_test::values_d(c), expected, 1e-6, 4.0 * k * 0x1p-24 * sum_abs, "result");
        // The transposes copied first: scalify::gemm sums k in the same order
        // either way, so the same bits (double goes through Eigen: no such promise).
        if constexpr (!std::is_same_v<TestType, double>) {
          using Stored = ScaledMatrix<TestType>;
          const Stored ca(typename Stored::data_type(op_a == trans::no ? a.data() : a.data().transpose()), a.scale());
          const Stored cb(typename Stored::data_type(op_b == trans::no ? b.data() : b.data().transpose()), b.scale());
          const auto copied = scalify::matmul(ca, cb).eval();
          CHECK(copied.scale() == c.scale());
          CHECK(copied.data() == c.data());
        }
      }
    }
  }
}

TEST_CASE("matmul(a, b, op_a, op_b) rejects mismatched inner sizes naming the transposes", "[ops][matmul][errors]") {
  using scalify::trans;
  const auto a = scalify_test::random_scaled<float>(3, 4, 1.0f, 1);
  const auto b = scalify_test::random_scaled<float>(3, 2, 1.0f, 2);
  CHECK_NOTHROW(scalify::matmul(a, b, trans::yes, trans::no));  // (4 x 3) (3 x 2)
  CHECK_THROWS_AS(scalify::matmul(a, b, trans::no, trans::no), scalify::shape_error);
  CHECK_THROWS_WITH(scalify::matmul(a, b, trans::no, trans::yes),
                    Catch::Contains("(3 x 4)") && Catch::Contains("transpose (3 x 2)"));
}

TEST_CASE("matmul rejects trans values outside the enum and results too large to index", "[ops][matmul][errors]") {
  const auto a = scalify_test::random_scaled<float>(3, 3, 1.0f, 11);
  CHECK_THROWS_AS(scalify::matmul(a, a, static_cast<scalify::trans>(2)), std::invalid_argument);
  CHECK_THROWS_WITH(scalify::matmul(a, a, scalify::trans::no, static_cast<scalify::trans>(-1)),
                    Catch::Contains("scalify::matmul") && Catch::Contains("trans") && Catch::Contains("-1"));
  // (2^32 x 1) x (1 x 2^32): each operand is a lazy broadcast, the product has 2^64 elements.
  const Eigen::Index n = Eigen::Index{1} << 32;
  const auto one = scalify::block(a, 0, 0, 1, 1);
  const auto tall = scalify::broadcast_rows(one, n);
  const auto wide = scalify::broadcast_cols(one, n);
  CHECK_THROWS_AS(scalify::matmul(tall, wide), scalify::shape_error);
  CHECK_THROWS_WITH(scalify::matmul(tall, wide),
                    Catch::Contains("(4294967296 x 1)") && Catch::Contains("(1 x 4294967296)") &&
                        Catch::Contains("(4294967296 x 4294967296)"));
}

TEST_CASE("matmul keeps values whose scale sa * sb * R(sqrt K) leaves float's range", "[ops][matmul]") {
  // K = 16: factor 4. sa * sb = 2^200 overflows float and 2^-200 underflows it, though the
  // values (small or large data) fit; the data carries what the scale cannot.
  for (auto [sa, sb, sigma] : {std::tuple<float, float, float>{0x1p100f, 0x1p100f, 0x1p-40f},
                               {0x1p-100f, 0x1p-100f, 0x1p40f},
                               {std::numeric_limits<float>::max(), 1.0f, 0x1p-10f}}) {
    INFO("scales " << sa << ", " << sb);
    const auto a = scalify_test::random_scaled<float>(5, 16, sa, 21, sigma);
    const auto b = scalify_test::random_scaled<float>(16, 3, sb, 22, sigma);
    const auto c = scalify::matmul(a, b).eval();
    CHECK(std::isfinite(c.scale()));
    CHECK(c.scale() > 0.0f);
    const Eigen::MatrixXd expected = scalify_test::values_d(a) * scalify_test::values_d(b);
    const double sum_abs = (scalify_test::values_d(a).cwiseAbs() * scalify_test::values_d(b).cwiseAbs()).maxCoeff();
    scalify_test::check_close(scalify_test::values_d(c), expected, 1e-6, 64 * 0x1p-24 * sum_abs, "matmul values");
  }
}

TEST_CASE("matmul runs its GEMM on the configuration's threads (config_scope)", "[ops][matmul]") {
  scalify::kernels::thread_pool& pool = scalify::kernels::thread_pool::instance();
  if (pool.size() < 2) {
    WARN("one hardware thread: nothing to check");
    return;
  }
  // 256^3: far above the GEMM's 2e6-flop threshold for using threads.
  const auto a = scalify_test::random_scaled<float8_e4m3fn>(256, 256, 0.5f, 31);
  const auto b = scalify_test::random_scaled<float8_e4m3fn>(256, 256, 2.0f, 32);
  auto with_threads = [&](int threads) {
    scalify::scalify_config config = scalify::current_config();
    config.threads = threads;
    const scalify::config_scope scope(config);
    const uint64_t before = pool.parallel_runs();
    ScaledMatrix<float> c = scalify::matmul(a, b);
    return std::pair{c, pool.parallel_runs() - before};
  };
  const auto [one, runs_one] = with_threads(1);
  const auto [all, runs_all] = with_threads(2);
  CHECK(runs_one == 0);  // the calling thread only
  CHECK(runs_all > 0);
  CHECK(one.scale() == all.scale());
  CHECK((one.data().array() == all.data().array()).all());  // the same bits whatever the threads
}
