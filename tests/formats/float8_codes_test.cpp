// Bit-exact tests of the float8 formats code by code: all 256 codes of each
// format, std::numeric_limits against hand-derived codes, hand-picked rounding
// cases (ties to even, overflow after rounding, underflow), doubles that would
// double-round through float, and the stochastic rounding rule.
//
// Expected values come from the independent reference in
// tests/support/reference.hpp (written from the OCP FP8 / MX specs), which is
// itself checked here against the hand-derived tables.
#include <catch2/catch.hpp>

#include <bit>      // std::bit_cast
#include <cmath>    // std::ldexp, std::isnan, std::signbit, std::sqrt
#include <cstdint>  // std::uint32_t
#include <cstdio>   // std::snprintf
#include <limits>   // std::numeric_limits
#include <random>   // std::mt19937_64
#include <string>   // std::string
#include <vector>   // std::vector

#include "scalify/formats/cast.hpp"    // saturate_cast, truncate_cast, stochastic_cast, round_cast
#include "scalify/formats/float8.hpp"  // float8_e4m3fn, float8_e5m2, float8_e8m0fnu
#include "support/exhaustive.hpp"      // hex
#include "support/narrow_types.hpp"    // ref_format, code_of
#include "support/reference.hpp"       // ref::codec

using scalify::float8_e4m3fn;
using scalify::float8_e5m2;
using scalify::float8_e8m0fnu;
using scalify_test::hex;
namespace ref = scalify_test::ref;

namespace {

std::string h2(std::uint32_t code) { return hex(code, 2); }

// "float 0x3F800000 (1)" or "double 0x...": an input for messages.
std::string describe_input(double x) {
  char buf[96];
  if (static_cast<double>(static_cast<float>(x)) == x || std::isnan(x)) {
    std::snprintf(buf, sizeof buf, "float %s (%.9g)",
                  hex(ref::bits_of(static_cast<float>(x)), 8).c_str(), x);
  } else {
    std::snprintf(buf, sizeof buf, "double %s (%.17g)",
                  hex(std::bit_cast<std::uint64_t>(x), 16).c_str(), x);
  }
  return buf;
}

bool same_double(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return a == b && std::signbit(a) == std::signbit(b);
}

// The casts of the library, by reference mode.
template <class T, class From>
std::uint32_t lib_cast(From x, ref::mode m) {
  if (m.round == ref::rounding::nearest_even) {
    return m.saturate ? scalify::saturate_cast<T>(x).bits() : T(x).bits();
  }
  return m.saturate ? scalify::round_cast<T>(x, scalify::rounding::toward_zero, true).bits()
                    : scalify::truncate_cast<T>(x).bits();
}

const char* mode_name(ref::mode m) {
  if (m.round == ref::rounding::nearest_even) return m.saturate ? "saturate_cast" : "T(x)";
  return m.saturate ? "round_cast(toward_zero, saturate)" : "truncate_cast";
}

constexpr ref::mode kModes[] = {
    {ref::rounding::nearest_even, false},
    {ref::rounding::nearest_even, true},
    {ref::rounding::toward_zero, false},
    {ref::rounding::toward_zero, true},
};

}  // namespace

// ------------------------------------------------------------------------------
// The reference itself, against hand-derived values

