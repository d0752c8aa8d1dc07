// Printing ScaledArrays (core/print.hpp) and their fmt formatter
// (core/fmt.hpp): the exact text for small tensors, elision of big ones,
// special values and scales, lazy results; fmt and operator<< agree.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <sstream>
#include <string>

#include "scalify/core/fmt.hpp"
#include "scalify/core/print.hpp"
#include "scalify/core/scaled_array.hpp"
#include "scalify/ops/elementwise.hpp"
#include "scalify/ops/shape.hpp"

using scalify::float16;
using scalify::float8_e4m3fn;
using scalify::float8_e8m0fnu;
using scalify::ScaledArray;
using scalify::ScaledMatrix;

namespace {

template <class T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

/// The text of x through to_string, checked to be the same through operator<< and fmt.
template <class D, class S>
std::string printed(const ScaledArray<D, S>& x) {
  const std::string text = scalify::to_string(x);
  std::ostringstream os;
  os << x;
  CHECK(os.str() == text);
  CHECK(fmt::format("{}", x) == text);
  return text;
}

}  // namespace

TEST_CASE("printing a small tensor: header, then values data * scale aligned", "[core][print]") {
  RowMatrix<float16> d(2, 3);
  d << float16(1.0f), float16(-1.5f), float16(3.0f), float16(0.0f), float16(kNaN), float16(kInf);
  const ScaledMatrix<float16> x(d, 0.25f);
  CHECK(printed(x) ==
        "ScaledArray (2 x 3) float16, scale 0.25 (float)\n"
        "  0.25 -0.375   0.75\n"
        "     0    nan    inf");
  // float8 data, 6 significant digits, negative infinity.
  RowMatrix<float8_e4m3fn> e(1, 3);
  e << float8_e4m3fn(448.0f), float8_e4m3fn(-0.001953125f), float8_e4m3fn(1.0f);
  const ScaledMatrix<float8_e4m3fn> y(e, 1.0f / 3.0f);
  CHECK(printed(y) ==
        "ScaledArray (1 x 3) float8_e4m3fn, scale 0.33333334 (float)\n"
        "     149.333 -0.000651042     0.333333");
  RowMatrix<float> f(1, 2);
  f << -kInf, -0.0f;
  CHECK(printed(ScaledMatrix<float>(f, 1.0f)) == "ScaledArray (1 x 2) float, scale 1 (float)\n-inf   -0");
}

TEST_CASE("printing zero, huge, tiny, NaN, double and E8M0 scales", "[core][print]") {
  RowMatrix<float> d(1, 3);
  d << 2.0f, -3.0f, kInf;
  // Zero scale: 0, -0, and 0 * inf = NaN, as plain math on the values.
  CHECK(printed(ScaledMatrix<float>(d, 0.0f)) == "ScaledArray (1 x 3) float, scale 0 (float)\n  0  -0 nan");
  // 2^127: the values 2^128 and -3 * 2^127 are beyond float, printed from double.
  CHECK(printed(ScaledMatrix<float>(d, 0x1p127f)) ==
        "ScaledArray (1 x 3) float, scale 1.7014118e+38 (float)\n"
        " 3.40282e+38 -5.10424e+38" + std::string(10, ' ') + "inf");
  CHECK(printed(ScaledMatrix<float>(d, 0x1p-149f)) ==
        "ScaledArray (1 x 3) float, scale 1e-45 (float)\n"
        " 2.8026e-45 -4.2039e-45" + std::string(9, ' ') + "inf");
  CHECK(printed(ScaledMatrix<float, double>(d, 1e300)) ==
        "ScaledArray (1 x 3) float, scale 1e+300 (double)\n"
        " 2e+300 -3e+300     inf");
  CHECK(printed(ScaledArray<RowMatrix<float>, float8_e8m0fnu>(d, float8_e8m0fnu(0.5f))) ==
        "ScaledArray (1 x 3) float, scale 0.5 (float8_e8m0fnu)\n"
        "   1 -1.5  inf");
  // A NaN scale (only an op makes one: 0 / 0).
  const ScaledMatrix<float> z(RowMatrix<float>::Ones(1, 2), 0.0f);
  CHECK(printed(z / z) == "ScaledArray (1 x 2) lazy float, scale nan (float)\nnan nan");
}

