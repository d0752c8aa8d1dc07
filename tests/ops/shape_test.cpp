// tests/ops/shape_test.cpp: scalify/ops/shape.hpp against a double reference.
//
// Shape ops only move data around, so they are checked exactly: the output
// data (and values) must equal the reference moved the same way, lazily and
// after storing into the operand's format, into float and into a wider
// format. concatenate rebases one operand: exact when the scales are equal,
// within float32 and storage roundoff otherwise. The reference is a plain loop
// over the unscaled inputs in double; it never calls Eigen's reshaped,
// reverse, replicate or block.
#include "scalify/ops/shape.hpp"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "support/scaled.hpp"

using scalify_test::require_shape_error;

namespace {

using Eigen::Index;
using Eigen::MatrixXd;
using scalify::ScaledMatrix;
using scalify_test::check_close;
using scalify_test::random_scaled;
using scalify_test::data_d;
using scalify_test::describe;
using scalify_test::kScales;
using scalify_test::shape;
using scalify_test::values_d;

const std::vector<shape> kShapes = scalify_test::shapes_with_random({{1, 1}, {1, 7}, {7, 1}, {5, 3}, {13, 17}, {4, 4}, {2, 9}});

/// A format that holds every value of T exactly.
template <class T>
struct wider {
  using type = float;
};
template <>
struct wider<float> {
  using type = double;
};
template <>
struct wider<scalify::float8_e4m3fn> {
  using type = scalify::float16;
};
template <>
struct wider<scalify::float8_e5m2> {
  using type = scalify::float16;
};


/// A result as plain numbers: its data widened to double, and its scale.
struct result_d {
  MatrixXd data;
  double scale;
  const char* what;
};
template <class D, class S>
result_d as_result(const scalify::ScaledArray<D, S>& x, const char* what) {
  return {data_d(x), static_cast<double>(x.scale()), what};
}

/// Requires every result to have exactly the expected data and scale, and
/// values data * scale (NaN matches NaN). Not a template: keeping Eigen
/// arithmetic out of the per-expression templates keeps this file quick to
/// compile (GCC's overload resolution slows down with every Eigen type).
void check_results(const std::vector<result_d>& results, const MatrixXd& expected_data,
                   double expected_scale, const std::string& context) {
  INFO(context);
  const MatrixXd expected_values = expected_data * expected_scale;
  for (const result_d& r : results) {
    REQUIRE(r.scale == expected_scale);
    check_close(r.data, expected_data, 0, 0, context + ": " + r.what + " data");
    check_close(r.data * r.scale, expected_values, 0, 0, context + ": " + r.what + " values");
  }
}

/// Checks a lazy shape-op result y exactly: as it is and stored into T.
/// (Storing into other formats runs the same code as storing into T: a few
/// ops check it, in check_stored_wider, to keep this file quick to compile.)
template <class T, class Y>
void check_exact(const Y& y, const MatrixXd& expected_data, double expected_scale,
                 const std::string& context) {
  using S = typename Y::scale_type;
  static_assert(!Y::is_storage, "shape ops return lazy results");
  const ScaledMatrix<T, S> same = y;
  check_results({as_result(y, "lazy"), as_result(same, "stored in the same format")}, expected_data,
                expected_scale, context);
}

/// Stores y into a format wider than T: exact.
template <class T, class Y>
void check_stored_wider(const Y& y, const MatrixXd& expected_data, const std::string& context) {
  const ScaledMatrix<typename wider<T>::type, typename Y::scale_type> as_wider = y;
  check_results({as_result(as_wider, "stored in a wider format")}, expected_data, y.scale(),
                context);
}

// ------------------------------------------------------------------------------
// The reference: loops over a double matrix.

MatrixXd ref_transpose(const MatrixXd& v) {
  MatrixXd out(v.cols(), v.rows());
  for (Index i = 0; i < v.rows(); ++i) {
    for (Index j = 0; j < v.cols(); ++j) out(j, i) = v(i, j);
  }
  return out;
}

MatrixXd ref_reshape(const MatrixXd& v, Index rows, Index cols) {
  MatrixXd out(rows, cols);
  for (Index k = 0; k < v.size(); ++k) out(k / cols, k % cols) = v(k / v.cols(), k % v.cols());
  return out;
}

MatrixXd ref_block(const MatrixXd& v, Index i0, Index j0, Index rows, Index cols) {
  MatrixXd out(rows, cols);
  for (Index i = 0; i < rows; ++i) {
    for (Index j = 0; j < cols; ++j) out(i, j) = v(i0 + i, j0 + j);
  }
  return out;
}

MatrixXd ref_reverse(const MatrixXd& v, bool rows, bool cols) {
  MatrixXd out(v.rows(), v.cols());
  for (Index i = 0; i < v.rows(); ++i) {
    for (Index j = 0; j < v.cols(); ++j) {
      out(i, j) = v(rows ? v.rows() - 1 - i : i, cols ? v.cols() - 1 - j : j);
    }
  }
  return out;
}

MatrixXd ref_pad(const MatrixXd& v, Index top, Index bottom, Index left, Index right) {
  MatrixXd out = MatrixXd::Zero(top + v.rows() + bottom, left + v.cols() + right);
  for (Index i = 0; i < v.rows(); ++i) {
    for (Index j = 0; j < v.cols(); ++j) out(top + i, left + j) = v(i, j);
  }
  return out;
}

MatrixXd ref_concatenate(const MatrixXd& a, const MatrixXd& b, bool stack_rows) {
  MatrixXd out(stack_rows ? a.rows() + b.rows() : a.rows(),
               stack_rows ? a.cols() : a.cols() + b.cols());
  for (Index i = 0; i < out.rows(); ++i) {
    for (Index j = 0; j < out.cols(); ++j) {
      if (stack_rows) {
        out(i, j) = i < a.rows() ? a(i, j) : b(i - a.rows(), j);
      } else {
        out(i, j) = j < a.cols() ? a(i, j) : b(i, j - a.cols());
      }
    }
  }
  return out;
}

}  // namespace