namespace {

// One hand-derived rounding case: the input and its code under the default
// cast, saturate_cast and truncate_cast. Signed formats also check -x.
struct cast_row {
  double x;
  std::uint32_t nearest, saturate, truncate;
  const char* why;
};

// e4m3fn: s eeee mmm, bias 7. 1.0 = 0x38, ulp(1) = 1/8, max 0x7E = 448,
// "virtual" next value 480, min normal 0x08 = 2^-6, min subnormal 0x01 = 2^-9.
const std::vector<cast_row> kE4M3Rows = {
    {0.0, 0x00, 0x00, 0x00, "zero"},
    {1.0, 0x38, 0x38, 0x38, "1 = 2^(7-7)"},
    {1.0 + 1.0 / 16, 0x38, 0x38, 0x38, "tie 1|1.125 -> even 0x38"},
    {1.0 + 3.0 / 16, 0x3A, 0x3A, 0x39, "tie 1.125|1.25 -> even 0x3A"},
    {1.0 + 1.0 / 16 + 0x1p-20, 0x39, 0x39, 0x38, "just above a tie"},
    {1.0 + 3.0 / 16 - 0x1p-20, 0x39, 0x39, 0x39, "just below a tie"},
    {1.25, 0x3A, 0x3A, 0x3A, "exact"},
    {416.0, 0x7D, 0x7D, 0x7D, "1.625 * 2^8"},
    {432.0, 0x7E, 0x7E, 0x7D, "tie 416|448 -> even 0x7E"},
    {448.0, 0x7E, 0x7E, 0x7E, "max = 1.75 * 2^8"},
    {456.0, 0x7E, 0x7E, 0x7E, "rounds down to max"},
    {464.0, 0x7E, 0x7E, 0x7E, "tie 448|480 -> even 0x7E (448)"},
    {464.0 + 0x1p-8, 0x7F, 0x7E, 0x7E, "above 464: overflow after rounding"},
    {480.0 - 0x1p-6, 0x7F, 0x7E, 0x7E, "truncates to 448"},
    {480.0, 0x7F, 0x7E, 0x7F, "truncation overflows from 480"},
    {1.0e6, 0x7F, 0x7E, 0x7F, "far overflow"},
    {0x1p-6, 0x08, 0x08, 0x08, "min normal"},
    {15 * 0x1p-10, 0x08, 0x08, 0x07, "tie 7*2^-9|8*2^-9 -> even 0x08"},
    {7 * 0x1p-9, 0x07, 0x07, 0x07, "max subnormal"},
    {0x1p-9, 0x01, 0x01, 0x01, "min subnormal"},
    {3 * 0x1p-11, 0x01, 0x01, 0x00, "0.75 * 2^-9 -> 2^-9"},
    {3 * 0x1p-10, 0x02, 0x02, 0x01, "tie 1|2 subnormals -> even 0x02"},
    {5 * 0x1p-10, 0x02, 0x02, 0x02, "tie 2|3 subnormals -> even 0x02"},
    {0x1p-10, 0x00, 0x00, 0x00, "half the min subnormal -> 0 (even)"},
    {0x1p-10 + 0x1p-30, 0x01, 0x01, 0x00, "just above half the min subnormal"},
    {0x1p-30, 0x00, 0x00, 0x00, "underflow"},
    {std::numeric_limits<double>::infinity(), 0x7F, 0x7F, 0x7F, "no inf: NaN, also saturating"},
    {std::numeric_limits<double>::quiet_NaN(), 0x7F, 0x7F, 0x7F, "canonical NaN"},
};

// e5m2: s eeeee mm, bias 15. 1.0 = 0x3C, ulp(1) = 1/4, max 0x7B = 57344,
// inf 0x7C, NaN 0x7E, min normal 0x04 = 2^-14, min subnormal 0x01 = 2^-16.
const std::vector<cast_row> kE5M2Rows = {
    {0.0, 0x00, 0x00, 0x00, "zero"},
    {1.0, 0x3C, 0x3C, 0x3C, "1 = 2^(15-15)"},
    {1.125, 0x3C, 0x3C, 0x3C, "tie 1|1.25 -> even 0x3C"},
    {1.375, 0x3E, 0x3E, 0x3D, "tie 1.25|1.5 -> even 0x3E"},
    {1.125 + 0x1p-20, 0x3D, 0x3D, 0x3C, "just above a tie"},
    {53248.0, 0x7A, 0x7A, 0x7A, "tie 49152|57344 -> even 0x7A"},
    {57344.0, 0x7B, 0x7B, 0x7B, "max = 1.75 * 2^15"},
    {61440.0 - 0x1p-8, 0x7B, 0x7B, 0x7B, "just below the overflow tie"},
    {61440.0, 0x7C, 0x7B, 0x7B, "tie 57344|65536 -> even: overflow"},
    {65536.0 - 0x1p-8, 0x7C, 0x7B, 0x7B, "truncates to max"},
    {65536.0, 0x7C, 0x7B, 0x7C, "truncation overflows from 65536"},
    {0x1p100, 0x7C, 0x7B, 0x7C, "far overflow"},
    {0x1p-14, 0x04, 0x04, 0x04, "min normal"},
    {3.5 * 0x1p-16, 0x04, 0x04, 0x03, "tie 3*2^-16|4*2^-16 -> even 0x04"},
    {0x1p-16, 0x01, 0x01, 0x01, "min subnormal"},
    {0x1p-17, 0x00, 0x00, 0x00, "half the min subnormal -> 0 (even)"},
    {3 * 0x1p-17, 0x02, 0x02, 0x01, "tie 1|2 subnormals -> even 0x02"},
    {0x1p-17 + 0x1p-40, 0x01, 0x01, 0x00, "just above half the min subnormal"},
    {std::numeric_limits<double>::infinity(), 0x7C, 0x7C, 0x7C, "inf stays inf, also saturating"},
    {std::numeric_limits<double>::quiet_NaN(), 0x7E, 0x7E, 0x7E, "canonical NaN"},
};

// e8m0fnu: 2^(e - 127), no sign, no zero, 0xFF NaN. 1.0 = 0x7F.
const std::vector<cast_row> kE8M0Rows = {
    {1.0, 0x7F, 0x7F, 0x7F, "1 = 2^(127-127)"},
    {1.5, 0x80, 0x80, 0x7F, "tie 1|2 -> even exponent 0x80"},
    {1.5 - 0x1p-23, 0x7F, 0x7F, 0x7F, "just below 1.5"},
    {3.0, 0x80, 0x80, 0x80, "tie 2|4 -> even exponent 0x80"},
    {3.0 + 0x1p-20, 0x81, 0x81, 0x80, "just above a tie"},
    {0.75, 0x7E, 0x7E, 0x7E, "tie 0.5|1 -> even exponent 0x7E"},
    {0x1p127, 0xFE, 0xFE, 0xFE, "max = 2^127"},
    {0x1.8p127, 0xFE, 0xFE, 0xFE, "tie 2^127|2^128 -> even 0xFE"},
    {0x1.800002p127, 0xFF, 0xFE, 0xFE, "above 1.5 * 2^127: overflow"},
    {0x1.fffffep127, 0xFF, 0xFE, 0xFE, "FLT_MAX"},
    {0x1p-127, 0x00, 0x00, 0x00, "min = 2^-127"},
    {0x1p-149, 0x00, 0x00, 0x00, "below the min: clamps to 2^-127"},
    {0x1.8p-127, 0x00, 0x00, 0x00, "tie 2^-127|2^-126 -> even 0x00"},
    {0x1.802p-127, 0x01, 0x01, 0x00, "just above that tie"},
    {0.0, 0xFF, 0xFF, 0xFF, "zero: NaN"},
    {-0.0, 0xFF, 0xFF, 0xFF, "-0: NaN"},
    {-1.0, 0xFF, 0xFF, 0xFF, "negative: NaN"},
    {std::numeric_limits<double>::infinity(), 0xFF, 0xFF, 0xFF, "inf: NaN"},
    {-std::numeric_limits<double>::infinity(), 0xFF, 0xFF, 0xFF, "-inf: NaN"},
    {std::numeric_limits<double>::quiet_NaN(), 0xFF, 0xFF, 0xFF, "NaN"},
};

template <class T>
const std::vector<cast_row>& rows_of() {
  if constexpr (std::is_same_v<T, float8_e4m3fn>)
    return kE4M3Rows;
  else if constexpr (std::is_same_v<T, float8_e5m2>)
    return kE5M2Rows;
  else
    return kE8M0Rows;
}

// The row with the sign flipped (signed formats only).
cast_row negated(const cast_row& r) {
  return {-r.x, r.nearest | 0x80, r.saturate | 0x80, r.truncate | 0x80, r.why};
}

template <class T>
std::vector<cast_row> all_rows() {
  std::vector<cast_row> rows = rows_of<T>();
  if (scalify_test::ref_format<T>.is_signed()) {
    for (const auto& r : rows_of<T>()) rows.push_back(negated(r));
  }
  return rows;
}

}  // namespace

TEMPLATE_TEST_CASE("reference agrees with the hand-derived rounding tables",
                   "[formats][float8][reference]", float8_e4m3fn, float8_e5m2, float8_e8m0fnu) {
  const ref::codec c(scalify_test::ref_format<TestType>);
  for (const auto& row : all_rows<TestType>()) {
    INFO(c.fmt().name << ": " << describe_input(row.x) << ": " << row.why);
    CHECK(h2(c.encode(row.x, {ref::rounding::nearest_even, false})) == h2(row.nearest));
    CHECK(h2(c.encode(row.x, {ref::rounding::nearest_even, true})) == h2(row.saturate));
    CHECK(h2(c.encode(row.x, {ref::rounding::toward_zero, false})) == h2(row.truncate));
  }
}