TEST_CASE("printing a big tensor elides all but the first and last 3 rows and columns", "[core][print]") {
  RowMatrix<float> d(9, 10);
  for (Eigen::Index i = 0; i < d.rows(); ++i) {
    for (Eigen::Index j = 0; j < d.cols(); ++j) d(i, j) = static_cast<float>(10 * i + j);
  }
  CHECK(printed(ScaledMatrix<float>(d, 1.0f)) ==
        "ScaledArray (9 x 10) float, scale 1 (float)\n"
        "  0   1   2 ...   7   8   9\n"
        " 10  11  12 ...  17  18  19\n"
        " 20  21  22 ...  27  28  29\n"
        "... ... ... ... ... ... ...\n"
        " 60  61  62 ...  67  68  69\n"
        " 70  71  72 ...  77  78  79\n"
        " 80  81  82 ...  87  88  89");
  // 8 is printed in full; only the long dimension is elided.
  const ScaledMatrix<float> col = scalify::block(ScaledMatrix<float>(d, 2.0f), 0, 0, 9, 1);
  CHECK(printed(col) ==
        "ScaledArray (9 x 1) float, scale 2 (float)\n"
        "  0\n 20\n 40\n...\n120\n140\n160");
  const ScaledMatrix<float> row8 = scalify::block(ScaledMatrix<float>(d, 1.0f), 0, 0, 1, 8);
  CHECK(printed(row8) == "ScaledArray (1 x 8) float, scale 1 (float)\n0 1 2 3 4 5 6 7");
  // Empty tensors print their header only.
  CHECK(printed(ScaledMatrix<float>()) == "ScaledArray (0 x 0) float, scale 1 (float)");
  CHECK(printed(ScaledMatrix<float>(RowMatrix<float>(0, 5), 0.5f)) == "ScaledArray (0 x 5) float, scale 0.5 (float)");
}

TEST_CASE("printing a lazy result evaluates the elements shown", "[core][print]") {
  RowMatrix<float> d(2, 2);
  d << 1.0f, 2.0f, 3.0f, 4.0f;
  const ScaledMatrix<float> a(d, 0.5f);
  // a * a: scale 0.25, data d * d.
  CHECK(printed(a * a) == "ScaledArray (2 x 2) lazy float, scale 0.25 (float)\n0.25    1\n2.25    4");
  // Storing gives the same text but "float" storage instead of "lazy float".
  const ScaledMatrix<float> stored = a * a;
  CHECK(printed(stored) == "ScaledArray (2 x 2) float, scale 0.25 (float)\n0.25    1\n2.25    4");
  // A big lazy transpose: only the corners are evaluated, and they are right.
  RowMatrix<float> big(20, 30);
  for (Eigen::Index i = 0; i < big.rows(); ++i) {
    for (Eigen::Index j = 0; j < big.cols(); ++j) big(i, j) = static_cast<float>(100 * i + j);
  }
  const ScaledMatrix<float> b(big, 1.0f);
  const std::string t = printed(scalify::transpose(b));
  CHECK(t.rfind("ScaledArray (30 x 20) lazy float, scale 1 (float)\n", 0) == 0);
  CHECK(t.find("\n  29  129  229  ... 1729 1829 1929") != std::string::npos);  // last row of the transpose
}

TEST_CASE("fmt format specs apply to the whole text", "[core][print]") {
  const ScaledMatrix<float> x(RowMatrix<float>::Constant(1, 1, 2.0f), 1.0f);
  CHECK(fmt::format("[{:>48}]", x) == "[    ScaledArray (1 x 1) float, scale 1 (float)\n2]");
}