// ------------------------------------------------------------------------------
// Ops that keep the scale: exact.

TEMPLATE_TEST_CASE("transpose, reshape, block, slice, reverse keep the scale and move data exactly",
                   "[ops][shape]", SCALIFY_STORAGE_FORMATS) {
  using T = TestType;
  uint32_t seed = 1;
  for (const shape sh : kShapes) {
    for (const float s : kScales) {
      const auto x = random_scaled<T>(sh.rows, sh.cols, s, seed++);
      const MatrixXd d = data_d(x);
      const Index r = sh.rows, c = sh.cols;

      check_exact<T>(scalify::transpose(x), ref_transpose(d), s, describe("transpose", r, c, s));

      // Every factorisation of the size, and both -1 forms.
      for (Index rows = 1; rows <= x.size(); ++rows) {
        if (x.size() % rows != 0) continue;
        const Index cols = x.size() / rows;
        const std::string what = describe("reshape", r, c, s) + " to " + std::to_string(rows);
        check_exact<T>(scalify::reshape(x, rows, cols), ref_reshape(d, rows, cols), s, what);
        check_exact<T>(scalify::reshape(x, rows, -1), ref_reshape(d, rows, cols), s,
                       what + " x -1");
        check_exact<T>(scalify::reshape(x, -1, cols), ref_reshape(d, rows, cols), s,
                       what + " -1 x");
      }

      // The whole array, single elements at the corners, an inner block, empty blocks.
      const Index i0 = r / 3, j0 = c / 2, br = r - r / 3 - r / 4, bc = (c + 1) / 2;
      check_exact<T>(scalify::block(x, 0, 0, r, c), d, s, describe("block (all)", r, c, s));
      check_exact<T>(scalify::block(x, r - 1, c - 1, 1, 1), ref_block(d, r - 1, c - 1, 1, 1), s,
                     describe("block (last)", r, c, s));
      check_exact<T>(scalify::block(x, i0, j0, br, bc), ref_block(d, i0, j0, br, bc), s,
                     describe("block (inner)", r, c, s));
      check_exact<T>(scalify::block(x, r, c, 0, 0), MatrixXd(0, 0), s,
                     describe("block (empty)", r, c, s));
      check_exact<T>(scalify::slice(x, i0, 0, br, c), ref_block(d, i0, 0, br, c), s,
                     describe("slice", r, c, s));

      check_exact<T>(scalify::reverse(x), ref_reverse(d, true, true), s,
                     describe("reverse", r, c, s));
      check_exact<T>(scalify::reverse(x, scalify::axis::both), ref_reverse(d, true, true), s,
                     describe("reverse both", r, c, s));
      check_exact<T>(scalify::reverse(x, scalify::axis::rows), ref_reverse(d, true, false), s,
                     describe("reverse rows", r, c, s));
      check_exact<T>(scalify::reverse(x, scalify::axis::cols), ref_reverse(d, false, true), s,
                     describe("reverse cols", r, c, s));
    }
  }
  const auto x = random_scaled<T>(6, 4, 0.5f, 99);
  const MatrixXd d = data_d(x);
  check_stored_wider<T>(scalify::reverse(x, scalify::axis::rows), ref_reverse(d, true, false),
                        "reverse");
}