TEST_CASE("reference decodes hand-derived codes", "[formats][float8][reference]") {
  struct decode_row {
    const ref::format& f;
    std::uint32_t code;
    double value;
  };
  const double inf = std::numeric_limits<double>::infinity();
  const decode_row rows[] = {
      {ref::e4m3fn, 0x38, 1.0},
      {ref::e4m3fn, 0x7E, 448.0},
      {ref::e4m3fn, 0xFE, -448.0},
      {ref::e4m3fn, 0x01, 0x1p-9},
      {ref::e4m3fn, 0x08, 0x1p-6},
      {ref::e4m3fn, 0x80, -0.0},
      {ref::e4m3fn, 0x78, 256.0},
      {ref::e4m3fn, 0x07, 7 * 0x1p-9},
      {ref::e5m2, 0x3C, 1.0},
      {ref::e5m2, 0x7B, 57344.0},
      {ref::e5m2, 0x7C, inf},
      {ref::e5m2, 0xFC, -inf},
      {ref::e5m2, 0x01, 0x1p-16},
      {ref::e5m2, 0x04, 0x1p-14},
      {ref::e5m2, 0xBD, -1.25},
      {ref::e8m0fnu, 0x7F, 1.0},
      {ref::e8m0fnu, 0x00, 0x1p-127},
      {ref::e8m0fnu, 0xFE, 0x1p127},
      {ref::e8m0fnu, 0x80, 2.0},
      {ref::binary16, 0x3C00, 1.0},
      {ref::binary16, 0x7BFF, 65504.0},
      {ref::binary16, 0x0001, 0x1p-24},
      {ref::binary16, 0x0400, 0x1p-14},
      {ref::binary16, 0xFC00, -inf},
      {ref::bfloat16, 0x3F80, 1.0},
      {ref::bfloat16, 0x7F7F, 0x1.fep127},
      {ref::bfloat16, 0x0001, 0x1p-133},
      {ref::bfloat16, 0x0080, 0x1p-126},
      {ref::bfloat16, 0x7F80, inf},
  };
  for (const auto& r : rows) {
    INFO(r.f.name << " code " << hex(r.code, r.f.total_bits / 4));
    CHECK(same_double(ref::decode(r.f, r.code), r.value));
  }
  // NaN codes and the canonical NaN of each format.
  CHECK(std::isnan(ref::decode(ref::e4m3fn, 0x7F)));
  CHECK(std::isnan(ref::decode(ref::e4m3fn, 0xFF)));
  CHECK(std::signbit(ref::decode(ref::e4m3fn, 0xFF)));
  CHECK(std::isnan(ref::decode(ref::e5m2, 0x7D)));
  CHECK(std::isnan(ref::decode(ref::e5m2, 0xFF)));
  CHECK(std::isnan(ref::decode(ref::e8m0fnu, 0xFF)));
  CHECK(ref::e4m3fn.nan_code() == 0x7F);
  CHECK(ref::e5m2.nan_code() == 0x7E);
  CHECK(ref::e8m0fnu.nan_code() == 0xFF);
  CHECK(ref::binary16.nan_code() == 0x7E00);
  CHECK(ref::bfloat16.nan_code() == 0x7FC0);
  CHECK(ref::e4m3fn.max_code() == 0x7E);
  CHECK(ref::e5m2.max_code() == 0x7B);
  CHECK(ref::e8m0fnu.max_code() == 0xFE);
  CHECK(ref::binary16.max_code() == 0x7BFF);
  CHECK(ref::bfloat16.max_code() == 0x7F7F);
}

TEST_CASE("reference float segments agree with the reference codec",
          "[formats][float8][reference]") {
  // The fast float32 table used by the exhaustive tests, against the slow
  // binary search, around every threshold and on a stride through all floats.
  const ref::format* formats[] = {&ref::e4m3fn, &ref::e5m2, &ref::e8m0fnu, &ref::binary16,
                                  &ref::bfloat16};
  for (const ref::format* f : formats) {
    const ref::codec c(*f);
    for (const ref::mode m : kModes) {
      const ref::float_segments seg(c, m);
      std::uint64_t bad = 0;
      std::string first;
      auto check = [&](std::uint32_t bits) {
        const std::uint32_t a = seg.lookup(bits);
        const std::uint32_t b = c.encode(ref::float_from_bits(bits), m);
        if (a != b) {
          if (bad++ == 0) first = hex(bits, 8) + ": segments " + hex(a, 4) + " codec " + hex(b, 4);
        }
      };
      for (std::uint64_t i = 0; i < (std::uint64_t{1} << 32); i += 65521)
        check(static_cast<std::uint32_t>(i));
      for (std::uint32_t k = 0; k <= f->max_code() + 1; ++k) {
        for (const double t : {c.value(k), k > 0 ? (c.value(k - 1) + c.value(k)) / 2 : 0.0}) {
          if (!(t < 0x1p128)) continue;
          const std::uint32_t b = ref::bits_of(static_cast<float>(t));
          for (std::uint32_t d = 0; d < 3; ++d) {
            check(b + d);
            check(b - d);
            check((b + d) | 0x80000000u);
            check((b - d) | 0x80000000u);
          }
        }
      }
      for (const std::uint32_t b : {0x00000000u, 0x80000000u, 0x7F800000u, 0xFF800000u, 0x7F800001u,
                                    0x7FC00000u, 0xFFFFFFFFu, 0x7F7FFFFFu, 0x00000001u}) {
        check(b);
      }
      INFO(f->name << " " << ref::to_string(m.round) << (m.saturate ? " saturate" : "") << ": "
                   << first);
      CHECK(bad == 0);
    }
  }
}

// ------------------------------------------------------------------------------
// All 256 codes

