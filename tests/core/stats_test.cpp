// stats() and tensor_stats (core/stats.hpp): statistics of the values against
// hand-computed numbers, and the overflow / underflow / subnormal counts of
// stats<T>() against a brute-force nearest-code search over T's codes.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "scalify/core/fmt.hpp"
#include "scalify/core/scaled_array.hpp"
#include "scalify/core/stats.hpp"
#include "scalify/ops/elementwise.hpp"
#include "support/narrow_types.hpp"

using scalify::bfloat16;
using scalify::float16;
using scalify::float8_e4m3fn;
using scalify::float8_e5m2;
using scalify::ScaledMatrix;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr float kNaNf = std::numeric_limits<float>::quiet_NaN();
constexpr float kInff = std::numeric_limits<float>::infinity();

template <class T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

}  // namespace

TEST_CASE("stats: min, max, amax, mean, rms and counts against hand-computed values", "[core][stats]") {
  RowMatrix<float> d(2, 3);
  d << 1.0f, -2.0f, 0.0f, kNaNf, kInff, 0.5f;
  const ScaledMatrix<float> x(d, 4.0f);  // values 4, -8, 0, NaN, inf, 2
  const auto s = scalify::stats(x);
  CHECK(s.rows == 2);
  CHECK(s.cols == 3);
  CHECK(s.min == -8.0);
  CHECK(s.max == kInf);
  CHECK(s.amax == kInf);
  CHECK(s.mean == -0.5);                    // (4 - 8 + 0 + 2) / 4: finite values only
  CHECK(s.rms == Approx(std::sqrt(21.0)).epsilon(1e-15));  // sqrt((16 + 64 + 0 + 4) / 4)
  CHECK(s.nan == 1);
  CHECK(s.inf == 1);
  CHECK(s.zeros == 1);
  CHECK(s.format == nullptr);

  // -inf and -0.
  RowMatrix<float> e(1, 3);
  e << -kInff, -0.0f, 3.0f;
  const auto t = scalify::stats(ScaledMatrix<float>(e, 0.5f));
  CHECK(t.min == -kInf);
  CHECK(t.max == 1.5);
  CHECK(t.amax == kInf);
  CHECK(t.zeros == 1);
  CHECK(t.mean == 0.75);  // (-0 + 1.5) / 2
  CHECK(t.inf == 1);
}

TEST_CASE("stats: empty, all-NaN and zero-scale tensors", "[core][stats]") {
  const auto empty = scalify::stats(ScaledMatrix<float>(RowMatrix<float>(0, 4), 1.0f));
  CHECK(empty.rows == 0);
  CHECK(empty.cols == 4);
  CHECK(std::isnan(empty.min));
  CHECK(std::isnan(empty.mean));
  CHECK(std::isnan(empty.rms));

  RowMatrix<float> n(1, 2);
  n << kNaNf, kNaNf;
  const auto all_nan = scalify::stats(ScaledMatrix<float>(n, 1.0f));
  CHECK(all_nan.nan == 2);
  CHECK(std::isnan(all_nan.max));
  CHECK(std::isnan(all_nan.amax));

  RowMatrix<float> z(1, 3);
  z << 5.0f, -7.0f, kInff;  // scale 0: 0, -0, 0 * inf = NaN
  const auto zero = scalify::stats(ScaledMatrix<float>(z, 0.0f));
  CHECK(zero.zeros == 2);
  CHECK(zero.nan == 1);
  CHECK(zero.inf == 0);
  CHECK(zero.max == 0.0);
  CHECK(zero.rms == 0.0);
}

TEST_CASE("stats: huge and tiny scales are computed in double without overflow", "[core][stats]") {
  // float data, float scale 2^127: the values 2^128 and 3 * 2^127 overflow float, not double.
  RowMatrix<float> d(1, 2);
  d << 2.0f, 3.0f;
  const auto big = scalify::stats(ScaledMatrix<float>(d, 0x1p127f));
  CHECK(big.max == std::ldexp(3.0, 127));
  CHECK(big.inf == 0);
  CHECK(big.mean == std::ldexp(2.5, 127));
  CHECK(big.rms == Approx(std::sqrt(6.5) * std::ldexp(1.0, 127)).epsilon(1e-15));  // sqrt((4 + 9) / 2)
  // A double scale of 1e300: the sum of squares (1e600) would overflow double; the rms does not.
  const auto huge = scalify::stats(ScaledMatrix<float, double>(d, 1e300));
  CHECK(huge.mean == Approx(2.5e300).epsilon(1e-15));
  CHECK(huge.rms == Approx(std::sqrt(6.5) * 1e300).epsilon(1e-15));
  CHECK(std::isfinite(huge.rms));
  // Subnormal scale.
  const auto tiny = scalify::stats(ScaledMatrix<float>(d, 0x1p-149f));
  CHECK(tiny.min == std::ldexp(2.0, -149));
  CHECK(tiny.zeros == 0);
}