TEMPLATE_TEST_CASE("pad surrounds the data with zeros, broadcast repeats a row or a column",
                   "[ops][shape]", SCALIFY_STORAGE_FORMATS) {
  using T = TestType;
  uint32_t seed = 100;
  for (const shape sh : kShapes) {
    for (const float s : kScales) {
      const auto x = random_scaled<T>(sh.rows, sh.cols, s, seed++);
      const MatrixXd d = data_d(x);
      const Index r = sh.rows, c = sh.cols;
      check_exact<T>(scalify::pad(x, 0, 0, 0, 0), d, s, describe("pad 0", r, c, s));
      check_exact<T>(scalify::pad(x, 1, 2, 3, 4), ref_pad(d, 1, 2, 3, 4), s,
                     describe("pad 1 2 3 4", r, c, s));
      check_exact<T>(scalify::pad(x, 0, 5, 1, 0), ref_pad(d, 0, 5, 1, 0), s,
                     describe("pad 0 5 1 0", r, c, s));

      // Each row of x broadcast down, each column broadcast across.
      for (const Index n : {Index{0}, Index{1}, Index{4}}) {
        for (Index i = 0; i < r; i += std::max<Index>(1, r / 2)) {
          MatrixXd expected(n, c);
          for (Index k = 0; k < n; ++k) expected.row(k) = d.row(i);
          check_exact<T>(scalify::broadcast_rows(scalify::block(x, i, 0, 1, c), n), expected, s,
                         describe("broadcast_rows", 1, c, s) + " n " + std::to_string(n));
        }
        for (Index j = 0; j < c; j += std::max<Index>(1, c / 2)) {
          MatrixXd expected(r, n);
          for (Index k = 0; k < n; ++k) expected.col(k) = d.col(j);
          check_exact<T>(scalify::broadcast_cols(scalify::block(x, 0, j, r, 1), n), expected, s,
                         describe("broadcast_cols", r, 1, s) + " n " + std::to_string(n));
        }
      }
    }
  }
}

// ------------------------------------------------------------------------------
// concatenate: scale max(sa, sb), operands rebased.

TEMPLATE_TEST_CASE("concatenate takes the larger scale and rebases the other operand",
                   "[ops][shape]", SCALIFY_STORAGE_FORMATS) {
  using T = TestType;
  const double u = scalify_test::unit_roundoff<T>();
  const double tiny = static_cast<double>(std::numeric_limits<T>::denorm_min());
  uint32_t seed = 200;
  const std::vector<shape> pairs = {
      {1, 1}, {2, 5}, {7, 3}, {0, 4}, {4, 0}};  // (rows of a, rows of b)
  for (const float sa : kScales) {
    for (const float sb : kScales) {
      for (const shape p : pairs) {
        for (const Index c : {Index{1}, Index{6}}) {
          const auto a = random_scaled<T>(p.rows, c, sa, seed++);
          const auto b = random_scaled<T>(p.cols, c, sb, seed++);
          const double s = std::max(sa, sb);  // independent of the library's rule
          const MatrixXd expected = ref_concatenate(values_d(a), values_d(b), true);
          const std::string what = "concatenate_rows (" + std::to_string(p.rows) + ", " +
                                   std::to_string(p.cols) + ") x " + std::to_string(c) +
                                   ", scales " + std::to_string(sa) + ", " + std::to_string(sb);
          INFO(what);
          const auto y = scalify::concatenate_rows(a, b);
          const auto yt = scalify::concatenate_cols(scalify::transpose(a), scalify::transpose(b));
          REQUIRE(static_cast<double>(y.scale()) == s);
          REQUIRE(static_cast<double>(yt.scale()) == s);
          if (sa == sb) {
            // Equal scales: the data is untouched; both zero: the factors are
            // safe_div(0, 0) = 0, so the data is 0 (the values are 0 either way).
            const MatrixXd data = sa > 0 ? ref_concatenate(data_d(a), data_d(b), true)
                                         : MatrixXd::Zero(a.rows() + b.rows(), c);
            check_exact<T>(y, data, s, what);
            check_exact<T>(yt, data.transpose(), s, what + " (cols)");
            continue;
          }
          // The rebasing factor and product each round once in float (the
          // smaller-scale operand only); storing rounds once more into T.
          check_close(values_d(y), expected, 2 * 0x1p-24, 0x1p-149 * s, what + ": lazy");
          check_close(values_d(yt), expected.transpose(), 2 * 0x1p-24, 0x1p-149 * s,
                      what + ": lazy (cols)");
          const ScaledMatrix<T> stored = y;
          check_close(values_d(stored), expected, u + 2 * 0x1p-24, tiny * s, what + ": stored");
          // The operand with the larger scale is untouched.
          const MatrixXd stored_data = data_d(stored);
          if (sa > sb) {
            CHECK(stored_data.topRows(a.rows()) == data_d(a));
          } else {
            CHECK(stored_data.bottomRows(b.rows()) == data_d(b));
          }
        }
      }
    }
  }
}