TEMPLATE_TEST_CASE("float8 codes: every code round-trips, decodes and re-encodes exactly",
                   "[formats][float8]", float8_e4m3fn, float8_e5m2, float8_e8m0fnu) {
  using T = TestType;
  const ref::format& f = scalify_test::ref_format<T>;
  const ref::codec c(f);
  for (std::uint32_t code = 0; code < 256; ++code) {
    INFO(f.name << " code " << h2(code));
    const T x = T::from_bits(static_cast<std::uint8_t>(code));
    REQUIRE(h2(x.bits()) == h2(code));

    const double expected = ref::decode(f, code);
    const float as_float = static_cast<float>(x);
    const double as_double = static_cast<double>(x);
    INFO("expected " << expected << ", float " << as_float << ", double " << as_double);
    if (std::isnan(expected)) {
      CHECK(std::isnan(as_float));
      CHECK(std::isnan(as_double));
      if (f.is_signed()) {
        CHECK(std::signbit(as_float) == std::signbit(expected));
        CHECK(std::signbit(as_double) == std::signbit(expected));
      }
    } else {
      CHECK(same_double(as_float, expected));
      CHECK(same_double(as_double, expected));
    }

    // Classification.
    CHECK(scalify::isnan(x) == std::isnan(expected));
    CHECK(scalify::isinf(x) == std::isinf(expected));
    CHECK(scalify::isfinite(x) == std::isfinite(expected));

    // Re-encoding the value gives the code back (NaN: the canonical NaN of that
    // sign), through float and through double, in every flavour of cast.
    const std::uint32_t back = c.encode(expected);
    if (std::isnan(expected)) {
      CHECK(h2(back) == h2((code & f.sign_bit()) | f.nan_code()));
    } else {
      CHECK(h2(back) == h2(code));
    }
    CHECK(h2(T(as_float).bits()) == h2(back));
    CHECK(h2(T(as_double).bits()) == h2(back));
    CHECK(h2(static_cast<T>(as_float).bits()) == h2(back));
    CHECK(h2(scalify::saturate_cast<T>(as_float).bits()) == h2(back));
    CHECK(h2(scalify::truncate_cast<T>(as_float).bits()) == h2(back));
    CHECK(h2(scalify::saturate_cast<T>(as_double).bits()) == h2(back));
    CHECK(h2(scalify::truncate_cast<T>(as_double).bits()) == h2(back));
    CHECK(h2(scalify::stochastic_cast<T>(as_float, 0u).bits()) == h2(back));
    CHECK(h2(scalify::stochastic_cast<T>(as_float, 0xFFFFFFFFu).bits()) == h2(back));

    // Sign operations.
    if (f.is_signed()) {
      CHECK(h2((-x).bits()) == h2(code ^ 0x80));
      CHECK(h2(scalify::abs(x).bits()) == h2(code & 0x7F));
      CHECK(scalify::signbit(x) == ((code & 0x80) != 0));
    } else {
      // No sign: -x is not representable and casts like -float(x) do (NaN).
      CHECK(h2((-x).bits()) == h2(c.encode(-expected)));
      CHECK(h2(scalify::abs(x).bits()) == h2(code));
      CHECK_FALSE(scalify::signbit(x));
    }
    CHECK(h2((+x).bits()) == h2(code));
  }
}

TEMPLATE_TEST_CASE("float8 codes: comparisons of every pair follow the values", "[formats][float8]",
                   float8_e4m3fn, float8_e5m2, float8_e8m0fnu) {
  using T = TestType;
  const ref::format& f = scalify_test::ref_format<T>;
  std::uint64_t bad = 0;
  std::string first;
  for (std::uint32_t a = 0; a < 256; ++a) {
    for (std::uint32_t b = 0; b < 256; ++b) {
      const T x = T::from_bits(static_cast<std::uint8_t>(a));
      const T y = T::from_bits(static_cast<std::uint8_t>(b));
      const double u = ref::decode(f, a);
      const double v = ref::decode(f, b);
      const bool ok = (x == y) == (u == v) && (x != y) == (u != v) && (x < y) == (u < v) &&
                      (x <= y) == (u <= v) && (x > y) == (u > v) && (x >= y) == (u >= v);
      if (!ok && bad++ == 0) first = h2(a) + " vs " + h2(b);
    }
  }
  INFO(f.name << ": first wrong pair " << first);
  CHECK(bad == 0);
  if (f.is_signed()) {
    CHECK(T::from_bits(0x00) == T::from_bits(0x80));  // +0 == -0
    CHECK_FALSE(T::from_bits(0x00) < T::from_bits(0x80));
  }
  const T nan = std::numeric_limits<T>::quiet_NaN();
  CHECK_FALSE(nan == nan);
  CHECK(nan != nan);
  CHECK_FALSE(nan < nan);
  CHECK_FALSE(nan >= nan);
}

TEMPLATE_TEST_CASE("float8 codes: arithmetic of every pair goes through float", "[formats][float8]",
                   float8_e4m3fn, float8_e5m2, float8_e8m0fnu) {
  using T = TestType;
  const ref::format& f = scalify_test::ref_format<T>;
  const ref::codec c(f);
  std::uint64_t bad = 0;
  std::string first;
  auto expect = [&](std::uint32_t a, std::uint32_t b, char op, float r, T got) {
    const std::uint32_t e = c.encode(r);
    if (e != got.bits() && bad++ == 0) {
      first = h2(a) + " " + op + " " + h2(b) + ": expected " + h2(e) + " actual " + h2(got.bits());
    }
  };
  for (std::uint32_t a = 0; a < 256; ++a) {
    for (std::uint32_t b = 0; b < 256; ++b) {
      const T x = T::from_bits(static_cast<std::uint8_t>(a));
      const T y = T::from_bits(static_cast<std::uint8_t>(b));
      const float u = static_cast<float>(ref::decode(f, a));
      const float v = static_cast<float>(ref::decode(f, b));
      expect(a, b, '+', u + v, x + y);
      expect(a, b, '-', u - v, x - y);
      expect(a, b, '*', u * v, x * y);
      expect(a, b, '/', u / v, x / y);
    }
  }
  INFO(f.name << ": " << first);
  CHECK(bad == 0);
}

// ------------------------------------------------------------------------------
// std::numeric_limits, against codes derived by hand

