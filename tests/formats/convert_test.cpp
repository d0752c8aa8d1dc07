// Bulk casts (formats/convert.hpp): the API, the options, the error paths and
// the agreement of every CPU path with the scalar cast on edge-heavy inputs.
// The exhaustive checks over all 2^32 floats are in *_exhaustive_test.cpp.
#include <catch2/catch.hpp>

#include <array>
#include <bit>
#include <cfenv>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "scalify/formats/convert.hpp"

using scalify::bfloat16;
using scalify::float16;
using scalify::float8_e4m3fn;
using scalify::float8_e5m2;

namespace {

/// Random bit patterns mixed with values near every boundary of the formats.
std::vector<float> edge_inputs(std::size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<float> x(n);
  const float specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, 448.0f, 464.0f, 464.00003f, 480.0f,
                            57344.0f, 61440.0f, 61439.996f, 65504.0f, 65520.0f, 65536.0f, 0x1p-9f, 0x1p-10f,
                            0x1.8p-10f, 0x1p-16f, 0x1p-17f, 0x1p-24f, 0x1p-25f, 0x1p-133f, 0x1p-134f,
                            std::numeric_limits<float>::max(), std::numeric_limits<float>::denorm_min()};
  for (std::size_t i = 0; i < n; ++i) {
    const uint32_t r = gen();
    switch (i % 4) {
      case 0: x[i] = std::bit_cast<float>(r); break;
      case 1: x[i] = std::ldexp(static_cast<float>(r >> 8) * 0x1p-24f, static_cast<int>(r % 64) - 40); break;
      case 2: x[i] = specials[r % std::size(specials)]; break;
      default: x[i] = std::bit_cast<float>(std::bit_cast<uint32_t>(specials[r % std::size(specials)]) + (r >> 30) - 2);
    }
    if (r & 1u) x[i] = -x[i];
  }
  return x;
}

template <class T>
uint32_t code_of(T x) {
  return scalify::detail::to_code(x);
}

}  // namespace

TEMPLATE_TEST_CASE("convert narrows like the scalar round_cast, on every CPU path and option", "[formats][convert]",
                   float8_e4m3fn, float8_e5m2, float16, bfloat16) {
  const std::vector<float> x = edge_inputs(4099, 7);  // not a multiple of any vector width
  const scalify::convert_options cases[] = {
      {},
      {.saturate = true},
      {.round = scalify::rounding::toward_zero},
      {.saturate = true, .round = scalify::rounding::toward_zero},
      {.round = scalify::rounding::stochastic, .seed = 1234, .offset = 99},
  };
  for (scalify::cpu_path path : scalify::all_cpu_paths) {
    if (!scalify::cpu_supports(path)) {
      WARN("skipping path " << scalify::to_string(path) << ": not supported by this CPU");
      continue;
    }
    scalify::scoped_cpu_path guard(path);
    for (const auto& o : cases) {
      std::vector<TestType> y(x.size());
      scalify::convert(x, y, o);
      for (std::size_t i = 0; i < x.size(); ++i) {
        const uint32_t random = o.round == scalify::rounding::stochastic ? scalify::stochastic_bits(o.seed, o.offset + i) : 0;
        const TestType expected = scalify::round_cast<TestType>(x[i], o.round, o.saturate, random);
        if (code_of(y[i]) != code_of(expected)) {
          FAIL_CHECK("path " << scalify::to_string(path) << " input 0x" << std::hex << std::bit_cast<uint32_t>(x[i])
                             << " index " << std::dec << i << ": expected 0x" << std::hex << code_of(expected)
                             << ", got 0x" << code_of(y[i]));
        }
      }
    }
  }
}

