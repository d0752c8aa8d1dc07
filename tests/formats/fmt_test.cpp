// fmt and iostream output of the float8 types (formats/fmt.hpp, float8.hpp):
// a float8 prints exactly as the float it widens to, with any float spec.
#include <catch2/catch.hpp>

#include <sstream>

#include "scalify/formats/float8.hpp"
#include "scalify/formats/fmt.hpp"

using scalify::float8_e4m3fn;
using scalify::float8_e5m2;
using scalify::float8_e8m0fnu;

TEMPLATE_TEST_CASE("fmt formats every float8 code like its float value", "[formats][fmt]", float8_e4m3fn,
                   float8_e5m2, float8_e8m0fnu) {
  for (int code = 0; code < 256; ++code) {
    const auto x = TestType::from_bits(static_cast<uint8_t>(code));
    const float f = static_cast<float>(x);
    INFO("code 0x" << std::hex << code);
    CHECK(fmt::format("{}", x) == fmt::format("{}", f));
    CHECK(fmt::format("{:>12.4e}", x) == fmt::format("{:>12.4e}", f));
    std::ostringstream a, b;
    a << x;
    b << f;
    CHECK(a.str() == b.str());
  }
}

TEST_CASE("fmt output of float8 values, spelled out", "[formats][fmt]") {
  CHECK(fmt::format("{}", float8_e4m3fn(0.3f)) == "0.3125");
  CHECK(fmt::format("{:.2f}", float8_e5m2(-1.6f)) == "-1.50");
  CHECK(fmt::format("{}", float8_e4m3fn::from_bits(0x7F)) == "nan");
  CHECK(fmt::format("{}", float8_e5m2::from_bits(0xFC)) == "-inf");
  CHECK(fmt::format("{}", float8_e8m0fnu(0.25f)) == "0.25");
}
