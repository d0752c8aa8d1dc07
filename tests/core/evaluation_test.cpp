// Storage assignment of lazy results (core/scaled_array.hpp, core/detail/alias.hpp):
// the data of an expression is evaluated exactly once per element; results are
// written in place (no reallocation) when the destination keeps its shape, and
// through a temporary when the expression reads the destination elsewhere
// (x = transpose(x), x = reverse(x), a shifted block of x).
#include <catch2/catch.hpp>

#include <atomic>
#include <cmath>
#include <span>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "scalify/ops/elementwise.hpp"
#include "scalify/ops/shape.hpp"
#include "support/scaled.hpp"

using scalify::float16;
using scalify::float8_e4m3fn;
using scalify::ScaledArray;
using scalify::ScaledMatrix;
using scalify_test::random_scaled;
using scalify_test::values_d;

namespace {

std::atomic<long> g_calls{0};

/// An element functor that counts its calls (Eigen cannot vectorize it, so
/// every evaluated coefficient is one call).
struct counting_identity {
  float operator()(float v) const {
    g_calls.fetch_add(1, std::memory_order_relaxed);
    return v;
  }
};

template <class T>
Eigen::MatrixXd transpose_reference(const ScaledMatrix<T>& x) {
  return values_d(x).transpose();
}

}  // namespace

TEMPLATE_TEST_CASE("storing a lazy expression evaluates each element exactly once", "[core][evaluation]",
                   float8_e4m3fn, float16, float) {
  // 300 x 70 = 21000 elements: several 8192-element chunks, and a ragged last one.
  const auto x = random_scaled<float8_e4m3fn>(300, 70, 0.5f, 1);
  const auto y = random_scaled<float8_e4m3fn>(300, 70, 2.0f, 2);
  const auto w = random_scaled<float8_e4m3fn>(300, 70, 1.0f, 3);
  auto counted_expr = x.data().template cast<float>().array().unaryExpr(counting_identity{});
  const ScaledArray<decltype(counted_expr), float> counted(counted_expr, x.scale());

  g_calls = 0;
  ScaledMatrix<TestType> z = counted * y + w;  // construction: z starts empty
  CHECK(g_calls.load() == x.size());

  g_calls = 0;
  z = counted * y + w;  // assignment into storage of the right shape
  CHECK(g_calls.load() == x.size());

  g_calls = 0;
  z = scalify::transpose(counted);  // reads through a reordering node
  CHECK(g_calls.load() == x.size());
}

TEMPLATE_TEST_CASE("x = op(x, ...) evaluates in place, without reallocating, when only position (i, j) is read",
                   "[core][evaluation]", float8_e4m3fn, float16, float) {
  auto x = random_scaled<TestType>(129, 65, 0.5f, 4);
  const auto y = random_scaled<TestType>(129, 65, 2.0f, 5);
  const auto w = random_scaled<TestType>(129, 65, 1.0f, 6);
  const Eigen::MatrixXd vx = values_d(x), vy = values_d(y), vw = values_d(w);
  ScaledMatrix<TestType> expected = x * y + w;  // into separate storage

  const auto* before = x.data().data();
  x = x * y + w;
  CHECK(x.data().data() == before);
  CHECK(x.scale() == expected.scale());
  CHECK(x.data() == expected.data());  // bit-identical to the non-aliased result

  // And the first-order check against the values, so the comparison above is not vacuous.
  const Eigen::MatrixXd reference = vx.cwiseProduct(vy) + vw;
  scalify_test::check_close(values_d(x), reference, 2 * scalify_test::unit_roundoff<TestType>(),
                            std::ldexp(1.0, -8), "x = x * y + w");
}

TEMPLATE_TEST_CASE("x = transpose(x), reverse(x) and shifted blocks of x read x elsewhere: evaluated safely",
                   "[core][evaluation]", float8_e4m3fn, float16, float) {
  SECTION("square transpose (same shape: in place would corrupt it)") {
    auto x = random_scaled<TestType>(67, 67, 0.25f, 7);
    const Eigen::MatrixXd expected = transpose_reference(x);
    x = scalify::transpose(x);
    CHECK(values_d(x) == expected);
  }
  SECTION("non-square transpose (resized: the operand must survive the resize)") {
    auto x = random_scaled<TestType>(31, 97, 4.0f, 8);
    const Eigen::MatrixXd expected = transpose_reference(x);
    x = scalify::transpose(x);
    REQUIRE(x.rows() == 97);
    CHECK(values_d(x) == expected);
  }
  SECTION("reverse") {
    auto x = random_scaled<TestType>(40, 33, 1.0f, 9);
    const Eigen::MatrixXd expected = values_d(x).reverse();
    x = scalify::reverse(x);
    CHECK(values_d(x) == expected);
  }
  SECTION("a block shifted by one row") {
    auto x = random_scaled<TestType>(50, 20, 1.0f, 10);
    const Eigen::MatrixXd expected = values_d(x).bottomRows(49);
    x = scalify::block(x, 1, 0, 49, 20);
    CHECK(values_d(x) == expected);
  }
  SECTION("an elementwise op mixing x with its transpose") {
    auto x = random_scaled<TestType>(45, 45, 1.0f, 11);
    ScaledMatrix<TestType> expected = x + scalify::transpose(x);  // separate storage
    x = x + scalify::transpose(x);
    CHECK(x.scale() == expected.scale());
    CHECK(x.data() == expected.data());
  }
}

