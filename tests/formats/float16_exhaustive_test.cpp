// Bit-exact tests of the 16-bit formats (float16 = Eigen::half, bfloat16 =
// Eigen::bfloat16) in scalify's casts:
//   - every float16 and every bfloat16 input to each float8 format (all cast
//     flavours): widening to float is exact, so the expected code is the
//     reference's rounding of the input's value;
//   - float32 -> float16 / bfloat16 bulk convert over all 2^32 floats on every
//     CPU path (RNE, saturating, toward zero), and float16 / bfloat16 -> float
//     over all 65536 codes;
//   - the scalar float16/bfloat16-target casts on structured samples of the
//     float inputs and on doubles that would double-round through float;
//   - stochastic rounding to float16/bfloat16, scalar and bulk.
// Expected values come from the independent reference in
// tests/support/reference.hpp (IEEE 754 binary16; bfloat16 = the top half of
// binary32).
#include <catch2/catch.hpp>

#include <bit>      // std::bit_cast
#include <cmath>    // std::ldexp, std::fabs, std::isnan, std::signbit
#include <cstdint>  // std::uint16_t, std::uint32_t, std::uint64_t
#include <random>   // std::mt19937_64
#include <string>   // std::string
#include <vector>   // std::vector

#include "scalify/formats/cast.hpp"     // saturate_cast, truncate_cast, round_cast, stochastic_cast
#include "scalify/formats/float16.hpp"  // float16, bfloat16
#include "scalify/formats/float8.hpp"   // float8_e4m3fn, float8_e5m2, float8_e8m0fnu
#include "support/bulk_checks.hpp"      // check_bulk_*, kAllModes
#include "support/exhaustive.hpp"       // hex
#include "support/narrow_types.hpp"     // ref_format, code_of, from_code
#include "support/reference.hpp"        // ref::codec

using scalify::bfloat16;
using scalify::float16;
using scalify::float8_e4m3fn;
using scalify::float8_e5m2;
using scalify::float8_e8m0fnu;
using scalify_test::code_of;
using scalify_test::hex;
namespace ref = scalify_test::ref;

namespace {

// The library's cast of x to T in a reference mode.
template <class T, class From>
std::uint32_t lib_cast(From x, ref::mode m) {
  const auto round = m.round == ref::rounding::nearest_even ? scalify::rounding::nearest_even
                                                            : scalify::rounding::toward_zero;
  return code_of(scalify::round_cast<T>(x, round, m.saturate));
}

const char* mode_name(ref::mode m) {
  if (m.round == ref::rounding::nearest_even) return m.saturate ? "saturate" : "nearest";
  return m.saturate ? "toward_zero+saturate" : "toward_zero";
}

std::string describe(double x) {
  if (static_cast<double>(static_cast<float>(x)) == x || std::isnan(x)) {
    return "float " + hex(ref::bits_of(static_cast<float>(x)), 8);
  }
  return "double " + hex(std::bit_cast<std::uint64_t>(x), 16);
}

// Every float16 (or bfloat16) code through every cast flavour to T.
template <class T, class Src>
void check_every_16bit_input() {
  const ref::format& src_format = scalify_test::ref_format<Src>;
  const ref::codec c(scalify_test::ref_format<T>);
  const int digits = c.fmt().total_bits / 4;
  std::uint64_t bad = 0;
  std::string log;
  auto expect = [&](const char* what, std::uint32_t code, std::uint32_t expected,
                    std::uint32_t actual) {
    if (expected != actual && bad++ < 8) {
      log += std::string("\n  ") + what + ": input " + hex(code, 4) + " expected " +
             hex(expected, digits) + " actual " + hex(actual, digits);
    }
  };
  for (std::uint32_t code = 0; code < 0x10000; ++code) {
    const Src x = scalify_test::from_code<Src>(code);
    const double v = ref::decode(src_format, code);
    expect("T(x)", code, c.encode(v), code_of(T(x)));
    expect("static_cast<T>(x)", code, c.encode(v), code_of(static_cast<T>(x)));
    expect("saturate_cast", code, c.encode(v, {ref::rounding::nearest_even, true}),
           code_of(scalify::saturate_cast<T>(x)));
    expect("truncate_cast", code, c.encode(v, {ref::rounding::toward_zero, false}),
           code_of(scalify::truncate_cast<T>(x)));
    expect("round_cast(toward_zero, saturate)", code,
           c.encode(v, {ref::rounding::toward_zero, true}),
           code_of(scalify::round_cast<T>(x, scalify::rounding::toward_zero, true)));
    const std::uint32_t r = scalify::stochastic_bits(3, code);
    expect("stochastic_cast", code, c.encode_stochastic(v, r),
           code_of(scalify::stochastic_cast<T>(x, r)));
  }
  INFO(src_format.name << " -> " << c.fmt().name << ": " << bad << " mismatches" << log);
  CHECK(bad == 0);
}

}  // namespace