TEMPLATE_TEST_CASE("convert narrows like round_cast whatever the floating-point rounding mode", "[formats][convert]",
                   float8_e4m3fn, float8_e5m2, float16, bfloat16) {
  // The casts round as their options say, not as the FPU's mode does: the
  // float8 nearest-even kernel, which rounds with a float addition, stands
  // aside when the mode (fesetround, MXCSR) is not round to nearest.
  // Expected bytes from the scalar cast (integer arithmetic), in the default mode.
  const std::vector<float> x = edge_inputs(4099, 13);
  const scalify::convert_options cases[] = {{}, {.saturate = true}, {.round = scalify::rounding::toward_zero}};
  struct restore_rounding {
    int saved = std::fegetround();
    ~restore_rounding() { std::fesetround(saved); }
  } restore;
  for (const auto& o : cases) {
    std::vector<TestType> expected(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) expected[i] = scalify::round_cast<TestType>(x[i], o.round, o.saturate);
    for (const int mode : {FE_TOWARDZERO, FE_UPWARD, FE_DOWNWARD, FE_TONEAREST}) {
      for (scalify::cpu_path path : scalify::all_cpu_paths) {
        if (!scalify::cpu_supports(path)) continue;
        scalify::scoped_cpu_path guard(path);
        std::vector<TestType> y(x.size());
        REQUIRE(std::fesetround(mode) == 0);
        scalify::convert(x, y, o);
        std::fesetround(restore.saved);
        int misses = 0;
        for (std::size_t i = 0; i < x.size(); ++i) {
          if (code_of(y[i]) != code_of(expected[i]) && ++misses <= 4) {
            FAIL_CHECK("path " << scalify::to_string(path) << ", fesetround mode " << mode << ", saturate "
                               << o.saturate << ": input 0x" << std::hex << std::bit_cast<uint32_t>(x[i])
                               << " expected 0x" << code_of(expected[i]) << ", got 0x" << code_of(y[i]));
          }
        }
        CHECK(misses == 0);
      }
    }
  }
}

TEMPLATE_TEST_CASE("convert_with_stats counts what the cast did", "[formats][convert]", float8_e4m3fn, float8_e5m2,
                   float16, bfloat16) {
  const std::vector<float> x = edge_inputs(10007, 11);
  // Expected counts, from the scalar casts and plain float arithmetic.
  float amax = 0.0f;
  std::size_t nan = 0, overflow = 0, underflow = 0;
  for (float v : x) {
    if (std::isnan(v)) {
      ++nan;
      continue;
    }
    amax = std::max(amax, std::fabs(v));
    if (std::isinf(v)) continue;
    const float unsat = static_cast<float>(scalify::round_cast<TestType>(v, scalify::rounding::nearest_even, false));
    if (std::isinf(unsat) || std::isnan(unsat)) ++overflow;
    if (v != 0.0f && static_cast<float>(TestType(v)) == 0.0f) ++underflow;
  }
  for (scalify::cpu_path path : scalify::all_cpu_paths) {
    if (!scalify::cpu_supports(path)) {
      WARN("skipping path " << scalify::to_string(path) << ": not supported by this CPU");
      continue;
    }
    scalify::scoped_cpu_path guard(path);
    for (bool saturate : {false, true}) {
      INFO("path " << scalify::to_string(path) << ", saturate " << saturate);
      std::vector<TestType> y(x.size());
      const scalify::cast_stats s = scalify::convert_with_stats(x, y, {.saturate = saturate});
      CHECK(s.amax == amax);
      CHECK(s.nan == nan);
      CHECK(s.overflow == overflow);
      CHECK(s.underflow == underflow);
      std::vector<TestType> z(x.size());
      scalify::convert(x, z, {.saturate = saturate});
      CHECK(std::memcmp(y.data(), z.data(), y.size() * sizeof(TestType)) == 0);
    }
  }
}

TEST_CASE("convert_with_stats on an empty span and on all-NaN input", "[formats][convert]") {
  std::vector<float> empty;
  std::vector<float8_e4m3fn> none;
  const auto s = scalify::convert_with_stats(empty, none);
  CHECK(s.amax == 0.0f);
  CHECK(s.nan + s.overflow + s.underflow == 0);
  std::vector<float> nans(37, NAN);
  std::vector<float8_e4m3fn> y(37);
  const auto t = scalify::convert_with_stats(nans, y);
  CHECK(t.nan == 37);
  CHECK(t.amax == 0.0f);
}