TEST_CASE("concatenate with zero scales gives zeros, not NaN", "[ops][shape]") {
  const auto a = random_scaled<scalify::float8_e4m3fn>(2, 3, 0.0f, 1);
  const auto b = random_scaled<scalify::float8_e4m3fn>(5, 3, 0.0f, 2);
  const auto y = scalify::concatenate_rows(a, b);
  CHECK(y.scale() == 0.0f);
  const ScaledMatrix<scalify::float8_e4m3fn> stored = y;
  CHECK(values_d(stored) == MatrixXd::Zero(7, 3));
  CHECK(data_d(stored) == MatrixXd::Zero(7, 3));

  // One zero scale: the other scale, the zero-scale part is 0.
  const auto c = random_scaled<scalify::float8_e4m3fn>(2, 3, 0.5f, 3);
  const auto z = scalify::concatenate_rows(a, c);
  CHECK(z.scale() == 0.5f);
  CHECK(data_d(z).topRows(2) == MatrixXd::Zero(2, 3));
  CHECK(data_d(z).bottomRows(2) == data_d(c));
}

TEST_CASE("concatenate of the reference test: (2 x 3) * 0.5 and (5 x 3) * 2 gives scale 2",
          "[ops][shape]") {
  const auto a = random_scaled<scalify::float16>(2, 3, 0.5f, 11);
  const auto b = random_scaled<scalify::float16>(5, 3, 2.0f, 12);
  const ScaledMatrix<scalify::float16> y = scalify::concatenate_rows(a, b);
  CHECK(y.scale() == 2.0f);
  // 0.25 * data is exact in float16 for these magnitudes (no subnormals below 2^-24 here).
  check_close(values_d(y), ref_concatenate(values_d(a), values_d(b), true), 0, 0, "values");
}

// ------------------------------------------------------------------------------
// NaN and inf pass through untouched.

TEST_CASE("shape ops pass NaN and inf through", "[ops][shape]") {
  const float inf = std::numeric_limits<float>::infinity(),
              nan = std::numeric_limits<float>::quiet_NaN();
  scalify_test::RowMatrix<float> d(3, 4);
  d << 1, nan, -inf, 2,    //
      inf, -0.0f, 3, nan,  //
      -1, 4, 5, -inf;
  const ScaledMatrix<float> x(d, 2.0f);
  const MatrixXd v = data_d(x);
  check_exact<float>(scalify::transpose(x), ref_transpose(v), 2, "transpose");
  check_exact<float>(scalify::reshape(x, 2, 6), ref_reshape(v, 2, 6), 2, "reshape");
  check_exact<float>(scalify::reverse(x), ref_reverse(v, true, true), 2, "reverse");
  check_exact<float>(scalify::block(x, 1, 1, 2, 3), ref_block(v, 1, 1, 2, 3), 2, "block");
  check_exact<float>(scalify::pad(x, 1, 1, 1, 1), ref_pad(v, 1, 1, 1, 1), 2, "pad");
  check_exact<float>(scalify::concatenate_cols(x, x), ref_concatenate(v, v, false), 2,
                     "concatenate");
  // -0 keeps its sign.
  const ScaledMatrix<float> t = scalify::transpose(x);
  CHECK(std::signbit(t.data()(1, 1)));

  // Rebased onto a larger scale: inf stays inf; rebased by a zero factor: inf * 0 is NaN,
  // as the plain values are (inf * 0).
  const ScaledMatrix<float> big(scalify_test::RowMatrix<float>::Ones(3, 4), 8.0f);
  const ScaledMatrix<float> zero(d, 0.0f);
  check_close(values_d(scalify::concatenate_rows(x, big)),
              ref_concatenate(values_d(x), values_d(big), true), 0, 0, "rebased by 1/4");
  check_close(values_d(scalify::concatenate_rows(zero, big)),
              ref_concatenate(values_d(zero), values_d(big), true), 0, 0, "rebased by 0");
}

// ------------------------------------------------------------------------------
// Empty shapes.

