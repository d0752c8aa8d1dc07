// The GELU routines (kernels/gelu.hpp) and the float definition they repeat
// (scalify/activation.hpp):
//
// - over float32 inputs sampled from all 2^32 bit patterns (every input with
//   SCALIFY_TEST_EXHAUSTIVE_STRIDE=1): every path's routines give the scalar
//   definition's bits, and the definition is within 4 u |x| of GELU evaluated
//   in double (u = 2^-24), its derivative within 8 u;
// - special values, against what the formula gives (not what the code does);
// - every size around the 8-lane boundary, scales that shift the values or
//   overflow float (the double fallback), and in place.
#include <catch2/catch.hpp>

#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "scalify/activation.hpp"
#include "scalify/cpu.hpp"
#include "scalify/kernels/gelu.hpp"
#include "support/activation_ref.hpp"  // gelu_ref, gelu_grad_ref
#include "support/exhaustive.hpp"      // parallel_chunks, exhaustive_stride, mismatch_log

namespace kernels = scalify::kernels;
using scalify::cpu_path;

namespace {

constexpr double kU = 0x1p-24;
const float kInf = std::numeric_limits<float>::infinity();

/// v exactly, as a hexadecimal float ("-0x1.8p+1").
std::string show(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%a", v);
  return buf;
}

bool same_bits(float a, float b) {
  return std::bit_cast<uint32_t>(a) == std::bit_cast<uint32_t>(b) ||
         (std::isnan(a) && std::isnan(b));
}

/// The paths this CPU has whose routines differ from the scalar ones (each
/// distinct routine once: several paths may share one).
std::vector<cpu_path> simd_paths() {
  std::vector<cpu_path> paths;
  std::vector<kernels::gelu_forward_fn> seen{kernels::gelu_kernels_for(cpu_path::scalar).forward};
  for (cpu_path p : scalify::all_cpu_paths) {
    if (!scalify::cpu_supports(p)) continue;
    const auto f = kernels::gelu_kernels_for(p).forward;
    bool known = false;
    for (auto s : seen) known = known || s == f;
    if (!known) {
      seen.push_back(f);
      paths.push_back(p);
    }
  }
  return paths;
}

/// Every stride-th chunk of 2^16 inputs: by default every 16th in a Release
/// build, so the pass takes seconds (the double reference costs most of it).
uint64_t gelu_stride() {
  const char* env = std::getenv("SCALIFY_TEST_EXHAUSTIVE_STRIDE");
  if (env != nullptr && *env != '\0') return scalify_test::exhaustive_stride();
  return 16 * scalify_test::exhaustive_stride();
}

}  // namespace

