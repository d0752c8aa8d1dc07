// The vectorized float8 <-> float casts inside Eigen's evaluators
// (formats/eigen_packet.hpp): bit-exact against the scalar casts for all 256
// codes, for random and special floats (every tie and overflow threshold), for
// every float (exhaustive pass), at sizes and offsets that are not multiples of
// the packet, in 1-D and 2-D (both storage orders) and fixed-size shapes; the
// NaN screening of e4m3fn operands, with NaN codes planted around its window
// boundaries, in Eigen and in scalify's own evaluation of stored results (1
// and 2 threads, in place); the e4m3fn decodes whose 2^8 scalify folds into
// constant factors (formats/detail/eigen_fold.hpp) and the runs of packets
// it decodes without a check; an expression mixing three float8 arrays; and
// the other Eigen paths that now read float8 packets (copies, reverse,
// constants, small products).
//
// This file is compiled with -mavx2 -mfma -mf16c (tests/CMakeLists.txt), since
// Eigen's vectorization is chosen at compile time; each test checks the CPU
// first and skips with a warning without AVX2/FMA/F16C. Compiled without those
// flags, the same checks run on Eigen's scalar casts and one test warns that
// the packet casts were not built.
#include <catch2/catch.hpp>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>  // __get_cpuid, bit_F16C
#endif

#include <Eigen/Core>
#include <algorithm>  // std::shuffle
#include <bit>      // std::bit_cast
#include <cmath>    // std::isnan
#include <cstdint>  // std::uint8_t, std::uint32_t
#include <initializer_list>  // std::initializer_list
#include <limits>   // std::numeric_limits
#include <random>   // std::mt19937, std::normal_distribution
#include <sstream>  // std::ostringstream
#include <string>   // std::string
#include <type_traits>  // std::is_same_v
#include <utility>  // std::pair
#include <vector>   // std::vector

#include "scalify/core/config_scope.hpp"  // config_scope (threads)
#include "scalify/formats/eigen.hpp"      // NumTraits, eigen_packet.hpp
#include "scalify/formats/float8.hpp"     // float8_e4m3fn, float8_e5m2
#include "scalify/ops/elementwise.hpp"    // operator*, operator+ on ScaledArray
#include "support/bulk_checks.hpp"     // mixed_inputs, report
#include "support/exhaustive.hpp"      // run_on_every_float, float_check, stopwatch, hex
#include "support/narrow_types.hpp"    // ref_format
#include "support/reference.hpp"       // ref::codec, ref::float_segments

using scalify::float8_e4m3fn;
using scalify::float8_e5m2;
namespace ref = scalify_test::ref;

namespace {

template <class T>
using ArrayX = Eigen::Array<T, Eigen::Dynamic, 1>;
template <class T>
using RowMajorX = Eigen::Array<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ColMajorX = Eigen::Array<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;

// True if this CPU can run the code of this file. Compiled for plain x86-64,
// whatever the flags of the file, so that it runs anywhere.
// (F16C through cpuid: Clang 14's __builtin_cpu_supports does not know "f16c".)
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("arch=x86-64"))) bool cpu_runs_this_file() {
  __builtin_cpu_init();
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
}
#else
bool cpu_runs_this_file() { return true; }
#endif

// Skips the calling test, visibly, where the CPU lacks what the file was built for.
#define SKIP_WITHOUT_AVX2()                                                                      \
  if (!cpu_runs_this_file()) {                                                                   \
    WARN("skipped: this CPU lacks AVX2, FMA or F16C, which this test program was compiled for"); \
    return;                                                                                      \
  }

std::uint32_t float_bits(float x) { return std::bit_cast<std::uint32_t>(x); }

// Checks y(i) == static_cast<float>(x(i)) bit for bit, for every element of
// two same-shaped Eigen objects; `where` names the case in failures.
template <class Codes, class Floats>
void check_widened(const std::string& where, const Codes& x, const Floats& y) {
  REQUIRE(x.rows() == y.rows());
  REQUIRE(x.cols() == y.cols());
  int failures = 0;
  for (Eigen::Index j = 0; j < x.cols(); ++j) {
    for (Eigen::Index i = 0; i < x.rows(); ++i) {
      const std::uint32_t expected = float_bits(static_cast<float>(x(i, j)));
      const std::uint32_t actual = float_bits(y(i, j));
      if (expected != actual && ++failures <= 8) {
        FAIL_CHECK(where << " (" << i << ", " << j << "): code "
                         << scalify_test::hex(x(i, j).bits(), 2) << " expected "
                         << scalify_test::hex(expected, 8) << " actual "
                         << scalify_test::hex(actual, 8));
      }
    }
  }
  CHECK(failures == 0);
}

// Checks y(i) == T(x(i)) bit for bit.
template <class Floats, class Codes>
void check_narrowed(const std::string& where, const Floats& x, const Codes& y) {
  using T = typename Codes::Scalar;
  REQUIRE(x.rows() == y.rows());
  REQUIRE(x.cols() == y.cols());
  int failures = 0;
  for (Eigen::Index j = 0; j < x.cols(); ++j) {
    for (Eigen::Index i = 0; i < x.rows(); ++i) {
      const std::uint8_t expected = T(x(i, j)).bits();
      const std::uint8_t actual = y(i, j).bits();
      if (expected != actual && ++failures <= 8) {
        FAIL_CHECK(where << " (" << i << ", " << j << "): input "
                         << scalify_test::hex(float_bits(x(i, j)), 8) << " expected "
                         << scalify_test::hex(expected, 2) << " actual "
                         << scalify_test::hex(actual, 2));
      }
    }
  }
  CHECK(failures == 0);
}

// Every code, then codes in a scrambled order, `n` in all.
template <class T>
ArrayX<T> codes(Eigen::Index n) {
  ArrayX<T> c(n);
  for (Eigen::Index i = 0; i < n; ++i) {
    c(i) = T::from_bits(static_cast<std::uint8_t>(i < 256 ? i : (i * 0x9E37u) >> 3));
  }
  return c;
}