TEST_CASE("float8 numeric_limits: float8_e4m3fn", "[formats][float8]") {
  using L = std::numeric_limits<float8_e4m3fn>;
  CHECK(L::is_specialized);
  CHECK(L::is_signed);
  CHECK_FALSE(L::is_integer);
  CHECK_FALSE(L::is_exact);
  CHECK_FALSE(L::has_infinity);
  CHECK(L::has_quiet_NaN);
  CHECK(L::has_denorm == std::denorm_present);
  CHECK(L::round_style == std::round_to_nearest);
  CHECK_FALSE(L::is_iec559);
  CHECK(L::is_bounded);
  CHECK_FALSE(L::is_modulo);
  CHECK(L::radix == 2);
  CHECK(L::digits == 4);           // 3 mantissa bits + the implicit one
  CHECK(L::digits10 == 0);         // floor(3 * log10(2)) = floor(0.90)
  CHECK(L::max_digits10 == 3);     // ceil(4 * log10(2) + 1) = ceil(2.20)
  CHECK(L::min_exponent == -5);    // min normal 2^-6 = 0.5 * 2^-5
  CHECK(L::max_exponent == 9);     // max 448 < 2^9
  CHECK(L::min_exponent10 == -1);  // 10^-1 >= 2^-6 = 0.0156 > 10^-2
  CHECK(L::max_exponent10 == 2);   // 10^2 <= 448 < 10^3
  // max: 0.1111.110 = (1 + 6/8) * 2^(15 - 7) = 1.75 * 2^8 = 448
  CHECK(h2(L::max().bits()) == h2(0x7E));
  CHECK(static_cast<float>(L::max()) == 448.0f);
  // lowest: 1.1111.110 = -448
  CHECK(h2(L::lowest().bits()) == h2(0xFE));
  CHECK(static_cast<float>(L::lowest()) == -448.0f);
  // min: 0.0001.000 = 2^(1 - 7) = 2^-6, the smallest normal
  CHECK(h2(L::min().bits()) == h2(0x08));
  CHECK(static_cast<float>(L::min()) == 0x1p-6f);
  // denorm_min: 0.0000.001 = 2^(1 - 7) * 1/8 = 2^-9
  CHECK(h2(L::denorm_min().bits()) == h2(0x01));
  CHECK(static_cast<float>(L::denorm_min()) == 0x1p-9f);
  // epsilon: next after 1 is 1 + 1/8, so 2^-3 = 0.0100.000 (exponent 4 - 7 = -3)
  CHECK(h2(L::epsilon().bits()) == h2(0x20));
  CHECK(static_cast<float>(L::epsilon()) == 0.125f);
  // round_error: 0.5 = 2^(6 - 7) = 0.0110.000
  CHECK(h2(L::round_error().bits()) == h2(0x30));
  // quiet_NaN: 0.1111.111
  CHECK(h2(L::quiet_NaN().bits()) == h2(0x7F));
  CHECK(scalify::isnan(L::quiet_NaN()));
  CHECK_FALSE(scalify::isfinite(L::infinity()));  // no inf: never a finite value
  CHECK(std::numeric_limits<const float8_e4m3fn>::max().bits() == 0x7E);
  CHECK(std::numeric_limits<volatile float8_e4m3fn>::digits == 4);
  CHECK(std::numeric_limits<const volatile float8_e4m3fn>::is_specialized);
}

TEST_CASE("float8 numeric_limits: float8_e5m2", "[formats][float8]") {
  using L = std::numeric_limits<float8_e5m2>;
  CHECK(L::is_specialized);
  CHECK(L::is_signed);
  CHECK_FALSE(L::is_integer);
  CHECK_FALSE(L::is_exact);
  CHECK(L::has_infinity);
  CHECK(L::has_quiet_NaN);
  CHECK(L::has_denorm == std::denorm_present);
  CHECK(L::round_style == std::round_to_nearest);
  CHECK(L::is_bounded);
  CHECK(L::radix == 2);
  CHECK(L::digits == 3);           // 2 mantissa bits + the implicit one
  CHECK(L::digits10 == 0);         // floor(2 * log10(2)) = floor(0.60)
  CHECK(L::max_digits10 == 2);     // ceil(3 * log10(2) + 1) = ceil(1.90)
  CHECK(L::min_exponent == -13);   // min normal 2^-14 = 0.5 * 2^-13
  CHECK(L::max_exponent == 16);    // max 57344 < 2^16
  CHECK(L::min_exponent10 == -4);  // 10^-4 >= 2^-14 = 6.1e-5 > 10^-5
  CHECK(L::max_exponent10 == 4);   // 10^4 <= 57344 < 10^5
  // max: 0.11110.11 = (1 + 3/4) * 2^(30 - 15) = 1.75 * 2^15 = 57344
  CHECK(h2(L::max().bits()) == h2(0x7B));
  CHECK(static_cast<float>(L::max()) == 57344.0f);
  // lowest: 1.11110.11 = -57344
  CHECK(h2(L::lowest().bits()) == h2(0xFB));
  // min: 0.00001.00 = 2^(1 - 15) = 2^-14
  CHECK(h2(L::min().bits()) == h2(0x04));
  CHECK(static_cast<float>(L::min()) == 0x1p-14f);
  // denorm_min: 0.00000.01 = 2^-14 * 1/4 = 2^-16
  CHECK(h2(L::denorm_min().bits()) == h2(0x01));
  CHECK(static_cast<float>(L::denorm_min()) == 0x1p-16f);
  // epsilon: next after 1 is 1.25: 2^-2 = 0.01101.00 (exponent 13 - 15 = -2)
  CHECK(h2(L::epsilon().bits()) == h2(0x34));
  CHECK(static_cast<float>(L::epsilon()) == 0.25f);
  // round_error: 0.5 = 2^(14 - 15) = 0.01110.00
  CHECK(h2(L::round_error().bits()) == h2(0x38));
  // infinity: 0.11111.00; quiet_NaN: 0.11111.10 (quiet bit set)
  CHECK(h2(L::infinity().bits()) == h2(0x7C));
  CHECK(scalify::isinf(L::infinity()));
  CHECK(h2(L::quiet_NaN().bits()) == h2(0x7E));
  if (L::has_signaling_NaN) {
    CHECK(scalify::isnan(L::signaling_NaN()));
    CHECK(h2(L::signaling_NaN().bits()) == h2(0x7D));  // 0.11111.01: quiet bit clear
  }
  CHECK(std::numeric_limits<const float8_e5m2>::max().bits() == 0x7B);
}