TEST_CASE("gelu: float definition near double and every path bit for bit, sampled float32 inputs",
          "[kernels][gelu][exhaustive]") {
  const std::vector<cpu_path> paths = simd_paths();
  const uint64_t stride = gelu_stride();
  constexpr std::size_t kChunk = std::size_t{1} << 16;
  scalify_test::mismatch_log fwd_log, grad_log, fwd_err, grad_err;
  std::atomic<uint64_t> checked{0};
  scalify_test::parallel_chunks(uint64_t{1} << 32, kChunk, [&](uint64_t begin, std::size_t n) {
    if ((begin / kChunk) % stride != 0) return;
    std::vector<float> x(n), ones(n, 1.0f), y(n), g(n), yp(n), gp(n);
    for (std::size_t i = 0; i < n; ++i)
      x[i] = std::bit_cast<float>(static_cast<uint32_t>(begin + i));
    const auto& scalar = kernels::gelu_kernels_for(cpu_path::scalar);
    const auto ni = static_cast<std::ptrdiff_t>(n);
    scalar.forward(x.data(), 1.0f, y.data(), ni);
    scalar.backward(ones.data(), x.data(), 1.0f, g.data(), ni);
    for (std::size_t i = 0; i < n; ++i) {
      const double v = x[i];
      if (!std::isfinite(v)) continue;
      const double ey = std::abs(y[i] - scalify_test::gelu_ref(v));
      if (!(ey <= 4 * kU * std::abs(v) + 0x1p-149)) {
        fwd_err.add("gelu(" + show(x[i]) + ") = " + show(y[i]) + ", error " +
                    std::to_string(ey / (kU * std::abs(v))) + " u|x|");
      }
      const double eg = std::abs(g[i] - scalify_test::gelu_grad_ref(v));
      if (!(eg <= 8 * kU)) {
        grad_err.add("gelu'(" + show(x[i]) + ") = " + show(g[i]) + ", error " +
                     std::to_string(eg / kU) + " u");
      }
    }
    for (cpu_path p : paths) {
      const auto& k = kernels::gelu_kernels_for(p);
      k.forward(x.data(), 1.0f, yp.data(), ni);
      k.backward(ones.data(), x.data(), 1.0f, gp.data(), ni);
      for (std::size_t i = 0; i < n; ++i) {
        if (!same_bits(y[i], yp[i])) {
          fwd_log.add(std::string(to_string(p)) + " gelu(" + show(x[i]) + ") = " + show(yp[i]) +
                      ", scalar " + show(y[i]));
        }
        if (!same_bits(g[i], gp[i])) {
          grad_log.add(std::string(to_string(p)) + " gelu'(" + show(x[i]) + ") = " + show(gp[i]) +
                       ", scalar " + show(g[i]));
        }
      }
    }
    checked += n;
  });
  if (stride > 1)
    WARN("checked every " << stride
                          << "th chunk of 2^16 inputs (SCALIFY_TEST_EXHAUSTIVE_STRIDE=1: all)");
  INFO(checked.load() << " inputs, " << paths.size() << " vector routine(s)");
  for (const auto* log : {&fwd_err, &grad_err, &fwd_log, &grad_log}) {
    if (log->count() != 0) FAIL_CHECK(log->summary());
  }
  CHECK(checked.load() >= (uint64_t{1} << 32) / stride);
}

TEST_CASE("gelu: special values are what the formula gives", "[kernels][gelu]") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float big = std::ldexp(1.0f, 64);  // x^2 overflows float
  for (cpu_path p : scalify::all_cpu_paths) {
    if (!scalify::cpu_supports(p)) continue;
    INFO(to_string(p));
    const auto& k = kernels::gelu_kernels_for(p);
    const std::vector<float> x = {0.0f,      -0.0f,     kInf,       -kInf,  nan,
                                  big,       -big,      30.0f,      -30.0f, 0x1p-30f,
                                  -0x1p-30f, 0x1p-149f, -0x1p-149f, 1e-38f, -1e-38f};
    const auto n = static_cast<std::ptrdiff_t>(x.size());
    std::vector<float> y(x.size()), g(x.size()), ones(x.size(), 1.0f);
    k.forward(x.data(), 1.0f, y.data(), n);
    k.backward(ones.data(), x.data(), 1.0f, g.data(), n);
    // gelu(0) = +-0 with the sign of x; gelu'(0) = 1/2.
    CHECK(std::bit_cast<uint32_t>(y[0]) == 0u);
    CHECK(std::bit_cast<uint32_t>(y[1]) == 0x80000000u);
    CHECK(g[0] == 0.5f);
    CHECK(g[1] == 0.5f);
    // gelu(+inf) = +inf, gelu(-inf) = -0 (the limit, not -inf * 0), NaN stays NaN; gelu' is 1, 0,
    // NaN.
    CHECK(y[2] == kInf);
    CHECK(std::bit_cast<uint32_t>(y[3]) == 0x80000000u);
    CHECK(std::isnan(y[4]));
    CHECK(g[2] == 1.0f);
    CHECK(g[3] == 0.0f);
    CHECK(std::isnan(g[4]));
    // Far out (also where x^2 overflows): gelu(x) = x for x > 0, -0 below; gelu' exactly 1 or 0.
    CHECK(y[5] == big);
    CHECK(std::bit_cast<uint32_t>(y[6]) == 0x80000000u);
    CHECK(y[7] == 30.0f);
    CHECK(std::bit_cast<uint32_t>(y[8]) == 0x80000000u);  // |gelu(-30)| < 1e-300
    CHECK(g[5] == 1.0f);
    CHECK(g[6] == 0.0f);
    CHECK(g[7] == 1.0f);
    CHECK(g[8] == 0.0f);
    // Near 0, gelu(x) = x / 2 + k x^2 / 2 rounds to x / 2 (also subnormal x, rounded as x / 2 is).
    for (std::size_t i = 9; i < x.size(); ++i) {
      INFO("x = " << show(x[i]));
      CHECK(y[i] == x[i] / 2);
      CHECK(g[i] == 0.5f);
    }
  }
}