// `n` random e4m3fn codes, NaN codes (0x7F, 0xFF) only where planted, about
// one in `one_in`.
ArrayX<float8_e4m3fn> e4m3fn_codes_with_nan(Eigen::Index n, std::mt19937& rng, unsigned one_in) {
  ArrayX<float8_e4m3fn> c(n);
  for (Eigen::Index i = 0; i < n; ++i) {
    auto code = static_cast<std::uint8_t>(rng());
    if ((code | 0x80) == 0xFF) code = 0x31;
    if (rng() % one_in == 0) code = rng() % 2 ? 0x7F : 0xFF;
    c(i) = float8_e4m3fn::from_bits(code);
  }
  return c;
}

// Lengths around multiples of the packets (8 codes; 8 or 16 floats).
constexpr Eigen::Index kLengths[] = {0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 255, 256, 257, 263, 1000};

}  // namespace

// ------------------------------------------------------------------------------
// The packet casts are built and used

TEST_CASE("eigen packets: float8 casts are vectorized when Eigen uses AVX2",
          "[formats][eigen][packet]") {
#if SCALIFY_EIGEN_PACKET_FLOAT8
  using namespace Eigen::internal;
  using FloatDst = evaluator<Eigen::ArrayXf>;
  using Widen = decltype(ArrayX<float8_e4m3fn>().cast<float>());
  using Narrow = decltype(Eigen::ArrayXf().cast<float8_e5m2>());
  STATIC_REQUIRE((evaluator<Widen>::Flags & Eigen::PacketAccessBit) != 0);
  STATIC_REQUIRE((evaluator<Narrow>::Flags & Eigen::PacketAccessBit) != 0);
  STATIC_REQUIRE(int(copy_using_evaluator_traits<FloatDst, evaluator<Widen>,
                                                 assign_op<float, float>>::Traversal) ==
                 int(Eigen::LinearVectorizedTraversal));
  STATIC_REQUIRE(int(copy_using_evaluator_traits<evaluator<ArrayX<float8_e5m2>>, evaluator<Narrow>,
                                                 assign_op<float8_e5m2, float8_e5m2>>::Traversal) ==
                 int(Eigen::LinearVectorizedTraversal));
  // float8 arithmetic itself stays scalar.
  STATIC_REQUIRE(packet_traits<float8_e4m3fn>::HasAdd == 0);
  STATIC_REQUIRE(unpacket_traits<packet_traits<float8_e4m3fn>::type>::vectorizable == false);
#else
  WARN(
      "formats/eigen_packet.hpp is inactive in this build (compile with -mavx2 -mfma -mf16c): "
      "the other tests check Eigen's scalar casts only");
#endif
}

// ------------------------------------------------------------------------------
// Widening

TEMPLATE_TEST_CASE("eigen packets: every code widens like the scalar cast",
                   "[formats][eigen][packet]", float8_e4m3fn, float8_e5m2) {
  SKIP_WITHOUT_AVX2();
  using T = TestType;
  const ArrayX<T> all = codes<T>(1000 + 16);
  for (const Eigen::Index n : kLengths) {
    for (const Eigen::Index offset : {0, 1, 3, 8, 13}) {
      const auto x = all.segment(offset, n);
      const Eigen::ArrayXf y = x.template cast<float>();
      check_widened("length " + std::to_string(n) + " offset " + std::to_string(offset), x, y);
    }
  }
  // NaN codes give the canonical quiet NaN with their sign.
  ArrayX<T> nans(16);
  for (Eigen::Index i = 0; i < 16; ++i) nans(i) = T::from_bits(i % 2 ? 0xFF : 0x7F);
  const Eigen::ArrayXf y = nans.template cast<float>();
  for (Eigen::Index i = 0; i < 16; ++i)
    CHECK(float_bits(y(i)) == (i % 2 ? 0xFFC0'0000u : 0x7FC0'0000u));
}

TEMPLATE_TEST_CASE("eigen packets: widening in 2-D, blocks and fixed sizes",
                   "[formats][eigen][packet]", float8_e4m3fn, float8_e5m2) {
  SKIP_WITHOUT_AVX2();
  using T = TestType;
  const ArrayX<T> all = codes<T>(37 * 29);
  const RowMajorX<T> r = Eigen::Map<const RowMajorX<T>>(all.data(), 37, 29);
  const ColMajorX<T> c = Eigen::Map<const ColMajorX<T>>(all.data(), 37, 29);
  check_widened("row-major", r, RowMajorX<float>(r.template cast<float>()));
  check_widened("col-major", c, ColMajorX<float>(c.template cast<float>()));
  check_widened("row-major block", r.block(3, 5, 30, 19),
                RowMajorX<float>(r.block(3, 5, 30, 19).template cast<float>()));
  check_widened("col-major block", c.block(3, 5, 30, 19),
                ColMajorX<float>(c.block(3, 5, 30, 19).template cast<float>()));
  check_widened("transpose", r.transpose(), ColMajorX<float>(r.transpose().template cast<float>()));
  check_widened("reverse", all.reverse(), Eigen::ArrayXf(all.reverse().template cast<float>()));
  const Eigen::Map<const ArrayX<T>, 0, Eigen::InnerStride<3>> strided(all.data() + 1, 100);
  check_widened("inner stride 3", strided, Eigen::ArrayXf(strided.template cast<float>()));
  // Fixed sizes read float packets of 4, 8 or 16 (Packet4f is filled element by element).
  const Eigen::Array<T, 4, 1> f4 = all.template segment<4>(120);
  const Eigen::Array<T, 8, 1> f8 = all.template segment<8>(121);
  const Eigen::Array<T, 16, 1> f16 = all.template segment<16>(122);
  const Eigen::Array<T, 12, 1> f12 = all.template segment<12>(123);
  check_widened("fixed 4", f4, Eigen::Array<float, 4, 1>(f4.template cast<float>()));
  check_widened("fixed 8", f8, Eigen::Array<float, 8, 1>(f8.template cast<float>()));
  check_widened("fixed 16", f16, Eigen::Array<float, 16, 1>(f16.template cast<float>()));
  check_widened("fixed 12", f12, Eigen::Array<float, 12, 1>(f12.template cast<float>()));
}

