// The arithmetic of an SGD step (nn/detail/sgd_kernels.hpp): the scalar
// routine against float64, and every path this CPU has against the scalar
// routine, bit for bit, in every mode (sums, stores with and without the
// momentum, in place), for sizes around the 8- and 16-lane boundaries.
#include <catch2/catch.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "scalify/cpu.hpp"
#include "scalify/nn/detail/sgd_kernels.hpp"

namespace nn = scalify::nn;
using scalify::cpu_path;

namespace {

struct Operands {
  std::vector<float> w, g, p;
};

/// Weights ~N(0, 1), gradients ~N(0, 0.3), momentum ~N(0, 2), with a few
/// zeros, negative zeros and denormals mixed in, and (`huge`) weights whose
/// squares overflow float.
Operands random_operands(std::ptrdiff_t n, uint32_t seed, bool huge = true) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const float specials[] = {0.0f, -0.0f, 1e-40f, -3e-39f, 1e30f, -2e25f};
  Operands o;
  for (std::ptrdiff_t i = 0; i < n; ++i) {
    o.w.push_back(normal(gen));
    o.g.push_back(0.3f * normal(gen));
    o.p.push_back(2.0f * normal(gen));
    if (gen() % 29 == 0) o.w.back() = specials[gen() % (huge ? 6 : 4)];
    if (gen() % 31 == 0) o.g.back() = specials[gen() % 4];
  }
  return o;
}

bool same_bits(float a, float b) { return std::bit_cast<uint32_t>(a) == std::bit_cast<uint32_t>(b); }

const std::ptrdiff_t kSizes[] = {0, 1, 5, 7, 8, 9, 15, 16, 17, 23, 31, 32, 33, 100, 1024};

}  // namespace

TEST_CASE("sgd block routine (scalar) matches float64", "[nn][optim][kernels]") {
  const std::ptrdiff_t n = 1000;
  const float ws = 0.25f, gs = 0.5f, ps = 2.0f, mu = 0.9f, wd = 1e-2f, lr = 0.1f;
  for (int combination = 0; combination < 8; ++combination) {
    const int decay = combination & 1, previous = (combination >> 1) & 1;
    const bool huge = combination >= 4;
    const Operands o = random_operands(n, 7, huge);
    {
      INFO("decay " << decay << ", previous momentum " << previous << ", huge weights " << huge);
      const nn::detail::sgd_block b{o.w.data(), o.g.data(), previous ? o.p.data() : nullptr, ws, gs, ps, mu,
                                    decay ? wd : 0.0f, lr};
      const auto fn = nn::detail::sgd_kernels_for(cpu_path::scalar).block[decay][previous];
      std::vector<float> v(n), u(n);
      fn(b, n, {.v_out = v.data(), .fv = 0.5f, .u_out = u.data(), .fu = 4.0f});
      const nn::detail::step_sums sums = fn(b, n, {.sums = true});
      double sum_v = 0.0, sum_u = 0.0;
      for (std::ptrdiff_t i = 0; i < n; ++i) {
        const double w = double(o.w[i]) * ws;
        double vd = double(o.g[i]) * gs;
        if (decay) vd += double(wd) * w;
        if (previous) vd += double(mu) * double(o.p[i]) * ps;
        const double ud = w - double(lr) * vd;
        sum_v += vd * vd;
        sum_u += ud * ud;
        // A few float32 roundings each (|error| <= 4 ulp of the largest term).
        const double scale_v = std::abs(double(o.g[i]) * gs) + std::abs(double(wd) * w) +
                               std::abs(double(mu) * double(o.p[i]) * ps);
        INFO("element " << i);
        CHECK(std::abs(double(v[i]) / 0.5 - vd) <= 4 * 0x1p-24 * scale_v + 1e-44);
        CHECK(std::abs(double(u[i]) / 4.0 - ud) <= 4 * 0x1p-24 * (std::abs(w) + double(lr) * scale_v) + 1e-44);
      }
      // Huge weights overflow float's sums (inf, as float arithmetic gives); without them, the sums agree.
      const auto check_sum = [](float got, double want) {
        if (want > std::numeric_limits<float>::max()) {
          CHECK(std::isinf(got));
        } else {
          CHECK(double(got) == Approx(want).epsilon(1e-5));
        }
      };
      check_sum(sums.v, sum_v);
      check_sum(sums.w, sum_u);
      if (!huge) CHECK(std::isfinite(sums.w));
      if (!decay) CHECK(std::isfinite(sums.v));  // v does not see the weights
    }
  }
}