TEST_CASE("shape ops on empty arrays", "[ops][shape]") {
  using T = float;
  const auto e03 = random_scaled<T>(0, 3, 0.25f, 1);
  const auto e30 = random_scaled<T>(3, 0, 0.25f, 2);
  const auto e00 = random_scaled<T>(0, 0, 0.25f, 3);
  check_exact<T>(scalify::transpose(e03), MatrixXd(3, 0), 0.25, "transpose (0 x 3)");
  check_exact<T>(scalify::reshape(e03, 3, 0), MatrixXd(3, 0), 0.25, "reshape (0 x 3) -> (3 x 0)");
  check_exact<T>(scalify::reshape(e30, 0, 7), MatrixXd(0, 7), 0.25, "reshape (3 x 0) -> (0 x 7)");
  check_exact<T>(scalify::reshape(e03, -1, 5), MatrixXd(0, 5), 0.25, "reshape (0 x 3) -> (-1 x 5)");
  check_exact<T>(scalify::reverse(e30), MatrixXd(3, 0), 0.25, "reverse (3 x 0)");
  check_exact<T>(scalify::reverse(e00, scalify::axis::rows), MatrixXd(0, 0), 0.25,
                 "reverse (0 x 0)");
  check_exact<T>(scalify::block(e30, 1, 0, 2, 0), MatrixXd(2, 0), 0.25, "block of (3 x 0)");
  check_exact<T>(scalify::pad(e00, 1, 1, 2, 0), MatrixXd::Zero(2, 2), 0.25, "pad (0 x 0)");
  check_exact<T>(scalify::broadcast_rows(scalify::block(e30, 0, 0, 1, 0), 3), MatrixXd(3, 0), 0.25,
                 "broadcast_rows (1 x 0)");
  check_exact<T>(scalify::broadcast_cols(scalify::block(e03, 0, 0, 0, 1), 4), MatrixXd(0, 4), 0.25,
                 "broadcast_cols (0 x 1)");
  // Narrow storage of nothing.
  const auto n03 = random_scaled<scalify::float8_e5m2>(0, 3, 0.25f, 6);
  check_exact<scalify::float8_e5m2>(scalify::transpose(n03), MatrixXd(3, 0), 0.25,
                                    "transpose e5m2 (0 x 3)");
  check_exact<scalify::float8_e5m2>(scalify::pad(n03, 0, 0, 1, 1), MatrixXd(0, 5), 0.25,
                                    "pad e5m2 (0 x 3)");
  const auto b = random_scaled<T>(2, 3, 0.25f, 5);
  check_exact<T>(scalify::concatenate_rows(e03, b), data_d(b), 0.25,
                 "concatenate_rows (0 x 3), (2 x 3)");
  check_exact<T>(scalify::concatenate_cols(e30, scalify::transpose(b)), data_d(b).transpose(), 0.25,
                 "concatenate_cols (3 x 0), (3 x 2)");
}

// ------------------------------------------------------------------------------
// Other operand kinds: lazy results, column-major and fixed-size storage,
// plain Eigen arrays, double and E8M0 scales.

// Float data is the interesting case: Eigen sees direct access through some of
// these expressions (narrow data is always behind a cast).
TEST_CASE("shape ops compose lazily", "[ops][shape]") {
  using T = float;
  const auto x = random_scaled<T>(5, 6, 0.375f, 31);
  const auto y = random_scaled<T>(6, 2, 0.375f, 32);
  const MatrixXd d = data_d(x), e = data_d(y);
  check_exact<T>(scalify::reshape(scalify::transpose(x), 3, 10),
                 ref_reshape(ref_transpose(d), 3, 10), 0.375, "reshape(transpose)");
  check_exact<T>(scalify::transpose(scalify::transpose(x)), d, 0.375, "transpose(transpose)");
  check_exact<T>(scalify::block(scalify::reverse(x, scalify::axis::rows), 1, 2, 3, 3),
                 ref_block(ref_reverse(d, true, false), 1, 2, 3, 3), 0.375, "block(reverse)");
  check_exact<T>(scalify::reverse(scalify::pad(x, 1, 0, 0, 2)),
                 ref_reverse(ref_pad(d, 1, 0, 0, 2), true, true), 0.375, "reverse(pad)");
  check_exact<T>(scalify::pad(scalify::reshape(x, 2, -1), 1, 1, 1, 1),
                 ref_pad(ref_reshape(d, 2, 15), 1, 1, 1, 1), 0.375, "pad(reshape)");
  check_exact<T>(scalify::concatenate_cols(scalify::transpose(x), scalify::reverse(y)),
                 ref_concatenate(ref_transpose(d), ref_reverse(e, true, true), false), 0.375,
                 "concatenate_cols(transpose, reverse)");
  check_exact<T>(
      scalify::concatenate_rows(scalify::concatenate_rows(scalify::block(x, 0, 0, 1, 6), x),
                                scalify::broadcast_rows(scalify::block(x, 4, 0, 1, 6), 2)),
      ref_concatenate(ref_concatenate(ref_block(d, 0, 0, 1, 6), d, true),
                      ref_concatenate(ref_block(d, 4, 0, 1, 6), ref_block(d, 4, 0, 1, 6), true),
                      true),
      0.375, "concatenate_rows(concatenate_rows, broadcast_rows)");
  check_exact<T>(scalify::reshape(scalify::concatenate_rows(x, x), 6, -1),
                 ref_reshape(ref_concatenate(d, d, true), 6, 10), 0.375,
                 "reshape(concatenate_rows)");
}