TEMPLATE_TEST_CASE("eigen packets: codes screened for NaN a window at a time widen exactly",
                   "[formats][eigen][packet]", float8_e4m3fn, float8_e5m2) {
  SKIP_WITHOUT_AVX2();
#if SCALIFY_EIGEN_PACKET_FLOAT8
  using scalify::detail::eigen_packet::screen_scope;
  // Inside a screen_scope (as scalify's own evaluations run), contiguous
  // e4m3fn codes read by linear index are screened for NaN codes a window of
  // 512 at a time, up to the scope's end; windows without one take the decode
  // that has no NaN step (e5m2 is not screened: the same checks hold it to its
  // exact decode inside a scope). Every code that is not NaN (e5m2's
  // infinities included), in a scrambled order, then each NaN code planted at
  // each position around window and packet boundaries (relative to the start
  // of the data that is read): windows with the NaN must decode it, the
  // others must still decode exactly.
  using T = TestType;
  const Eigen::Index n = 1601;
  ArrayX<T> finite(n);
  for (Eigen::Index i = 0; i < n; ++i) {
    const auto code = static_cast<std::uint8_t>(i < 256 ? i : (i * 0x9E37u) >> 3);
    finite(i) = T::from_bits(scalify::isnan(T::from_bits(code)) ? 0x42 : code);
  }
  std::vector<std::uint8_t> nans;
  for (int code = 0; code < 256; ++code) {
    if (scalify::isnan(T::from_bits(static_cast<std::uint8_t>(code))))
      nans.push_back(static_cast<std::uint8_t>(code));
  }
  REQUIRE(nans.size() == (std::is_same_v<T, float8_e4m3fn> ? 2u : 6u));
  const auto widened = [](const auto& x, Eigen::Index end) {
    const screen_scope scope(end);
    return Eigen::ArrayXf(x.template cast<float>());
  };
  check_widened("no NaN", finite, widened(finite, n));
  for (const Eigen::Index at : {0,   1,   7,    8,    9,    503,  504,  511,  512,  513,
                                519, 520, 1023, 1024, 1535, 1536, 1592, 1593, 1599, 1600}) {
    for (const std::uint8_t nan : nans) {
      ArrayX<T> x = finite;
      x(at) = T::from_bits(nan);
      const std::string where = "NaN " + scalify_test::hex(nan, 2) + " at " + std::to_string(at);
      check_widened(where, x, widened(x, n));
      // The scope ending before the NaN: packets past its end decode exactly.
      check_widened(where + ", scope to 700", x, widened(x, 700));
      check_widened(where + ", scope to 8", x, widened(x, 8));
      // A segment starting elsewhere: its windows start at its own first code,
      // and a NaN just outside it changes nothing inside.
      for (const Eigen::Index offset : {1, 5, 8, 500}) {
        const auto part = x.segment(offset, n - offset - 3);
        check_widened(where + ", segment from " + std::to_string(offset), part, widened(part, n));
      }
      // In an expression, and in 2-D (rows of 41 codes, row-major).
      Eigen::ArrayXf sum;
      {
        const screen_scope scope(n);
        sum = x.template cast<float>() * 2.0f + finite.template cast<float>();
      }
      int failures = 0;
      for (Eigen::Index i = 0; i < n; ++i) {
        const float expected = static_cast<float>(x(i)) * 2.0f + static_cast<float>(finite(i));
        const bool ok =
            std::isnan(expected) ? std::isnan(sum(i)) : float_bits(sum(i)) == float_bits(expected);
        if (!ok && ++failures <= 8) FAIL_CHECK(where << ", expression at " << i);
      }
      CHECK(failures == 0);
      const Eigen::Map<const RowMajorX<T>> r(x.data(), 39, 41);
      const screen_scope scope(n);
      check_widened(where + ", row-major", r, RowMajorX<float>(r.template cast<float>()));
    }
  }
  // Two NaN codes: clean windows between and after windows that hold one.
  for (const auto& [a, b] : {std::pair<Eigen::Index, Eigen::Index>{7, 1030}, {513, 520}, {0, 1600}, {511, 1024}}) {
    ArrayX<T> x = finite;
    x(a) = T::from_bits(nans.front());
    x(b) = T::from_bits(nans.back());
    check_widened("NaN codes at " + std::to_string(a) + " and " + std::to_string(b), x, widened(x, n));
  }
  // Packets asked for out of order, as a nested or strided evaluation may:
  // the evaluator keeps the last window screened clean and the last one with
  // a NaN code, and must widen every packet exactly whichever it lies in.
  {
    ArrayX<T> x = finite;
    x(600) = T::from_bits(nans.front());
    x(1100) = T::from_bits(nans.back());
    const auto expr = x.template cast<float>();
    const screen_scope scope(n);
    const Eigen::internal::evaluator<std::remove_const_t<decltype(expr)>> source(expr);
    std::vector<Eigen::Index> order = {0, 504, 592, 8, 600, 1096, 1100, 500, 598, 1104, 604, 1093, 0, 1593};
    std::vector<Eigen::Index> shuffled;
    for (Eigen::Index i = 0; i + 8 <= n; ++i) shuffled.push_back(i);
    std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937(12));
    order.insert(order.end(), shuffled.begin(), shuffled.end());
    // Each packet's codes and lanes side by side, checked as one array.
    ArrayX<T> codes(8 * static_cast<Eigen::Index>(order.size()));
    Eigen::ArrayXf lanes(codes.size());
    for (std::size_t j = 0; j < order.size(); ++j) {
      const Eigen::Index at = 8 * static_cast<Eigen::Index>(j);
      codes.segment(at, 8) = x.segment(order[j], 8);
      Eigen::internal::pstoreu(lanes.data() + at,
                               source.template packet<Eigen::Unaligned, Eigen::internal::Packet8f>(order[j]));
    }
    check_widened("out of order (row 8 j + k: lane k of the packet at order[j])", codes, lanes);
  }
#else
  WARN("formats/eigen_packet.hpp is inactive in this build: no NaN screening to test");
#endif
}