TEST_CASE("stochastic bulk casts give the same bytes however the array is split", "[formats][convert]") {
  const std::vector<float> x = edge_inputs(1000, 3);
  std::vector<float8_e5m2> whole(x.size()), parts(x.size());
  scalify::convert(x, whole, {.round = scalify::rounding::stochastic, .seed = 42});
  for (std::size_t begin = 0; begin < x.size();) {
    const std::size_t len = std::min<std::size_t>(1 + begin % 37, x.size() - begin);
    scalify::convert(std::span<const float>(x).subspan(begin, len), std::span(parts).subspan(begin, len),
                     {.round = scalify::rounding::stochastic, .seed = 42, .offset = begin});
    begin += len;
  }
  CHECK(std::memcmp(whole.data(), parts.data(), whole.size()) == 0);
  std::vector<float8_e5m2> other_seed(x.size());
  scalify::convert(x, other_seed, {.round = scalify::rounding::stochastic, .seed = 43});
  CHECK(std::memcmp(whole.data(), other_seed.data(), whole.size()) != 0);
}

TEMPLATE_TEST_CASE("convert widens every code exactly on every path", "[formats][convert]", float8_e4m3fn,
                   float8_e5m2) {
  std::vector<TestType> codes(256 + 13);
  for (std::size_t i = 0; i < codes.size(); ++i) codes[i] = TestType::from_bits(static_cast<uint8_t>(i * 7));
  for (scalify::cpu_path path : scalify::all_cpu_paths) {
    if (!scalify::cpu_supports(path)) continue;
    scalify::scoped_cpu_path guard(path);
    std::vector<float> y(codes.size());
    scalify::convert(codes, y);
    for (std::size_t i = 0; i < codes.size(); ++i) {
      const float expected = static_cast<float>(codes[i]);
      INFO("path " << scalify::to_string(path) << " code 0x" << std::hex << int(codes[i].bits()));
      CHECK(std::bit_cast<uint32_t>(y[i]) == std::bit_cast<uint32_t>(expected));
    }
  }
}

TEST_CASE("convert rejects mismatched sizes with a shape_error naming both, and writes nothing",
          "[formats][convert][errors]") {
  std::vector<float> x(3, 1.0f);
  std::vector<float8_e4m3fn> y(4, float8_e4m3fn::from_bits(0x55));
  try {
    scalify::convert(x, y);
    FAIL("no exception");
  } catch (const scalify::shape_error& e) {
    const std::string what = e.what();
    CHECK(what.find('3') != std::string::npos);
    CHECK(what.find('4') != std::string::npos);
  }
  for (auto v : y) CHECK(v.bits() == 0x55);
  std::vector<float> back(2);
  CHECK_THROWS_AS(scalify::convert(y, back), scalify::shape_error);
  CHECK_THROWS_AS(scalify::convert_with_stats(x, y), std::invalid_argument);  // shape_error is one
  std::vector<float16> h(5);
  CHECK_THROWS_AS(scalify::convert(x, h), scalify::shape_error);
}

TEMPLATE_TEST_CASE("a rounding mode outside the enum throws std::invalid_argument naming it, on every path",
                   "[formats][convert][errors]", float8_e4m3fn, float8_e5m2, float16, bfloat16) {
  const std::vector<float> x = edge_inputs(1000, 8);
  for (scalify::cpu_path path : scalify::all_cpu_paths) {
    if (!scalify::cpu_supports(path)) continue;
    scalify::scoped_cpu_path guard(path);
    INFO("path " << scalify::to_string(path));
    for (int mode : {3, 7, -1, 255}) {
      const scalify::convert_options o{.round = static_cast<scalify::rounding>(mode)};
      std::vector<TestType> y(x.size(), TestType(0.5f));
      // The reproducer returned truncated values without an error.
      CHECK_THROWS_AS(scalify::convert(x, y, o), std::invalid_argument);
      CHECK_THROWS_WITH(scalify::convert(x, y, o),
                        Catch::Contains("scalify::convert") && Catch::Contains("rounding " + std::to_string(mode)));
      CHECK_THROWS_WITH(scalify::convert_with_stats(x, y, o), Catch::Contains("scalify::convert_with_stats"));
      for (const auto& v : y) CHECK(code_of(v) == code_of(TestType(0.5f)));  // nothing written
      // Widening ignores the options: no rounding happens, nothing to reject.
      std::vector<float> back(y.size());
      CHECK_NOTHROW(scalify::convert(y, back, o));
    }
  }
  // The scalar cast too, wherever the mode decides the result (not for exact values, zero, inf or NaN).
  CHECK_THROWS_AS(scalify::round_cast<TestType>(1.3f, static_cast<scalify::rounding>(7), false),
                  std::invalid_argument);
  CHECK_THROWS_WITH(scalify::round_cast<TestType>(0x1.000002p-20f, static_cast<scalify::rounding>(9), true),
                    Catch::Contains("rounding mode 9"));
  CHECK(code_of(scalify::round_cast<TestType>(1.3f, scalify::rounding::toward_zero, false)) ==
        code_of(scalify::truncate_cast<TestType>(1.3f)));
}