// ------------------------------------------------------------------------------
// float16 / bfloat16 -> float8

TEMPLATE_TEST_CASE("float16 inputs: every float16 code to float8, every cast", "[formats][float16]",
                   float8_e4m3fn, float8_e5m2, float8_e8m0fnu) {
  check_every_16bit_input<TestType, float16>();
}

TEMPLATE_TEST_CASE("float16 inputs: every bfloat16 code to float8, every cast",
                   "[formats][float16]", float8_e4m3fn, float8_e5m2, float8_e8m0fnu) {
  check_every_16bit_input<TestType, bfloat16>();
}

TEST_CASE("float16 inputs: hand-picked float16 -> float8 cases", "[formats][float16]") {
  // float16 0x3C40 = 1 + 1/16: the e4m3fn tie between 1 (0x38) and 1.125 -> 0x38.
  CHECK(hex(float8_e4m3fn(scalify::float16_from_bits(0x3C40)).bits(), 2) == "0x38");
  // 0x3C41 = 1 + 1/16 + 2^-10: just above -> 0x39.
  CHECK(hex(float8_e4m3fn(scalify::float16_from_bits(0x3C41)).bits(), 2) == "0x39");
  // 0x5F40 = 464: tie 448|480 -> 448; 0x5F41 = 464.25 -> NaN, saturating 448.
  CHECK(hex(float8_e4m3fn(scalify::float16_from_bits(0x5F40)).bits(), 2) == "0x7E");
  CHECK(hex(float8_e4m3fn(scalify::float16_from_bits(0x5F41)).bits(), 2) == "0x7F");
  CHECK(hex(scalify::saturate_cast<float8_e4m3fn>(scalify::float16_from_bits(0xDF41)).bits(), 2) ==
        "0xFE");
  // 0x7B80 = 61440: e5m2 overflow tie -> inf; 0x7B7F = 61408 -> 57344.
  CHECK(hex(float8_e5m2(scalify::float16_from_bits(0x7B80)).bits(), 2) == "0x7C");
  CHECK(hex(float8_e5m2(scalify::float16_from_bits(0x7B7F)).bits(), 2) == "0x7B");
  // float16 inf/NaN: e4m3fn NaN with sign, e5m2 inf / canonical NaN with sign.
  CHECK(hex(float8_e4m3fn(scalify::float16_from_bits(0xFC00)).bits(), 2) == "0xFF");
  CHECK(hex(float8_e5m2(scalify::float16_from_bits(0xFC00)).bits(), 2) == "0xFC");
  CHECK(hex(float8_e5m2(scalify::float16_from_bits(0xFC01)).bits(), 2) == "0xFE");
  // bfloat16 0x3F88 = 1.0625 -> e4m3fn tie -> 0x38; 0x3F89 -> 0x39.
  CHECK(hex(float8_e4m3fn(scalify::bfloat16_from_bits(0x3F88)).bits(), 2) == "0x38");
  CHECK(hex(float8_e4m3fn(scalify::bfloat16_from_bits(0x3F89)).bits(), 2) == "0x39");
}

// ------------------------------------------------------------------------------
// Scalar casts to float16 / bfloat16