TEMPLATE_TEST_CASE(
    "eigen packets: scaled expressions over float8 storage match the same over float storage",
    "[formats][eigen][packet][threads]", float8_e4m3fn, float8_e5m2) {
  SKIP_WITHOUT_AVX2();
  // Storing `x * y + w` evaluates it through core/scaled_array.hpp's
  // evaluate_linear (chunks of rows, or straight into float storage; threads,
  // NaN screening of the float8 operands). The same expression over float
  // storage holding the same values (widened one by one with the scalar cast)
  // never decodes a code, and its arithmetic is the same: the stored bits must
  // agree, NaN for NaN. The float results are also checked against the same
  // expression stored as double, which Eigen's own assignment loop evaluates
  // (in float, then widened exactly).
  using scalify::ScaledMatrix;
  using T = TestType;
  for (const auto& [rows, cols] :
       {std::pair<Eigen::Index, Eigen::Index>{301, 70}, {1100, 130}, {40001, 1}}) {
    std::mt19937 rng(static_cast<unsigned>(rows));
    const auto codes = [&](bool with_nan) {
      typename ScaledMatrix<T>::data_type d(rows, cols);
      for (Eigen::Index i = 0; i < d.size(); ++i) {
        auto c = static_cast<std::uint8_t>(rng());
        if (scalify::isnan(T::from_bits(c))) c = 0x31;
        d(i) = T::from_bits(c);
      }
      if (with_nan) {  // around chunk (8190 or 8060 codes), window and thread boundaries
        for (const Eigen::Index at :
             {Eigen::Index{3}, Eigen::Index{8189}, Eigen::Index{8190}, Eigen::Index{8191},
              d.size() / 2, d.size() / 2 + 1, d.size() - 1}) {
          d(at) = T::from_bits(at % 2 ? 0xFF : std::is_same_v<T, float8_e5m2> ? 0x7D : 0x7F);
        }
      }
      return d;
    };
    const auto widened = [](const ScaledMatrix<T>& a) {
      ScaledMatrix<float>::data_type d(a.rows(), a.cols());
      for (Eigen::Index i = 0; i < d.size(); ++i) d(i) = static_cast<float>(a.data()(i));
      return ScaledMatrix<float>(d, a.scale());
    };
    for (const bool with_nan : {false, true}) {
      const ScaledMatrix<T> x(codes(with_nan), 0.5f), y(codes(false), 4.0f),
          w(codes(with_nan), 1.0f);
      const ScaledMatrix<float> xf = widened(x), yf = widened(y), wf = widened(w);
      for (const int threads : {1, 2}) {
        scalify::scalify_config config = scalify::current_config();
        config.threads = threads;
        const scalify::config_scope scope(config);
        const ScaledMatrix<T> expected = xf * yf + wf;
        const ScaledMatrix<float> expected_f = xf * yf + wf;
        const ScaledMatrix<double> expected_d = xf * yf + wf;
        const ScaledMatrix<T> z = x * y + w;
        const ScaledMatrix<float> z_f = x * y + w;
        ScaledMatrix<T> in_place = x;
        in_place = in_place * y + w;  // in place: each thread reads what it overwrites
        ScaledMatrix<float> in_place_f = xf;
        in_place_f = in_place_f * y + w;
        REQUIRE(z.scale() == expected.scale());
        REQUIRE(in_place.scale() == expected.scale());
        REQUIRE(z_f.scale() == expected_f.scale());
        REQUIRE(expected_d.scale() == expected_f.scale());
        REQUIRE(in_place_f.scale() == expected_f.scale());
        int failures = 0;
        for (Eigen::Index i = 0; i < z.size(); ++i) {
          const auto e = expected.data()(i), a = z.data()(i), p = in_place.data()(i);
          const float ed = static_cast<float>(expected_d.data()(i)), ef = expected_f.data()(i),
                      af = z_f.data()(i), pf = in_place_f.data()(i);
          const bool ok = scalify::isnan(e)
                              ? scalify::isnan(a) && scalify::isnan(p) && std::isnan(af) &&
                                    std::isnan(ef) && std::isnan(ed) && std::isnan(pf)
                              : a.bits() == e.bits() && p.bits() == e.bits() &&
                                    float_bits(af) == float_bits(ed) &&
                                    float_bits(ef) == float_bits(ed) &&
                                    float_bits(pf) == float_bits(ed);
          if (!ok && ++failures <= 8) {
            FAIL_CHECK(rows << "x" << cols << (with_nan ? " with NaN" : "") << ", " << threads
                            << " threads, element " << i << ": expected "
                            << scalify_test::hex(e.bits(), 2) << " / " << ed << ", actual "
                            << scalify_test::hex(a.bits(), 2) << " / " << af
                            << " (over float: " << ef << "), in place "
                            << scalify_test::hex(p.bits(), 2) << " / " << pf);
          }
        }
        CHECK(failures == 0);
      }
    }
  }
}

