// float8 value semantics not covered by the code tables (float8_codes_test):
// hashing, arithmetic through float, integer sources.
#include <catch2/catch.hpp>

#include <cstdint>
#include <functional>

#include "scalify/formats/float8.hpp"

using scalify::float8_e4m3fn;
using scalify::float8_e5m2;

TEST_CASE("std::hash of float8 agrees with ==, also for -0 and +0", "[formats]") {
  for (int a = 0; a < 256; ++a) {
    for (int b = 0; b < 256; ++b) {
      const auto x = float8_e4m3fn::from_bits(static_cast<uint8_t>(a));
      const auto y = float8_e4m3fn::from_bits(static_cast<uint8_t>(b));
      if (x == y) CHECK(std::hash<float8_e4m3fn>{}(x) == std::hash<float8_e4m3fn>{}(y));
    }
  }
}

TEST_CASE("float8 arithmetic rounds the float result once", "[formats]") {
  for (int a = 0; a < 256; a += 3) {
    for (int b = 0; b < 256; b += 5) {
      const auto x = float8_e5m2::from_bits(static_cast<uint8_t>(a));
      const auto y = float8_e5m2::from_bits(static_cast<uint8_t>(b));
      CHECK((x + y).bits() == float8_e5m2(float(x) + float(y)).bits());
      CHECK((x * y).bits() == float8_e5m2(float(x) * float(y)).bits());
      auto z = x;
      z -= y;
      CHECK(z.bits() == float8_e5m2(float(x) - float(y)).bits());
    }
  }
}

TEST_CASE("float8 from integers equals the cast of the same value as a double", "[formats]") {
  for (int32_t i = -70000; i <= 70000; ++i) {
    CHECK(float8_e4m3fn(i).bits() == float8_e4m3fn(static_cast<double>(i)).bits());
    CHECK(float8_e5m2(i).bits() == float8_e5m2(static_cast<double>(i)).bits());
  }
  CHECK(float8_e4m3fn(int64_t{1} << 40).bits() == 0x7F);  // beyond 464: NaN
  CHECK(float8_e5m2(uint64_t{1} << 40).bits() == 0x7C);   // beyond 61440: inf
  CHECK(float(float8_e5m2(-3)) == -3.0f);
}