TEST_CASE("float8 numeric_limits: float8_e8m0fnu", "[formats][float8]") {
  using L = std::numeric_limits<float8_e8m0fnu>;
  CHECK(L::is_specialized);
  CHECK_FALSE(L::is_signed);
  CHECK_FALSE(L::is_integer);
  CHECK_FALSE(L::has_infinity);
  CHECK(L::has_quiet_NaN);
  CHECK(L::has_denorm == std::denorm_absent);
  CHECK(L::radix == 2);
  CHECK(L::digits == 1);            // no mantissa bits: the implicit one
  CHECK(L::min_exponent == -126);   // min 2^-127 = 0.5 * 2^-126
  CHECK(L::max_exponent == 128);    // max 2^127 < 2^128
  CHECK(L::min_exponent10 == -38);  // 10^-38 >= 2^-127 = 5.9e-39 > 10^-39
  CHECK(L::max_exponent10 == 38);   // 10^38 <= 2^127 = 1.7e38 < 10^39
  // max: 1111'1110 = 2^(254 - 127) = 2^127
  CHECK(h2(L::max().bits()) == h2(0xFE));
  CHECK(static_cast<float>(L::max()) == 0x1p127f);
  // min and lowest: 0000'0000 = 2^(0 - 127) = 2^-127 (no zero, no sign)
  CHECK(h2(L::min().bits()) == h2(0x00));
  CHECK(h2(L::lowest().bits()) == h2(0x00));
  CHECK(static_cast<float>(L::min()) == 0x1p-127f);
  // denorm_min without denormals is min()
  CHECK(h2(L::denorm_min().bits()) == h2(0x00));
  // epsilon: next after 1 is 2: 2 - 1 = 1 = 2^(127 - 127) = 0111'1111
  CHECK(h2(L::epsilon().bits()) == h2(0x7F));
  // round_error: 0.5 (half an ulp, as for float) = 2^(126 - 127) = 0111'1110
  CHECK(h2(L::round_error().bits()) == h2(0x7E));
  // quiet_NaN: 1111'1111
  CHECK(h2(L::quiet_NaN().bits()) == h2(0xFF));
}

// ------------------------------------------------------------------------------
// Hand-picked rounding cases

TEMPLATE_TEST_CASE("float8 casts: hand-derived ties to even, overflow and underflow table",
                   "[formats][float8]", float8_e4m3fn, float8_e5m2, float8_e8m0fnu) {
  using T = TestType;
  const ref::format& f = scalify_test::ref_format<T>;
  for (const auto& row : all_rows<T>()) {
    INFO(f.name << ": " << describe_input(row.x) << ": " << row.why);
    // double inputs
    CHECK(h2(T(row.x).bits()) == h2(row.nearest));
    CHECK(h2(scalify::saturate_cast<T>(row.x).bits()) == h2(row.saturate));
    CHECK(h2(scalify::truncate_cast<T>(row.x).bits()) == h2(row.truncate));
    // float inputs (every row is a float)
    const float xf = static_cast<float>(row.x);
    REQUIRE((std::isnan(row.x) || static_cast<double>(xf) == row.x));
    CHECK(h2(T(xf).bits()) == h2(row.nearest));
    CHECK(h2(scalify::saturate_cast<T>(xf).bits()) == h2(row.saturate));
    CHECK(h2(scalify::truncate_cast<T>(xf).bits()) == h2(row.truncate));
  }
}

TEST_CASE("float8 casts: NaN keeps its sign and drops its payload", "[formats][float8]") {
  const float payload_nan = ref::float_from_bits(0x7FA12345u);  // signaling, with payload
  const float negative_nan = ref::float_from_bits(0xFFC00001u);
  CHECK(h2(float8_e4m3fn(payload_nan).bits()) == h2(0x7F));
  CHECK(h2(float8_e4m3fn(negative_nan).bits()) == h2(0xFF));
  CHECK(h2(float8_e5m2(payload_nan).bits()) == h2(0x7E));
  CHECK(h2(float8_e5m2(negative_nan).bits()) == h2(0xFE));
  CHECK(h2(float8_e8m0fnu(negative_nan).bits()) == h2(0xFF));
  CHECK(h2(scalify::saturate_cast<float8_e4m3fn>(negative_nan).bits()) == h2(0xFF));
  CHECK(h2(scalify::saturate_cast<float8_e5m2>(negative_nan).bits()) == h2(0xFE));
  CHECK(h2(scalify::truncate_cast<float8_e5m2>(negative_nan).bits()) == h2(0xFE));
  CHECK(h2(scalify::stochastic_cast<float8_e5m2>(negative_nan, 0u).bits()) == h2(0xFE));
  const double payload_nan_d = std::bit_cast<double>(0xFFF0000000000001ull);
  CHECK(h2(float8_e4m3fn(payload_nan_d).bits()) == h2(0xFF));
  CHECK(h2(float8_e5m2(payload_nan_d).bits()) == h2(0xFE));
  // -inf
  CHECK(h2(float8_e4m3fn(-std::numeric_limits<float>::infinity()).bits()) == h2(0xFF));
  CHECK(h2(scalify::saturate_cast<float8_e4m3fn>(-std::numeric_limits<float>::infinity()).bits()) ==
        h2(0xFF));
  CHECK(h2(scalify::saturate_cast<float8_e5m2>(-std::numeric_limits<float>::infinity()).bits()) ==
        h2(0xFC));
  CHECK(h2(scalify::stochastic_cast<float8_e5m2>(-std::numeric_limits<float>::infinity(), 7u)
               .bits()) == h2(0xFC));
  CHECK(h2(scalify::stochastic_cast<float8_e4m3fn>(std::numeric_limits<float>::infinity(), 7u)
               .bits()) == h2(0x7F));
}

// ------------------------------------------------------------------------------
// Doubles round once

namespace {

// For every rounding threshold t of the format (the midpoint of two
// neighbouring values, and each value itself for truncation), doubles
// t * (1 +- 2^-40) round to t in float, so a cast through float would see an
// exact tie (or an exact value) and could round the wrong way. The library
// must round the double directly.
template <class T>
void check_double_rounding() {
  const ref::format& f = scalify_test::ref_format<T>;
  const ref::codec c(f);
  std::uint64_t checked = 0, differs_through_float = 0;
  for (std::uint32_t k = 1; k <= f.max_code() + 1; ++k) {
    const double mid = (c.value(k - 1) + c.value(k)) / 2;
    for (const double t : {mid, c.value(k)}) {
      for (const double x : {t + std::ldexp(t, -40), t - std::ldexp(t, -40)}) {
        if (!(std::fabs(x) < 0x1p128)) continue;
        for (const double s : {x, -x}) {
          for (const ref::mode m : kModes) {
            const std::uint32_t expected = c.encode(s, m);
            const std::uint32_t through_float = c.encode(static_cast<float>(s), m);
            differs_through_float += expected != through_float;
            INFO(f.name << " " << mode_name(m) << ": " << describe_input(s) << " (threshold "
                        << describe_input(t) << "), through float would give "
                        << h2(through_float));
            CHECK(h2(lib_cast<T>(s, m)) == h2(expected));
            ++checked;
          }
        }
      }
    }
  }
  // The test is only meaningful if a cast through float would fail it often.
  INFO(f.name << ": " << differs_through_float << " of " << checked
              << " cases double-round through float");
  CHECK(differs_through_float > checked / 8);
}

}  // namespace