TEST_CASE("eigen packets: clean runs of screened e4m3fn codes hold no NaN code", "[formats][eigen][packet]") {
  SKIP_WITHOUT_AVX2();
#if SCALIFY_EIGEN_PACKET_FLOAT8
  // The folded evaluation (below) decodes runs of packets with no check each:
  // clean_run(i) promises that codes [i, i + run) hold no NaN code, and
  // packet_clean_over_256 decodes them as value * 2^-8. Checked at every
  // packet, walked in order as evaluate_linear does and in a shuffled order
  // (which starts windows anywhere), on codes with NaN codes scattered
  // (about one in 700: many windows of 512 are clean, many are not).
  using scalify::detail::eigen_packet::screen_scope;
  const Eigen::Index n = 50001;
  std::mt19937 rng(5);
  const ArrayX<float8_e4m3fn> c = e4m3fn_codes_with_nan(n, rng, 700);
  const auto nan_in = [&](Eigen::Index begin, Eigen::Index end) {
    for (Eigen::Index k = begin; k < std::min(end, n); ++k) {
      if (scalify::isnan(c(k))) return true;
    }
    return false;
  };
  const auto expr = c.cast<float>();
  std::vector<Eigen::Index> order;
  for (Eigen::Index i = 0; i + 8 <= n; i += 8) order.push_back(i);
  for (const bool shuffled : {false, true}) {
    if (shuffled) std::shuffle(order.begin(), order.end(), rng);
    const screen_scope scope(n);
    const Eigen::internal::evaluator<std::remove_const_t<decltype(expr)>> ev(expr);
    Eigen::Index clean_packets = 0;
    int failures = 0;
    for (const Eigen::Index i : order) {
      const Eigen::Index run = ev.clean_run(i);
      const bool ok = run >= 0 && run <= n - i && !nan_in(i, i + run);
      if (!ok && ++failures <= 8) FAIL_CHECK((shuffled ? "shuffled" : "in order") << ": clean_run(" << i << ") = " << run);
      if (run < 8) continue;
      ++clean_packets;
      alignas(32) float lanes[8];
      Eigen::internal::pstoreu(lanes, ev.template packet_clean_over_256<Eigen::internal::Packet8f>(i));
      for (int k = 0; k < 8; ++k) {
        const float expected = static_cast<float>(c(i + k)) / 256.0f;  // exact
        if (float_bits(lanes[k]) != float_bits(expected) && ++failures <= 8) {
          FAIL_CHECK("packet_clean_over_256(" << i << ") lane " << k << ": code "
                                             << scalify_test::hex(c(i + k).bits(), 2) << " expected "
                                             << scalify_test::hex(float_bits(expected), 8) << " actual "
                                             << scalify_test::hex(float_bits(lanes[k]), 8));
        }
      }
    }
    CHECK(failures == 0);
    // Most windows are clean: the runs were used, not only the exact decode.
    CHECK(clean_packets > static_cast<Eigen::Index>(order.size()) / 4);
  }
#else
  WARN("formats/eigen_packet.hpp is inactive in this build: no screened runs to check");
#endif
}

TEST_CASE("eigen packets: staged e4m3fn halves are value * 2^-8, and their screen finds every NaN code",
          "[formats][eigen][packet]") {
  SKIP_WITHOUT_AVX2();
#if SCALIFY_EIGEN_PACKET_FLOAT8
  // scalify's evaluation stages the float16 bits of value * 2^-8 of blocks of
  // e4m3fn codes (stage_over_256, blocks of 32 in the order 0-7, 16-23, 8-15,
  // 24-31) and screens the codes as it goes: a block with a NaN code is then
  // decoded again, exactly. Checked on blocks of 1 to 16 groups of 32 at
  // many offsets over 4096 codes with NaN codes planted about one in 600,
  // against a float16 decoder written here and a scan for NaN codes. stageable(end)
  // tells whether the codes below `end` may be read: only inside a
  // screen_scope reaching `end`.
  using scalify::detail::eigen_packet::kStagedOffset;
  using scalify::detail::eigen_packet::screen_scope;
  const Eigen::Index n = 4096;
  std::mt19937 rng(17);
  const ArrayX<float8_e4m3fn> c = e4m3fn_codes_with_nan(n, rng, 600);
  const auto half_value = [](std::uint16_t h) {  // float16 bits -> value, exactly
    const int e = (h >> 10) & 0x1F, m = h & 0x3FF;
    if (e == 0x1F) return std::numeric_limits<double>::quiet_NaN();  // inf or NaN: never expected
    const double magnitude = e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25);
    return (h & 0x8000) ? -magnitude : magnitude;
  };
  const auto expr = c.cast<float>();
  using Evaluator = Eigen::internal::evaluator<std::remove_const_t<decltype(expr)>>;
  static_assert(Evaluator::kStageable);
  CHECK_FALSE(Evaluator(expr).stageable(n));  // outside any screen_scope
  const screen_scope scope(n);
  const Evaluator ev(expr);
  CHECK(ev.stageable(n));
  CHECK_FALSE(ev.stageable(n + 1));
  int failures = 0, hits = 0, clean = 0;
  alignas(32) std::uint16_t halves[512];
  for (Eigen::Index count = 32; count <= 512; count += 32) {
    for (Eigen::Index index = count % 96; index + count <= n; index += count + 13) {
      scalify::simd::avx2::nan_screen screen;
      ev.stage_over_256(index, count, halves, screen);
      bool nan = false;
      for (Eigen::Index j = 0; j < count; ++j) {
        const float8_e4m3fn code = c(index + j);
        if (scalify::isnan(code)) {
          nan = true;
          continue;  // its halves are not defined
        }
        const Eigen::Index at = j / 32 * 32 + kStagedOffset[j % 32 / 8] + j % 8;
        const double expected = static_cast<double>(static_cast<float>(code)) / 256.0;
        if (half_value(halves[at]) != expected && ++failures <= 8) {
          FAIL_CHECK("block of " << count << " at " << index << ", code " << j << " ("
                                 << scalify_test::hex(code.bits(), 2) << "): half "
                                 << scalify_test::hex(halves[at], 4) << ", expected " << expected);
        }
      }
      if (screen.hit() != nan && ++failures <= 8) {
        FAIL_CHECK("block of " << count << " at " << index << ": NaN code " << nan << ", screen hit " << screen.hit());
      }
      (nan ? hits : clean) += 1;
    }
  }
  CHECK(failures == 0);
  CHECK(hits > 20);  // both kinds of block occurred
  CHECK(clean > 20);
#else
  WARN("formats/eigen_packet.hpp is inactive in this build: nothing is staged");
#endif
}