namespace {

// Floats whose low 16 bits are one of a set of patterns around every rounding
// boundary of binary16 (13 dropped bits, more for subnormals) and bfloat16
// (16 dropped bits), with every possible high half: 2^16 * 30 inputs.
std::vector<std::uint32_t> structured_float_bits() {
  std::vector<std::uint32_t> low = {0x0000, 0x0001, 0x0FFF, 0x1000, 0x1001, 0x1FFF, 0x2000,
                                    0x2001, 0x3FFF, 0x4000, 0x4001, 0x5000, 0x7FFF, 0x8000,
                                    0x8001, 0x9000, 0xBFFF, 0xC000, 0xC001, 0xDFFF, 0xE000,
                                    0xE001, 0xEFFF, 0xF000, 0xF001, 0xFFFE, 0xFFFF};
  std::mt19937_64 rng(16);
  for (int i = 0; i < 3; ++i) low.push_back(static_cast<std::uint32_t>(rng() & 0xFFFF));
  std::vector<std::uint32_t> bits;
  bits.reserve(low.size() << 16);
  for (std::uint32_t hi = 0; hi < 0x10000; ++hi) {
    for (const std::uint32_t lo : low) bits.push_back(hi << 16 | lo);
  }
  return bits;
}

template <class T>
void check_scalar_casts_to_16bit() {
  const ref::codec c(scalify_test::ref_format<T>);
  const std::vector<std::uint32_t> inputs = structured_float_bits();
  for (const ref::mode m : scalify_test::kAllModes) {
    const ref::float_segments table(c, m);
    std::uint64_t bad = 0;
    std::string log;
    for (const std::uint32_t b : inputs) {
      const float x = ref::float_from_bits(b);
      const std::uint32_t e = table.lookup(b);
      const std::uint32_t a = lib_cast<T>(x, m);
      std::uint32_t named = a;  // the named cast of that mode, where there is one
      if (m.round == ref::rounding::nearest_even && m.saturate)
        named = code_of(scalify::saturate_cast<T>(x));
      if (m.round == ref::rounding::toward_zero && !m.saturate)
        named = code_of(scalify::truncate_cast<T>(x));
      if ((a != e || named != e) && bad++ < 8) {
        log += "\n  input " + hex(b, 8) + " expected " + hex(e, 4) + " actual " + hex(a, 4) +
               " / " + hex(named, 4);
      }
    }
    INFO(c.fmt().name << " scalar " << mode_name(m) << " casts of " << inputs.size()
                      << " floats: " << bad << " mismatches" << log);
    CHECK(bad == 0);
  }
}

// Doubles next to every rounding threshold (midpoints and, for truncation, the
// values themselves): t * (1 +- 2^-40) is t in float, so a cast through float
// would round the wrong way half of the time.
template <class T>
void check_double_inputs_to_16bit() {
  const ref::codec c(scalify_test::ref_format<T>);
  std::uint64_t bad = 0, checked = 0, differs_through_float = 0;
  std::string log;
  auto check = [&](double x) {
    for (const ref::mode m : scalify_test::kAllModes) {
      const std::uint32_t e = c.encode(x, m);
      differs_through_float += e != c.encode(static_cast<float>(x), m);
      ++checked;
      const std::uint32_t a = lib_cast<T>(x, m);
      if (a != e && bad++ < 8) {
        log += std::string("\n  ") + mode_name(m) + ": " + describe(x) + " expected " + hex(e, 4) +
               " actual " + hex(a, 4);
      }
    }
  };
  for (std::uint32_t k = 1; k <= c.fmt().max_code() + 1; ++k) {
    const double mid = (c.value(k - 1) + c.value(k)) / 2;
    for (const double t : {mid, c.value(k)}) {
      for (const double x : {t + std::ldexp(t, -40), t - std::ldexp(t, -40)}) {
        if (std::fabs(x) < 0x1p128) {
          check(x);
          check(-x);
        }
      }
    }
  }
  // Random doubles over the whole range.
  std::mt19937_64 rng(61);
  const int lo = 1 - c.fmt().bias - c.fmt().mantissa_bits - 3;
  const int hi = (1 << c.fmt().exponent_bits) - c.fmt().bias + 2;
  std::uniform_int_distribution<int> exponent(lo, hi);
  for (int i = 0; i < 200000; ++i) {
    const std::uint64_t r = rng();
    const double x = std::ldexp(1.0 + std::ldexp(static_cast<double>(r >> 12), -52), exponent(rng));
    check((r & 1) ? -x : x);
  }
  INFO(c.fmt().name << ": " << bad << " mismatches in " << checked << " double casts ("
                    << differs_through_float << " would double-round through float)" << log);
  CHECK(bad == 0);
  CHECK(differs_through_float > 1000);
}

// stochastic_cast<T>(x, r) around the exact threshold F of x: r = F - 1 rounds
// away from zero, r = F toward zero; and it saturates.
template <class T>
void check_stochastic_to_16bit() {
  const ref::codec c(scalify_test::ref_format<T>);
  const ref::format& f = c.fmt();
  std::uint64_t bad = 0;
  std::string log;
  auto check = [&](double x, std::uint32_t r) {
    const std::uint32_t e = c.encode_stochastic(x, r);
    const std::uint32_t a = static_cast<double>(static_cast<float>(x)) == x
                                ? code_of(scalify::stochastic_cast<T>(static_cast<float>(x), r))
                                : code_of(scalify::stochastic_cast<T>(x, r));
    if (a != e && bad++ < 8) {
      log += "\n  " + describe(x) + " bits " + hex(r, 8) + " expected " + hex(e, 4) + " actual " +
             hex(a, 4);
    }
  };
  std::mt19937_64 rng(5);
  const int lo = 1 - f.bias - f.mantissa_bits - 1;
  const int hi = (1 << f.exponent_bits) - f.bias;
  std::uniform_int_distribution<int> exponent(lo, hi);
  for (int i = 0; i < 200000; ++i) {
    const std::uint64_t r = rng();
    double x = std::ldexp(1.0 + std::ldexp(static_cast<double>(r >> 12), -52), exponent(rng));
    if (r & 1) x = -x;
    for (const double in : {x, static_cast<double>(static_cast<float>(x))}) {
      const double ax = std::fabs(in);
      const long k = c.floor_code(ax);
      if (std::isfinite(ax) && ax < c.value(f.max_code()) && k >= 0 &&
          c.value(static_cast<std::uint32_t>(k)) != ax) {
        const std::uint64_t threshold = c.stochastic_threshold(ax, static_cast<std::uint32_t>(k));
        if (threshold > 0) check(in, static_cast<std::uint32_t>(threshold - 1));
        if (threshold <= 0xFFFFFFFFu) check(in, static_cast<std::uint32_t>(threshold));
      }
      check(in, static_cast<std::uint32_t>(rng()));
    }
  }
  // Saturation and specials.
  const double inf = std::numeric_limits<double>::infinity();
  for (const double x :
       {c.value(f.max_code()), c.overflow_value(), (c.value(f.max_code()) + c.overflow_value()) / 2,
        1e300, inf, std::numeric_limits<double>::quiet_NaN()}) {
    for (const std::uint32_t r : {0u, 1u, 0x80000000u, 0xFFFFFFFFu}) {
      check(x, r);
      check(-x, r);
    }
  }
  INFO(f.name << " stochastic_cast: " << bad << " mismatches" << log);
  CHECK(bad == 0);
}

}  // namespace