// ------------------------------------------------------------------------------
// Every pair of types, and the same type (a copy).

namespace {

template <class T>
const char* name_of() {
  if constexpr (std::is_same_v<T, float>) return "float";
  else if constexpr (std::is_same_v<T, double>) return "double";
  else if constexpr (std::is_same_v<T, float16>) return "float16";
  else if constexpr (std::is_same_v<T, bfloat16>) return "bfloat16";
  else if constexpr (std::is_same_v<T, float8_e4m3fn>) return "float8_e4m3fn";
  else if constexpr (std::is_same_v<T, float8_e5m2>) return "float8_e5m2";
  else return "float8_e8m0fnu";
}

/// Bits of any supported type, for exact comparisons.
template <class T>
uint64_t bits_of(T x) {
  if constexpr (std::is_same_v<T, double>) {
    return std::bit_cast<uint64_t>(x);
  } else if constexpr (std::is_same_v<T, float>) {
    return std::bit_cast<uint32_t>(x);
  } else {
    return scalify::detail::to_code(x);
  }
}

/// Inputs of type From: every code of a narrow type (twice over, 7 apart, so
/// the length is not a multiple of a vector or chunk width), or edge inputs.
template <class From>
std::vector<From> pair_inputs() {
  std::vector<From> out;
  if constexpr (std::is_same_v<From, float> || std::is_same_v<From, double>) {
    for (const float f : edge_inputs(3001, 11)) out.push_back(static_cast<From>(f));
    if constexpr (std::is_same_v<From, double>) {  // beyond float's range and between float values
      for (const double d : {1e300, -1e300, 1e-300, 0x1.000001p0, 0x1.0000018p0, 3.4028235677973366e38}) {
        out.push_back(d);
      }
    }
  } else {
    const uint32_t n = sizeof(From) == 1 ? 256u : 65536u;
    for (uint32_t i = 0; i < n + 13; ++i) {
      if constexpr (sizeof(From) == 1) {
        out.push_back(From::from_bits(static_cast<uint8_t>(i * 7)));
      } else {
        out.push_back(Eigen::numext::bit_cast<From>(static_cast<uint16_t>(i * 7)));
      }
    }
  }
  return out;
}

/// The exact value of x as a double (every supported type widens exactly).
template <class From>
double exact_double(From x) {
  if constexpr (std::is_same_v<From, double>) {
    return x;
  } else {
    return static_cast<double>(static_cast<float>(x));
  }
}

/// double -> float rounded with the C library's rounding mode: the reference for convert's
/// double -> float narrowing (nearest even, or toward zero), saturating on request.
float reference_double_to_float(double x, const scalify::convert_options& o) {
  const int saved = std::fegetround();
  std::fesetround(o.round == scalify::rounding::toward_zero ? FE_TOWARDZERO : FE_TONEAREST);
  volatile double v = x;
  float f = static_cast<float>(v);
  std::fesetround(saved);
  if (o.saturate && std::isinf(f) && std::isfinite(x)) f = std::copysign(std::numeric_limits<float>::max(), f);
  return f;
}

template <class From, class To>
void check_pair(const scalify::convert_options& o) {
  const std::vector<From> x = pair_inputs<From>();
  std::vector<To> y(x.size());
  scalify::convert(x, y, o);
  int misses = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double v = exact_double(x[i]);
    bool ok;
    uint64_t expected_bits = 0;
    if constexpr (std::is_same_v<From, To>) {
      expected_bits = bits_of(x[i]);  // a copy: the same bits, NaN payloads included
      ok = bits_of(y[i]) == expected_bits;
    } else if constexpr (std::is_same_v<To, double> || (std::is_same_v<To, float> && !std::is_same_v<From, double>)) {
      ok = std::isnan(v) ? std::isnan(static_cast<double>(y[i])) : static_cast<double>(y[i]) == v &&
                                                                        std::signbit(static_cast<double>(y[i])) ==
                                                                            std::signbit(v);
    } else if constexpr (std::is_same_v<To, float>) {
      const float e = reference_double_to_float(v, o);
      expected_bits = bits_of(e);
      ok = std::isnan(e) ? std::isnan(y[i]) : bits_of(y[i]) == expected_bits;
    } else {
      const uint32_t random = o.round == scalify::rounding::stochastic ? scalify::stochastic_bits(o.seed, o.offset + i) : 0;
      expected_bits = bits_of(scalify::round_cast<To>(v, o.round, o.saturate, random));
      ok = bits_of(y[i]) == expected_bits;
    }
    if (!ok && misses++ < 5) {
      FAIL_CHECK(name_of<From>() << " -> " << name_of<To>() << " input "
                                                    << v << " index " << i << ": expected bits 0x" << std::hex
                                                    << expected_bits << ", got 0x" << bits_of(y[i]));
    }
  }
  CHECK(misses == 0);
}