TEST_CASE("eigen packets: e4m3fn decodes folded into constant factors give Eigen's bits",
          "[formats][eigen][packet]") {
  SKIP_WITHOUT_AVX2();
  // scalify's evaluation of stored results (evaluate_linear) lets e4m3fn
  // decodes skip their * 2^8 where the expression multiplies them by a float
  // constant, which takes the factor (formats/detail/eigen_fold.hpp). Each
  // expression below is evaluated that way (detail::evaluate_into into float
  // storage), by Eigen's own assignment loop (which never folds), and by a
  // scalar reference: each float operation in double, rounded to float at
  // once (double's 53 bits make that the float operation's own rounding), in
  // Eigen's order. The codes are all 256, NaN and subnormals included (then
  // NaN-free runs with a few planted); the constants include
  // subnormals, zeros, inf, NaN, and values whose folded form c * 2^(8k)
  // overflows (the fold must then stand aside) or just fits.
#if SCALIFY_EIGEN_PACKET_FLOAT8
  using scalify::detail::eigen_packet::folds_completely;
#endif
  for (const bool sparse_nan : {false, true}) {
    // Every code at random (NaN codes everywhere: packets decode one at a
    // time), then codes without NaN but for a few planted at window (512) and
    // chunk boundaries, a different place in each operand: runs of packets
    // screened clean, which decode without a check each (AVX2: blocks of 32
    // through staged float16 halves, then the run's last packets one by one).
    const Eigen::Index rows = sparse_nan ? 131 : 67, cols = sparse_nan ? 130 : 61;  // 17030, 4087: tails
    std::mt19937 rng(sparse_nan ? 12 : 11);
    const auto random_codes = [&](std::initializer_list<Eigen::Index> nan_at) {
      RowMajorX<float8_e4m3fn> c(rows, cols);
      for (Eigen::Index i = 0; i < c.size(); ++i) {
        c(i) = float8_e4m3fn::from_bits(static_cast<std::uint8_t>(rng()));
        if (sparse_nan && scalify::isnan(c(i))) c(i) = float8_e4m3fn::from_bits(0x31);
      }
      if (sparse_nan) {
        for (const Eigen::Index at : nan_at) c(at) = float8_e4m3fn::from_bits(at % 2 ? 0xFF : 0x7F);
      }
      return c;
    };
    // Windows start every 512 codes here; a NaN code right after a clean run
    // (4096, 2055, 8192) catches a run that reaches one packet too far.
    const RowMajorX<float8_e4m3fn> x = random_codes({0, 511, 4096}), y = random_codes({2055}),
                                   w = random_codes({8192, 12000}), v = random_codes({1535, 17029});
    RowMajorX<float> f(rows, cols);
    std::normal_distribution<float> normal(0.0f, 3.0f);
    for (Eigen::Index i = 0; i < f.size(); ++i) f(i) = normal(rng);
    const auto X = x.cast<float>();
    const auto Y = y.cast<float>();
    const auto W = w.cast<float>();
    const auto V = v.cast<float>();

    // Float operations rounded once, whatever the compiler's contraction setting.
    const auto mul = [](float a, float b) { return static_cast<float>(static_cast<double>(a) * b); };
    const auto add = [](float a, float b) { return static_cast<float>(static_cast<double>(a) + b); };
    const auto sub = [](float a, float b) { return static_cast<float>(static_cast<double>(a) - b); };
    const auto at = [](const RowMajorX<float8_e4m3fn>& c, Eigen::Index i) { return static_cast<float>(c(i)); };

    const auto check = [&](const std::string& name, const auto& expr, const auto& reference) {
      RowMajorX<float> folded(rows, cols);
      scalify::detail::evaluate_into(folded, expr, scalify::convert_options{});
      const RowMajorX<float> eigen = expr;
      int failures = 0;
      for (Eigen::Index i = 0; i < folded.size(); ++i) {
        const float expected = reference(i);
        // Which NaN operand a NaN result keeps is the compiler's choice (it may
        // swap a product's operands; IEEE 754 leaves it open): NaN only needs NaN.
        const bool ok = std::isnan(expected) ? std::isnan(folded(i)) && std::isnan(eigen(i))
                                             : float_bits(folded(i)) == float_bits(expected) &&
                                                   float_bits(eigen(i)) == float_bits(expected);
        if (!ok && ++failures <= 8) {
          FAIL_CHECK(name << ", element " << i << ": x " << scalify_test::hex(x(i).bits(), 2) << " y "
                          << scalify_test::hex(y(i).bits(), 2) << " w " << scalify_test::hex(w(i).bits(), 2) << " v "
                          << scalify_test::hex(v(i).bits(), 2) << ": expected " << scalify_test::hex(float_bits(expected), 8)
                          << ", Eigen " << scalify_test::hex(float_bits(eigen(i)), 8) << ", folded "
                          << scalify_test::hex(float_bits(folded(i)), 8));
        }
      }
      CHECK(failures == 0);
    };

    const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
    const float constants[][2] = {
        {1.0f, 1.0f},       {0.5f, 3.0f},       {-1.25e-3f, 7.0f},    {1e-40f, 0x1p-149f},  // subnormal
        {0x1p111f, 0x1p119f},                   // folded: 2^127 for k = 2 and k = 1, the largest that fit
        {0x1p112f, 0x1p120f},                   // folded: 2^128, overflow: the fold stands aside
        {std::numeric_limits<float>::max(), 1.0f},
      {0x1p72f, 1.0f},                        // seven factors: 2^128, overflow
      {0x1p71f, 1.0f},                        // seven factors: 2^127, the largest that fits
        {inf, -inf},        {nan, 1.0f},        {0.0f, -0.0f}};
    for (const auto& [a, b] : constants) {
      std::ostringstream with;
      with << std::hexfloat << " with a = " << a << ", b = " << b;
      {
        const auto expr = (X * Y) * a + W * b;  // add's rule: both products folded
#if SCALIFY_EIGEN_PACKET_FLOAT8
        static_assert(folds_completely<std::remove_const_t<decltype(expr)>>);
        // The fold applies unless a finite constant overflows once scaled (a * 2^16, b * 2^8).
        const auto overflows = [](float c, int k) { return std::isfinite(c) && std::isinf(std::ldexp(c, 8 * k)); };
        CHECK(scalify::detail::eigen_packet::fold_evaluator<std::remove_const_t<decltype(expr)>>(expr).applies() ==
              !(overflows(a, 2) || overflows(b, 1)));
#endif
        check("(x * y) * a + w * b" + with.str(), expr,
              [&](Eigen::Index i) { return add(mul(mul(at(x, i), at(y, i)), a), mul(at(w, i), b)); });
      }
      {
        const auto expr = a * X - (Y * W) * b;  // the constant on the left, a difference
#if SCALIFY_EIGEN_PACKET_FLOAT8
        static_assert(folds_completely<std::remove_const_t<decltype(expr)>>);
#endif
        check("a * x - (y * w) * b" + with.str(), expr,
              [&](Eigen::Index i) { return sub(mul(a, at(x, i)), mul(mul(at(y, i), at(w, i)), b)); });
      }
      {
        const auto expr = ((((((X * Y) * W) * V) * X) * Y) * W) * a;  // k = 7: folded
#if SCALIFY_EIGEN_PACKET_FLOAT8
        static_assert(folds_completely<std::remove_const_t<decltype(expr)>>);
#endif
        check("seven factors * a" + with.str(), expr, [&](Eigen::Index i) {
          float p = mul(at(x, i), at(y, i));
          for (const auto* c : {&w, &v, &x, &y, &w}) p = mul(p, at(*c, i));
          return mul(p, a);
        });
      }
      {
        const auto expr = (((((((X * Y) * W) * V) * X) * Y) * W) * V) * a;  // k = 8: not folded
#if SCALIFY_EIGEN_PACKET_FLOAT8
        static_assert(!folds_completely<std::remove_const_t<decltype(expr)>>);
#endif
        check("eight factors * a" + with.str(), expr, [&](Eigen::Index i) {
          float p = mul(at(x, i), at(y, i));
          for (const auto* c : {&w, &v, &x, &y, &w, &v}) p = mul(p, at(*c, i));
          return mul(p, a);
        });
      }
      {
        const auto expr = (X * f) * a + W * b;  // a float operand: only w * b folded
#if SCALIFY_EIGEN_PACKET_FLOAT8
        static_assert(folds_completely<std::remove_const_t<decltype(expr)>>);
#endif
        check("(x * f) * a + w * b" + with.str(), expr,
              [&](Eigen::Index i) { return add(mul(mul(at(x, i), f(i)), a), mul(at(w, i), b)); });
      }
    }
  }
}