TEST_CASE("gelu: every path equals the scalar routines at every size, scale and in place",
          "[kernels][gelu]") {
  std::mt19937 gen(11);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const auto& scalar = kernels::gelu_kernels_for(cpu_path::scalar);
  // Scales: none, shifting, 0 and negative (stored on scale 1), and 2^100, where d * s overflows
  // for the 1e10 values below (gelu taken in double: data d).
  const float scales[] = {1.0f, 0.37f, 3e-3f, 0.0f, -2.0f, 0x1p100f, nan};
  for (cpu_path p : simd_paths()) {
    const auto& k = kernels::gelu_kernels_for(p);
    for (std::ptrdiff_t n : {0, 1, 5, 7, 8, 9, 15, 16, 17, 31, 33, 1000}) {
      std::vector<float> d(static_cast<std::size_t>(n)), dy(d.size());
      for (auto& v : d) v = normal(gen);
      for (auto& v : dy) v = normal(gen);
      for (std::ptrdiff_t i = 3; i < n; i += 7)
        d[static_cast<std::size_t>(i)] = (i % 2 ? 1e10f : -1e10f);
      if (n > 4) {
        d[4] = kInf;
        dy[2] = nan;
        dy[1] = -kInf;
      }
      for (float s : scales) {
        INFO(to_string(p) << ", n " << n << ", scale " << s);
        const float sentinel = 12345.0f;
        std::vector<float> want(d.size() + 1, sentinel), got(d.size() + 1, sentinel);
        scalar.forward(d.data(), s, want.data(), n);
        k.forward(d.data(), s, got.data(), n);
        long bad = 0;
        for (std::size_t i = 0; i <= d.size(); ++i) bad += !same_bits(want[i], got[i]);
        CHECK(bad == 0);
        CHECK(got[d.size()] == sentinel);
        std::vector<float> inplace = d;
        k.forward(inplace.data(), s, inplace.data(), n);
        bad = 0;
        for (std::size_t i = 0; i < d.size(); ++i) bad += !same_bits(want[i], inplace[i]);
        CHECK(bad == 0);
        // backward: out = dy * gelu'(d * s), also into dy's and into x's memory.
        std::vector<float> gwant(d.size() + 1, sentinel), ggot(d.size() + 1, sentinel);
        scalar.backward(dy.data(), d.data(), s, gwant.data(), n);
        k.backward(dy.data(), d.data(), s, ggot.data(), n);
        bad = 0;
        for (std::size_t i = 0; i <= d.size(); ++i) bad += !same_bits(gwant[i], ggot[i]);
        CHECK(bad == 0);
        std::vector<float> dy2 = dy, x2 = d;
        k.backward(dy2.data(), d.data(), s, dy2.data(), n);
        k.backward(dy.data(), x2.data(), s, x2.data(), n);
        bad = 0;
        for (std::size_t i = 0; i < d.size(); ++i)
          bad += !same_bits(gwant[i], dy2[i]) + !same_bits(gwant[i], x2[i]);
        CHECK(bad == 0);
      }
    }
  }
}

TEST_CASE("gelu: on a scale, the scalar routines are gelu of the value, as data on the scale",
          "[kernels][gelu]") {
  // Against the double reference: gelu(d s) / s within 4 u |d| (plus the division's rounding), and
  // the overflowing values taken in double.
  const auto& scalar = kernels::gelu_kernels_for(cpu_path::scalar);
  const std::vector<float> d = {1.5f, -0.75f, 3.0f, -2.0f, 1e10f, -1e10f, 0.0f};
  for (float s : {0.25f, 3.0f, 0x1p100f}) {
    std::vector<float> y(d.size());
    scalar.forward(d.data(), s, y.data(), static_cast<std::ptrdiff_t>(d.size()));
    for (std::size_t i = 0; i < d.size(); ++i) {
      const double v = static_cast<double>(d[i]) * s;
      const double want = scalify_test::gelu_ref(v) / s;
      INFO("d " << d[i] << ", s " << s);
      CHECK(std::abs(y[i] - want) <= 5 * kU * std::abs(d[i]));
    }
  }
}