TEMPLATE_TEST_CASE("float16 scalar casts: float inputs around every rounding boundary",
                   "[formats][float16]", float16, bfloat16) {
  check_scalar_casts_to_16bit<TestType>();
}

TEMPLATE_TEST_CASE("float16 scalar casts: doubles round once, directly", "[formats][float16]",
                   float16, bfloat16) {
  check_double_inputs_to_16bit<TestType>();
}

TEMPLATE_TEST_CASE("float16 scalar casts: stochastic rounding rule and saturation",
                   "[formats][float16]", float16, bfloat16) {
  check_stochastic_to_16bit<TestType>();
}

TEST_CASE("float16 scalar casts: hand-picked cases", "[formats][float16]") {
  auto f16 = [](auto x) { return hex(code_of(x), 4); };
  // binary16: max 0x7BFF = 65504; the overflow tie is 65520.
  CHECK(f16(scalify::saturate_cast<float16>(65520.0f)) == "0x7BFF");
  CHECK(f16(scalify::round_cast<float16>(65520.0f, scalify::rounding::nearest_even, false)) ==
        "0x7C00");
  CHECK(f16(scalify::round_cast<float16>(65519.99f, scalify::rounding::nearest_even, false)) ==
        "0x7BFF");
  CHECK(f16(scalify::truncate_cast<float16>(65535.99f)) == "0x7BFF");
  CHECK(f16(scalify::truncate_cast<float16>(65536.0f)) == "0x7C00");
  CHECK(f16(scalify::saturate_cast<float16>(-1e10f)) == "0xFBFF");
  CHECK(f16(scalify::saturate_cast<float16>(-std::numeric_limits<float>::infinity())) == "0xFC00");
  CHECK(f16(scalify::saturate_cast<float16>(ref::float_from_bits(0xFFC12345u))) == "0xFE00");
  // 1 + 2^-11 is the tie between 1 (0x3C00) and 1 + 2^-10 -> 0x3C00; truncation
  // of 1 + 2^-10 - 2^-20 -> 0x3C00.
  CHECK(f16(scalify::saturate_cast<float16>(1.0f + 0x1p-11f)) == "0x3C00");
  CHECK(f16(scalify::saturate_cast<float16>(1.0 + 0x1p-11 + 0x1p-40)) == "0x3C01");
  CHECK(f16(scalify::truncate_cast<float16>(1.0f + 0x1p-10f - 0x1p-20f)) == "0x3C00");
  // Half the smallest subnormal (2^-25) is a tie with 0 -> 0.
  CHECK(f16(scalify::saturate_cast<float16>(0x1p-25f)) == "0x0000");
  CHECK(f16(scalify::saturate_cast<float16>(-0x1p-25f - 0x1p-40f)) == "0x8001");
  // bfloat16: max 0x7F7F; the overflow tie is 0x7F7F8000 (rounds to inf).
  CHECK(f16(scalify::saturate_cast<bfloat16>(ref::float_from_bits(0x7F7F8000u))) == "0x7F7F");
  CHECK(f16(scalify::round_cast<bfloat16>(ref::float_from_bits(0x7F7F8000u),
                                          scalify::rounding::nearest_even, false)) == "0x7F80");
  CHECK(f16(scalify::truncate_cast<bfloat16>(ref::float_from_bits(0x7F7FFFFFu))) == "0x7F7F");
  CHECK(f16(scalify::saturate_cast<bfloat16>(ref::float_from_bits(0x3F808000u))) ==
        "0x3F80");  // tie -> even
  CHECK(f16(scalify::saturate_cast<bfloat16>(ref::float_from_bits(0x3F818000u))) ==
        "0x3F82");  // tie -> even
  CHECK(f16(scalify::saturate_cast<bfloat16>(ref::float_from_bits(0xFF800001u))) ==
        "0xFFC0");  // NaN, sign kept
}

// ------------------------------------------------------------------------------
// Bulk convert, every CPU path

TEMPLATE_TEST_CASE("float16 exhaustive: bulk convert of every float on every cpu path",
                   "[formats][float16][exhaustive]", float16, bfloat16) {
  scalify_test::check_bulk_narrowing_of_every_float<TestType>();
}

TEMPLATE_TEST_CASE("float16 bulk: widening every code to float on every cpu path",
                   "[formats][float16]", float16, bfloat16) {
  scalify_test::check_bulk_widening_of_every_code<TestType>();
}

TEMPLATE_TEST_CASE("float16 bulk: convert_with_stats counts on every cpu path",
                   "[formats][float16]", float16, bfloat16) {
  scalify_test::check_convert_with_stats<TestType>();
}

TEMPLATE_TEST_CASE("float16 bulk: every short length and misalignment on every cpu path",
                   "[formats][float16]", float16, bfloat16) {
  scalify_test::check_bulk_lengths_and_alignment<TestType>();
}

TEMPLATE_TEST_CASE(
    "float16 bulk: stochastic convert is the scalar cast and does not depend on chunking",
    "[formats][float16][stochastic]", float16, bfloat16) {
  scalify_test::check_bulk_stochastic<TestType>();
}