// ------------------------------------------------------------------------------
// Narrowing

TEMPLATE_TEST_CASE("eigen packets: random and special floats narrow like the scalar cast",
                   "[formats][eigen][packet]", float8_e4m3fn, float8_e5m2) {
  SKIP_WITHOUT_AVX2();
  using T = TestType;
  const ref::codec c(scalify_test::ref_format<T>);
  // Random bit patterns, values over the range and beyond, every code's value
  // and every midpoint (ties) with their float neighbours, +-0, +-inf, NaNs,
  // float subnormals.
  const std::vector<float> inputs = scalify_test::mixed_inputs(c, 200'003, 42);
  const Eigen::Map<const Eigen::ArrayXf> all(inputs.data(),
                                             static_cast<Eigen::Index>(inputs.size()));
  check_narrowed("all inputs", all, ArrayX<T>(all.template cast<T>()));
  for (const Eigen::Index n : kLengths) {
    for (const Eigen::Index offset : {0, 1, 5, 8}) {
      const auto x = all.segment(offset, n);
      check_narrowed("length " + std::to_string(n) + " offset " + std::to_string(offset), x,
                     ArrayX<T>(x.template cast<T>()));
    }
  }
  const RowMajorX<float> r = Eigen::Map<const RowMajorX<float>>(inputs.data(), 41, 27);
  const ColMajorX<float> col = Eigen::Map<const ColMajorX<float>>(inputs.data(), 41, 27);
  check_narrowed("row-major", r, RowMajorX<T>(r.template cast<T>()));
  check_narrowed("col-major", col, ColMajorX<T>(col.template cast<T>()));
  check_narrowed("col-major block", col.block(2, 3, 37, 21),
                 ColMajorX<T>(col.block(2, 3, 37, 21).template cast<T>()));
  const Eigen::Array<float, 8, 1> f8 = all.template segment<8>(3);
  const Eigen::Array<float, 4, 1> f4 = all.template segment<4>(11);
  check_narrowed("fixed 8", f8, Eigen::Array<T, 8, 1>(f8.template cast<T>()));
  check_narrowed("fixed 4", f4, Eigen::Array<T, 4, 1>(f4.template cast<T>()));
}

TEMPLATE_TEST_CASE("eigen packets: round trip of every code", "[formats][eigen][packet]",
                   float8_e4m3fn, float8_e5m2) {
  SKIP_WITHOUT_AVX2();
  using T = TestType;
  const ArrayX<T> x = codes<T>(256);
  const ArrayX<T> y = x.template cast<float>().template cast<T>();
  for (Eigen::Index i = 0; i < 256; ++i) {
    INFO("code " << scalify_test::hex(x(i).bits(), 2));
    // NaN codes come back as the canonical NaN code of their sign.
    CHECK(y(i).bits() == T(static_cast<float>(x(i))).bits());
  }
}

TEMPLATE_TEST_CASE("eigen packets: every float narrows like the reference",
                   "[formats][eigen][packet][exhaustive]", float8_e4m3fn, float8_e5m2) {
  SKIP_WITHOUT_AVX2();
  using T = TestType;
  using check = scalify_test::float_check<std::uint8_t, ref::float_segments>;
  const ref::codec c(scalify_test::ref_format<T>);
  const ref::float_segments nearest(c, {ref::rounding::nearest_even, false});
  const std::vector<check> checks = {
      {std::string(c.fmt().name) + " Eigen cast", &nearest,
       [](const float* in, std::uint8_t* out, std::size_t n) {
         const Eigen::Map<const Eigen::ArrayXf> x(in, static_cast<Eigen::Index>(n));
         Eigen::Map<ArrayX<T>> y(reinterpret_cast<T*>(out), static_cast<Eigen::Index>(n));
         y = x.template cast<T>();
       }}};
  const scalify_test::stopwatch clock;
  const auto logs = scalify_test::run_on_every_float(checks);
  scalify_test::report(checks, logs, clock.seconds());
}

// ------------------------------------------------------------------------------
// Expressions

TEST_CASE("eigen packets: an expression over three float8 arrays rounds once, like the scalar code",
          "[formats][eigen][packet]") {
  SKIP_WITHOUT_AVX2();
  std::mt19937 rng(7);
  const Eigen::Index n = 4099;  // not a multiple of 8
  ArrayX<float8_e4m3fn> x(n), w(n);
  ArrayX<float8_e5m2> y(n);
  for (Eigen::Index i = 0; i < n; ++i) {
    // Every code, NaN and inf included; products of two float8 values are exact
    // in float, so a fused multiply-add gives the same float as * then +.
    x(i) = float8_e4m3fn::from_bits(static_cast<std::uint8_t>(rng()));
    y(i) = float8_e5m2::from_bits(static_cast<std::uint8_t>(rng()));
    w(i) = float8_e4m3fn::from_bits(static_cast<std::uint8_t>(rng()));
  }
  const auto values = x.cast<float>() * y.cast<float>() + w.cast<float>();
  const Eigen::ArrayXf f = values;
  const ArrayX<float8_e4m3fn> z4 = values.cast<float8_e4m3fn>();
  const ArrayX<float8_e5m2> z5 = values.cast<float8_e5m2>();
  int failures = 0;
  for (Eigen::Index i = 0; i < n; ++i) {
    const float v = static_cast<float>(x(i)) * static_cast<float>(y(i)) + static_cast<float>(w(i));
    // Which NaN operand's sign a NaN result keeps depends on the order the
    // compiler gives the operands of an FMA (IEEE 754 leaves it open): NaN
    // results only need to be NaN.
    const bool ok = std::isnan(v)
                        ? std::isnan(f(i)) && scalify::isnan(z4(i)) && scalify::isnan(z5(i))
                        : float_bits(f(i)) == float_bits(v) &&
                              z4(i).bits() == float8_e4m3fn(v).bits() &&
                              z5(i).bits() == float8_e5m2(v).bits();
    if (!ok && ++failures <= 8) {
      FAIL_CHECK("i " << i << ": x " << scalify_test::hex(x(i).bits(), 2) << " y "
                      << scalify_test::hex(y(i).bits(), 2) << " w "
                      << scalify_test::hex(w(i).bits(), 2) << " expected " << v << " -> "
                      << scalify_test::hex(float8_e4m3fn(v).bits(), 2) << ", "
                      << scalify_test::hex(float8_e5m2(v).bits(), 2) << "; actual " << f(i)
                      << " -> " << scalify_test::hex(z4(i).bits(), 2) << ", "
                      << scalify_test::hex(z5(i).bits(), 2));
    }
  }
  CHECK(failures == 0);
}

TEMPLATE_TEST_CASE(
    "eigen packets: copies, constants, reverse and small products of float8 stay exact",
    "[formats][eigen][packet]", float8_e4m3fn, float8_e5m2) {
  SKIP_WITHOUT_AVX2();
  using T = TestType;
  // Small integers: every product and partial sum below is exact in both
  // formats, so the result does not depend on the order Eigen adds in.
  const auto small = [](int i) { return T(static_cast<float>((i * 7) % 4 - 1)); };  // -1, 0, 1, 2
  Eigen::Matrix<T, 4, 4> a, b;
  Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> c(3, 5), d(5, 9);
  for (int i = 0; i < 16; ++i) {
    a(i) = small(i);
    b(i) = small(i + 3);
  }
  for (int i = 0; i < 15; ++i) c(i) = small(i + 1);
  for (int i = 0; i < 45; ++i) d(i) = small(i + 2);

  const Eigen::Matrix<T, 4, 4> ab = a * b;  // coefficient-based product: float8 packets
  const Eigen::Matrix<float, 4, 4> ab_ref = a.template cast<float>() * b.template cast<float>();
  const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> cd = c * d;
  const Eigen::MatrixXf cd_ref = c.template cast<float>() * d.template cast<float>();
  const Eigen::Matrix<T, 4, 4> da = b.diagonal().asDiagonal() * a;
  const Eigen::Matrix<float, 4, 4> da_ref =
      b.template cast<float>().diagonal().asDiagonal() * a.template cast<float>();
  for (int i = 0; i < 16; ++i) {
    CHECK(static_cast<float>(ab(i)) == ab_ref(i));
    CHECK(static_cast<float>(da(i)) == da_ref(i));
  }
  for (int i = 0; i < 27; ++i) CHECK(static_cast<float>(cd(i)) == cd_ref(i));

  // A product large enough for Eigen's GEMM, which packs its right-hand side
  // with float8 packets: B has one +-1 per column, so every result is one
  // element of A, exactly, and a misplaced element would show.
  const Eigen::Index m = 37, k = 45, n = 29;
  Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> big_a(m, k),
      big_b = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>::Zero(k, n);
  std::mt19937 rng(3);
  for (Eigen::Index i = 0; i < big_a.size(); ++i) {
    T v;
    do v = T::from_bits(static_cast<std::uint8_t>(rng()));
    while (!scalify::isfinite(v));
    big_a(i) = v;
  }
  std::vector<Eigen::Index> row_of(static_cast<std::size_t>(n));
  for (Eigen::Index j = 0; j < n; ++j) {
    row_of[static_cast<std::size_t>(j)] = static_cast<Eigen::Index>(rng() % k);
    big_b(row_of[static_cast<std::size_t>(j)], j) = T(j % 2 ? -1.0f : 1.0f);
  }
  const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> big_c = big_a * big_b;
  for (Eigen::Index j = 0; j < n; ++j) {
    for (Eigen::Index i = 0; i < m; ++i) {
      const float expected = static_cast<float>(big_a(i, row_of[static_cast<std::size_t>(j)])) *
                             (j % 2 ? -1.0f : 1.0f);
      INFO("GEMM (" << i << ", " << j << ")");
      CHECK(static_cast<float>(big_c(i, j)) == expected);
    }
  }

  const ArrayX<T> all = codes<T>(301);
  const ArrayX<T> reversed = all.reverse();
  ArrayX<T> copied(301);
  copied.segment(3, 290) = all.segment(5, 290);
  const ArrayX<T> constant = ArrayX<T>::Constant(29, T::from_bits(0xB5));
  for (Eigen::Index i = 0; i < 301; ++i) CHECK(reversed(i).bits() == all(300 - i).bits());
  for (Eigen::Index i = 0; i < 290; ++i) CHECK(copied(i + 3).bits() == all(i + 5).bits());
  for (Eigen::Index i = 0; i < 29; ++i) CHECK(constant(i).bits() == 0xB5);
}