TEST_CASE("sgd block routine: every path matches the scalar one bit for bit", "[nn][optim][kernels]") {
  for (cpu_path path : scalify::all_cpu_paths) {
    if (path == cpu_path::scalar || !scalify::cpu_supports(path)) continue;
    for (std::ptrdiff_t n : kSizes) {
      for (int decay = 0; decay < 2; ++decay) {
        for (int previous = 0; previous < 2; ++previous) {
          INFO(to_string(path) << ", n " << n << ", decay " << decay << ", previous momentum " << previous);
          const Operands o = random_operands(n, static_cast<uint32_t>(n * 4 + decay * 2 + previous));
          const nn::detail::sgd_block b{o.w.data(), o.g.data(), previous ? o.p.data() : nullptr,
                                        0.125f,     0.5f,       4.0f,
                                        0.9f,       decay ? 1e-2f : 0.0f, 0.05f};
          const auto ref = nn::detail::sgd_kernels_for(cpu_path::scalar).block[decay][previous];
          const auto fn = nn::detail::sgd_kernels_for(path).block[decay][previous];

          const nn::detail::step_sums want = ref(b, n, {.sums = true}), got = fn(b, n, {.sums = true});
          CHECK(same_bits(got.v, want.v));
          CHECK(same_bits(got.w, want.w));

          // Stores, with and without the momentum; a sentinel after the end must stay.
          const float sentinel = -7.5f;
          for (int with_v = 0; with_v < 2; ++with_v) {
            std::vector<float> v_want(n + 1, sentinel), u_want(n + 1, sentinel), v_got = v_want, u_got = u_want;
            ref(b, n, {.v_out = with_v ? v_want.data() : nullptr, .fv = 0.25f, .u_out = u_want.data(), .fu = 2.0f});
            fn(b, n, {.v_out = with_v ? v_got.data() : nullptr, .fv = 0.25f, .u_out = u_got.data(), .fu = 2.0f});
            int mismatches = 0;
            for (std::ptrdiff_t i = 0; i <= n; ++i) {
              mismatches += !same_bits(v_got[i], v_want[i]) + !same_bits(u_got[i], u_want[i]);
            }
            CHECK(mismatches == 0);
            CHECK(same_bits(v_got[n], sentinel));
            CHECK(same_bits(u_got[n], sentinel));
          }

          // In place: the momentum over p, the weights over w.
          Operands inplace = o;
          nn::detail::sgd_block bi = b;
          bi.w = inplace.w.data();
          bi.p = previous ? inplace.p.data() : nullptr;
          std::vector<float> v_want(n), u_want(n);
          ref(b, n, {.v_out = v_want.data(), .fv = 1.0f, .u_out = u_want.data(), .fu = 1.0f});
          fn(bi, n,
             {.v_out = previous ? inplace.p.data() : nullptr, .fv = 1.0f, .u_out = inplace.w.data(), .fu = 1.0f});
          int mismatches = 0;
          for (std::ptrdiff_t i = 0; i < n; ++i) {
            mismatches += !same_bits(inplace.w[i], u_want[i]);
            if (previous) mismatches += !same_bits(inplace.p[i], v_want[i]);
          }
          CHECK(mismatches == 0);
        }
      }
    }
  }
}

TEST_CASE("sgd block routine: a non-finite value makes the sums non-finite on every path", "[nn][optim][kernels]") {
  // sgd::step's finiteness check relies on the sums: every NaN or inf in g * gs makes v, hence the sum of v^2, non-finite.
  const std::ptrdiff_t n = 37;
  for (cpu_path path : scalify::all_cpu_paths) {
    if (!scalify::cpu_supports(path)) continue;
    for (float bad : {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                      std::numeric_limits<float>::quiet_NaN()}) {
      for (std::ptrdiff_t at : {std::ptrdiff_t{0}, std::ptrdiff_t{17}, n - 1}) {
        Operands o = random_operands(n, 3);
        o.g[at] = bad;
        const nn::detail::sgd_block b{o.w.data(), o.g.data(), o.p.data(), 1.0f, 1.0f, 1.0f, 0.9f, 0.0f, 0.1f};
        const auto sums = nn::detail::sgd_kernels_for(path).block[0][1](b, n, {.sums = true});
        INFO(to_string(path) << ", bad value " << bad << " at " << at);
        CHECK_FALSE(std::isfinite(sums.v));
      }
    }
  }
}