TEST_CASE("shape ops on column-major, fixed-size and Eigen::Array storage", "[ops][shape]") {
  // Column-major: reshape still reads in row-major order.
  const Eigen::MatrixXf cm = scalify_test::random_data<float>(3, 4, 41);
  const auto x = scalify::make_scaled(cm, 0.5f);
  const MatrixXd d = cm.cast<double>();
  check_exact<float>(scalify::reshape(x, 4, 3), ref_reshape(d, 4, 3), 0.5,
                     "reshape of column-major");
  check_exact<float>(scalify::reshape(x, 1, -1), ref_reshape(d, 1, 12), 0.5,
                     "flatten column-major");
  check_exact<float>(scalify::reverse(x, scalify::axis::cols), ref_reverse(d, false, true), 0.5,
                     "reverse column-major");
  check_exact<float>(scalify::concatenate_rows(x, x), ref_concatenate(d, d, true), 0.5,
                     "concatenate column-major");

  // Storage vectors broadcast directly.
  const scalify::ScaledVector<scalify::float16> v(
      scalify_test::random_data<scalify::float16>(5, 1, 7), 0.5f);
  MatrixXd expected(5, 3);
  for (Index k = 0; k < 3; ++k) expected.col(k) = data_d(v);
  check_exact<scalify::float16>(scalify::broadcast_cols(v, 3), expected, 0.5,
                                "broadcast_cols of a ScaledVector");
  check_exact<scalify::float16>(scalify::broadcast_rows(scalify::transpose(v), 3),
                                ref_transpose(expected), 0.5,
                                "broadcast_rows of a transposed ScaledVector");

  // Fixed size.
  const Eigen::Matrix<scalify::bfloat16, 2, 3> f =
      scalify_test::random_data<scalify::bfloat16>(2, 3, 42);
  const scalify::ScaledArray<Eigen::Matrix<scalify::bfloat16, 2, 3>> xf(f, 4.0f);
  const MatrixXd df = data_d(xf);
  check_exact<scalify::bfloat16>(scalify::transpose(xf), ref_transpose(df), 4, "transpose fixed");
  check_exact<scalify::bfloat16>(scalify::reshape(xf, 3, 2), ref_reshape(df, 3, 2), 4,
                                 "reshape fixed");
  check_exact<scalify::bfloat16>(scalify::pad(xf, 1, 1, 1, 1), ref_pad(df, 1, 1, 1, 1), 4,
                                 "pad fixed");
  check_exact<scalify::bfloat16>(
      scalify::broadcast_rows(scalify::block(xf, 1, 0, 1, 3), 2),
      ref_concatenate(ref_block(df, 1, 0, 1, 3), ref_block(df, 1, 0, 1, 3), true), 4,
      "broadcast fixed");

  // Plain Eigen::Array data (values_f must not copy it into a temporary).
  const Eigen::ArrayXXf arr = scalify_test::random_data<float>(3, 5, 43);
  const auto xa = scalify::make_scaled(arr, 2.0f);
  const MatrixXd da = arr.matrix().cast<double>();
  check_exact<float>(scalify::transpose(xa), ref_transpose(da), 2, "transpose of an Array");
  check_exact<float>(scalify::reshape(xa, 5, 3), ref_reshape(da, 5, 3), 2, "reshape of an Array");
  check_exact<float>(scalify::block(xa, 1, 1, 2, 2), ref_block(da, 1, 1, 2, 2), 2,
                     "block of an Array");
  check_exact<float>(scalify::reverse(xa), ref_reverse(da, true, true), 2, "reverse of an Array");
  check_exact<float>(scalify::pad(xa, 1, 0, 0, 1), ref_pad(da, 1, 0, 0, 1), 2, "pad of an Array");
  check_exact<float>(scalify::concatenate_cols(xa, xa), ref_concatenate(da, da, false), 2,
                     "concatenate Arrays");
  check_exact<float>(
      scalify::broadcast_rows(scalify::make_scaled(Eigen::ArrayXXf(arr.topRows(1)), 2.0f), 2),
      ref_concatenate(da.topRows(1), da.topRows(1), true), 2, "broadcast an Array");
}

