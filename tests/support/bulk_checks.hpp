// tests/support/bulk_checks.hpp: the bulk-convert test bodies shared by
// tests/formats/float8_exhaustive_test.cpp and float16_exhaustive_test.cpp,
// generic over the narrow type T (float8_e4m3fn, float8_e5m2, float16,
// bfloat16). Every check runs on every CPU path the machine supports and
// compares bit for bit with the independent reference (support/reference.hpp).
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>    // std::min, std::shuffle
#include <cmath>        // std::isnan, std::signbit, std::ldexp
#include <cstdint>      // std::uint32_t, std::uint64_t
#include <cstdio>       // std::printf (timings)
#include <cstdlib>      // std::getenv, std::strtoull
#include <cstring>      // std::memcpy
#include <memory>       // std::unique_ptr
#include <random>       // std::mt19937_64
#include <span>         // std::span
#include <string>       // std::string
#include <type_traits>  // std::is_trivially_copyable_v
#include <vector>       // std::vector

#include "scalify/cpu.hpp"              // all_cpu_paths, cpu_supports, scoped_cpu_path
#include "scalify/formats/cast.hpp"     // stochastic_cast, stochastic_bits
#include "scalify/formats/convert.hpp"  // convert, convert_with_stats
#include "support/exhaustive.hpp"       // run_on_every_float, mismatch_log, hex
#include "support/narrow_types.hpp"     // ref_format, code_of, from_code, code_t
#include "support/reference.hpp"        // ref::codec, ref::float_segments

