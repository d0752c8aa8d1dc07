// Power-of-two helpers (core/pow2.hpp) against an independent reference:
// std::frexp in double, which is exact for every float.
#include <catch2/catch.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>

#include "scalify/core/pow2.hpp"
#include "scalify/formats/cast.hpp"  // stochastic_bits

using scalify::pow2_mode;

namespace {

/// 2^floor(log2 |x|) for finite nonzero x, exactly, via frexp.
double ref_down(double x) {
  int e = 0;
  std::frexp(std::fabs(x), &e);  // |x| = m * 2^e, m in [0.5, 1)
  return std::ldexp(1.0, e - 1);
}

}  // namespace

TEST_CASE("pow2_round_down/up of floats match frexp on a sweep of all bit patterns", "[core][pow2]") {
  std::size_t bad = 0;
  for (uint64_t b = 1; b < 0x7F80'0000u; b += 97) {  // positive finite floats, subnormals included
    for (uint32_t sign : {0u, 0x8000'0000u}) {
      const float x = std::bit_cast<float>(static_cast<uint32_t>(b) | sign);
      const double down = ref_down(x);
      const double up = down == std::fabs(static_cast<double>(x)) ? down : 2 * down;
      const float d = scalify::pow2_round_down(x), u = scalify::pow2_round_up(x);
      if ((d != down || u != static_cast<float>(up)) && bad++ < 5) {
        FAIL_CHECK("x = " << x << " (0x" << std::hex << std::bit_cast<uint32_t>(x) << std::dec << "): down " << d
                          << " expected " << down << ", up " << u << " expected " << up);
      }
    }
  }
  CHECK(bad == 0);
}

TEST_CASE("pow2 rounding of special values", "[core][pow2]") {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  CHECK(scalify::pow2_round_down(0.0f) == 0.0f);
  CHECK(scalify::pow2_round_down(-0.0f) == 0.0f);
  CHECK(scalify::pow2_round_down(inf) == inf);
  CHECK(scalify::pow2_round_down(-inf) == inf);
  CHECK(std::isnan(scalify::pow2_round_down(nan)));
  CHECK(scalify::pow2_round_up(std::numeric_limits<float>::max()) == inf);
  CHECK(scalify::pow2_round_down(std::numeric_limits<float>::denorm_min()) == std::numeric_limits<float>::denorm_min());
  // The reference's documented pairs (jax-scalify tests/core/test_pow2.py).
  CHECK(scalify::pow2_round_down(2.1f) == 2.0f);
  CHECK(scalify::pow2_round_down(0.3f) == 0.25f);
  CHECK(scalify::pow2_round_down(0.51f) == 0.5f);
  CHECK(scalify::pow2_round_down(65500.0f) == 32768.0f);
  CHECK(scalify::pow2_round_up(2.1f) == 4.0f);
  CHECK(scalify::pow2_round_up(0.3f) == 0.5f);
  CHECK(scalify::pow2_round_up(17000.0f) == 32768.0f);
  CHECK(scalify::pow2_round_up(4.0f) == 4.0f);  // differs from the reference's FIXME (always doubles)
  CHECK(scalify::pow2_round(-3.0f, pow2_mode::none) == 3.0f);
  CHECK(scalify::pow2_round_down(0.3) == 0.25);  // double
  CHECK(scalify::pow2_round_up(1e300) == std::ldexp(1.0, 997));
}

TEST_CASE("pow2_decompose splits exactly into a power of two and a mantissa with 1 <= abs(m) < 2", "[core][pow2]") {
  for (float x : {5.0f, 3.0f, 0.3f, -3.0f, -6.0f, 1e-40f, 65504.0f, 0x1p-149f, 1.0f}) {
    const auto [s, m] = scalify::pow2_decompose(x);
    INFO("x = " << x);
    CHECK(s * m == x);
    CHECK(std::fabs(m) >= 1.0f);
    CHECK(std::fabs(m) < 2.0f);
    CHECK(s == static_cast<float>(ref_down(x)));
  }
  CHECK(scalify::pow2_decompose(5.0f).mantissa == 1.25f);
  CHECK(scalify::pow2_decompose(0.0f).scale == 0.0f);
  CHECK(scalify::pow2_decompose(0.0f).mantissa == 0.0f);
  const auto inf = scalify::pow2_decompose(-std::numeric_limits<float>::infinity());
  CHECK(std::isinf(inf.scale));
  CHECK(inf.mantissa == -std::numeric_limits<float>::infinity());
  CHECK(std::isnan(scalify::pow2_decompose(std::nanf("")).mantissa));
}

TEST_CASE("stochastic pow2 rounding follows its rule and is unbiased", "[core][pow2]") {
  // x = 3: down 2, fraction 0.5: up iff bits < 2^31.
  CHECK(scalify::pow2_round(3.0f, pow2_mode::stochastic, 0x7FFF'FFFFu) == 4.0f);
  CHECK(scalify::pow2_round(3.0f, pow2_mode::stochastic, 0x8000'0000u) == 2.0f);
  CHECK(scalify::pow2_round(4.0f, pow2_mode::stochastic, 0u) == 4.0f);  // exact powers never move
  CHECK(scalify::pow2_round(0.0f, pow2_mode::stochastic, 0u) == 0.0f);
  for (float x : {3.0f, 2.5f, 1.125f, 7.9f, 0x1.8p-140f}) {
    double sum = 0;
    const int n = 200000;
    for (int i = 0; i < n; ++i) sum += scalify::pow2_round(x, pow2_mode::stochastic, scalify::stochastic_bits(9, i));
    const double down = ref_down(x);
    // Bernoulli mean: sd of the average is down * sqrt(p(1-p)/n) <= down * 0.0012.
    INFO("x = " << x);
    CHECK(std::fabs(sum / n - x) <= 5 * down * 0.0012);
  }
}

TEST_CASE("pow2_round rejects a mode outside the enum", "[core][pow2][errors]") {
  // Before issue 16 the value came back unrounded (3 instead of a power of two), without an error.
  CHECK_THROWS_AS(scalify::pow2_round(3.0f, static_cast<pow2_mode>(4)), std::invalid_argument);
  CHECK_THROWS_WITH(scalify::pow2_round(3.0, static_cast<pow2_mode>(-1)),
                    Catch::Contains("pow2_round") && Catch::Contains("pow2_mode -1"));
  CHECK(scalify::pow2_round(3.0f, pow2_mode::stochastic, 0) == 4.0f);
}