TEST_CASE("shape ops keep double scales and turn E8M0 scales into float", "[ops][shape]") {
  using T = scalify::float8_e4m3fn;
  // A double scale below float's range survives.
  const ScaledMatrix<T, double> xd(scalify_test::random_data<T>(3, 4, 51), 0x1p-200);
  const auto td = scalify::transpose(xd);
  static_assert(std::is_same_v<decltype(td)::scale_type, double>);
  check_exact<T>(td, ref_transpose(data_d(xd)), 0x1p-200, "transpose, double scale");
  const auto cd =
      scalify::concatenate_rows(xd, ScaledMatrix<T>(scalify_test::random_data<T>(1, 4, 52), 0.0f));
  static_assert(std::is_same_v<decltype(cd)::scale_type, double>);
  CHECK(cd.scale() == 0x1p-200);

  // E8M0 scales compute in float; storing into an E8M0 scale is exact for powers of two.
  const ScaledMatrix<T, scalify::float8_e8m0fnu> xe(scalify_test::random_data<T>(3, 4, 53),
                                                    scalify::float8_e8m0fnu(0.125f));
  const auto te = scalify::reverse(xe);
  static_assert(std::is_same_v<decltype(te)::scale_type, float>);
  check_exact<T>(te, ref_reverse(data_d(xe), true, true), 0.125, "reverse, E8M0 scale");
  const ScaledMatrix<T, scalify::float8_e8m0fnu> back = te;
  CHECK(static_cast<float>(back.scale()) == 0.125f);
  CHECK(data_d(back) == ref_reverse(data_d(xe), true, true));
  const auto ce =
      scalify::concatenate_cols(xe, ScaledMatrix<T>(scalify_test::random_data<T>(3, 1, 54), 3.0f));
  static_assert(std::is_same_v<decltype(ce)::scale_type, float>);
  CHECK(ce.scale() == 3.0f);
}

// ------------------------------------------------------------------------------
// Errors name the op and the shapes.

TEST_CASE("shape ops reject bad shapes with messages naming the op and the shapes",
          "[ops][shape]") {
  const auto x = random_scaled<scalify::float16>(3, 4, 1.0f, 61);
  const auto y = random_scaled<scalify::float16>(2, 5, 1.0f, 62);
  const Index big = std::numeric_limits<Index>::max();

  require_shape_error([&] { (void)scalify::concatenate_rows(x, y); },
                      {"scalify::concatenate_rows", "(3 x 4)", "(2 x 5)"});
  require_shape_error([&] { (void)scalify::concatenate_cols(x, y); },
                      {"scalify::concatenate_cols", "(3 x 4)", "(2 x 5)"});

  require_shape_error([&] { (void)scalify::block(x, 2, 0, 2, 4); },
                      {"scalify::block", "(2 x 4)", "(2, 0)", "(3 x 4)"});
  require_shape_error([&] { (void)scalify::block(x, 0, 1, 3, 4); },
                      {"scalify::block", "(3 x 4)", "(0, 1)"});
  require_shape_error([&] { (void)scalify::block(x, -1, 0, 1, 1); }, {"scalify::block", "(-1, 0)"});
  require_shape_error([&] { (void)scalify::block(x, 0, 0, -1, 1); },
                      {"scalify::block", "(-1 x 1)"});
  require_shape_error([&] { (void)scalify::block(x, 4, 0, 0, 0); }, {"scalify::block", "(4, 0)"});
  require_shape_error([&] { (void)scalify::block(x, 1, 1, big, 1); },
                      {"scalify::block", "(3 x 4)"});
  require_shape_error([&] { (void)scalify::slice(x, 0, 3, 1, 2); },
                      {"scalify::slice", "(1 x 2)", "(0, 3)"});

  require_shape_error([&] { (void)scalify::reshape(x, 5, 2); },
                      {"scalify::reshape", "(3 x 4)", "(5 x 2)"});
  require_shape_error([&] { (void)scalify::reshape(x, -1, 5); },
                      {"scalify::reshape", "(3 x 4)", "(-1 x 5)"});
  require_shape_error([&] { (void)scalify::reshape(x, -1, -1); },
                      {"scalify::reshape", "(-1 x -1)"});
  require_shape_error([&] { (void)scalify::reshape(x, -2, -6); }, {"scalify::reshape"});
  require_shape_error([&] { (void)scalify::reshape(x, 0, 12); }, {"scalify::reshape", "(0 x 12)"});
  require_shape_error([&] { (void)scalify::reshape(x, big, 2); }, {"scalify::reshape"});
  require_shape_error([&] { (void)scalify::reshape(random_scaled<float>(0, 3, 1.0f, 1), 0, -1); },
                      {"scalify::reshape", "(0 x 3)"});

  require_shape_error([&] { (void)scalify::broadcast_rows(x, 2); },
                      {"scalify::broadcast_rows", "(3 x 4)"});
  require_shape_error([&] { (void)scalify::broadcast_cols(x, 2); },
                      {"scalify::broadcast_cols", "(3 x 4)"});
  require_shape_error([&] { (void)scalify::broadcast_rows(scalify::block(x, 0, 0, 1, 4), -1); },
                      {"scalify::broadcast_rows", "n = -1"});
  require_shape_error(
      [&] { (void)scalify::broadcast_cols(scalify::transpose(scalify::block(x, 0, 0, 1, 4)), -3); },
      {"scalify::broadcast_cols", "(4 x 1)", "n = -3"});

  require_shape_error([&] { (void)scalify::pad(x, 0, -1, 0, 0); },
                      {"scalify::pad", "bottom -1", "(3 x 4)"});
}