namespace scalify_test {

inline std::string path_name(scalify::cpu_path p) { return std::string(scalify::to_string(p)); }

// The four non-stochastic cast modes.
inline constexpr ref::mode kAllModes[] = {
    {ref::rounding::nearest_even, false},
    {ref::rounding::nearest_even, true},
    {ref::rounding::toward_zero, false},
    {ref::rounding::toward_zero, true},
};
// The modes of the exhaustive bulk passes ({saturate, toward_zero} is covered
// by the non-exhaustive checks, to keep the run time down).
inline constexpr ref::mode kExhaustiveModes[] = {
    {ref::rounding::nearest_even, false},
    {ref::rounding::nearest_even, true},
    {ref::rounding::toward_zero, false},
};

// The bulk options for a reference mode, and a name for messages.
inline scalify::convert_options options_of(ref::mode m) {
  scalify::convert_options o;
  o.saturate = m.saturate;
  o.round = m.round == ref::rounding::nearest_even ? scalify::rounding::nearest_even
                                                   : scalify::rounding::toward_zero;
  return o;
}
inline std::string options_name(ref::mode m) {
  if (m.round == ref::rounding::nearest_even) return m.saturate ? "{saturate}" : "{}";
  return m.saturate ? "{saturate, round = toward_zero}" : "{round = toward_zero}";
}

// out[i] = code_of(in[i]) for i < n; a plain copy of the object
// representation where that is the code (float8: one uint8_t; Eigen::half and
// Eigen::bfloat16: one uint16_t), which keeps sanitizer builds fast.
template <class T, class Code>
void copy_codes(const T* in, Code* out, std::size_t n) {
  if constexpr (sizeof(T) == sizeof(Code) && std::is_trivially_copyable_v<T>) {
    std::memcpy(out, in, n * sizeof(T));
  } else {
    for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<Code>(code_of(in[i]));
  }
}

// Reports the logs of one exhaustive pass to Catch2 (from the main thread).
template <class Check>
void report(const std::vector<Check>& checks,
            const std::vector<std::unique_ptr<mismatch_log>>& logs, double seconds) {
  if (exhaustive_stride() > 1) {
    WARN("checked every " << exhaustive_stride()
                          << "th chunk of the floats only (sanitizer build or "
                             "SCALIFY_TEST_EXHAUSTIVE_STRIDE; set it to 1 for all)");
  }
  // One line per pass on stdout (ctest -V shows it): where the time goes.
  std::printf("%zu checks of %s2^32 floats in %.1f s wall:", checks.size(),
              exhaustive_stride() > 1
                  ? ("1/" + std::to_string(exhaustive_stride()) + " of ").c_str()
                  : "all ",
              seconds);
  for (std::size_t k = 0; k < checks.size(); ++k) {
    std::printf("%s %s %.1f s cpu", k == 0 ? "" : ";", checks[k].name.c_str(), logs[k]->seconds());
  }
  std::printf("\n");
  std::fflush(stdout);
  for (std::size_t k = 0; k < checks.size(); ++k) {
    INFO(checks[k].name << ": " << logs[k]->summary());
    CHECK(logs[k]->count() == 0);
  }
}

// Calls fn(path) for every CPU path, with that path forced; unsupported ones
// are skipped with a visible warning.
template <class Fn>
void for_each_cpu_path(Fn fn) {
  for (const scalify::cpu_path p : scalify::all_cpu_paths) {
    if (!scalify::cpu_supports(p)) {
      WARN("skipping path " << path_name(p) << ": not supported by this CPU");
      continue;
    }
    const scalify::scoped_cpu_path guard(p);
    REQUIRE(scalify::active_cpu_path() == p);
    fn(p);
  }
}

// Random inputs for the bulk tests: raw random bit patterns (every class of
// float), values spread over the format's range and beyond, every threshold
// of the format with its float neighbours, and the specials; shuffled.
inline std::vector<float> mixed_inputs(const ref::codec& c, std::size_t random_count,
                                       std::uint64_t seed) {
  std::vector<float> v;
  std::mt19937_64 rng(seed);
  const ref::format& f = c.fmt();
  const int lo = 1 - f.bias - f.mantissa_bits - 3;
  const int hi = (1 << f.exponent_bits) - f.bias + 2;
  std::uniform_int_distribution<int> exponent(lo, std::min(hi, 127));
  for (std::size_t i = 0; i < random_count; ++i) {
    const std::uint64_t r = rng();
    if (i % 3 == 0) {
      v.push_back(ref::float_from_bits(static_cast<std::uint32_t>(r >> 32)));
    } else {
      const float mantissa = 1.0f + std::ldexp(static_cast<float>(r >> 41), -23);
      const float x = std::ldexp(mantissa, exponent(rng));
      v.push_back((r & 1) ? -x : x);
    }
  }
  for (std::uint32_t k = 0; k <= f.max_code() + 1; ++k) {
    for (const double t : {c.value(k), k > 0 ? (c.value(k - 1) + c.value(k)) / 2 : 0.0}) {
      if (!(t < 0x1p128)) continue;
      const std::uint32_t b = ref::bits_of(static_cast<float>(t));
      for (const std::uint32_t d : {0u, 1u}) {
        for (const std::uint32_t s : {0u, 0x80000000u}) {
          v.push_back(ref::float_from_bits((b + d) | s));
          if (b >= d) v.push_back(ref::float_from_bits((b - d) | s));
        }
      }
    }
  }
  for (const std::uint32_t b :
       {0x00000000u, 0x80000000u, 0x7F800000u, 0xFF800000u, 0x7FC00000u, 0xFFC00000u, 0x7F800001u,
        0xFFBFFFFFu, 0x7F7FFFFFu, 0xFF7FFFFFu, 0x00000001u, 0x80000001u}) {
    v.push_back(ref::float_from_bits(b));
  }
  std::shuffle(v.begin(), v.end(), rng);
  return v;
}

template <class T>
std::vector<std::uint32_t> codes_of(const std::vector<T>& v) {
  std::vector<std::uint32_t> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = code_of(v[i]);
  return out;
}

// ------------------------------------------------------------------------------
// The checks

// float -> T over all 2^32 floats, in kExhaustiveModes, on every CPU path.
template <class T>
void check_bulk_narrowing_of_every_float() {
  using code = code_t<T>;
  using check = float_check<code, ref::float_segments>;
  const ref::codec c(ref_format<T>);
  std::vector<ref::float_segments> tables;
  for (const ref::mode m : kExhaustiveModes) tables.emplace_back(c, m);
  // copy_codes() must read the codes the library's way.
  for (std::uint32_t k = 0; k < 256; ++k) {
    const T x = from_code<T>(k * 0x0101u);
    code copied = 0;
    copy_codes(&x, &copied, 1);
    REQUIRE(copied == code_of(x));
  }
  for_each_cpu_path([&](scalify::cpu_path p) {
    std::vector<check> checks;
    for (std::size_t k = 0; k < tables.size(); ++k) {
      const scalify::convert_options o = options_of(kExhaustiveModes[k]);
      checks.push_back({std::string(c.fmt().name) + " convert " +
                            options_name(kExhaustiveModes[k]) + " path " + path_name(p),
                        &tables[k], [o](const float* in, code* out, std::size_t n) {
                          thread_local std::vector<T> dst;
                          dst.resize(n);
                          scalify::convert(std::span<const float>(in, n),
                                           std::span<T>(dst.data(), n), o);
                          copy_codes(dst.data(), out, n);
                        }});
    }
    const stopwatch clock;
    const auto logs = run_on_every_float(checks, std::size_t{1} << 18);
    report(checks, logs, clock.seconds());
  });
}

// T -> float of every code of T, at several lengths and misalignments.
template <class T>
void check_bulk_widening_of_every_code() {
  const ref::format& f = ref_format<T>;
  std::vector<T> src;
  for (std::uint32_t code = 0; code < f.code_count(); ++code) src.push_back(from_code<T>(code));
  for (std::uint32_t code = 0; code < 300; ++code) src.push_back(from_code<T>(code * 0x9E37u));
  for_each_cpu_path([&](scalify::cpu_path p) {
    std::vector<std::pair<std::size_t, std::size_t>> pieces = {{0, src.size()},
                                                               {1, src.size() - 1}};
    for (std::size_t begin : {0, 3, 17}) {
      for (std::size_t len : {0, 1, 7, 15, 16, 33, 255}) pieces.push_back({begin, len});
    }
    for (const auto& [begin, len] : pieces) {
      std::vector<float> dst(len + 2, -1234.5f);
      scalify::convert(std::span<const T>(src.data() + begin, len),
                       std::span<float>(dst.data() + 1, len));
      std::uint64_t bad = 0;
      std::string first;
      for (std::size_t i = 0; i < len; ++i) {
        const std::uint32_t code = code_of(src[begin + i]);
        const double e = ref::decode(f, code);
        const float a = dst[i + 1];
        const bool ok = std::isnan(e)
                            ? (std::isnan(a) && std::signbit(a) == std::signbit(e))
                            : (static_cast<double>(a) == e && std::signbit(a) == std::signbit(e));
        if (!ok && bad++ == 0) {
          first = "code " + hex(code, f.total_bits / 4) + " expected " +
                  hex(ref::bits_of(static_cast<float>(e)), 8) + " actual " +
                  hex(ref::bits_of(a), 8);
        }
      }
      INFO(f.name << " -> float, path " << path_name(p) << ", begin " << begin << ", length " << len
                  << ": " << bad << " mismatches; first: " << first);
      CHECK(bad == 0);
      CHECK(dst[0] == -1234.5f);  // nothing written outside the span
      CHECK(dst[len + 1] == -1234.5f);
    }
  });
}

// The random inputs of check_convert_with_stats: kStatsRandomInputs, or
// SCALIFY_TEST_STATS_INPUTS from the environment. The emulated AVX-512 run
// (scripts/test_avx512_emulated.sh) uses fewer: there the check runs ~100x
// slower. Every threshold and special of the format is checked either way.
inline constexpr std::size_t kStatsRandomInputs = 3'000'000;
inline std::size_t stats_random_inputs() {
  const char* env = std::getenv("SCALIFY_TEST_STATS_INPUTS");
  if (env != nullptr && *env != '\0') return static_cast<std::size_t>(std::strtoull(env, nullptr, 10));
  return kStatsRandomInputs;
}

// convert_with_stats: codes and counts on a few million mixed inputs, in every
// mode, on every CPU path.
template <class T>
void check_convert_with_stats() {
  const ref::codec c(ref_format<T>);
  const int digits = c.fmt().total_bits / 4;
  const std::size_t random_inputs = stats_random_inputs();
  if (random_inputs != kStatsRandomInputs) {
    WARN(random_inputs << " random inputs instead of " << kStatsRandomInputs << " (SCALIFY_TEST_STATS_INPUTS)");
  }
  const std::vector<float> in = mixed_inputs(c, random_inputs, 4242);
  constexpr std::size_t kHead = 37;
  struct expectation {
    ref::mode mode;
    std::vector<std::uint32_t> codes;
    ref::stats all, head;
  };
  std::vector<expectation> expected;
  for (const ref::mode m : kAllModes) {
    const ref::float_segments table(c, m);
    expectation e{m, std::vector<std::uint32_t>(in.size()), {}, {}};
    for (std::size_t i = 0; i < in.size(); ++i) {
      e.codes[i] = table.lookup(ref::bits_of(in[i]));
      ref::accumulate(e.all, c, m, in[i], e.codes[i]);
      if (i < kHead) ref::accumulate(e.head, c, m, in[i], e.codes[i]);
    }
    expected.push_back(std::move(e));
  }
  for_each_cpu_path([&](scalify::cpu_path p) {
    for (const expectation& e : expected) {
      std::vector<T> out(in.size());
      const scalify::cast_stats s = scalify::convert_with_stats(
          std::span<const float>(in), std::span<T>(out), options_of(e.mode));
      const std::vector<std::uint32_t> actual_codes = codes_of(out);
      std::uint64_t bad = 0;
      std::string first;
      for (std::size_t i = 0; i < in.size(); ++i) {
        if (actual_codes[i] != e.codes[i] && bad++ < 5) {
          first += "\n  input " + hex(ref::bits_of(in[i]), 8) + " expected " +
                   hex(e.codes[i], digits) + " actual " + hex(actual_codes[i], digits);
        }
      }
      INFO(c.fmt().name << " convert_with_stats " << options_name(e.mode) << " path "
                        << path_name(p) << ", " << in.size() << " inputs: " << bad
                        << " code mismatches" << first);
      CHECK(bad == 0);
      CHECK(s.amax == e.all.amax);
      CHECK(s.overflow == e.all.overflow);
      CHECK(s.underflow == e.all.underflow);
      CHECK(s.nan == e.all.nan);
      // A short call (vector-loop tails only).
      std::vector<T> head(kHead);
      const scalify::cast_stats t = scalify::convert_with_stats(
          std::span<const float>(in.data(), kHead), std::span<T>(head), options_of(e.mode));
      CHECK(t.amax == e.head.amax);
      CHECK(t.overflow == e.head.overflow);
      CHECK(t.underflow == e.head.underflow);
      CHECK(t.nan == e.head.nan);
    }
  });
}

// Every length 0..140 at misalignments 0..4, in every mode, on every path;
// nothing is written outside the destination span.
template <class T>
void check_bulk_lengths_and_alignment() {
  const ref::codec c(ref_format<T>);
  const int digits = c.fmt().total_bits / 4;
  const std::vector<float> in = mixed_inputs(c, 4096, 99);
  const T guard = from_code<T>(0x5A);
  for_each_cpu_path([&](scalify::cpu_path p) {
    for (const ref::mode m : kAllModes) {
      const ref::float_segments table(c, m);
      std::uint64_t bad = 0;
      std::string first;
      for (std::size_t begin = 0; begin < 5; ++begin) {
        for (std::size_t len = 0; len <= 140; ++len) {
          std::vector<T> out(len + 2, guard);
          scalify::convert(std::span<const float>(in.data() + begin, len),
                           std::span<T>(out.data() + 1, len), options_of(m));
          for (std::size_t i = 0; i < len; ++i) {
            const std::uint32_t e = table.lookup(ref::bits_of(in[begin + i]));
            if (code_of(out[i + 1]) != e && bad++ == 0) {
              first = "input " + hex(ref::bits_of(in[begin + i]), 8) + " expected " +
                      hex(e, digits) + " actual " + hex(code_of(out[i + 1]), digits) + " (begin " +
                      std::to_string(begin) + ", length " + std::to_string(len) + ")";
            }
          }
          if ((code_of(out[0]) != 0x5A || code_of(out[len + 1]) != 0x5A) && bad++ == 0) {
            first = "wrote outside the span (begin " + std::to_string(begin) + ", length " +
                    std::to_string(len) + ")";
          }
        }
      }
      INFO(c.fmt().name << " convert " << options_name(m) << " path " << path_name(p) << ": " << bad
                        << " mismatches; first: " << first);
      CHECK(bad == 0);
    }
  });
}

// Bulk stochastic rounding: equals the reference rule and the scalar
// stochastic_cast with stochastic_bits(seed, offset + i); the same bytes
// however the array is split (each piece passing its start as offset), with
// or without saturate, on every path.
template <class T>
void check_bulk_stochastic() {
  const ref::codec c(ref_format<T>);
  const int digits = c.fmt().total_bits / 4;
  const std::vector<float> in = mixed_inputs(c, 200000, 7);
  constexpr std::uint64_t kSeed = 0x5EED'1234'ABCDull;
  constexpr std::uint64_t kOffset =
      (std::uint64_t{1} << 32) - 1000;  // crosses the 32-bit index boundary
  std::vector<std::uint32_t> expected(in.size());
  std::uint64_t scalar_bad = 0;
  std::string scalar_first;
  for (std::size_t i = 0; i < in.size(); ++i) {
    const std::uint32_t r = scalify::stochastic_bits(kSeed, kOffset + i);
    expected[i] = c.encode_stochastic(in[i], r);
    const std::uint32_t s = code_of(scalify::stochastic_cast<T>(in[i], r));
    if (s != expected[i] && scalar_bad++ < 5) {
      scalar_first += "\n  input " + hex(ref::bits_of(in[i]), 8) + " bits " + hex(r, 8) +
                      " expected " + hex(expected[i], digits) + " actual " + hex(s, digits);
    }
  }
  INFO(c.fmt().name << " scalar stochastic_cast: " << scalar_bad << " mismatches" << scalar_first);
  CHECK(scalar_bad == 0);

  scalify::convert_options o;
  o.round = scalify::rounding::stochastic;
  o.seed = kSeed;
  o.offset = kOffset;
  std::vector<std::vector<std::uint32_t>> per_path;
  for_each_cpu_path([&](scalify::cpu_path p) {
    std::vector<T> whole(in.size());
    scalify::convert(std::span<const float>(in), std::span<T>(whole), o);
    const std::vector<std::uint32_t> whole_codes = codes_of(whole);
    std::uint64_t bad = 0;
    std::string first;
    for (std::size_t i = 0; i < in.size(); ++i) {
      if (whole_codes[i] != expected[i] && bad++ < 5) {
        first += "\n  input " + hex(ref::bits_of(in[i]), 8) + " index " + std::to_string(i) +
                 " expected " + hex(expected[i], digits) + " actual " + hex(whole_codes[i], digits);
      }
    }
    INFO(c.fmt().name << " stochastic convert, path " << path_name(p) << ": " << bad
                      << " mismatches" << first);
    CHECK(bad == 0);
    // In random pieces, each with its own offset.
    std::mt19937_64 rng(static_cast<std::uint64_t>(p) + 1);
    std::vector<T> pieces(in.size());
    for (std::size_t begin = 0; begin < in.size();) {
      const std::size_t len = std::min<std::size_t>(in.size() - begin, rng() % 1000);
      scalify::convert_options piece = o;
      piece.offset = kOffset + begin;
      scalify::convert(std::span<const float>(in.data() + begin, len),
                       std::span<T>(pieces.data() + begin, len), piece);
      begin += len;
    }
    CHECK(codes_of(pieces) == whole_codes);
    // saturate = true changes nothing: stochastic rounding always saturates.
    scalify::convert_options sat = o;
    sat.saturate = true;
    std::vector<T> saturated(in.size());
    scalify::convert(std::span<const float>(in), std::span<T>(saturated), sat);
    CHECK(codes_of(saturated) == whole_codes);
    per_path.push_back(whole_codes);
  });
  for (const auto& v : per_path) CHECK(v == per_path.front());
}

}  // namespace scalify_test