TEST_CASE("storing into storage of another shape resizes it", "[core][evaluation]") {
  const auto x = random_scaled<float8_e4m3fn>(10, 12, 1.0f, 12);
  ScaledMatrix<float8_e4m3fn> z = random_scaled<float8_e4m3fn>(3, 3, 1.0f, 13);
  z = x * x;
  REQUIRE(z.rows() == 10);
  REQUIRE(z.cols() == 12);
  CHECK(values_d(z) == (values_d(x).cwiseProduct(values_d(x))).unaryExpr([](double v) {
    return static_cast<double>(static_cast<float>(float8_e4m3fn(static_cast<float>(v))));
  }));
}

TEMPLATE_TEST_CASE("large results split across threads store the same bits as one thread",
                   "[core][evaluation][threads]", float8_e4m3fn, float16, float) {
  // 2^21 + 3 rows of 3: two threads get 2^20-element parts (and a ragged end).
  const Eigen::Index rows = (Eigen::Index{1} << 21) / 3 * 3 + 3, cols = 3;
  const auto x = random_scaled<float8_e4m3fn>(rows, cols, 0.5f, 14);
  const auto y = random_scaled<float8_e4m3fn>(rows, cols, 3.0f, 15);
  for (const auto round : {scalify::rounding::nearest_even, scalify::rounding::stochastic}) {
    INFO("rounding " << static_cast<int>(round));
    scalify::scalify_config config = scalify::current_config();
    config.store.round = round;
    config.store.seed = 42;
    config.threads = 1;
    ScaledMatrix<TestType> one, two;
    {
      const scalify::config_scope scope(config);
      one = x * y + x;
    }
    config.threads = 2;
    {
      const scalify::config_scope scope(config);
      two = x * y + x;
    }
    CHECK(one.scale() == two.scale());
    CHECK(one.data() == two.data());
  }
}

TEST_CASE("parallel_ranges covers 0 <= i < n once, in aligned ranges, and rethrows", "[core][evaluation][threads]") {
  for (const int64_t n : {0, 1, 7, 1000, 4097}) {
    for (const int threads : {1, 2, 3, 8}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      std::atomic<int> misaligned{0};
      scalify::detail::parallel_ranges(n, /*grain=*/10, /*align=*/4, threads, [&](int64_t b, int64_t e) {
        if (b % 4 != 0) ++misaligned;
        for (int64_t i = b; i < e; ++i) ++hits[static_cast<size_t>(i)];
      });
      CHECK(misaligned.load() == 0);
      for (const auto& h : hits) CHECK(h.load() == 1);
    }
  }
  // The range that ends the loop throws, however many ranges thread_limit() allows.
  CHECK_THROWS_AS(scalify::detail::parallel_ranges(100, 10, 1, 4,
                                                   [](int64_t, int64_t e) {
                                                     if (e == 100) throw std::runtime_error("range failed");
                                                   }),
                  std::runtime_error);
}