TEST_CASE("size arithmetic helpers detect overflow and negative operands", "[ops][shape][errors]") {
  const Index max = std::numeric_limits<Index>::max();
  Index out = -7;
  CHECK(scalify::detail::checked_add(max - 5, 5, out));
  CHECK(out == max);
  CHECK_FALSE(scalify::detail::checked_add(max - 5, 6, out));
  CHECK_FALSE(scalify::detail::checked_add(-1, 1, out));
  CHECK_FALSE(scalify::detail::checked_add(1, -1, out));
  CHECK(out == max);  // unchanged by the failures
  CHECK(scalify::detail::checked_mul(3037000499, 3037000499, out));  // floor(sqrt(2^63 - 1))^2 fits
  CHECK(out == Index{3037000499} * 3037000499);
  CHECK_FALSE(scalify::detail::checked_mul(3037000500, 3037000500, out));
  CHECK_FALSE(scalify::detail::checked_mul(max, 2, out));
  CHECK_FALSE(scalify::detail::checked_mul(-2, 3, out));
  CHECK(scalify::detail::checked_mul(0, max, out));
  CHECK(out == 0);
  CHECK(scalify::detail::valid_shape(0, max));
  CHECK(scalify::detail::valid_shape(max, 1));
  CHECK_FALSE(scalify::detail::valid_shape(max, 2));
  CHECK_FALSE(scalify::detail::valid_shape(-1, 0));
}

TEST_CASE("pad, broadcast and concatenate reject sizes that overflow Eigen::Index", "[ops][shape][errors]") {
  const auto x = random_scaled<float>(2, 3, 1.0f, 71);
  const Index max = std::numeric_limits<Index>::max();
  // The reproducer: UBSan reported a signed overflow, -DNDEBUG gave rows() = -9223372036854775806.
  require_shape_error([&] { (void)scalify::pad(x, max, 1, 0, 0); },
                      {"scalify::pad", "top 9223372036854775807", "bottom 1", "(2 x 3)"});
  require_shape_error([&] { (void)scalify::pad(x, 0, 0, max - 2, 1); }, {"scalify::pad", "left 9223372036854775805"});
  // Each dimension fits, their product does not.
  require_shape_error([&] { (void)scalify::pad(x, Index{1} << 32, 0, Index{1} << 32, 0); },
                      {"scalify::pad", "top 4294967296", "left 4294967296"});
  // Large but valid: a lazy result of (2^40 + 2 x 3), never evaluated.
  const auto tall = scalify::pad(x, Index{1} << 40, 0, 0, 0);
  CHECK(tall.rows() == (Index{1} << 40) + 2);
  CHECK(tall.size() == ((Index{1} << 40) + 2) * 3);

  const auto row = scalify::block(x, 0, 0, 1, 3);
  require_shape_error([&] { (void)scalify::broadcast_rows(row, max); },
                      {"scalify::broadcast_rows", "(1 x 3)", "n = 9223372036854775807"});
  require_shape_error([&] { (void)scalify::broadcast_cols(scalify::transpose(row), max / 2); },
                      {"scalify::broadcast_cols", "(3 x 1)", "n = 4611686018427387903"});
  const auto many = scalify::broadcast_rows(row, max / 3);  // (max / 3 x 3) fits exactly
  CHECK(many.rows() == max / 3);

  const auto huge_rows = scalify::broadcast_rows(scalify::block(x, 0, 0, 1, 1), max);  // (max x 1)
  require_shape_error([&] { (void)scalify::concatenate_rows(huge_rows, scalify::block(x, 0, 0, 1, 1)); },
                      {"scalify::concatenate_rows", "(9223372036854775807 x 1)", "(1 x 1)"});
  const auto wide = scalify::broadcast_cols(scalify::block(x, 0, 0, 2, 1), max / 2);  // (2 x max / 2)
  require_shape_error([&] { (void)scalify::concatenate_cols(wide, wide); }, {"scalify::concatenate_cols"});
  const auto half = scalify::broadcast_rows(row, max / 6);  // rows fit when stacked, elements do not
  require_shape_error([&] { (void)scalify::concatenate_rows(half, scalify::broadcast_rows(row, max / 6 + 2)); },
                      {"scalify::concatenate_rows", "(1537228672809129301 x 3)"});
}

TEST_CASE("reverse rejects an axis outside the enum", "[ops][shape][errors]") {
  const auto x = random_scaled<float>(2, 3, 1.0f, 72);
  try {
    (void)scalify::reverse(x, static_cast<scalify::axis>(7));
    FAIL("no exception");
  } catch (const std::invalid_argument& e) {
    CHECK_THAT(std::string(e.what()), Catch::Matchers::Contains("scalify::reverse") &&
                                          Catch::Matchers::Contains("axis 7"));
  }
  CHECK_NOTHROW(scalify::reverse(x, scalify::axis::cols));
}