template <class... T>
struct type_list {};
using all_types = type_list<float, double, float16, bfloat16, float8_e4m3fn, float8_e5m2, scalify::float8_e8m0fnu>;

template <class From, class... To>
void check_from(type_list<To...>, const scalify::convert_options& o) {
  (check_pair<From, To>(o), ...);
}
template <class... From>
void check_all_pairs(type_list<From...> list, const scalify::convert_options& o) {
  (check_from<From>(list, o), ...);
}

}  // namespace

TEST_CASE("convert between every pair of types rounds once like round_cast; the same type copies",
          "[formats][convert]") {
  const scalify::convert_options cases[] = {
      {},
      {.saturate = true},
      {.round = scalify::rounding::toward_zero},
  };
  for (scalify::cpu_path path : scalify::all_cpu_paths) {
    if (!scalify::cpu_supports(path)) continue;
    scalify::scoped_cpu_path guard(path);
    for (const auto& o : cases) {
      INFO("path " << scalify::to_string(path) << ", saturate " << o.saturate << ", round " << int(o.round));
      check_all_pairs(all_types{}, o);
    }
  }
}

TEST_CASE("convert: stochastic rounding between narrow types and from double; double -> float refuses it",
          "[formats][convert]") {
  const scalify::convert_options o{.round = scalify::rounding::stochastic, .seed = 77, .offset = 5};
  check_pair<float16, float8_e4m3fn>(o);   // SIMD through float chunks: the same bits as one scalar pass
  check_pair<bfloat16, float8_e5m2>(o);
  check_pair<double, float8_e4m3fn>(o);
  check_pair<double, float16>(o);
  check_pair<float8_e5m2, float8_e5m2>(o);  // a copy ignores the rounding
  std::vector<double> x(3, 1.0);
  std::vector<float> y(3);
  CHECK_THROWS_WITH(scalify::convert(x, y, o), Catch::Contains("stochastic") && Catch::Contains("double -> float"));
  // Code templated over the data type: float -> float is a copy.
  std::vector<float> a = {1.5f, -0.0f, NAN}, b(3);
  scalify::convert(a, b);
  CHECK(std::memcmp(a.data(), b.data(), sizeof(float) * 3) == 0);
  // Mismatched sizes throw for the new pairs too.
  std::vector<float16> h(2);
  CHECK_THROWS_AS(scalify::convert(x, h), scalify::shape_error);
}