TEMPLATE_TEST_CASE("float8 casts: doubles next to a threshold round once, directly",
                   "[formats][float8]", float8_e4m3fn, float8_e5m2, float8_e8m0fnu) {
  check_double_rounding<TestType>();
}

TEST_CASE("float8 casts: a double just above a tie (hand-picked)", "[formats][float8]") {
  // 1 + 1/16 is the tie between 1 (0x38) and 1.125 (0x39); 1 + 1/16 + 2^-40
  // is 1 + 1/16 in float, which would round to even (0x38).
  const double x = 1.0 + 1.0 / 16 + 0x1p-40;
  REQUIRE(static_cast<float>(x) == 1.0625f);
  CHECK(h2(float8_e4m3fn(x).bits()) == h2(0x39));
  CHECK(h2(float8_e4m3fn(-x).bits()) == h2(0xB9));
  CHECK(h2(float8_e4m3fn(static_cast<float>(x)).bits()) == h2(0x38));
  // 464 + 2^-30: above the overflow tie; float says 464, which gives 448.
  CHECK(h2(float8_e4m3fn(464.0 + 0x1p-30).bits()) == h2(0x7F));
  CHECK(h2(scalify::saturate_cast<float8_e4m3fn>(464.0 + 0x1p-30).bits()) == h2(0x7E));
  // e5m2: 61440 - 2^-30 is below the overflow tie; float says 61440 (inf).
  CHECK(h2(float8_e5m2(61440.0 - 0x1p-30).bits()) == h2(0x7B));
  // truncation: 1.125 - 2^-40 truncates to 1 (float would say 1.125).
  CHECK(h2(scalify::truncate_cast<float8_e4m3fn>(1.125 - 0x1p-40).bits()) == h2(0x38));
  // half the smallest subnormal plus a hair is not a tie.
  CHECK(h2(float8_e4m3fn(0x1p-10 + 0x1p-60).bits()) == h2(0x01));
  CHECK(h2(float8_e5m2(-(0x1p-17 + 0x1p-60)).bits()) == h2(0x81));
}

TEMPLATE_TEST_CASE("float8 casts: random doubles and floats in every mode", "[formats][float8]",
                   float8_e4m3fn, float8_e5m2, float8_e8m0fnu) {
  using T = TestType;
  const ref::format& f = scalify_test::ref_format<T>;
  const ref::codec c(f);
  std::mt19937_64 rng(12345);
  // Exponents around the format's range (and beyond, for overflow/underflow).
  const int lo =
      f.kind == ref::format_kind::unsigned_exponent ? -140 : -2 - f.bias - f.mantissa_bits;
  const int hi = f.kind == ref::format_kind::unsigned_exponent ? 130 : f.bias + 4;
  std::uniform_int_distribution<int> exponent(lo, hi);
  std::uint64_t bad = 0;
  std::string first;
  for (int i = 0; i < 200000; ++i) {
    const std::uint64_t r = rng();
    const double mantissa = 1.0 + std::ldexp(static_cast<double>(r >> 12), -52);
    double x = std::ldexp(mantissa, exponent(rng));
    if (r & 1) x = -x;
    const auto random_bits = static_cast<std::uint32_t>(rng());
    for (const double in : {x, static_cast<double>(static_cast<float>(x))}) {
      for (const ref::mode m : kModes) {
        const std::uint32_t e = c.encode(in, m);
        const std::uint32_t a = static_cast<double>(static_cast<float>(in)) == in
                                    ? lib_cast<T>(static_cast<float>(in), m)
                                    : lib_cast<T>(in, m);
        if (a != e && bad++ < 5) {
          first += std::string("\n  ") + mode_name(m) + ": " + describe_input(in) + " expected " +
                   h2(e) + " actual " + h2(a);
        }
      }
      const std::uint32_t e = c.encode_stochastic(in, random_bits);
      const std::uint32_t a = scalify::stochastic_cast<T>(in, random_bits).bits();
      if (a != e && bad++ < 5) {
        first += "\n  stochastic_cast(bits " + hex(random_bits, 8) + "): " + describe_input(in) +
                 " expected " + h2(e) + " actual " + h2(a);
      }
    }
  }
  INFO(f.name << ": " << bad << " mismatches" << first);
  CHECK(bad == 0);
}

// ------------------------------------------------------------------------------
// Stochastic rounding

namespace {

// Checks stochastic_cast<T>(x, r) for r around the exact threshold F of x:
// r = F - 1 must round away from zero, r = F toward zero.
template <class T, class From>
void check_stochastic_threshold(const ref::codec& c, From x, std::uint64_t& bad, std::string& log) {
  const double ax = std::fabs(static_cast<double>(x));
  if (std::isnan(ax) || std::isinf(ax) || ax >= c.value(c.fmt().max_code())) return;
  const long k = c.floor_code(ax);
  if (k < 0 || c.value(static_cast<std::uint32_t>(k)) == ax) return;
  const std::uint64_t threshold = c.stochastic_threshold(ax, static_cast<std::uint32_t>(k));
  const std::uint32_t sign = std::signbit(static_cast<double>(x)) ? c.fmt().sign_bit() : 0;
  const std::uint32_t toward = sign | static_cast<std::uint32_t>(k);
  const std::uint32_t away = toward + 1;
  auto expect = [&](std::uint64_t r, std::uint32_t expected) {
    if (r > 0xFFFFFFFFu) return;
    const std::uint32_t got = scalify::stochastic_cast<T>(x, static_cast<std::uint32_t>(r)).bits();
    // The reference must agree with the rule written out here, too.
    const std::uint32_t reference =
        c.encode_stochastic(static_cast<double>(x), static_cast<std::uint32_t>(r));
    if ((got != expected || reference != expected) && bad++ < 5) {
      log += "\n  " + describe_input(static_cast<double>(x)) + " bits " + hex(r, 8) +
             " (F = " + hex(threshold, 8) + "): expected " + h2(expected) + " actual " + h2(got) +
             " reference " + h2(reference);
    }
  };
  if (threshold > 0) expect(threshold - 1, away);
  expect(threshold, toward);
  expect(0, threshold > 0 ? away : toward);
  expect(0xFFFFFFFFu, toward);
}

}  // namespace