TEST_CASE("stats of a lazy result evaluates it", "[core][stats]") {
  RowMatrix<float> d(1, 3);
  d << 1.0f, 2.0f, 3.0f;
  const ScaledMatrix<float> a(d, 2.0f);
  const auto s = scalify::stats(a * a);  // values 4, 16, 36
  CHECK(s.min == 4.0);
  CHECK(s.max == 36.0);
  CHECK(s.mean == Approx(56.0 / 3.0).epsilon(1e-15));
}

namespace {

/// The reference: the category of rounding |d| to the nearest value of T in
/// a table of all its finite codes (ties to the even code), with one code past
/// the largest finite value standing for "beyond the range".
enum class category { normal, overflow, underflow, subnormal, zero };

template <class T>
struct code_values {
  std::vector<double> value;  // positive finite codes in increasing order, code 0 included
  std::vector<uint32_t> code;
  double smallest_normal;

  code_values() {
    const uint32_t n = sizeof(T) == 1 ? 0x80u : 0x8000u;
    for (uint32_t c = 0; c < n; ++c) {
      const double v = static_cast<double>(static_cast<float>(scalify_test::from_code<T>(c)));
      if (!std::isfinite(v)) continue;
      value.push_back(v);
      code.push_back(c);
    }
    // One virtual code past the largest finite value, the same step above it.
    const size_t m = value.size() - 1;
    value.push_back(value[m] + (value[m] - value[m - 1]));
    code.push_back(code[m] + 1);
    smallest_normal = static_cast<double>(static_cast<float>(std::numeric_limits<T>::min()));
  }

  category classify(double d) const {
    const double a = std::abs(d);
    if (a == 0.0) return category::zero;
    if (a >= value.back()) return category::overflow;  // at or past the virtual code (gaps may tie in double)
    // The nearest entry of the (increasing) table; beyond its end: the virtual code.
    const size_t hi = std::min<size_t>(
        static_cast<size_t>(std::lower_bound(value.begin(), value.end(), a) - value.begin()), value.size() - 1);
    size_t best = hi;
    if (hi > 0) {
      const double gap_hi = std::abs(value[hi] - a), gap_lo = std::abs(a - value[hi - 1]);
      if (gap_lo < gap_hi || (gap_lo == gap_hi && (code[hi - 1] & 1u) == 0)) best = hi - 1;
    }
    if (best == value.size() - 1) return category::overflow;
    if (value[best] == 0.0) return category::underflow;
    if (value[best] < smallest_normal) return category::subnormal;
    return category::normal;
  }
};

/// Test data: every finite value of T, the midpoints between neighbours, and
/// values just off the midpoints, both signs, plus a few far out of range.
template <class T>
std::vector<double> probe_values(const code_values<T>& t) {
  std::vector<double> out;
  for (size_t i = 0; i + 1 < t.value.size(); ++i) {
    const double lo = t.value[i], hi = t.value[i + 1], mid = 0.5 * (lo + hi);
    for (const double v : {lo, mid, std::nextafter(mid, 0.0), std::nextafter(mid, kInf)}) {
      out.push_back(v);
      out.push_back(-v);
    }
  }
  for (const double v : {1e-30, 1e9, 1e30, 0x1p-40}) {
    out.push_back(v);
    out.push_back(-v);
  }
  return out;
}

template <class T>
void check_counts_against_codes() {
  const code_values<T> table;
  const std::vector<double> probes = probe_values(table);
  // As double data with scale 1: stats<T> sees the data exactly.
  RowMatrix<double> d(1, static_cast<Eigen::Index>(probes.size()));
  Eigen::Index overflow = 0, underflow = 0, subnormal = 0;
  for (size_t i = 0; i < probes.size(); ++i) {
    d(0, static_cast<Eigen::Index>(i)) = probes[i];
    switch (table.classify(probes[i])) {
      case category::overflow: ++overflow; break;
      case category::underflow: ++underflow; break;
      case category::subnormal: ++subnormal; break;
      default: break;
    }
  }
  REQUIRE(overflow > 0);
  REQUIRE(underflow > 0);
  REQUIRE(subnormal > 0);
  const ScaledMatrix<double> x(d, 1.0f);
  const auto s = scalify::stats<T>(x);
  CHECK(std::string(s.format) == scalify::detail::type_name<T>());
  CHECK(s.overflow == overflow);
  CHECK(s.underflow == underflow);
  CHECK(s.subnormal == subnormal);
  // The same data as values 2^10 times larger on scale 2^10, and through stats(x, scale).
  const ScaledMatrix<double> y(d, 1024.0f);
  const auto t = scalify::stats<T>(y, 1024.0);
  CHECK(t.overflow == overflow);
  CHECK(t.underflow == underflow);
  CHECK(t.subnormal == subnormal);
  // Halving the scale doubles the data: more overflow, less underflow.
  const auto u = scalify::stats<T>(y, 512.0);
  CHECK(u.overflow > overflow);
  CHECK(u.underflow < underflow);
}

}  // namespace

