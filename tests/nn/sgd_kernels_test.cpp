// The arithmetic of an SGD step (nn/detail/sgd_kernels.hpp): the scalar
// routine against float64, and every path this CPU has against the scalar
// routine, bit for bit, in every mode (sums, stores with and without the
// momentum, in place), for sizes around the 8- and 16-lane boundaries; the
// float16 routines also against the float routine followed by the bulk casts.
#include <catch2/catch.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <span>
#include <vector>

#include "scalify/cpu.hpp"
#include "scalify/formats/convert.hpp"
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

/// `p` rounded to float16 (the float16 routines' momentum codes).
std::vector<scalify::float16> half_codes(const std::vector<float>& p) {
  std::vector<scalify::float16> codes;
  for (float x : p) codes.push_back(scalify::round_cast<scalify::float16>(x, scalify::rounding::nearest_even, false));
  return codes;
}

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
        // The same through the float16 routine (a float16 momentum).
        const std::vector<scalify::float16> p16 = half_codes(o.p);
        nn::detail::sgd_block bh = b;
        bh.p = nullptr;
        bh.p_half = p16.data();
        CHECK_FALSE(std::isfinite(nn::detail::sgd_kernels_for(path).half[0][1](bh, n, nullptr).v));
      }
    }
  }
}


TEST_CASE("sgd float16 routine (scalar) is the float routine followed by the bulk casts", "[nn][optim][kernels]") {
  // What sgd::step did before the float16 routines: v and u rebased by the
  // float routine into buffers, rounded by convert() (v to nearest even, u
  // stochastically or to nearest even, saturating or not), u widened back.
  using scalify::float16;
  const std::ptrdiff_t n = 1000;
  const float ws = 0.25f, gs = 0.5f, ps = 2.0f, mu = 0.9f, wd = 1e-2f, lr = 0.1f;
  for (int combination = 0; combination < 4; ++combination) {
    const int decay = combination & 1, previous = (combination >> 1) & 1;
    const Operands o = random_operands(n, 11 + static_cast<uint32_t>(combination));
    const std::vector<float16> p16 = half_codes(o.p);
    std::vector<float> p_wide(static_cast<size_t>(n));
    scalify::convert(std::span<const float16>(p16), std::span<float>(p_wide));
    nn::detail::sgd_block b{o.w.data(), o.g.data(), previous ? p_wide.data() : nullptr, ws, gs, ps, mu,
                            decay ? wd : 0.0f, lr};
    b.p_half = previous ? p16.data() : nullptr;
    const auto& scalar = nn::detail::sgd_kernels_for(cpu_path::scalar);
    const nn::detail::step_sums want = scalar.block[decay][previous](b, n, {.sums = true});
    const nn::detail::step_sums got = scalar.half[decay][previous](b, n, nullptr);
    CHECK(same_bits(got.v, want.v));
    CHECK(same_bits(got.w, want.w));
    // fu: plain, most results float16 subnormals, most saturated.
    for (float fu : {2.0f, 0x1p-16f, 0x1p14f}) {
      for (int mode = 0; mode < 4; ++mode) {
        const bool stochastic = mode & 1, saturate = mode & 2;
        INFO("decay " << decay << ", previous " << previous << ", fu " << fu << ", stochastic " << stochastic
                      << ", saturate " << saturate);
        const uint64_t seed = 99, offset = 0xFFFF'FF00ull;  // the indices cross 2^32
        std::vector<float> v(static_cast<size_t>(n)), u(v.size()), u_want(v.size());
        scalar.block[decay][previous](b, n, {.v_out = v.data(), .fv = 0.5f, .u_out = u.data(), .fu = fu});
        std::vector<float16> v_want(v.size()), u_codes(v.size());
        scalify::convert(std::span<const float>(v), std::span<float16>(v_want), {.saturate = saturate});
        const scalify::convert_options uo{.saturate = saturate,
                                          .round = stochastic ? scalify::rounding::stochastic
                                                              : scalify::rounding::nearest_even,
                                          .seed = seed,
                                          .offset = offset};
        scalify::convert(std::span<const float>(u), std::span<float16>(u_codes), uo);
        scalify::convert(std::span<const float16>(u_codes), std::span<float>(u_want));

        std::vector<float16> v_got(v.size());
        std::vector<float> u_got(v.size());
        const nn::detail::sgd_half_outputs out{.v_codes = v_got.data(),
                                               .fv = 0.5f,
                                               .u_out = u_got.data(),
                                               .fu = fu,
                                               .saturate = saturate,
                                               .stochastic = stochastic,
                                               .keys = scalify::detail::make_stochastic_keys(seed),
                                               .offset = offset};
        scalar.half[decay][previous](b, n, &out);
        int mismatches = 0;
        for (std::ptrdiff_t i = 0; i < n; ++i) {
          const auto k = static_cast<size_t>(i);
          mismatches += (scalify::float16_bits(v_got[k]) != scalify::float16_bits(v_want[k])) +
                        !same_bits(u_got[k], u_want[k]);
        }
        CHECK(mismatches == 0);
      }
    }
  }
}

