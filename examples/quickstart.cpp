// quickstart: float32 -> float8 -> float32 with scalify's bulk casts.
//
//   build/examples/quickstart
//   SCALIFY_CPU_PATH=scalar build/examples/quickstart   # force the portable path
//
// Casts round to nearest, ties to even (OCP FP8). e4m3fn keeps more mantissa
// (3 bits, max 448); e5m2 keeps more range (max 57344).
#include <scalify/scalify.hpp>

#include <algorithm>    // std::max
#include <cmath>        // std::abs, std::sin, std::ldexp
#include <cstdio>       // std::printf
#include <limits>       // std::numeric_limits<float8_*>
#include <span>         // std::span
#include <string_view>  // std::string_view
#include <vector>       // std::vector

#include "cli.hpp"  // examples::cli (--help)

template <class Float8>
void round_trip(const char* name, const std::vector<float>& x) {
  std::vector<Float8> x8(x.size());
  std::vector<float> back(x.size());
  const scalify::cast_stats stats =
      scalify::convert_with_stats(std::span<const float>(x), std::span<Float8>(x8));
  scalify::convert(std::span<const Float8>(x8), std::span<float>(back));

  // Relative error is bounded for normal numbers; subnormals lose precision.
  const float smallest_normal = static_cast<float>(std::numeric_limits<Float8>::min());
  float max_rel_error = 0.0f;
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (std::abs(x[i]) >= smallest_normal)
      max_rel_error = std::max(max_rel_error, std::abs(back[i] - x[i]) / std::abs(x[i]));
  }

  std::printf("%s: amax %g, overflow %zu, underflow %zu\n", name, stats.amax, stats.overflow,
              stats.underflow);
  for (std::size_t i : {11, 14, 17, 19})  // a few samples, small to large
    std::printf("  %12.6g -> 0x%02x -> %g\n", x[i], static_cast<unsigned>(x8[i].bits()), back[i]);
  std::printf("  max relative error (normal range): %.4f\n", max_rel_error);
}

int main(int argc, char** argv) {
  examples::cli("quickstart", "Rounds 4096 floats to float8_e4m3fn and float8_e5m2 and back, and prints the errors.\n"
                              "SCALIFY_CPU_PATH=scalar forces the portable path.")
      .parse(argc, argv);  // no options: --help, or exit 2
  // 4096 values of both signs spread over 2^-12 .. 2^7.
  std::vector<float> x(4096);
  for (std::size_t i = 0; i < x.size(); ++i)
    x[i] = std::ldexp(std::sin(0.37f * static_cast<float>(i)), static_cast<int>(i % 20) - 12);

  const std::string_view path = scalify::to_string(scalify::active_cpu_path());
  std::printf("scalify %s, cpu path: %.*s\n", SCALIFY_VERSION, static_cast<int>(path.size()),
              path.data());
  round_trip<scalify::float8_e4m3fn>("float8_e4m3fn", x);
  round_trip<scalify::float8_e5m2>("float8_e5m2", x);

  scalify::float8_e4m3fn one_and_a_half(1.5f);  // exact: 1.1b * 2^0
  std::printf("float8_e4m3fn(1.5f) = %g (bits 0x%02x)\n", static_cast<float>(one_and_a_half),
              static_cast<unsigned>(one_and_a_half.bits()));
  return 0;
}