TEST_CASE("stats<T> overflow, underflow and subnormal counts match a brute-force search over T's codes",
          "[core][stats]") {
  SECTION("float8_e4m3fn") { check_counts_against_codes<float8_e4m3fn>(); }
  SECTION("float8_e5m2") { check_counts_against_codes<float8_e5m2>(); }
  SECTION("float16") { check_counts_against_codes<float16>(); }
  SECTION("bfloat16") { check_counts_against_codes<bfloat16>(); }
}

TEST_CASE("stats<T> thresholds by hand: e4m3fn overflows above 464, e5m2 from 61440, float16 from 65520",
          "[core][stats]") {
  RowMatrix<float> d(1, 6);
  d << 464.0f, 464.5f, 61439.0f, 61440.0f, 65519.0f, 65520.0f;
  const ScaledMatrix<float> x(d, 1.0f);
  CHECK(scalify::stats<float8_e4m3fn>(x).overflow == 5);  // all but 464 (ties to even 448)
  CHECK(scalify::stats<float8_e5m2>(x).overflow == 3);    // 61440 and up
  CHECK(scalify::stats<float16>(x).overflow == 1);        // 65520
  CHECK(scalify::stats<float>(x).overflow == 0);
  // Underflow: e4m3fn's smallest subnormal is 2^-9, so 2^-10 ties to 0 and 1.5 * 2^-10 rounds up.
  RowMatrix<float> t(1, 3);
  t << 0x1p-10f, 0x1.8p-10f, 0x1p-7f;
  const auto s = scalify::stats<float8_e4m3fn>(ScaledMatrix<float>(t, 1.0f));
  CHECK(s.underflow == 1);
  CHECK(s.subnormal == 2);  // 1.5 * 2^-10 -> 2^-9 and 2^-7 = 4 * 2^-9: below the smallest normal 2^-6
  // On scale 8 the values are 2^-7, 1.5 * 2^-7, 2^-4; as data on scale 1: two subnormals, one normal.
  const auto r = scalify::stats<float8_e4m3fn>(ScaledMatrix<float>(t, 8.0f), 1.0);
  CHECK(r.subnormal == 2);
  CHECK(r.underflow == 0);
}

TEST_CASE("stats: bad scale for stats<T>(x, scale) throws", "[core][stats][errors]") {
  const ScaledMatrix<float> x(RowMatrix<float>::Ones(1, 2), 1.0f);
  CHECK_THROWS_WITH(scalify::stats<float16>(x, 0.0), Catch::Contains("scalify::stats") && Catch::Contains("0"));
  CHECK_THROWS_AS(scalify::stats<float16>(x, -2.0), std::invalid_argument);
  CHECK_THROWS_AS(scalify::stats<float16>(x, std::nan("")), std::invalid_argument);
  CHECK_THROWS_AS(scalify::stats<float16>(x, kInf), std::invalid_argument);
}

TEST_CASE("tensor_stats prints the same through to_string, operator<< and fmt", "[core][stats]") {
  RowMatrix<float> d(2, 3);
  d << 1.0f, -2.0f, 0.0f, kNaNf, kInff, 0.5f;
  const ScaledMatrix<float> x(d, 4.0f);
  const std::string plain = scalify::to_string(scalify::stats(x));
  CHECK(plain == "stats (2 x 3): min -8, max inf, amax inf, mean -0.5, rms 4.58258; nan 1, inf 1, zeros 1");
  RowMatrix<float> big(1, 2);
  big << 500.0f, 0.001f;
  const auto s8 = scalify::stats<float8_e4m3fn>(ScaledMatrix<float>(big, 1.0f));
  const std::string with_format = scalify::to_string(s8);
  CHECK(with_format ==
        "stats (1 x 2): min 0.001, max 500, amax 500, mean 250.001, rms 353.553; nan 0, inf 0, zeros 0; "
        "float8_e4m3fn: overflow 1, underflow 0, subnormal 1");
  std::ostringstream os;
  os << s8;
  CHECK(os.str() == with_format);
  CHECK(fmt::format("{}", s8) == with_format);
}