TEMPLATE_TEST_CASE("float8 stochastic_cast: rounds away iff bits < floor(frac * 2^32)",
                   "[formats][float8]", float8_e4m3fn, float8_e5m2, float8_e8m0fnu) {
  using T = TestType;
  const ref::format& f = scalify_test::ref_format<T>;
  const ref::codec c(f);
  std::mt19937_64 rng(777);
  std::uint64_t bad = 0;
  std::string log;
  const int lo =
      f.kind == ref::format_kind::unsigned_exponent ? -128 : 1 - f.bias - f.mantissa_bits - 1;
  const int hi = f.kind == ref::format_kind::unsigned_exponent ? 127 : f.bias + 1;
  std::uniform_int_distribution<int> exponent(lo, hi);
  for (int i = 0; i < 100000; ++i) {
    const std::uint64_t r = rng();
    double x = std::ldexp(1.0 + std::ldexp(static_cast<double>(r >> 12), -52), exponent(rng));
    if ((r & 1) && f.is_signed()) x = -x;
    check_stochastic_threshold<T>(c, x, bad, log);  // double: up to 52 fraction bits
    check_stochastic_threshold<T>(c, static_cast<float>(x), bad, log);  // float
  }
  // Hand-picked: e4m3fn 1 + 1/32 is a quarter of the way from 1 to 1.125:
  // F = 0x40000000.
  if constexpr (std::is_same_v<T, float8_e4m3fn>) {
    CHECK(h2(scalify::stochastic_cast<T>(1.03125f, 0x3FFFFFFFu).bits()) == h2(0x39));
    CHECK(h2(scalify::stochastic_cast<T>(1.03125f, 0x40000000u).bits()) == h2(0x38));
    CHECK(h2(scalify::stochastic_cast<T>(-1.03125f, 0x3FFFFFFFu).bits()) == h2(0xB9));
    // subnormal: 2^-11 is a quarter of the smallest subnormal 2^-9.
    CHECK(h2(scalify::stochastic_cast<T>(0x1p-11f, 0x3FFFFFFFu).bits()) == h2(0x01));
    CHECK(h2(scalify::stochastic_cast<T>(0x1p-11f, 0x40000000u).bits()) == h2(0x00));
    // A double fraction finer than 2^-32: F = floor(2^-33 * 2^32 / (1/8)) = 0x00000000 + ...
    // 1 + 2^-36 is 2^-33 of the way (in units of the gap 2^-3): F = floor(2^-1) = 0.
    CHECK(h2(scalify::stochastic_cast<T>(1.0 + 0x1p-36, 0u).bits()) == h2(0x38));
    // 1 + 2^-35 is 2^-32 of the gap: F = 1, so only bits 0 rounds up.
    CHECK(h2(scalify::stochastic_cast<T>(1.0 + 0x1p-35, 0u).bits()) == h2(0x39));
    CHECK(h2(scalify::stochastic_cast<T>(1.0 + 0x1p-35, 1u).bits()) == h2(0x38));
  }
  INFO(f.name << ": " << bad << " mismatches" << log);
  CHECK(bad == 0);
}

TEMPLATE_TEST_CASE("float8 stochastic_cast: saturates, keeps inf/NaN as the default cast",
                   "[formats][float8]", float8_e4m3fn, float8_e5m2, float8_e8m0fnu) {
  using T = TestType;
  const ref::format& f = scalify_test::ref_format<T>;
  const ref::codec c(f);
  const double max = c.value(f.max_code());
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (const std::uint32_t r : {0u, 1u, 0x80000000u, 0xFFFFFFFEu, 0xFFFFFFFFu}) {
    for (const double x :
         {max, max * 1.01, (max + c.overflow_value()) / 2, c.overflow_value(), max * 1e10,
          static_cast<double>(std::numeric_limits<float>::max()), inf, nan}) {
      for (const double s : {x, -x}) {
        INFO(f.name << ": " << describe_input(s) << " bits " << hex(r, 8));
        const std::uint32_t e = c.encode_stochastic(s, r);
        if (std::isfinite(s) && (f.is_signed() || s > 0)) {
          CHECK(h2(e) == h2((std::signbit(s) ? f.sign_bit() : 0) | f.max_code()));
        } else {
          CHECK(h2(e) == h2(c.encode(s)));
        }
        CHECK(h2(scalify::stochastic_cast<T>(s, r).bits()) == h2(e));
        CHECK(h2(scalify::stochastic_cast<T>(static_cast<float>(s), r).bits()) ==
              h2(c.encode_stochastic(static_cast<float>(s), r)));
      }
    }
  }
}

TEMPLATE_TEST_CASE("float8 stochastic_cast: the mean of many casts approaches x",
                   "[formats][float8]", float8_e4m3fn, float8_e5m2, float8_e8m0fnu) {
  using T = TestType;
  const ref::format& f = scalify_test::ref_format<T>;
  const ref::codec c(f);
  constexpr int kN = 200000;
  std::vector<double> inputs = {1.03, 0.3, 1.0 / 3, 5.55, 300.7, 2.5e-3, 1.9e-3, 0.7 * c.value(1)};
  if (f.is_signed()) {
    inputs.push_back(-7.77);
    inputs.push_back(-0.4 * c.value(1));
  }
  for (const double x : inputs) {
    const double ax = std::fabs(x);
    const long k = c.floor_code(ax);
    if (k < 0 || ax >= c.value(f.max_code())) continue;
    const double gap =
        c.value(static_cast<std::uint32_t>(k) + 1) - c.value(static_cast<std::uint32_t>(k));
    for (int source = 0; source < 2; ++source) {
      std::mt19937 mt(99);
      double sum = 0;
      for (int i = 0; i < kN; ++i) {
        const std::uint32_t r = source == 0
                                    ? scalify::stochastic_bits(2024, static_cast<std::uint64_t>(i))
                                    : static_cast<std::uint32_t>(mt());
        sum += static_cast<double>(scalify::stochastic_cast<T>(x, r));
      }
      const double mean = sum / kN;
      // Each cast is one of two neighbours `gap` apart: the standard deviation
      // is at most gap / 2, the mean's at most gap / (2 sqrt(N)). 6 sigma,
      // plus the 2^-32 quantization of the probability.
      const double bound = 6 * gap / (2 * std::sqrt(static_cast<double>(kN))) + gap * 0x1p-31;
      INFO(f.name << ": x = " << x << ", mean = " << mean << ", gap = " << gap
                  << ", bound = " << bound << (source == 0 ? " (stochastic_bits)" : " (mt19937)"));
      CHECK(std::fabs(mean - x) <= bound);
    }
  }
}
