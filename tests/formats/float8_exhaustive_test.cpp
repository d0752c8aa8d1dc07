// Exhaustive, bit-exact tests of the float32 -> float8 casts: every one of the
// 2^32 float inputs, through the scalar casts (T(x), saturate_cast,
// truncate_cast) and through the bulk convert() on every CPU path this machine
// supports, against the independent reference in tests/support/reference.hpp.
// Also, on every path: float8 -> float widening of all 256 codes,
// convert_with_stats counts, every short length and misalignment, and the bulk
// stochastic cast (equal to the scalar one, the same bytes however the array
// is split).
//
// The reference for float inputs is a table of runs of bit patterns (built
// from the exact midpoints of neighbouring float8 values), so producing the
// expected code of every float costs a memset per run; the work is split over
// all hardware threads (support/exhaustive.hpp).
#include <catch2/catch.hpp>

#include <cstdint>  // std::uint8_t
#include <string>   // std::string
#include <vector>   // std::vector

#include "scalify/formats/cast.hpp"    // saturate_cast, truncate_cast
#include "scalify/formats/float8.hpp"  // float8_e4m3fn, float8_e5m2, float8_e8m0fnu
#include "support/bulk_checks.hpp"     // check_bulk_*, report
#include "support/exhaustive.hpp"      // run_on_every_float, float_check, stopwatch
#include "support/narrow_types.hpp"    // ref_format
#include "support/reference.hpp"       // ref::codec, ref::float_segments

using scalify::float8_e4m3fn;
using scalify::float8_e5m2;
using scalify::float8_e8m0fnu;
namespace ref = scalify_test::ref;

// ------------------------------------------------------------------------------
// Scalar casts of every float

TEMPLATE_TEST_CASE("float8 exhaustive: scalar casts of every float",
                   "[formats][float8][exhaustive]", float8_e4m3fn, float8_e5m2, float8_e8m0fnu) {
  using T = TestType;
  using check = scalify_test::float_check<std::uint8_t, ref::float_segments>;
  const ref::codec c(scalify_test::ref_format<T>);
  const std::string name = c.fmt().name;
  const ref::float_segments nearest(c, {ref::rounding::nearest_even, false});
  const ref::float_segments saturating(c, {ref::rounding::nearest_even, true});
  const ref::float_segments truncating(c, {ref::rounding::toward_zero, false});
  std::vector<check> checks = {
      {name + " T(x)", &nearest,
       [](const float* in, std::uint8_t* out, std::size_t n) {
         for (std::size_t i = 0; i < n; ++i) out[i] = T(in[i]).bits();
       }},
      {name + " saturate_cast", &saturating,
       [](const float* in, std::uint8_t* out, std::size_t n) {
         for (std::size_t i = 0; i < n; ++i) out[i] = scalify::saturate_cast<T>(in[i]).bits();
       }},
  };
  // e8m0fnu is a scale format: nearest and saturating casts only (truncation
  // is checked on samples in float8_codes_test.cpp).
  if (c.fmt().is_signed()) {
    checks.push_back({name + " truncate_cast", &truncating,
                      [](const float* in, std::uint8_t* out, std::size_t n) {
                        for (std::size_t i = 0; i < n; ++i)
                          out[i] = scalify::truncate_cast<T>(in[i]).bits();
                      }});
  }
  const scalify_test::stopwatch clock;
  const auto logs = scalify_test::run_on_every_float(checks);
  scalify_test::report(checks, logs, clock.seconds());
}

// ------------------------------------------------------------------------------
// Bulk convert, every CPU path

TEMPLATE_TEST_CASE("float8 exhaustive: bulk convert of every float on every cpu path",
                   "[formats][float8][exhaustive]", float8_e4m3fn, float8_e5m2) {
  scalify_test::check_bulk_narrowing_of_every_float<TestType>();
}

TEMPLATE_TEST_CASE("float8 bulk: widening every code to float on every cpu path",
                   "[formats][float8]", float8_e4m3fn, float8_e5m2) {
  scalify_test::check_bulk_widening_of_every_code<TestType>();
}

TEMPLATE_TEST_CASE("float8 bulk: convert_with_stats counts on every cpu path", "[formats][float8]",
                   float8_e4m3fn, float8_e5m2) {
  scalify_test::check_convert_with_stats<TestType>();
}

TEMPLATE_TEST_CASE("float8 bulk: every short length and misalignment on every cpu path",
                   "[formats][float8]", float8_e4m3fn, float8_e5m2) {
  scalify_test::check_bulk_lengths_and_alignment<TestType>();
}

TEMPLATE_TEST_CASE(
    "float8 bulk: stochastic convert is the scalar cast and does not depend on chunking",
    "[formats][float8][stochastic]", float8_e4m3fn, float8_e5m2) {
  scalify_test::check_bulk_stochastic<TestType>();
}