TEMPLATE_TEST_CASE("storing plain float data into a narrow type casts it in place: element i rounded with offset i",
                   "[core][evaluation]", float8_e4m3fn, float16) {
  // Row-major data is read in place (no float copy), column-major data into a
  // row-major result through the chunk buffer; both must be element i of
  // the result rounded with stochastic_bits(seed, offset + i), on 1 and 2 threads.
  using RowF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Eigen::Index rows = 700, cols = 301;  // > 2^16 elements: split across threads
  const RowF data = RowF::Random(rows, cols) * 3.0f;
  const Eigen::MatrixXf data_col = data;
  for (const auto round : {scalify::rounding::nearest_even, scalify::rounding::stochastic}) {
    for (const int threads : {1, 2}) {
      INFO("rounding " << static_cast<int>(round) << ", threads " << threads);
      scalify::scalify_config config = scalify::current_config();
      config.store = {.saturate = true, .round = round, .seed = 7, .offset = 1000};
      config.threads = threads;
      const scalify::config_scope scope(config);
      const ScaledMatrix<TestType> from_rows = scalify::make_scaled(data, 2.0f);
      const ScaledMatrix<TestType> from_cols = scalify::make_scaled(data_col, 2.0f);
      long bad = 0;
      for (Eigen::Index i = 0; i < rows; ++i) {
        for (Eigen::Index j = 0; j < cols; ++j) {
          const uint32_t bits = round == scalify::rounding::stochastic
                                    ? scalify::stochastic_bits(7, 1000 + static_cast<uint64_t>(i * cols + j))
                                    : 0u;
          const TestType want = scalify::round_cast<TestType>(data(i, j), round, true, bits);
          const auto code = [](TestType v) { return scalify::detail::to_code(v); };
          if (code(from_rows.data()(i, j)) != code(want) || code(from_cols.data()(i, j)) != code(want)) ++bad;
        }
      }
      CHECK(bad == 0);
      CHECK(from_rows.scale() == 2.0f);
    }
  }
}

TEMPLATE_TEST_CASE("cast<T> rounds element i of the data, in its storage order, with stochastic_bits(seed, offset + i)",
                   "[core][evaluation]", scalify::float8_e5m2, float16) {
  // The bytes a bulk convert of the data gives (formats/convert.hpp, checked
  // against the scalar casts elsewhere), for row- and column-major data, and
  // unbiased: the mean of many casts of 1.1 is 1.1, not a neighbour of it.
  using RowF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Eigen::Index rows = 37, cols = 29;
  const RowF data = RowF::Random(rows, cols) * 3.0f;
  const Eigen::MatrixXf data_col = data;
  const auto code = [](TestType v) { return scalify::detail::to_code(v); };
  for (const auto round : {scalify::rounding::stochastic, scalify::rounding::toward_zero}) {
    const scalify::convert_options options{.saturate = true, .round = round, .seed = 11, .offset = 500};
    INFO("rounding " << static_cast<int>(round));
    const auto check = [&](const auto& source) {
      std::vector<TestType> want(static_cast<size_t>(source.size()));
      scalify::convert(std::span<const float>(source.data(), want.size()), std::span<TestType>(want), options);
      const ScaledMatrix<TestType> y = scalify::make_scaled(source, 2.0f).template cast<TestType>(options);
      CHECK(y.scale() == 2.0f);
      long bad = 0;
      for (Eigen::Index i = 0; i < rows; ++i) {
        for (Eigen::Index j = 0; j < cols; ++j) {
          const Eigen::Index at = std::decay_t<decltype(source)>::IsRowMajor ? i * cols + j : j * rows + i;
          bad += code(y.data()(i, j)) != code(want[static_cast<size_t>(at)]);
        }
      }
      CHECK(bad == 0);
    };
    check(data);
    check(data_col);
  }
  for (const float v : {1.1f, -1.1f}) {
    const auto x = scalify::make_scaled(RowF::Constant(64, 64, v), 1.0f);
    const ScaledMatrix<TestType> y = x.template cast<TestType>({.round = scalify::rounding::stochastic, .seed = 3});
    const double mean = y.data().template cast<float>().template cast<double>().mean();
    INFO("value " << v << ", mean of the casts " << mean);
    CHECK(std::abs(mean - v) < 0.01);
  }
}

TEST_CASE("a stochastic store into float8_e8m0fnu data rounds element i with stochastic_bits(seed, offset + i)",
          "[core][evaluation]") {
  // e8m0 data takes the element-by-element store (no bulk cast): the same bits
  // as convert, which rounds element by element too.
  using RowF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using E8 = scalify::float8_e8m0fnu;
  const RowF data = (RowF::Random(19, 23).array().abs() * 100.0f + 0.01f).matrix();
  scalify::scalify_config config = scalify::current_config();
  config.store = {.saturate = true, .round = scalify::rounding::stochastic, .seed = 5, .offset = 40};
  const scalify::config_scope scope(config);
  const ScaledArray<Eigen::Matrix<E8, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> y =
      scalify::make_scaled(data, 1.0f);
  std::vector<E8> want(static_cast<size_t>(data.size()));
  scalify::convert(std::span<const float>(data.data(), want.size()), std::span<E8>(want), config.store);
  long bad = 0;
  for (Eigen::Index i = 0; i < data.rows(); ++i) {
    for (Eigen::Index j = 0; j < data.cols(); ++j) {
      bad += scalify::detail::to_code(y.data()(i, j)) !=
             scalify::detail::to_code(want[static_cast<size_t>(i * data.cols() + j)]);
    }
  }
  CHECK(bad == 0);
}