TEST_CASE("sgd float16 routine: every path matches the scalar one bit for bit", "[nn][optim][kernels]") {
  using scalify::float16;
  const float inf = std::numeric_limits<float>::infinity();
  for (cpu_path path : scalify::all_cpu_paths) {
    if (path == cpu_path::scalar || !scalify::cpu_supports(path)) continue;
    for (std::ptrdiff_t n : kSizes) {
      for (int combination = 0; combination < 16; ++combination) {
        // bad: 1 a -inf gradient, 2 a NaN gradient, 3 an inf momentum (non-finite v and u: the stores' fallback)
        const int decay = combination & 1, previous = (combination >> 1) & 1, bad = combination >> 2;
        INFO(to_string(path) << ", n " << n << ", decay " << decay << ", previous momentum " << previous
                             << ", bad value " << bad);
        Operands o = random_operands(n, static_cast<uint32_t>(n * 16 + combination));
        if (bad == 1 && n > 3) o.g[static_cast<size_t>(n / 2)] = -inf;
        if (bad == 2 && n > 3) o.g[static_cast<size_t>(n / 3)] = std::numeric_limits<float>::quiet_NaN();
        if (bad == 3 && n > 3) o.p[static_cast<size_t>(n - 2)] = inf;
        const std::vector<float16> p16 = half_codes(o.p);
        nn::detail::sgd_block b{o.w.data(), o.g.data(), nullptr, 0.125f, 0.5f, 4.0f, 0.9f, decay ? 1e-2f : 0.0f,
                                0.05f};
        b.p_half = previous ? p16.data() : nullptr;
        const auto ref = nn::detail::sgd_kernels_for(cpu_path::scalar).half[decay][previous];
        const auto fn = nn::detail::sgd_kernels_for(path).half[decay][previous];

        // The sums, bit for bit (a NaN sum: NaN; its payload may differ, vcvtph2ps keeps a NaN code's).
        const nn::detail::step_sums want = ref(b, n, nullptr), got = fn(b, n, nullptr);
        const auto same_sum = [](float a, float b) { return std::isnan(b) ? std::isnan(a) : same_bits(a, b); };
        CHECK(same_sum(got.v, want.v));
        CHECK(same_sum(got.w, want.w));

        // Stores: with and without the momentum, each rounding, saturating or
        // not, with subnormal and saturated results (fu), indices that cross
        // 2^32 or not (0xFFFF'FFF5: blocks of 11 elements or more wrap, and
        // go element by element); a sentinel after the end must stay.
        const float16 v_sentinel = scalify::float16_from_bits(0x5A5A);
        const float u_sentinel = -7.5f;
        int mismatches = 0, sentinels = 0;
        for (int mode = 0; mode < 8; ++mode) {
          const bool with_v = mode & 1, stochastic = mode & 2, saturate = mode & 4;
          for (float fu : {2.0f, 0x1p-16f, 0x1p14f}) {
            for (uint64_t offset : {uint64_t{0}, uint64_t{0xFFFF'FFF5u}, (uint64_t{5} << 32) + 3}) {
              std::vector<float16> v_want(static_cast<size_t>(n + 1), v_sentinel), v_got = v_want;
              std::vector<float> u_want(static_cast<size_t>(n + 1), u_sentinel), u_got = u_want;
              nn::detail::sgd_half_outputs out{.v_codes = with_v ? v_want.data() : nullptr,
                                               .fv = 0.25f,
                                               .u_out = u_want.data(),
                                               .fu = fu,
                                               .saturate = saturate,
                                               .stochastic = stochastic,
                                               .keys = scalify::detail::make_stochastic_keys(17),
                                               .offset = offset};
              ref(b, n, &out);
              out.v_codes = with_v ? v_got.data() : nullptr;
              out.u_out = u_got.data();
              fn(b, n, &out);
              for (std::ptrdiff_t i = 0; i <= n; ++i) {
                const auto k = static_cast<size_t>(i);
                mismatches += (scalify::float16_bits(v_got[k]) != scalify::float16_bits(v_want[k])) +
                              !same_bits(u_got[k], u_want[k]);
              }
              sentinels += scalify::float16_bits(v_got[static_cast<size_t>(n)]) == 0x5A5A &&
                           same_bits(u_got[static_cast<size_t>(n)], u_sentinel);
            }
          }
        }
        CHECK(mismatches == 0);
        CHECK(sentinels == 8 * 3 * 3);

        // In place: the momentum over p's codes, the weights over w.
        Operands inplace = o;
        std::vector<float16> p_inplace = p16;
        nn::detail::sgd_block bi = b;
        bi.w = inplace.w.data();
        bi.p_half = previous ? p_inplace.data() : nullptr;
        std::vector<float16> v_want(static_cast<size_t>(n));
        std::vector<float> u_want(static_cast<size_t>(n));
        nn::detail::sgd_half_outputs out{.v_codes = v_want.data(), .fv = 1.0f, .u_out = u_want.data(), .fu = 1.0f,
                                         .saturate = true, .stochastic = true,
                                         .keys = scalify::detail::make_stochastic_keys(5), .offset = 64};
        ref(b, n, &out);
        out.v_codes = previous ? p_inplace.data() : nullptr;
        out.u_out = inplace.w.data();
        fn(bi, n, &out);
        int inplace_mismatches = 0;
        for (std::ptrdiff_t i = 0; i < n; ++i) {
          const auto k = static_cast<size_t>(i);
          inplace_mismatches += !same_bits(inplace.w[k], u_want[k]);
          if (previous) inplace_mismatches += scalify::float16_bits(p_inplace[k]) != scalify::float16_bits(v_want[k]);
        }
        CHECK(inplace_mismatches == 0);
      }
    }
  }
}
