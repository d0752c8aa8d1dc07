// The SIMD cast kernels (formats/detail/convert_simd-inl.hpp) at AVX-512's
// width of 16 lanes, over the portable emulation of tests/support, against
// the scalar codec: a sweep over every 1021st float32 bit pattern (4.2 million
// inputs, all exponents and both signs) in every rounding mode, saturating or
// not, with statistics; and every code of each format widened back.
//
// On a CPU with AVX-512 the exhaustive tests also run the real AVX-512 path;
// this test keeps the kernel logic at that width checked on every machine.
#include <catch2/catch.hpp>

#include <bit>
#include <cstring>
#include <vector>

#include "scalify/formats/convert.hpp"
#include "support/vec_emulated.hpp"

using scalify::bfloat16;
using scalify::float16;
using scalify::float8_e4m3fn;
using scalify::float8_e5m2;
using scalify::rounding;

namespace {

template <class T, rounding kMode, bool kStats>
void check_narrow(const std::vector<float>& x, bool saturate, uint64_t offset = 1000) {
  constexpr const auto& spec = scalify::detail::format_of<T>::value;
  const uint64_t seed = 0x5EED;
  const auto keys = scalify::detail::make_stochastic_keys(seed);
  std::vector<T> got(x.size());
  scalify::detail::narrow_stats stats;
  const std::size_t done = scalify::detail::emulated16::narrow_from_float<spec, kMode, kStats>(
      x.data(), got.data(), x.size(), saturate, keys, offset, stats);
  REQUIRE(done == x.size() / 16 * 16);

  scalify::detail::narrow_stats expected_stats;
  std::size_t bad = 0;
  for (std::size_t i = 0; i < done; ++i) {
    const uint32_t random = kMode == rounding::stochastic ? scalify::stochastic_bits(seed, offset + i) : 0u;
    const T expected = scalify::round_cast<T>(x[i], kMode, saturate, random);
    const uint32_t e = scalify::detail::to_code(expected), g = scalify::detail::to_code(got[i]);
    if (e != g && bad++ < 5) {
      FAIL_CHECK("emulated16 kernel, input 0x" << std::hex << std::bit_cast<uint32_t>(x[i]) << ": expected 0x" << e
                                               << ", got 0x" << g << " (mode " << std::dec << int(kMode)
                                               << ", saturate " << saturate << ")");
    }
  }
  CHECK(bad == 0);
  if constexpr (kStats) {
    // The statistics of the same inputs through the public scalar path.
    scalify::scoped_cpu_path guard(scalify::cpu_path::scalar);
    std::vector<T> ref(done);
    const auto s = scalify::convert_with_stats(std::span<const float>(x.data(), done), std::span<T>(ref),
                                               {.saturate = saturate, .round = kMode, .seed = seed, .offset = offset});
    CHECK(std::bit_cast<float>(stats.amax_bits) == s.amax);
    CHECK(stats.overflow == s.overflow);
    CHECK(stats.underflow == s.underflow);
    CHECK(stats.nan == s.nan);
  }
}

template <class T>
void check_all_modes(const std::vector<float>& x) {
  for (bool saturate : {false, true}) {
    check_narrow<T, rounding::nearest_even, false>(x, saturate);
    check_narrow<T, rounding::nearest_even, true>(x, saturate);
    check_narrow<T, rounding::toward_zero, false>(x, saturate);
    check_narrow<T, rounding::toward_zero, true>(x, saturate);
    check_narrow<T, rounding::stochastic, false>(x, saturate);
    // Random bits' counter crossing 2^32 in the middle.
    check_narrow<T, rounding::stochastic, false>(x, saturate, (uint64_t{1} << 32) - x.size() / 2 - 5);
    check_narrow<T, rounding::stochastic, true>(x, saturate);
  }
}

std::vector<float> strided_floats(uint32_t stride) {
  std::vector<float> x;
  x.reserve((uint64_t{1} << 32) / stride + 16);
  for (uint64_t b = 0; b < (uint64_t{1} << 32); b += stride) x.push_back(std::bit_cast<float>(static_cast<uint32_t>(b)));
  while (x.size() % 16 != 0) x.push_back(0.0f);
  return x;
}

}  // namespace

TEMPLATE_TEST_CASE("SIMD cast kernels at 16 lanes match the scalar codec on a float32 sweep",
                   "[formats][convert][kernels]", float8_e4m3fn, float8_e5m2, float16, bfloat16) {
  static const std::vector<float> sweep = strided_floats(1021);
  check_all_modes<TestType>(sweep);
}

TEMPLATE_TEST_CASE("SIMD widening kernels at 16 lanes match the scalar decode on every code",
                   "[formats][convert][kernels]", float8_e4m3fn, float8_e5m2, float16, bfloat16) {
  constexpr const auto& spec = scalify::detail::format_of<TestType>::value;
  const std::size_t codes = std::size_t{1} << spec.bits;
  std::vector<TestType> x(codes);
  for (std::size_t c = 0; c < codes; ++c) x[c] = scalify::detail::from_code<TestType>(static_cast<uint32_t>(c));
  std::vector<float> got(codes);
  REQUIRE(scalify::detail::emulated16::widen_to_float<spec>(x.data(), got.data(), codes) == codes);
  for (std::size_t c = 0; c < codes; ++c) {
    const uint32_t expected = scalify::detail::decode_float_bits<spec>(static_cast<uint32_t>(c));
    if (std::bit_cast<uint32_t>(got[c]) != expected) {
      FAIL_CHECK("code 0x" << std::hex << c << ": expected 0x" << expected << ", got 0x"
                           << std::bit_cast<uint32_t>(got[c]));
    }
  }
}
