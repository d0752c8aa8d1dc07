// scalify::gemm (kernels/gemm.hpp): every CPU path this machine has (scalar,
// avx2, ...; the others are skipped with a warning) against a double-precision
// reference computed from the widened inputs, for every input type pair, both
// layouts, every transpose, alpha/beta, odd sizes, every epilogue option, amax;
// bit-exact agreement between paths, thread counts, the streaming M <= 4 path
// and packed B; the AVX-512F and AVX-512 BF16 micro-kernels at 16 lanes over a
// portable emulation (tests/support/f32_emulated.hpp); argument errors.
//
// Error bound. Products of the widened inputs are exact in float32 for every
// type but float32 itself (at most 11 + 11 significand bits); the kernels sum
// K of them in float32 with one rounding each (FMA), so with u = 2^-24
//   |acc - sum| <= K u sum_k |a_ik b_kj|                       (first order)
// and alpha, beta * C, bias add at most 4 more roundings:
//   |pre - exact| <= (K + 4) u (|alpha| S_ij + |beta C_ij| + |bias_j|),   S_ij = sum_k |a_ik||b_kj|
// (times 1.01 for the second-order terms). The BF16 path flushes denormal
// partial sums: + K 2^-126 |alpha|. GELU is 1.13-Lipschitz and its float32
// evaluation adds ~8 u |v|; the final cast adds half an ulp of the output
// format (u_out |v|) plus its smallest subnormal.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "scalify/kernels/gemm.hpp"
#include "scalify/kernels/gemv.hpp"  // kGemvPrefetchBytes
#include "scalify/kernels/thread_pool.hpp"  // thread_pool::worker_tasks
#include "scalify/ops/matmul.hpp"
#include "support/activation_ref.hpp"
#include "support/eventually.hpp"
#include "support/f32_emulated.hpp"

#if SCALIFY_HAVE_X86_SIMD
#include <xmmintrin.h>  // _mm_getcsr, _mm_setcsr
#endif

using scalify::activation;
using scalify::bfloat16;
using scalify::cpu_path;
using scalify::float16;
using scalify::float8_e4m3fn;
using scalify::float8_e5m2;
using scalify::layout;
using scalify::trans;
using index_t = std::ptrdiff_t;

namespace {

// ------------------------------------------------------------------------------
// Helpers

template <class T>
const char* type_name() {
  if constexpr (std::is_same_v<T, float8_e4m3fn>) return "e4m3fn";
  if constexpr (std::is_same_v<T, float8_e5m2>) return "e5m2";
  if constexpr (std::is_same_v<T, float16>) return "float16";
  if constexpr (std::is_same_v<T, bfloat16>) return "bfloat16";
  if constexpr (std::is_same_v<T, float>) return "float32";
  return "?";
}

template <class T>
T from_float(float x) {
  if constexpr (std::is_same_v<T, float>) {
    return x;
  } else {
    return scalify::saturate_cast<T>(x);
  }
}

/// A matrix stored with a given layout and leading-dimension padding.
template <class T>
struct mat {
  std::vector<T> buf;
  index_t rows = 0, cols = 0, ld = 0;
  layout order = layout::row_major;

  mat(index_t r, index_t c, layout o, index_t pad) : rows(r), cols(c), order(o) {
    ld = (o == layout::row_major ? c : r) + pad;
    const index_t outer = o == layout::row_major ? r : c;
    buf.assign(static_cast<std::size_t>(std::max<index_t>(outer * ld, 1)), from_float<T>(0.0f));
  }
  T& at(index_t i, index_t j) { return order == layout::row_major ? buf[i * ld + j] : buf[i + j * ld]; }
  const T& at(index_t i, index_t j) const {
    return order == layout::row_major ? buf[i * ld + j] : buf[i + j * ld];
  }
  double value(index_t i, index_t j) const { return static_cast<double>(static_cast<float>(at(i, j))); }
  scalify::matrix_view<const T> view() const { return {buf.data(), rows, cols, ld, order}; }
  scalify::matrix_view<T> mview() { return {buf.data(), rows, cols, ld, order}; }
};

template <class T>
mat<T> random_mat(index_t r, index_t c, layout o, index_t pad, std::mt19937& rng, float scale = 1.0f) {
  mat<T> m(r, c, o, pad);
  std::normal_distribution<float> d(0.0f, scale);
  for (index_t i = 0; i < r; ++i) {
    for (index_t j = 0; j < c; ++j) m.at(i, j) = from_float<T>(d(rng));
  }
  return m;
}

template <class T>
uint32_t bits_of(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return std::bit_cast<uint32_t>(x);
  } else {
    return scalify::detail::to_code(x);
  }
}

/// `size` values whose codes run 0, 1, ..., codes - 1, 0, 1, ... (every code of T);
/// with skip_nan, e4m3fn's NaN codes 0x7F and 0xFF are left out of the cycle.
template <class T>
std::vector<T> cycled_codes(index_t size, int codes, bool skip_nan = false) {
  std::vector<uint32_t> cycle;
  for (uint32_t c = 0; c < uint32_t(codes); ++c) {
    if (!(skip_nan && (c & 0x7Fu) == 0x7Fu)) cycle.push_back(c);
  }
  std::vector<T> v(static_cast<std::size_t>(size));
  for (std::size_t q = 0; q < v.size(); ++q) v[q] = scalify::detail::from_code<T>(cycle[q % cycle.size()]);
  return v;
}

template <class T>
double unit_roundoff_of() {
  if constexpr (std::is_same_v<T, float>) {
    return 0.0;  // the accumulator's own rounding is in the K term
  } else {
    return std::ldexp(1.0, -std::numeric_limits<T>::digits);
  }
}

/// Runs f(path) under scoped_cpu_path for every path; warns about missing ones.
template <class F>
void for_each_path(F&& f) {
  for (cpu_path p : scalify::all_cpu_paths) {
    if (!scalify::cpu_supports(p)) {
      WARN("skipping CPU path " << scalify::to_string(p) << ": this CPU does not support it");
      continue;
    }
    scalify::scoped_cpu_path guard(p);
    f(p);
  }
}

struct case_desc {
  index_t m, n, k;
  layout la = layout::row_major, lb = layout::row_major, lc = layout::row_major;
  trans ta = trans::no, tb = trans::no;
  index_t pad = 0;
  float alpha = 1.0f, beta = 0.0f;
  bool bias = false;
  activation act = activation::none;
  bool saturate = false;
  int threads = 0;
  float scale_a = 1.0f, scale_b = 1.0f;
  uint32_t seed = 1;
  bool prepack = false;
};

std::string describe(const case_desc& d) {
  return std::to_string(d.m) + "x" + std::to_string(d.n) + "x" + std::to_string(d.k) +
         (d.la == layout::row_major ? " A:row" : " A:col") + (d.lb == layout::row_major ? " B:row" : " B:col") +
         (d.lc == layout::row_major ? " C:row" : " C:col") + (d.ta == trans::yes ? " A^T" : "") +
         (d.tb == trans::yes ? " B^T" : "") + " pad " + std::to_string(d.pad) + " alpha " +
         std::to_string(d.alpha) + " beta " + std::to_string(d.beta) + (d.bias ? " bias" : "") + " act " +
         std::to_string(int(d.act)) + (d.saturate ? " saturate" : "") + " threads " + std::to_string(d.threads) +
         (d.prepack ? " prepacked" : "");
}

/// C's float32 bits, every NaN as one pattern (paths may give NaN different payloads).
std::vector<uint32_t> nan_canonical_bits(const std::vector<float>& c) {
  std::vector<uint32_t> bits;
  bits.reserve(c.size());
  for (float x : c) bits.push_back(std::isnan(x) ? 0x7FC00000u : std::bit_cast<uint32_t>(x));
  return bits;
}

/// Runs one gemm on the active path and checks it against the double
/// reference; returns C's element codes (row-major order) for bit-exact
/// comparisons between runs.
template <class TA, class TB, class TC>
std::vector<uint32_t> run_case(const case_desc& d) {
  std::mt19937 rng(d.seed);
  const index_t ar = d.ta == trans::no ? d.m : d.k, ac = d.ta == trans::no ? d.k : d.m;
  const index_t br = d.tb == trans::no ? d.k : d.n, bc = d.tb == trans::no ? d.n : d.k;
  const auto a = random_mat<TA>(ar, ac, d.la, d.pad, rng, d.scale_a);
  const auto b = random_mat<TB>(br, bc, d.lb, d.pad, rng, d.scale_b);
  auto c = random_mat<TC>(d.m, d.n, d.lc, d.pad, rng);
  const auto c0 = c;
  std::vector<float> bias;
  if (d.bias) {
    std::normal_distribution<float> nd;
    for (index_t j = 0; j < d.n; ++j) bias.push_back(nd(rng));
  }
  float amax = -1.0f;
  scalify::gemm_options o{.trans_a = d.ta, .trans_b = d.tb, .alpha = d.alpha, .beta = d.beta, .bias = bias,
                          .act = d.act, .saturate = d.saturate, .amax = &amax, .threads = d.threads};
  if (d.prepack) {
    const scalify::packed_matrix pb(b.view(), d.tb);
    o.trans_b = trans::no;
    scalify::gemm(a.view(), pb, c.mview(), o);
  } else {
    scalify::gemm(a.view(), b.view(), c.mview(), o);
  }

  auto opa = [&](index_t i, index_t q) { return d.ta == trans::no ? a.value(i, q) : a.value(q, i); };
  auto opb = [&](index_t q, index_t j) { return d.tb == trans::no ? b.value(q, j) : b.value(j, q); };
  const double u = std::ldexp(1.0, -24), u_out = unit_roundoff_of<TC>();
  const double out_max = static_cast<double>(static_cast<float>(std::numeric_limits<TC>::max()));
  const double out_denorm = std::is_same_v<TC, float> ? 1e-40 : double(float(std::numeric_limits<TC>::denorm_min()));
  std::vector<uint32_t> codes;
  codes.reserve(static_cast<std::size_t>(d.m * d.n));
  double c_amax = 0.0;
  int bad = 0;
  for (index_t i = 0; i < d.m; ++i) {
    for (index_t j = 0; j < d.n; ++j) {
      double s = 0, sabs = 0;
      for (index_t q = 0; q < d.k; ++q) {
        const double p = opa(i, q) * opb(q, j);
        s += p;
        sabs += std::abs(p);
      }
      const double c_old = d.beta != 0.0f ? c0.value(i, j) : 0.0;
      const double bj = d.bias ? double(bias[static_cast<std::size_t>(j)]) : 0.0;
      const double pre = double(d.alpha) * s + double(d.beta) * c_old + bj;
      double e = 1.01 * double(d.k + 4) * u * (std::abs(double(d.alpha)) * sabs + std::abs(d.beta * c_old) + std::abs(bj)) +
                 double(d.k) * std::ldexp(1.0, -126) * std::abs(double(d.alpha));
      double post = scalify_test::activation_ref(pre, d.act);
      if (d.act == activation::gelu_tanh) e = 1.13 * e + 8 * u * std::abs(pre) + 1e-37;
      if (d.saturate) post = std::clamp(post, -out_max, out_max);
      const double tol = e * (1 + 2 * u_out) + u_out * std::abs(post) + out_denorm;
      const double got = static_cast<double>(static_cast<float>(c.at(i, j)));
      // amax: stored values, NaN skipped unless it is an overflow (a NaN from a non-NaN value): +inf.
      c_amax = std::max(c_amax, std::isnan(got) && !std::isnan(post) ? HUGE_VAL : std::abs(got));
      codes.push_back(bits_of(c.at(i, j)));
      if (!(std::abs(got - post) <= tol) && bad++ < 5) {
        FAIL_CHECK(type_name<TA>() << " x " << type_name<TB>() << " -> " << type_name<TC>() << ", path "
                                   << scalify::to_string(scalify::active_cpu_path()) << ", " << describe(d)
                                   << ": C(" << i << ", " << j << ") = " << got << ", expected " << post
                                   << " +- " << tol);
      }
    }
  }
  CHECK(bad == 0);
  CHECK(double(amax) == c_amax);
  // Padding of C (beyond rows/cols) untouched: compare the whole buffer outside the matrix.
  if (d.pad > 0) {
    bool padding_ok = true;
    for (std::size_t t = 0; t < c.buf.size(); ++t) {
      const index_t outer = static_cast<index_t>(t) / c.ld, inner = static_cast<index_t>(t) % c.ld;
      const index_t inner_size = d.lc == layout::row_major ? d.n : d.m;
      const index_t outer_size = d.lc == layout::row_major ? d.m : d.n;
      if (inner >= inner_size || outer >= outer_size) padding_ok &= bits_of(c.buf[t]) == bits_of(c0.buf[t]);
    }
    CHECK(padding_ok);
  }
  return codes;
}

/// Whether a case takes the streaming path's dot-product form on a SIMD path
/// (M <= 4, op(B)'s columns contiguous and its rows not): another summation order.
bool uses_dot_form(const case_desc& d) {
  if (d.m > 4 || d.prepack) return false;
  const index_t br = d.tb == trans::no ? d.k : d.n, bc = d.tb == trans::no ? d.n : d.k;
  const index_t ld = (d.lb == layout::row_major ? bc : br) + d.pad;
  index_t rs = d.lb == layout::row_major ? ld : 1, cs = d.lb == layout::row_major ? 1 : ld;
  if (d.tb == trans::yes) std::swap(rs, cs);
  return cs != 1 && rs == 1;
}

/// Runs a case on every path; checks each against the reference and the
/// f32-kernel paths against each other bit for bit (the avx512bf16 kernel
/// sums in another order: bound only).
template <class TA, class TB, class TC>
void run_all_paths(const case_desc& d) {
  std::vector<uint32_t> first;
  for_each_path([&](cpu_path p) {
    auto codes = run_case<TA, TB, TC>(d);
    const bool same_order = (p != cpu_path::avx512bf16 || !(scalify::kernels::kExactInBf16<TA> && scalify::kernels::kExactInBf16<TB>)) &&
                            (p == cpu_path::scalar || !uses_dot_form(d));
    if (first.empty()) {
      first = std::move(codes);
    } else if (same_order) {
      INFO(type_name<TA>() << " x " << type_name<TB>() << " -> " << type_name<TC>() << ", " << describe(d)
                           << ", path " << scalify::to_string(p) << " vs scalar");
      CHECK(codes == first);
    }
  });
}

template <class F>
void for_each_input_type(F&& f) {
  f(float8_e4m3fn{});
  f(float8_e5m2{});
  f(float16{});
  f(bfloat16{});
  f(float{});
}

const index_t kOddSizes[] = {1, 2, 3, 7, 15, 17, 31, 33, 63, 65, 127, 129, 255, 257};

}  // namespace

// ------------------------------------------------------------------------------
// Against the double reference, on every path

TEST_CASE("gemm: every input type pair and odd shapes, every path, vs double reference", "[kernels][gemm]") {
  const case_desc shapes[] = {{1, 1, 1}, {2, 3, 7}, {7, 15, 17}, {17, 31, 33}, {33, 65, 63}, {65, 17, 129}, {5, 40, 3}};
  uint32_t seed = 1;
  for_each_input_type([&](auto a) {
    for_each_input_type([&](auto b) {
      for (case_desc d : shapes) {
        d.seed = seed++;
        run_all_paths<decltype(a), decltype(b), float>(d);
      }
    });
  });
}

TEST_CASE("gemm: sizes 1..257 in each dimension", "[kernels][gemm]") {
  uint32_t seed = 100;
  for (index_t s : kOddSizes) {
    run_all_paths<float8_e4m3fn, float8_e4m3fn, float>({.m = s, .n = 33, .k = 31, .seed = seed++});
    run_all_paths<float8_e5m2, float8_e4m3fn, float>({.m = 31, .n = s, .k = 17, .seed = seed++});
    run_all_paths<float8_e4m3fn, float8_e5m2, float>({.m = 17, .n = 15, .k = s, .seed = seed++});
    run_all_paths<float, float, float>({.m = s, .n = s, .k = std::min<index_t>(s, 65), .seed = seed++});
  }
  run_all_paths<float8_e4m3fn, float8_e4m3fn, float>({.m = 257, .n = 255, .k = 257, .seed = seed++});
  run_all_paths<float, float8_e4m3fn, float>({.m = 129, .n = 257, .k = 600, .seed = seed++});  // several KC blocks
}

TEST_CASE("gemm: both layouts, every transpose, leading dimensions, C col-major", "[kernels][gemm]") {
  uint32_t seed = 200;
  for (layout la : {layout::row_major, layout::col_major}) {
    for (layout lb : {layout::row_major, layout::col_major}) {
      for (trans ta : {trans::no, trans::yes}) {
        for (trans tb : {trans::no, trans::yes}) {
          for (layout lc : {layout::row_major, layout::col_major}) {
            case_desc d{17, 33, 65, la, lb, lc, ta, tb, 3};
            d.seed = seed++;
            run_all_paths<float8_e4m3fn, float8_e5m2, float>(d);
            d.m = 3;  // the streaming path where op(B) has contiguous rows
            run_all_paths<float, float16, bfloat16>(d);
          }
        }
      }
    }
  }
}

TEST_CASE("gemm: epilogue (alpha, beta, bias, relu, gelu, every output type, saturation) and amax", "[kernels][gemm]") {
  uint32_t seed = 300;
  for (activation act : {activation::none, activation::relu, activation::gelu_tanh}) {
    for (bool bias : {false, true}) {
      for (float beta : {0.0f, 1.0f, -0.5f}) {
        for (index_t m : {3, 29}) {  // streaming and blocked
          case_desc d{.m = m, .n = 37, .k = 45, .alpha = 0.25f, .beta = beta, .bias = bias, .act = act};
          d.seed = seed++;
          d.pad = 1;
          run_all_paths<float8_e4m3fn, float8_e4m3fn, float>(d);
          run_all_paths<float8_e4m3fn, float8_e5m2, float16>(d);
          run_all_paths<float8_e5m2, bfloat16, bfloat16>(d);
          run_all_paths<float16, float8_e4m3fn, float8_e4m3fn>(d);
          run_all_paths<float, float8_e5m2, float8_e5m2>(d);
        }
      }
    }
  }
}

TEST_CASE("gemm: saturating and non-saturating narrow outputs", "[kernels][gemm]") {
  // Large inputs: sums reach thousands, beyond e4m3fn's 448.
  for (index_t m : {2, 20}) {
    case_desc d{.m = m, .n = 19, .k = 64, .saturate = true, .scale_a = 8.0f, .scale_b = 8.0f, .seed = 7};
    run_all_paths<float8_e4m3fn, float8_e4m3fn, float8_e4m3fn>(d);
    d.scale_a = d.scale_b = 200.0f;
    run_all_paths<float8_e5m2, float8_e5m2, float8_e5m2>(d);
    run_all_paths<float16, float16, float16>(d);
  }
  // Without saturation an overflow becomes NaN (e4m3fn) or inf (e5m2); amax reports both as inf.
  const std::vector<float> ones(64, 1.0f);
  std::vector<float8_e4m3fn> big(64, float8_e4m3fn(448.0f));
  std::vector<float8_e4m3fn> out(1);
  std::vector<float8_e5m2> out5(1);
  for_each_path([&](cpu_path) {
    for (index_t m : {1, 5}) {
      std::vector<float8_e4m3fn> outm(static_cast<std::size_t>(m));
      std::vector<float8_e4m3fn> am(static_cast<std::size_t>(m * 64), float8_e4m3fn(448.0f));
      float amax = -1;
      scalify::gemm(scalify::row_major_view(am.data(), m, 64), scalify::row_major_view(ones.data(), 64, 1),
                    scalify::row_major_view(outm.data(), m, 1), {.amax = &amax});
      CHECK(std::isnan(float(outm[0])));
      CHECK(amax == std::numeric_limits<float>::infinity());  // the overflow is reported, not skipped
      scalify::gemm(scalify::row_major_view(am.data(), m, 64), scalify::row_major_view(ones.data(), 64, 1),
                    scalify::row_major_view(outm.data(), m, 1), {.saturate = true, .amax = &amax});
      CHECK(float(outm[0]) == 448.0f);
      CHECK(amax == 448.0f);
    }
    scalify::gemm(scalify::row_major_view(big.data(), 1, 64), scalify::row_major_view(ones.data(), 64, 1),
                  scalify::row_major_view(out5.data(), 1, 1), {.alpha = 1000.0f});
    CHECK(std::isinf(float(out5[0])));
  });
}

TEST_CASE("gemm: zero sizes and K = 0", "[kernels][gemm]") {
  for_each_path([&](cpu_path) {
    run_case<float8_e4m3fn, float8_e4m3fn, float>({0, 5, 3});
    run_case<float8_e4m3fn, float8_e4m3fn, float>({5, 0, 3});
    run_case<float8_e4m3fn, float8_e4m3fn, float>({.m = 7, .n = 9, .k = 0, .beta = 0.5f, .bias = true});
    run_case<float8_e4m3fn, float8_e4m3fn, float>({.m = 2, .n = 9, .k = 0, .beta = 0.5f, .bias = true});
  });
}

TEST_CASE("gemm: K = 0 with null A and B gives the epilogue of zero, on every path", "[kernels][gemm]") {
  for_each_path([&](cpu_path) {
    for (index_t m : {1, 3, 7, 40}) {
      const index_t n = 21;
      std::vector<float> c(static_cast<std::size_t>(m * n)), bias(static_cast<std::size_t>(n));
      for (std::size_t i = 0; i < c.size(); ++i) c[i] = static_cast<float>(i % 7) - 3.0f;
      for (std::size_t j = 0; j < bias.size(); ++j) bias[j] = 0.25f * static_cast<float>(j);
      const std::vector<float> c_old = c;
      float amax = -1.0f;
      scalify::gemm(scalify::row_major_view<const float8_e4m3fn>(nullptr, m, 0),
                    scalify::row_major_view<const float8_e5m2>(nullptr, 0, n), scalify::row_major_view(c.data(), m, n),
                    {.beta = 0.5f, .bias = bias, .act = activation::relu, .amax = &amax});
      double expected_amax = 0;
      for (index_t i = 0; i < m; ++i) {
        for (index_t j = 0; j < n; ++j) {
          const auto at = static_cast<std::size_t>(i * n + j);
          const double want = std::max(0.0, 0.5 * c_old[at] + bias[static_cast<std::size_t>(j)]);  // exact here
          CHECK(c[at] == want);
          expected_amax = std::max(expected_amax, want);
        }
      }
      CHECK(amax == expected_amax);
    }
  });
}

// ------------------------------------------------------------------------------
// Overlap of C with A or B

TEST_CASE("gemm: overlap() agrees with a byte-by-byte reference on random strided views", "[kernels][gemm]") {
  namespace gi = scalify::detail::gemm_impl;
  std::mt19937 rng(1234);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  constexpr int kArena = 512;
  int overlapping = 0, disjoint = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    gi::byte_runs v[2];
    std::vector<bool> bytes[2];
    for (auto& b : bytes) b.assign(kArena, false);
    for (int w = 0; w < 2; ++w) {
      const int count = pick(1, 8), len = pick(1, 24), stride = len + pick(0, 30) * (count > 1);
      const int start = pick(0, kArena - 1 - (count - 1) * stride - len);
      if (start < 0) {
        --w;
        continue;
      }
      v[w] = {static_cast<std::uintptr_t>(0x10000 + start), count, len, stride};
      for (int t = 0; t < count; ++t) {
        for (int q = 0; q < len; ++q) bytes[w][static_cast<std::size_t>(start + t * stride + q)] = true;
      }
    }
    bool expected = false;
    for (int q = 0; q < kArena; ++q) expected = expected || (bytes[0][q] && bytes[1][q]);
    (expected ? overlapping : disjoint)++;
    if (gi::overlap(v[0], v[1]) != expected) {
      FAIL("runs (" << v[0].begin << ", " << v[0].count << ", " << v[0].bytes << ", " << v[0].stride << ") and ("
                    << v[1].begin << ", " << v[1].count << ", " << v[1].bytes << ", " << v[1].stride
                    << "): expected overlap " << expected);
    }
  }
  CHECK(overlapping > 1000);  // both outcomes well covered
  CHECK(disjoint > 1000);
}

TEST_CASE("gemm: C overlapping A or B throws; interleaved but disjoint views are fine", "[kernels][gemm]") {
  const index_t n = 256;
  std::vector<float> x(static_cast<std::size_t>(n * n), 0.5f), y(static_cast<std::size_t>(n * n), 0.25f);
  auto view = [&](std::vector<float>& v, index_t off = 0) { return scalify::row_major_view(v.data() + off, n, n); };
  using Catch::Contains;
  CHECK_THROWS_WITH(scalify::gemm(view(x), view(y), view(x), {.threads = 2}), Contains("overlaps A"));
  CHECK_THROWS_WITH(scalify::gemm(view(y), view(x), view(x)), Contains("overlaps B"));
  // C starting in the last row of A (one row shared), C as a column-major view of A's storage.
  std::vector<float> big(static_cast<std::size_t>(2 * n * n));
  CHECK_THROWS_AS(scalify::gemm(view(big), view(y), view(big, (n - 1) * n)), std::invalid_argument);
  CHECK_THROWS_AS(scalify::gemm(view(x), view(y), scalify::col_major_view(x.data(), n, n)), std::invalid_argument);
  // e4m3fn A inside a float C's bytes (different element sizes).
  std::vector<float> raw(static_cast<std::size_t>(n * n));
  auto* a8 = reinterpret_cast<float8_e4m3fn*>(raw.data() + n * n / 2);
  CHECK_THROWS_AS(scalify::gemm(scalify::row_major_view(a8, 8, n), view(y),
                                scalify::row_major_view(raw.data(), n, n)), std::invalid_argument);
  // With a packed B, A is still checked.
  const scalify::packed_matrix packed(view(y));
  CHECK_THROWS_WITH(scalify::gemm(view(x), packed, view(x)), Contains("overlaps A"));
  // Left and right halves of one row-major matrix: A = [X | .], C = [. | X]: byte
  // ranges interleave, elements do not. Allowed, and the same as with separate storage.
  const index_t k = 64, m = 50, nn = 64;
  std::vector<float> shared(static_cast<std::size_t>(m * (k + nn)));
  for (std::size_t i = 0; i < shared.size(); ++i) shared[i] = static_cast<float>(i % 5) - 2.0f;
  std::vector<float> b(static_cast<std::size_t>(k * nn));
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(i % 3) - 1.0f;
  std::vector<float> a_copy(static_cast<std::size_t>(m * k)), c_ref(static_cast<std::size_t>(m * nn));
  for (index_t i = 0; i < m; ++i) {
    for (index_t q = 0; q < k; ++q) {
      a_copy[static_cast<std::size_t>(i * k + q)] = shared[static_cast<std::size_t>(i * (k + nn) + q)];
    }
  }
  scalify::gemm(scalify::row_major_view(a_copy.data(), m, k), scalify::row_major_view(b.data(), k, nn),
                scalify::row_major_view(c_ref.data(), m, nn));
  REQUIRE_NOTHROW(scalify::gemm(scalify::row_major_view(shared.data(), m, k, k + nn),
                                scalify::row_major_view(b.data(), k, nn),
                                scalify::row_major_view(shared.data() + k, m, nn, k + nn)));
  for (index_t i = 0; i < m; ++i) {
    for (index_t j = 0; j < nn; ++j) {
      CHECK(shared[static_cast<std::size_t>(i * (k + nn) + k + j)] == c_ref[static_cast<std::size_t>(i * nn + j)]);
    }
  }
}

// ------------------------------------------------------------------------------
// Bit-exact agreements

TEST_CASE("gemm: same bits for 1 and 2 threads, packed and unpacked B, streaming and blocked", "[kernels][gemm][threads]") {
  for_each_path([&](cpu_path) {
    for (index_t m : {1, 2, 3, 4, 5, 50}) {
      case_desc d{.m = m, .n = 300, .k = 257, .bias = true, .act = activation::relu, .seed = uint32_t(m)};
      const auto one = run_case<float8_e4m3fn, float8_e5m2, float>({.m = d.m, .n = d.n, .k = d.k, .bias = true, .act = d.act, .threads = 1, .seed = d.seed});
      const auto two = run_case<float8_e4m3fn, float8_e5m2, float>({.m = d.m, .n = d.n, .k = d.k, .bias = true, .act = d.act, .threads = 2, .seed = d.seed});
      CHECK(one == two);
      case_desc p = d;
      p.prepack = true;
      CHECK(run_case<float8_e4m3fn, float8_e5m2, float>(p) == one);
      // B column-major: the blocked GEMM (M > 4, same bits) or, for M <= 4 on a
      // SIMD path, the dot-product form (another order: checked against the bound only).
      case_desc col = d;
      col.lb = layout::col_major;
      const auto col_codes = run_case<float8_e4m3fn, float8_e5m2, float>(col);
      if (!uses_dot_form(col) || scalify::active_cpu_path() == cpu_path::scalar) CHECK(col_codes == one);
    }
  });
}

TEST_CASE("gemm: called from several user threads at once (one shared pool) gives the 1-thread bits",
          "[kernels][gemm][threads]") {
  // The pool serves one run at a time; a caller that finds it busy runs its
  // tasks itself. Each user thread also switches the CPU path under a guard.
  case_desc d{.m = 40, .n = 300, .k = 129, .beta = 0.5f, .bias = true, .act = activation::relu, .threads = 1,
              .seed = 77};
  const auto one = [&] {
    scalify::scoped_cpu_path scalar(cpu_path::scalar);
    return run_case<float8_e4m3fn, float8_e5m2, float>(d);
  }();
  std::vector<cpu_path> paths;
  for (cpu_path p : scalify::all_cpu_paths) {
    if (scalify::cpu_supports(p)) paths.push_back(p);
  }
  std::atomic<int> mismatches{0};
  auto user = [&](std::size_t offset) {
    for (std::size_t i = 0; i < 12; ++i) {
      case_desc mine = d;
      mine.threads = 2;
      mine.prepack = i % 2 == 1;
      // Paths other than the current one may sum in another order (avx512bf16):
      // compare each path's result with that path's own 1-thread result.
      const cpu_path p = paths[(i + offset) % paths.size()];
      scalify::scoped_cpu_path guard(p);
      mine.threads = 1;
      const auto ref = run_case<float8_e4m3fn, float8_e5m2, float>(mine);
      mine.threads = 2;
      if (run_case<float8_e4m3fn, float8_e5m2, float>(mine) != ref) ++mismatches;
      if (p == cpu_path::scalar && ref != one) ++mismatches;
    }
  };
  std::thread a(user, 0), b(user, 1), c(user, 2);
  user(3);
  a.join();
  b.join();
  c.join();
  CHECK(mismatches == 0);
}

TEST_CASE("gemm: B packed one KC slab at a time (long K, several NC blocks) gives the 1-thread bits",
          "[kernels][gemm][threads]") {
  // K = 2100: 5 KC passes, each packing a slab of B right before its use;
  // 600 columns make 3 NC blocks (the last partial). 7 and 30 rows: the
  // columns split between 2 threads, each packing its own slabs.
  for_each_path([&](cpu_path) {
    for (const index_t m : {7, 30}) {
      case_desc d{.m = m, .n = 600, .k = 2100, .bias = true, .act = activation::relu, .threads = 1,
                  .seed = uint32_t(40 + m)};
      const auto one = run_case<float8_e4m3fn, float8_e5m2, float>(d);
      d.threads = 2;
      CHECK(run_case<float8_e4m3fn, float8_e5m2, float>(d) == one);
      d.prepack = true;
      CHECK(run_case<float8_e4m3fn, float8_e5m2, float>(d) == one);
    }
  });
}

TEST_CASE("gemm: B with contiguous columns (W^T, pack_b_f32_cols) gives the bits of the same B row-major",
          "[kernels][gemm][threads]") {
  // The backward pass's dx = dy W^T: op(B) stored column-major (b.rs == 1),
  // every B type, a float32 A (the float32 kernel, packing::f32, on every
  // path); M > 4, the blocked GEMM. Odd N (a partial last panel), odd K, 1
  // and 2 threads (rows or columns split), B packed in slabs (K = 600: three
  // KC passes, slabs of units from inside K) or prepacked whole. Same values,
  // same packed panels: the same bits as B row-major.
  struct shape {
    index_t m, n, k;
  };
  auto check = [](auto tag) {
    using TB = decltype(tag);
    for_each_path([&](cpu_path p) {
      uint32_t seed = 70;
      for (const shape s : {shape{13, 37, 45}, shape{40, 300, 129}, shape{30, 301, 600}}) {
        for (const int threads : {1, 2}) {
          for (const bool prepack : {false, true}) {
            // avx512bf16 prepacks a B exact in bfloat16 as pairs, for an A of those types only.
            if (prepack && p == cpu_path::avx512bf16 && scalify::kernels::kExactInBf16<TB>) continue;
            case_desc d{.m = s.m, .n = s.n, .k = s.k, .pad = 3, .bias = true, .threads = threads, .seed = seed++};
            d.prepack = prepack;
            const auto rows = run_case<float, TB, float>(d);
            d.lb = layout::col_major;
            INFO(type_name<TB>() << ", path " << scalify::to_string(p) << ", " << describe(d));
            CHECK(run_case<float, TB, float>(d) == rows);
          }
        }
      }
    });
  };
  for_each_input_type(check);
}

TEST_CASE("gemm: rows in several groups (B packed again for each) give the same bits", "[kernels][gemm][threads]") {
  // 2100 rows: more than one packing of B serves when K is short (1024 rows
  // for a float8 B), so 1 thread takes them in three groups, 2 threads split
  // the rows and take two groups each; a prepacked B is read whole, on 1 and
  // 2 threads.
  // 2099: a short panel as well (AVX2: 349 x 6 + 1 x 5, 175 panels per
  // thread on 2).
  case_desc d{.m = 2100, .n = 40, .k = 600, .beta = 0.5f, .bias = true, .threads = 1, .seed = 60};
  for (const index_t m : {2100, 2099}) {
    d.m = m;
    for_each_path([&](cpu_path) {
      d.threads = 1;
      d.prepack = false;
      const auto groups = run_case<float8_e4m3fn, float8_e5m2, float>(d);
      d.threads = 2;
      CHECK(run_case<float8_e4m3fn, float8_e5m2, float>(d) == groups);
      d.prepack = true;
      CHECK(run_case<float8_e4m3fn, float8_e5m2, float>(d) == groups);
      d.threads = 1;
      CHECK(run_case<float8_e4m3fn, float8_e5m2, float>(d) == groups);
    });
  }
}

TEST_CASE("gemm: 2 threads (rows or columns split, B prepacked or not) give the 1-thread bits",
          "[kernels][gemm][threads]") {
  // Tall (rows split), wide (columns split), a long K (several KC passes), one
  // row panel (columns split whatever the cost), with every epilogue option.
  // Narrow ones split the rows with short panels (MR - 1 rows). On AVX2: 128
  // and 43 as even row ranges, each cut on its own (64 + 64: 9 x 6 + 2 x 5
  // each; 21 + 22), 26 and 121 as whole panels of the whole (6 + 5 | 5 + 5 +
  // 5, where 13 + 13 would pad to 18 + 18; 10 x 6 | 6 x 6 + 5 x 5), the
  // second thread starting past the full panels. On AVX-512: 121 as 5 | 6
  // panels of 11 rows, 128 as 7 x 12 + 4 x 11 split 5 | 6.
  struct shape {
    index_t m, n, k;
  };
  for_each_path([&](cpu_path) {
    uint32_t seed = 900;
    for (const shape s : {shape{300, 40, 129}, shape{40, 300, 129}, shape{30, 40, 1000}, shape{6, 700, 300},
                          shape{128, 16, 300}, shape{43, 16, 1500}, shape{121, 16, 1100}, shape{26, 16, 200}}) {
      for (const bool prepack : {false, true}) {
        case_desc d{.m = s.m, .n = s.n, .k = s.k, .beta = 0.5f, .bias = true, .act = activation::relu, .seed = seed++};
        d.prepack = prepack;
        d.threads = 1;
        const auto one = run_case<float8_e4m3fn, float8_e5m2, float>(d);
        d.threads = 2;
        CHECK(run_case<float8_e4m3fn, float8_e5m2, float>(d) == one);
        d.act = activation::gelu_tanh;  // the tile + epilogue route
        case_desc g{.m = s.m, .n = s.n, .k = s.k, .act = d.act, .threads = 1, .seed = d.seed};
        const auto gelu_one = run_case<float8_e4m3fn, bfloat16, float16>(g);
        g.threads = 2;
        CHECK(run_case<float8_e4m3fn, bfloat16, float16>(g) == gelu_one);
      }
    }
  });
}

#if SCALIFY_HAVE_X86_SIMD
// The pool's workers compute under the caller's MXCSR (kernels/thread_pool.hpp):
// with round toward zero, FTZ and DAZ, or rounding up, the 2-thread product
// is the 1-thread one. Float inputs around 2^-66 make products and sums
// subnormal (flushed, or read as zero, under FTZ and DAZ).
TEST_CASE("gemm: 2 threads under the caller's MXCSR (rounding, FTZ, DAZ) give the 1-thread bits",
          "[kernels][gemm][threads]") {
  if (std::thread::hardware_concurrency() < 2) {
    WARN("one hardware thread: nothing to compare");
    return;
  }
  struct shape {
    index_t m, n, k;
  };
  const unsigned original = _mm_getcsr();
  std::mt19937 rng(77);
  for (const shape s : {shape{96, 200, 300}, shape{2, 2048, 1024}}) {  // blocked; streaming (columns split)
    const auto a = random_mat<float>(s.m, s.k, layout::row_major, 0, rng, 0x1p-66f);
    const auto b = random_mat<float>(s.k, s.n, layout::row_major, 0, rng, 0x1p-66f);
    for (const unsigned modes : {0xE040u, 0x4000u}) {
      const unsigned csr = (original & ~0xE07Fu) | modes;
      INFO("m " << s.m << " MXCSR 0x" << std::hex << csr);
      auto product = [&](int threads) {
        std::vector<float> c(static_cast<std::size_t>(s.m * s.n));
        _mm_setcsr(csr);
        scalify::gemm(a.view(), b.view(), scalify::row_major_view(c.data(), s.m, s.n), {.threads = threads});
        _mm_setcsr(original);
        return nan_canonical_bits(c);
      };
      const auto one = product(1);
      auto& pool = scalify::kernels::thread_pool::instance();
      // A worker slow to wake may find no task left: attempts until one takes
      // some; every attempt's bits must be the 1-thread ones.
      int differ = 0;
      CHECK(scalify_test::eventually([&] {
        const uint64_t before = pool.worker_tasks();
        differ += product(2) != one;
        return pool.worker_tasks() != before;
      }));
      CHECK(differ == 0);
    }
  }
}
#endif

TEST_CASE("gemm: packing widens every code exactly, on every path (A panels and B panels)", "[kernels][gemm]") {
  // Each code once in a 6-row A (the AVX2 transposing packer; the generic one
  // for other tiles) and in an 8-row B; the packed float32 bits must be the
  // scalar cast's, a NaN any quiet NaN of the same sign.
  auto same = [](uint32_t got, uint32_t expected) {
    const float g = std::bit_cast<float>(got), e = std::bit_cast<float>(expected);
    if (std::isnan(e)) return std::isnan(g) && std::signbit(g) == std::signbit(e);
    return got == expected;
  };
  auto check_all = [&](auto tag, int codes, bool skip_nan = false) {
    using T = decltype(tag);
    for_each_path([&](cpu_path p) {
      const auto& mk = scalify::kernels::select_microkernel(p, false);
      const int mr = mk.block.mr, nr = mk.block.nr;
      // A: 6 rows x ka, code (i * ka + u) % codes at (i, u); rows 6.. of the panel are zero.
      const index_t ka = (codes + 5) / 6 + 3;
      const auto a = cycled_codes<T>(6 * ka, codes, skip_nan);
      std::vector<uint32_t> ap(static_cast<std::size_t>(ka * mr), 0xDEADBEEFu);
      const scalify::kernels::strided<T> as{a.data(), ka, 1};
      scalify::kernels::pack_a_panel_with<scalify::kernels::packing::f32>(scalify::kernels::operand_kernels_for<T>(p), as, 6, ka, 0, mr,
                                                                           ap.data());
      int bad = 0;
      for (index_t u = 0; u < ka; ++u) {
        for (index_t i = 0; i < mr; ++i) {
          const uint32_t e = i < 6 ? scalify::kernels::widen_f32_bits(a[std::size_t(i * ka + u)]) : 0u;
          if (!same(ap[std::size_t(u * mr + i)], e) && bad++ < 5) {
            FAIL_CHECK(type_name<T>() << " A (" << i << ", " << u << ") path " << scalify::to_string(p));
          }
        }
      }
      // B: 8 rows x nb, code (r * nb + j) % codes at (r, j); columns nb.. of the last panel are zero.
      const index_t nb = (codes + 7) / 8 + 5, kb = 8;
      const auto b = cycled_codes<T>(kb * nb, codes, skip_nan);
      const index_t panels = (nb + nr - 1) / nr;
      std::vector<uint32_t> bp(static_cast<std::size_t>(panels * nr * kb), 0xDEADBEEFu);
      const scalify::kernels::strided<T> bs{b.data(), nb, 1};
      scalify::detail::gemm_impl::pack_b(mk, bs, kb, nb, 0, nb, bp.data(), 1);
      for (index_t q = 0; q < panels; ++q) {
        for (index_t u = 0; u < kb; ++u) {
          for (index_t j = 0; j < nr; ++j) {
            const index_t col = q * nr + j;
            const uint32_t e = col < nb ? scalify::kernels::widen_f32_bits(b[std::size_t(u * nb + col)]) : 0u;
            if (!same(bp[std::size_t((q * kb + u) * nr + j)], e) && bad++ < 5) {
              FAIL_CHECK(type_name<T>() << " B (" << u << ", " << col << ") path " << scalify::to_string(p));
            }
          }
        }
      }
      CHECK(bad == 0);
    });
  };
  check_all(float8_e4m3fn{}, 256);
  check_all(float8_e4m3fn{}, 256, true);  // no NaN code: the packers' decode without the NaN step
  check_all(float8_e5m2{}, 256);
  check_all(float16{}, 65536);
  check_all(bfloat16{}, 65536);
}

TEST_CASE("gemm: bfloat16-pair packing (the avx512bf16 kernel's) through the AVX2 packers equals the scalar one",
          "[kernels][gemm]") {
  // The SIMD bf16x2 packers are AVX2 code, so they run here even though the
  // avx512bf16 kernel cannot: every code of e4m3fn, e5m2 and bfloat16, even
  // and odd K, partial panels; compared per bfloat16 half (a NaN may carry
  // another payload, same sign).
  if (!scalify::cpu_supports(cpu_path::avx2)) {
    WARN("skipping: this CPU has no AVX2");
    return;
  }
  using scalify::kernels::packing;
  using scalify::kernels::strided;
  auto same_half = [](uint32_t got, uint32_t expected) {
    const auto nan = [](uint32_t h) { return (h & 0x7F80u) == 0x7F80u && (h & 0x7Fu) != 0; };
    if (nan(expected)) return nan(got) && (got & 0x8000u) == (expected & 0x8000u);
    return got == expected;
  };
  auto same = [&](uint32_t got, uint32_t expected) {
    return same_half(got & 0xFFFFu, expected & 0xFFFFu) && same_half(got >> 16, expected >> 16);
  };
  const auto& mk = scalify::kernels::select_microkernel(cpu_path::avx512bf16, true);
  REQUIRE(mk.pack == packing::bf16x2);
  auto check_all = [&](auto tag, int codes, bool skip_nan = false) {
    using T = decltype(tag);
    int bad = 0;
    for (const index_t extra : {0, 1, 16}) {
      // A: 7 rows (a partial 12-row panel) x ka, code (i * ka + u) % codes at (i, u).
      const index_t ka = (codes + 6) / 7 + extra;
      const auto a = cycled_codes<T>(7 * ka, codes, skip_nan);
      const strided<T> as{a.data(), ka, 1};
      const index_t kua = (ka + 1) / 2;
      std::vector<uint32_t> got(static_cast<std::size_t>(kua * mk.block.mr), 0xDEADBEEFu), expected(got.size());
      scalify::kernels::pack_a_panel_with<packing::bf16x2>(scalify::kernels::operand_kernels_for<T>(cpu_path::avx2), as, 7,
                                                           ka, 0, mk.block.mr, got.data());
      scalify::kernels::pack_a_panel<packing::bf16x2>(as, 7, ka, 0, mk.block.mr, expected.data());
      for (std::size_t q = 0; q < got.size(); ++q) {
        if (!same(got[q], expected[q]) && bad++ < 5) FAIL_CHECK(type_name<T>() << " A unit " << q << " ka " << ka);
      }
      // B: kb x nb, code (r * nb + j) % codes at (r, j); a partial last panel.
      const index_t kb = 7 + extra, nb = (codes + kb - 1) / kb + 5;
      const auto b = cycled_codes<T>(kb * nb, codes, skip_nan);
      const strided<T> bs{b.data(), nb, 1};
      const index_t kub = (kb + 1) / 2, nr = mk.block.nr, panels = (nb + nr - 1) / nr;
      std::vector<uint32_t> gotb(static_cast<std::size_t>(panels * nr * kub), 0xDEADBEEFu), expb(gotb.size());
      scalify::detail::gemm_impl::pack_b(mk, bs, kb, nb, 0, nb, gotb.data(), 1);
      for (index_t q = 0; q < panels; ++q) {
        scalify::kernels::pack_b_panel<packing::bf16x2>(bs, kb, nb, q * nr, int(nr), expb.data() + q * kub * nr);
      }
      for (std::size_t q = 0; q < gotb.size(); ++q) {
        if (!same(gotb[q], expb[q]) && bad++ < 5) FAIL_CHECK(type_name<T>() << " B unit " << q << " kb " << kb);
      }
    }
    CHECK(bad == 0);
  };
  check_all(float8_e4m3fn{}, 256);
  check_all(float8_e4m3fn{}, 256, true);
  check_all(float8_e5m2{}, 256);
  check_all(bfloat16{}, 65536);
}

TEST_CASE("gemm: streaming path widens every code exactly", "[kernels][gemm]") {
  // C (1 x N) = [1] (1 x 1) * B (1 x N): C is B widened.
  auto check_all = [](auto tag, int codes) {
    using T = decltype(tag);
    std::vector<T> b(static_cast<std::size_t>(codes));
    for (int i = 0; i < codes; ++i) b[static_cast<std::size_t>(i)] = scalify::detail::from_code<T>(uint32_t(i));
    const float one = 1.0f;
    std::vector<float> c(b.size());
    for_each_path([&](cpu_path p) {
      scalify::gemm(scalify::row_major_view(&one, 1, 1), scalify::row_major_view(b.data(), 1, codes),
                    scalify::row_major_view(c.data(), 1, codes));
      int bad = 0;
      for (int i = 0; i < codes; ++i) {
        const float e = static_cast<float>(b[static_cast<std::size_t>(i)]);
        const float g = c[static_cast<std::size_t>(i)];
        // -0 widens to -0 but 0 + 1 * (-0) = +0: compare values.
        const bool ok = std::isnan(e) ? std::isnan(g) : e == g;
        if (!ok && bad++ < 5) FAIL_CHECK(type_name<T>() << " code " << i << " path " << scalify::to_string(p) << ": " << g << " != " << e);
      }
      CHECK(bad == 0);
    });
  };
  check_all(float8_e4m3fn{}, 256);
  check_all(float8_e5m2{}, 256);
  check_all(float16{}, 65536);
  check_all(bfloat16{}, 65536);
}

TEST_CASE("gemm: streaming path over a B larger than kGemvPrefetchBytes (sweeps prefetched) gives the scalar bits",
          "[kernels][gemm]") {
  // K rows of N columns (N not a multiple of any step, so the tails run too),
  // just over the prefetch threshold; every M <= 4, the columns split over 2
  // threads. For M = 1 (8- and 16-bit B: the prefetch in address order) also
  // N = 300 (threads' segments of 256 and 44 columns) and N = 40 (one
  // segment): over float8 the 44- and 40-byte segments are shorter than a
  // cache line.
  auto over_threshold = [](auto tag, uint32_t seed) {
    using T = decltype(tag);
    for (const index_t n : {1100, 300, 40}) {
      const index_t k = scalify::kernels::kGemvPrefetchBytes / (n * index_t(sizeof(T))) + 3;
      for (const index_t m : {1, 2, 3, 4}) {
        if (n != 1100 && m != 1) continue;
        run_all_paths<float, T, float>({.m = m, .n = n, .k = k, .threads = 2, .seed = seed + uint32_t(m + n)});
      }
    }
  };
  over_threshold(float8_e4m3fn{}, 700);
  over_threshold(float8_e5m2{}, 710);
  over_threshold(float16{}, 720);
  over_threshold(bfloat16{}, 730);
  over_threshold(float{}, 740);
}

TEST_CASE("gemm: streaming path, e4m3fn NaN codes anywhere (blocks checked, then redone) give the scalar bits",
          "[kernels][gemm]") {
  // The SIMD streaming loops widen e4m3fn blocks without the NaN step and
  // check each block for the NaN code; a block with one is computed again
  // from its stored accumulators. NaN codes are placed in full blocks (first,
  // middle, last row of a sweep), in the one-chunk blocks, in the scalar
  // column tail and in a partial last sweep; every other element of C must
  // keep the scalar path's bits, and NaN stay NaN.
  std::mt19937 rng(1212);
  int cases = 0;
  for (const index_t m : {1, 2, 3, 4}) {
    for (const index_t k : {1, 3, 8, 9, 20}) {
      for (const index_t n : {16, 37, 64, 100, 200, 300}) {
        auto a = random_mat<float>(m, k, layout::row_major, 0, rng);
        for (int nans = 0; nans < 3; ++nans) {
          auto b = random_mat<float8_e4m3fn>(k, n, layout::row_major, 0, rng, 64.0f);
          for (int q = 0; q < nans; ++q) {
            const index_t r = q == 0 ? 0 : q == 1 ? k - 1 : index_t(rng() % uint32_t(k));
            const index_t c = q == 0 ? n - 1 : index_t(rng() % uint32_t(n));
            b.at(r, c) = scalify::detail::from_code<float8_e4m3fn>(rng() % 2 ? 0x7Fu : 0xFFu);
          }
          std::vector<uint32_t> ref;
          for_each_path([&](cpu_path p) {
            std::vector<float> c(static_cast<std::size_t>(m * n));
            scalify::gemm(a.view(), b.view(), scalify::row_major_view(c.data(), m, n));
            const std::vector<uint32_t> bits = nan_canonical_bits(c);
            if (p == cpu_path::scalar) {
              ref = bits;
              return;
            }
            REQUIRE(ref.size() == bits.size());
            int bad = 0;
            for (std::size_t q = 0; q < bits.size(); ++q) {
              if (bits[q] != ref[q] && bad++ < 3) {
                FAIL_CHECK("path " << scalify::to_string(p) << " m " << m << " k " << k << " n " << n << " nans "
                                   << nans << " index " << q << ": " << std::bit_cast<float>(bits[q])
                                   << " != " << std::bit_cast<float>(ref[q]));
              }
            }
            CHECK(bad == 0);
            ++cases;
          });
        }
      }
    }
  }
  CHECK(cases > 0);
}

TEST_CASE("gemm: streaming dot form, e4m3fn NaN codes make exactly their columns NaN", "[kernels][gemm]") {
  // Weights W (N x K) used transposed: each column is widened without the
  // NaN step and checked; a column with a NaN code is summed again. Columns
  // without one keep the bits of the same path on W with those codes zeroed.
  std::mt19937 rng(1313);
  for (const index_t m : {1, 2, 4}) {
    // Decodes of 4 vectors (32 codes on AVX2, 64 on AVX-512), then 16 codes at
    // a time, then the scalar tail.
    for (const index_t k : {16, 17, 40, 50, 100, 130, 200}) {
      const index_t n = 23;
      auto a = random_mat<float>(m, k, layout::row_major, 0, rng);
      auto w = random_mat<float8_e4m3fn>(n, k, layout::row_major, 0, rng, 64.0f);
      auto clean = w;
      std::vector<bool> nan_col(static_cast<std::size_t>(n), false);
      for (const index_t j : {index_t(0), index_t(7), n - 1}) {
        const index_t u = index_t(rng() % uint32_t(k));
        w.at(j, u) = scalify::detail::from_code<float8_e4m3fn>(rng() % 2 ? 0x7Fu : 0xFFu);
        clean.at(j, u) = from_float<float8_e4m3fn>(0.0f);
        nan_col[std::size_t(j)] = true;
      }
      for_each_path([&](cpu_path p) {
        std::vector<float> c(static_cast<std::size_t>(m * n)), c0(c.size());
        scalify::gemm(a.view(), w.view(), scalify::row_major_view(c.data(), m, n), {.trans_b = trans::yes});
        scalify::gemm(a.view(), clean.view(), scalify::row_major_view(c0.data(), m, n), {.trans_b = trans::yes});
        int bad = 0;
        for (index_t i = 0; i < m; ++i) {
          for (index_t j = 0; j < n; ++j) {
            const float g = c[std::size_t(i * n + j)], e = c0[std::size_t(i * n + j)];
            const bool ok = nan_col[std::size_t(j)] ? std::isnan(g) : std::bit_cast<uint32_t>(g) == std::bit_cast<uint32_t>(e);
            if (!ok && bad++ < 3) {
              FAIL_CHECK("path " << scalify::to_string(p) << " m " << m << " k " << k << " (" << i << ", " << j
                                 << "): " << g << " vs " << e);
            }
          }
        }
        CHECK(bad == 0);
      });
    }
  }
}

TEST_CASE("gemm: streaming path with e4m3fn B and huge A (no overflow from its internal 2^8 scaling)",
          "[kernels][gemm]") {
  std::mt19937 rng(21);
  auto b = random_mat<float8_e4m3fn>(9, 40, layout::row_major, 0, rng);
  std::vector<float> a(2 * 9, 0x1.8p120f);
  a[3] = -0x1p126f;
  std::vector<uint32_t> first;
  for_each_path([&](cpu_path) {
    std::vector<float> c(2 * 40);
    scalify::gemm(scalify::row_major_view(a.data(), 2, 9), b.view(), scalify::row_major_view(c.data(), 2, 40));
    std::vector<uint32_t> bits;
    for (float x : c) bits.push_back(std::bit_cast<uint32_t>(x));
    for (index_t j = 0; j < 40; ++j) {
      double s = 0;
      for (index_t q = 0; q < 9; ++q) s += double(a[std::size_t(9 + q)]) * b.value(q, j);
      CHECK(std::abs(double(c[std::size_t(40 + j)]) - s) <= 13 * 0x1p-24 * 0x1.8p120 * 9 * 448);
    }
    if (first.empty()) first = bits;
    CHECK(bits == first);
  });
}

namespace {

/// C (m x 256) = A (m x k) * B (k x 256), B's rows each holding every e4m3fn
/// code (rotated by the row), on every path, as float32 bits (NaN: one
/// pattern); threads = 1, so the calling thread's MXCSR applies.
std::vector<std::vector<uint32_t>> every_code_products(const std::vector<float>& a, index_t m, index_t k) {
  constexpr index_t n = 256;
  std::vector<float8_e4m3fn> b(static_cast<std::size_t>(k * n));
  for (index_t q = 0; q < k; ++q) {
    for (index_t j = 0; j < n; ++j) {
      b[std::size_t(q * n + j)] = scalify::detail::from_code<float8_e4m3fn>(uint32_t((j + 37 * q) % n));
    }
  }
  std::vector<std::vector<uint32_t>> out;
  for_each_path([&](cpu_path) {
    std::vector<float> c(static_cast<std::size_t>(m * n));
    scalify::gemm(scalify::row_major_view(a.data(), m, k), scalify::row_major_view(b.data(), k, n),
                  scalify::row_major_view(c.data(), m, n), {.threads = 1});
    out.push_back(nan_canonical_bits(c));
  });
  return out;
}

/// Whether every run's bits equal runs[0]'s (the scalar path's, first in
/// for_each_path's order); the first differences of each run fail with the
/// run's name (names[r], or "path #r").
bool same_as_scalar(const std::vector<std::vector<uint32_t>>& runs, const std::vector<std::string>& names = {}) {
  bool same = true;
  for (std::size_t r = 1; r < runs.size(); ++r) {
    int bad = 0;
    for (std::size_t q = 0; q < runs[0].size(); ++q) {
      if (runs[r][q] != runs[0][q] && bad++ < 3) {
        FAIL_CHECK((r < names.size() ? "path " + names[r] : "path #" + std::to_string(r))
                   << " index " << q << ": " << std::bit_cast<float>(runs[r][q])
                   << " != scalar " << std::bit_cast<float>(runs[0][q]));
      }
    }
    same = same && bad == 0;
  }
  return same;
}

}  // namespace

// The AVX2 streaming loop may decode e4m3fn codes straight to float32 bits
// (value * 2^-120, A scaled by 2^120; on CPUs with full-speed subnormal
// operands): only where every finite |A| is below 2^8 and MXCSR's DAZ is
// off. Around those limits every path must give the scalar path's bits.
TEST_CASE("gemm: streaming path with e4m3fn B, |A| at and above 2^8 and under DAZ, gives the scalar bits",
          "[kernels][gemm]") {
  for (const index_t m : {1, 2, 3}) {
    for (const float big : {0x1p8f, 300.0f, 0x1p100f, 0x1.fffffep7f}) {
      // One |A| at the limit among small ones (its row's products reach 448 * |A|).
      constexpr index_t k = 9;
      std::vector<float> a(static_cast<std::size_t>(m * k));
      for (std::size_t q = 0; q < a.size(); ++q) a[q] = (q % 3 == 0 ? -0.75f : 1.25f) * float(q % 5);
      a[std::size_t(m * k / 2)] = -big;
      INFO("m " << m << " A holds " << -big);
      const auto runs = every_code_products(a, m, k);
      CHECK(same_as_scalar(runs));
      // And the values: the sums in double, within k roundings (NaN codes: NaN).
      if (m == 1) {
        for (index_t j = 0; j < 256; ++j) {
          const float g = std::bit_cast<float>(runs[0][std::size_t(j)]);
          double s = 0, sabs = 0;
          bool nan = false;
          for (index_t q = 0; q < k; ++q) {
            const auto code = uint32_t((j + 37 * q) % 256);
            const float w = static_cast<float>(scalify::detail::from_code<float8_e4m3fn>(code));
            nan = nan || std::isnan(w);
            s += double(a[std::size_t(q)]) * w;
            sabs += std::abs(double(a[std::size_t(q)]) * w);
          }
          CHECK((nan ? std::isnan(g) : std::abs(g - s) <= k * 0x1p-24 * sabs));
        }
      }
    }
  }
#if SCALIFY_HAVE_X86_SIMD
  {  // DAZ on: the decoded subnormal codes would read as zero (k = 1: C holds them alone).
    const std::vector<float> a = {0.75f};
    const unsigned int csr = _mm_getcsr();
    _mm_setcsr(csr | 0x0040u);
    const auto runs = every_code_products(a, 1, 1);
    _mm_setcsr(csr);
    CHECK(same_as_scalar(runs));
  }
#endif
}

TEST_CASE("gemm: streaming dot-product form (weights N x K used transposed), odd K, every M <= 4", "[kernels][gemm]") {
  uint32_t seed = 500;
  for (index_t m : {1, 2, 3, 4}) {
    for (index_t k : {1, 15, 16, 17, 100, 257}) {
      case_desc d{.m = m, .n = 37, .k = k, .tb = trans::yes, .bias = true, .seed = seed++};
      run_all_paths<float, float8_e4m3fn, float>(d);
      run_all_paths<float8_e4m3fn, float8_e5m2, bfloat16>(d);
      run_all_paths<bfloat16, float16, float>(d);
    }
  }
}

namespace {

/// The dot form's summation order (kernels/gemv.hpp, gemv_dot_block) in
/// scalar code, for C(i, j) = sum_k A(i, k) W(j, k): lane l (0..15) sums the
/// products of k = l, l + 16, ... below K16 = K / 16 * 16, one FMA each in k
/// order; lanes l and l + 8 are added (L_l, l < 8), then ((L0 + L4) + (L1 +
/// L5)) + ((L2 + L6) + (L3 + L7)); the products of k >= K16 follow by FMA in
/// k order. (The kernel's 2^8 on e4m3fn's A and 2^-8 on its B cancel exactly
/// in each FMA's exact product.)
template <class TA, class TB>
float dot_form_model(const mat<TA>& a, const mat<TB>& w, index_t i, index_t j) {
  const index_t k_size = a.cols, k16 = k_size / 16 * 16;
  float lanes[16] = {};
  for (index_t k = 0; k < k16; ++k) {
    lanes[k % 16] = std::fma(static_cast<float>(a.at(i, k)), static_cast<float>(w.at(j, k)), lanes[k % 16]);
  }
  float l[8];
  for (int q = 0; q < 8; ++q) l[q] = lanes[q] + lanes[q + 8];
  float r = ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
  for (index_t k = k16; k < k_size; ++k) {
    r = std::fma(static_cast<float>(a.at(i, k)), static_cast<float>(w.at(j, k)), r);
  }
  return r;
}

/// The model's bits of C = A W^T (m x n, row-major).
template <class TA, class TB>
std::vector<uint32_t> dot_form_model_bits(const mat<TA>& a, const mat<TB>& w) {
  std::vector<uint32_t> bits(static_cast<std::size_t>(a.rows * w.rows));
  for (index_t i = 0; i < a.rows; ++i) {
    for (index_t j = 0; j < w.rows; ++j) {
      bits[std::size_t(i * w.rows + j)] = std::bit_cast<uint32_t>(dot_form_model(a, w, i, j));
    }
  }
  return bits;
}

/// Whether c has the model's bits; the first 3 differences fail with `what`.
bool equals_model_bits(const std::vector<float>& c, const std::vector<uint32_t>& want, const std::string& what) {
  int bad = 0;
  for (std::size_t t = 0; t < c.size(); ++t) {
    if (std::bit_cast<uint32_t>(c[t]) != want[t] && bad++ < 3) {
      FAIL_CHECK(what << " at " << t << ": " << c[t] << " vs model " << std::bit_cast<float>(want[t]));
    }
  }
  return bad == 0;
}

}  // namespace

TEMPLATE_TEST_CASE("gemm: streaming dot form equals its summation order (scalar model) bit for bit, every SIMD path",
                   "[kernels][gemm]", float8_e4m3fn, float8_e5m2, float16, bfloat16, float) {
  // Every column of every group of columns the kernel sums together (and the
  // columns left over), every K remainder (32-code steps, 16-code steps, the
  // scalar tail), 1 and 2 threads.
  std::mt19937 rng(2411);
  for (const index_t m : {1, 2, 3, 4}) {
    for (const index_t k : {1, 15, 16, 17, 32, 48, 63, 100, 257}) {
      for (const index_t n : {1, 5, 37, 300}) {
        const auto a = random_mat<float>(m, k, layout::row_major, 0, rng);
        const auto w = random_mat<TestType>(n, k, layout::row_major, 0, rng, 8.0f);
        const std::vector<uint32_t> want = dot_form_model_bits(a, w);
        for_each_path([&](cpu_path p) {
          if (p == cpu_path::scalar) return;  // the scalar path keeps the blocked GEMM's k order
          for (const int threads : {1, 2}) {
            std::vector<float> c(want.size());
            scalify::gemm(a.view(), w.view(), scalify::row_major_view(c.data(), m, n),
                          {.trans_b = trans::yes, .threads = threads});
            CHECK(equals_model_bits(c, want,
                                    std::string(type_name<TestType>()) + " path " +
                                        std::string(scalify::to_string(p)) + " m " + std::to_string(m) + " k " +
                                        std::to_string(k) + " n " + std::to_string(n) + " t " +
                                        std::to_string(threads)));
          }
        });
      }
    }
  }
}

// The dot form may decode e4m3fn straight to float32 bits too (gemv_dot_bits:
// A scaled by 2^120), under the axpy form's conditions: every finite |A|
// below 2^8, MXCSR's DAZ off. Around those limits, and with every code of W
// (but NaN), every SIMD path must still give the bits of its order's model.
TEST_CASE("gemm: streaming dot form with e4m3fn W, |A| at and above 2^8 and under DAZ, equals its order model",
          "[kernels][gemm]") {
  const index_t n = 37, k = 64;  // 37 * 64 codes: each non-NaN code several times
  mat<float8_e4m3fn> w(n, k, layout::row_major, 0);
  const auto codes = cycled_codes<float8_e4m3fn>(n * k, 256, true);
  for (index_t j = 0; j < n; ++j) {
    for (index_t q = 0; q < k; ++q) w.at(j, q) = codes[std::size_t(j * k + q)];
  }
  auto check = [&](const mat<float>& a, bool daz) {
    const index_t m = a.rows;
    const std::vector<uint32_t> want = dot_form_model_bits(a, w);
    for_each_path([&](cpu_path p) {
      if (p == cpu_path::scalar) return;
      std::vector<float> c(want.size());
#if SCALIFY_HAVE_X86_SIMD
      const unsigned int csr = _mm_getcsr();
      if (daz) _mm_setcsr(csr | 0x0040u);
#endif
      scalify::gemm(a.view(), w.view(), scalify::row_major_view(c.data(), m, n),
                    {.trans_b = trans::yes, .threads = 1});
#if SCALIFY_HAVE_X86_SIMD
      _mm_setcsr(csr);
#endif
      CHECK(equals_model_bits(c, want,
                              "path " + std::string(scalify::to_string(p)) + " m " + std::to_string(m) + " daz " +
                                  std::to_string(daz)));
    });
  };
  for (const index_t m : {1, 2, 4}) {
    for (const float big : {0.0f, 0x1p8f, 300.0f, 0x1p100f, 0x1.fffffep7f}) {
      mat<float> a(m, k, layout::row_major, 0);
      for (index_t i = 0; i < m; ++i) {
        for (index_t q = 0; q < k; ++q) a.at(i, q) = (q % 3 == 0 ? -0.75f : 1.25f) * float((q + i) % 5);
      }
      if (big != 0.0f) a.at(m / 2, k / 3) = -big;  // one |A| at or near the limit among small ones
      INFO("m " << m << " A holds " << -big);
      check(a, false);
      if (big == 0.0f) check(a, true);  // DAZ: the decoded subnormal codes would read as zero
    }
  }
}

// Under FTZ (and DAZ off), A * 2^8 flushes to zero for 0 < |A| < 2^-134,
// although A times an e4m3fn code can be a normal float (up to 448 |A|): the
// SIMD streaming routines, which scale A by 2^8 (or by 2^120 and back by
// 2^-112), must then not run. Every path gives the scalar path's bits, in
// both forms (the dot form then sums in k order too).
TEST_CASE("gemm: streaming path and dot form with e4m3fn B under FTZ, |A| below 2^-134, give the scalar bits",
          "[kernels][gemm]") {
#if SCALIFY_HAVE_X86_SIMD
  const index_t n = 64;
  for (const bool dot : {false, true}) {
    for (const index_t m : {1, 2, 3, 4}) {
      for (const index_t k : {1, 9, 48, 100}) {
        // B(q, j): code 4 j + q mod 256, so every code (NaN codes too, whose
        // blocks are computed again) from k = 4 on; up to 0x7C (384) at k = 1.
        mat<float8_e4m3fn> b(dot ? n : k, dot ? k : n, layout::row_major, 0);
        for (index_t q = 0; q < k; ++q) {
          for (index_t j = 0; j < n; ++j) {
            (dot ? b.at(j, q) : b.at(q, j)) = scalify::detail::from_code<float8_e4m3fn>(uint32_t((4 * j + q) % 256));
          }
        }
        // A: tiny values whose products with the large codes are normal
        // floats: 0x1.8p-135 (x 2^8 subnormal, x 384 = 0x1.2p-126), 0x1.2p-134
        // (x 2^8 normal) and 0x1.cp-136, signs varying.
        mat<float> a(m, k, layout::row_major, 0);
        for (index_t i = 0; i < m; ++i) {
          for (index_t q = 0; q < k; ++q) {
            const index_t r = (i + q) % 3;
            const float v = r == 0 ? 0x1.8p-135f : r == 1 ? 0x1.2p-134f : 0x1.cp-136f;
            a.at(i, q) = (i + q / 3) % 2 == 0 ? v : -v;
          }
        }
        std::vector<std::vector<uint32_t>> runs;
        std::vector<std::string> names;
        for_each_path([&](cpu_path p) {
          std::vector<float> c(static_cast<std::size_t>(m * n));
          const unsigned int csr = _mm_getcsr();
          _mm_setcsr((csr | 0x8000u) & ~0x0040u);  // FTZ on, DAZ off
          scalify::gemm(a.view(), b.view(), scalify::row_major_view(c.data(), m, n),
                        {.trans_b = dot ? trans::yes : trans::no, .threads = 1});
          _mm_setcsr(csr);
          runs.push_back(nan_canonical_bits(c));
          names.emplace_back(scalify::to_string(p));
        });
        INFO((dot ? "dot form" : "axpy form") << ", m " << m << ", k " << k);
        CHECK(same_as_scalar(runs, names));
      }
    }
  }
#else
  WARN("no MXCSR on this target: nothing to check");
#endif
}

TEST_CASE("gemm: ~1000-sized products on the best path", "[kernels][gemm]") {
  run_case<float8_e4m3fn, float8_e4m3fn, float>({.m = 1000, .n = 1003, .k = 129, .bias = true, .seed = 11});
  run_case<float8_e5m2, float8_e4m3fn, bfloat16>({.m = 67, .n = 1000, .k = 1024, .alpha = 0.125f, .seed = 12});
}

// ------------------------------------------------------------------------------
// AVX-512 kernels at 16 lanes over the emulation

namespace {

std::vector<uint32_t> random_f32_units(std::size_t n, std::mt19937& rng) {
  std::normal_distribution<float> d;
  std::vector<uint32_t> v(n);
  for (auto& x : v) x = std::bit_cast<uint32_t>(static_cast<float>(float8_e4m3fn(d(rng))) * (d(rng) > 0 ? 1.0f : 0.001f));
  return v;
}

}  // namespace

TEST_CASE("gemm: AVX-512F f32 micro-kernel logic (emulated 16 lanes) equals the scalar reference bit for bit",
          "[kernels][gemm][emulated]") {
  std::mt19937 rng(5);
  auto check = [&](auto rows) {  // the 12-row tile and the 11-row short tile
    constexpr int kMR = decltype(rows)::value;
    for (std::ptrdiff_t ku : {0, 1, 2, 5, 64, 300}) {
      for (bool accumulate : {false, true}) {
        const auto a = random_f32_units(static_cast<std::size_t>(ku * kMR + 1), rng);
        const auto b = random_f32_units(static_cast<std::size_t>(ku * 32 + 1), rng);
        std::vector<float> c0(kMR * 32);
        for (auto& x : c0) x = std::normal_distribution<float>()(rng);
        auto got = c0, expected = c0;
        scalify::kernels::emulated16_f32::gemm_tile_f32<kMR, 2>(ku, a.data(), b.data(), got.data(), accumulate);
        scalify::kernels::scalar::gemm_tile_f32_ref<kMR, 32>(ku, a.data(), b.data(), expected.data(), accumulate);
        INFO("rows " << kMR << " ku " << ku << " accumulate " << accumulate);
        CHECK(std::memcmp(got.data(), expected.data(), got.size() * sizeof(float)) == 0);
      }
    }
  };
  check(std::integral_constant<int, 12>{});
  check(std::integral_constant<int, 11>{});
}

TEST_CASE("gemm: fused-epilogue micro-kernels (emulated 16 lanes) equal tile + epilogue_tile bit for bit",
          "[kernels][gemm][emulated]") {
  // tile_out = the plain tile followed by the float32 epilogue, written into a
  // strided C: every option, a running amax, NaN and signed zeros in the sums.
  constexpr int kNR = 32;
  constexpr index_t kLdc = kNR + 7;
  std::mt19937 rng(17);
  std::normal_distribution<float> d;
  const std::vector<float> bias = [&] {
    std::vector<float> v(kNR);
    for (auto& x : v) x = d(rng);
    return v;
  }();
  uint32_t cases = 0;
  auto check = [&](auto rows) {  // the 12-row tile and the 11-row short tile
    constexpr int kMR = decltype(rows)::value;
    for (bool bf16 : {false, true}) {
      for (index_t ku : {0, 3, 40}) {
        for (bool from_acc : {false, true}) {
          for (float beta : {0.0f, 0.5f}) {
            for (bool use_bias : {false, true}) {
              for (bool relu : {false, true}) {
                auto a = random_f32_units(static_cast<std::size_t>(ku * kMR + 1), rng);
                auto b = random_f32_units(static_cast<std::size_t>(ku * kNR + 1), rng);
                if (bf16) {  // pairs of bfloat16: keep the high halves (exact values, no denormals)
                  for (auto& x : a) x &= 0xFFFF'0000u;
                  for (auto& x : b) x &= 0xFFFF'0000u;
                }
                std::vector<float> acc(kMR * kNR), c0(kMR * kLdc);
                for (auto& x : acc) x = d(rng);
                for (auto& x : c0) x = d(rng);
                acc[5] = std::numeric_limits<float>::quiet_NaN();  // NaN: relu -> +0, amax skips it
                acc[6] = -0.0f;
                c0[7] = -0.0f;
                // Expected: the plain kernel into a tile, then the scalar epilogue.
                std::vector<float> tile = acc, expected_c = c0;
                if (bf16) {
                  scalify::kernels::scalar::gemm_tile_bf16_ref<kMR, kNR>(ku, a.data(), b.data(), tile.data(), from_acc);
                } else {
                  scalify::kernels::scalar::gemm_tile_f32_ref<kMR, kNR>(ku, a.data(), b.data(), tile.data(), from_acc);
                }
                const scalify::kernels::epilogue_params ep{cases % 4 == 1 ? 1.0f : 0.75f, beta,
                                                            use_bias ? bias.data() : nullptr,
                                                            relu ? activation::relu : activation::none, false};
                const scalify::kernels::strided_out<float> expected_out{expected_c.data(), kLdc, 1};
                const float expected_amax =
                    scalify::kernels::epilogue_tile(tile.data(), kNR, kMR, kNR, 0, 0, ep, expected_out);
                // Got: the fused kernel, amax lanes starting from a value below the result.
                std::vector<float> got_c = c0;
                std::vector<float> lanes(16, 0.125f);
                const bool want_amax = cases % 3 != 0;  // null amax: the lanes are not touched
                const float alpha = cases % 4 == 1 ? 1.0f : 0.75f;  // alpha 1 skips the multiply: same bits
                const scalify::kernels::f32_tile_out out{got_c.data(), kLdc, alpha, beta,
                                                         use_bias ? bias.data() : nullptr, relu,
                                                         want_amax ? lanes.data() : nullptr};
                if (bf16) {
                  scalify::kernels::emulated16_f32::gemm_tile_bf16_out<kMR, 2>(ku, a.data(), b.data(),
                                                                            from_acc ? acc.data() : nullptr, out);
                } else {
                  scalify::kernels::emulated16_f32::gemm_tile_f32_out<kMR, 2>(ku, a.data(), b.data(),
                                                                           from_acc ? acc.data() : nullptr, out);
                }
                INFO("rows " << kMR << " bf16 " << bf16 << " ku " << ku << " from_acc " << from_acc << " beta "
                             << beta << " bias " << use_bias << " relu " << relu);
                CHECK(std::memcmp(got_c.data(), expected_c.data(), got_c.size() * sizeof(float)) == 0);
                const float lanes_max = *std::max_element(lanes.begin(), lanes.end());
                CHECK(lanes_max == (want_amax ? std::max(expected_amax, 0.125f) : 0.125f));
                ++cases;
              }
            }
          }
        }
      }
    }
  };
  check(std::integral_constant<int, 12>{});
  check(std::integral_constant<int, 11>{});
  CHECK(cases == 192);
}

TEST_CASE("gemm: vdpbf16ps emulation (order, RNE, denormals in and out)", "[kernels][gemm][emulated]") {
  using scalify::kernels::scalar::dpbf16_lane;
  auto pair = [](float lo, float hi) {
    return (std::bit_cast<uint32_t>(hi) & 0xFFFF0000u) | (std::bit_cast<uint32_t>(lo) >> 16);
  };
  // 1 + 2^-24 (hi) rounds to 1 (tie to even) before the lo product (2^-24) is added: 1, not 1 + 2^-23.
  CHECK(dpbf16_lane(1.0f, pair(0x1p-24f, 0x1p-24f), pair(1.0f, 1.0f)) == 1.0f);
  // The odd (high) pair goes first: 1 + 2^-24 -> 1 (tie, even), then + 1.5 * 2^-24 -> 1 + 2^-23.
  // (Low first would give 1 + 2^-23, then a tie up to 1 + 2^-22.)
  CHECK(dpbf16_lane(1.0f, pair(0x1.8p-24f, 0x1p-24f), pair(1.0f, 1.0f)) == 1.0f + 0x1p-23f);
  CHECK(dpbf16_lane(1.0f, pair(0x1p-24f, 0x1.8p-24f), pair(1.0f, 1.0f)) == 1.0f + 0x1p-22f);
  // Denormal bfloat16 inputs read as zero; denormal results flush to zero (sign kept).
  CHECK(dpbf16_lane(0.0f, pair(0x1p-130f, 0.0f), pair(1.0f, 0.0f)) == 0.0f);
  CHECK(dpbf16_lane(0.0f, pair(0x1p-63f, 0.0f), pair(0x1p-64f, 0.0f)) == 0.0f);
  CHECK(std::signbit(dpbf16_lane(0.0f, pair(-0x1p-63f, 0.0f), pair(0x1p-64f, 0.0f))));
  CHECK(dpbf16_lane(0x1p-130f, pair(0.0f, 0.0f), pair(0.0f, 0.0f)) == 0.0f);  // denormal accumulator read as zero
  CHECK(dpbf16_lane(0.0f, pair(0x1p-63f, 0.0f), pair(0x1p-63f, 0.0f)) == 0x1p-126f);  // smallest normal kept
  CHECK(dpbf16_lane(2.0f, pair(3.0f, 5.0f), pair(7.0f, 11.0f)) == 2.0f + 55.0f + 21.0f);
}

TEMPLATE_TEST_CASE("gemm: AVX-512 BF16 micro-kernel logic (emulated) with bf16-pair packing, vs scalar reference and double",
                   "[kernels][gemm][emulated]", (std::pair<float8_e4m3fn, float8_e5m2>),
                   (std::pair<bfloat16, float8_e4m3fn>), (std::pair<float8_e5m2, bfloat16>)) {
  using scalify::kernels::packing;
  using scalify::kernels::strided;
  using TA = typename TestType::first_type;
  using TB = typename TestType::second_type;
  std::mt19937 rng(9);
  constexpr int kMR = 12, kNR = 32;
  for (index_t k : {1, 2, 7, 64, 129}) {
    const auto a = random_mat<TA>(kMR - 3, k, layout::row_major, 0, rng);  // a partial tile
    const auto b = random_mat<TB>(k, kNR - 5, layout::col_major, 0, rng);
    const index_t ku = (k + 1) / 2;
    std::vector<uint32_t> ap(static_cast<std::size_t>(ku * kMR)), bp(static_cast<std::size_t>(ku * kNR));
    scalify::kernels::pack_a_panel<packing::bf16x2>(strided<TA>{a.buf.data(), a.ld, 1}, a.rows, k, 0, kMR, ap.data());
    scalify::kernels::pack_b_panel<packing::bf16x2>(strided<TB>{b.buf.data(), 1, b.ld}, k, b.cols, 0, kNR, bp.data());
    std::vector<float> got(kMR * kNR), expected(kMR * kNR);
    scalify::kernels::emulated16_f32::gemm_tile_bf16<kMR, 2>(ku, ap.data(), bp.data(), got.data(), false);
    scalify::kernels::scalar::gemm_tile_bf16_ref<kMR, kNR>(ku, ap.data(), bp.data(), expected.data(), false);
    INFO("k " << k);
    CHECK(std::memcmp(got.data(), expected.data(), got.size() * sizeof(float)) == 0);
    {  // The short tile (kMR - 1 rows) on a panel packed kMR - 1 high.
      std::vector<uint32_t> ap_short(static_cast<std::size_t>(ku * (kMR - 1)));
      scalify::kernels::pack_a_panel<packing::bf16x2>(strided<TA>{a.buf.data(), a.ld, 1}, a.rows, k, 0, kMR - 1,
                                                      ap_short.data());
      std::vector<float> got_short((kMR - 1) * kNR), expected_short((kMR - 1) * kNR);
      scalify::kernels::emulated16_f32::gemm_tile_bf16<kMR - 1, 2>(ku, ap_short.data(), bp.data(), got_short.data(),
                                                                   false);
      scalify::kernels::scalar::gemm_tile_bf16_ref<kMR - 1, kNR>(ku, ap_short.data(), bp.data(),
                                                                 expected_short.data(), false);
      CHECK(std::memcmp(got_short.data(), expected_short.data(), got_short.size() * sizeof(float)) == 0);
      // Its rows are the full tile's first kMR - 1 rows.
      CHECK(std::memcmp(got_short.data(), got.data(), got_short.size() * sizeof(float)) == 0);
    }
    // And the values: the exact fp8 product sums within the bound; zero padding outside.
    int bad = 0;
    for (index_t i = 0; i < kMR; ++i) {
      for (index_t j = 0; j < kNR; ++j) {
        double s = 0, sabs = 0;
        if (i < a.rows && j < b.cols) {
          for (index_t q = 0; q < k; ++q) {
            s += a.value(i, q) * b.value(q, j);
            sabs += std::abs(a.value(i, q) * b.value(q, j));
          }
        }
        // bfloat16 inputs may be tiny: denormal products and partial sums flush (k 2^-126 each).
        const double tol = double(k + 1) * 0x1p-24 * sabs + double(3 * k) * 0x1p-126;
        if (!(std::abs(double(got[std::size_t(i * kNR + j)]) - s) <= tol) && bad++ < 5) {
          FAIL_CHECK("bf16 kernel (" << i << ", " << j << "): " << got[std::size_t(i * kNR + j)] << " vs " << s);
        }
      }
    }
    CHECK(bad == 0);
  }
}

// ------------------------------------------------------------------------------
// Eigen overload and ops/matmul routing

TEST_CASE("gemm: Eigen overload (plain, transposed expressions) equals the view API", "[kernels][gemm]") {
  using MatE4 = Eigen::Matrix<float8_e4m3fn, Eigen::Dynamic, Eigen::Dynamic>;  // column-major
  std::mt19937 rng(3);
  const auto a = random_mat<float8_e4m3fn>(23, 40, layout::col_major, 0, rng);
  const auto b = random_mat<float8_e4m3fn>(40, 9, layout::col_major, 0, rng);
  const MatE4 ea = Eigen::Map<const MatE4>(a.buf.data(), 23, 40), eb = Eigen::Map<const MatE4>(b.buf.data(), 40, 9);
  const auto c1 = scalify::gemm(ea, eb, {.alpha = 0.5f});
  std::vector<float> c2(23 * 9);
  scalify::gemm(a.view(), b.view(), scalify::row_major_view(c2.data(), 23, 9), {.alpha = 0.5f});
  CHECK(std::memcmp(c1.data(), c2.data(), c2.size() * sizeof(float)) == 0);
  // An expression without storage is evaluated first; transposes via options.
  const MatE4 eat = ea.transpose();
  const auto c3 = scalify::gemm(eat, eb, {.trans_a = trans::yes, .alpha = 0.5f});
  CHECK(c3 == c1);
  const auto c4 = scalify::gemm<float16>(ea * float8_e4m3fn(1.0f), eb);
  CHECK(c4.rows() == 23);
  CHECK_THROWS_AS(scalify::gemm(ea, eb, {.beta = 1.0f}), std::invalid_argument);
  CHECK_THROWS_AS(scalify::gemm(ea, ea), scalify::shape_error);
}

// ------------------------------------------------------------------------------
// Errors

TEST_CASE("gemm: bad arguments throw with a clear message", "[kernels][gemm][errors]") {
  std::vector<float> x(100), y(100), z(100);
  const float* px = x.data();
  auto msg = [](auto&& f) {
    try {
      f();
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no exception");
  };
  using scalify::col_major_view;
  using scalify::gemm;
  using scalify::row_major_view;
  CHECK_THROWS_AS(gemm(row_major_view(px, -1, 4), row_major_view(px, 4, 2), row_major_view(z.data(), -1, 2)),
                  scalify::shape_error);
  CHECK_THAT(msg([&] { gemm(row_major_view(px, -1, 4), row_major_view(px, 4, 2), row_major_view(z.data(), 1, 2)); }),
             Catch::Contains("A has negative size (-1 x 4)"));
  CHECK_THAT(msg([&] { gemm(row_major_view(px, 3, 4, 3), row_major_view(px, 4, 2), row_major_view(z.data(), 3, 2)); }),
             Catch::Contains("leading dimension 3, less than its row length 4"));
  CHECK_THAT(msg([&] { gemm(row_major_view(px, 3, 4), col_major_view(px, 4, 2, 3), row_major_view(z.data(), 3, 2)); }),
             Catch::Contains("less than its column length 4"));
  CHECK_THAT(msg([&] { gemm(row_major_view(px, 3, 4), row_major_view(px, 5, 2), row_major_view(z.data(), 3, 2)); }),
             Catch::Contains("inner sizes differ"));
  CHECK_THAT(msg([&] { gemm(row_major_view(px, 3, 4), row_major_view(px, 4, 2), row_major_view(z.data(), 2, 3)); }),
             Catch::Contains("C is (2 x 3) but op(A) op(B) is (3 x 2)"));
  CHECK_THAT(msg([&] {
               gemm(row_major_view(static_cast<const float*>(nullptr), 3, 4), row_major_view(px, 4, 2),
                    row_major_view(z.data(), 3, 2));
             }),
             Catch::Contains("A (3 x 4) has a null data pointer"));
  CHECK_THAT(msg([&] {
               gemm(row_major_view(px, 3, 4), row_major_view(px, 4, 2), row_major_view(static_cast<float*>(nullptr), 3, 2));
             }),
             Catch::Contains("C (3 x 2) has a null data pointer"));
  const std::vector<float> bias(3);
  CHECK_THAT(msg([&] { gemm(row_major_view(px, 3, 4), row_major_view(px, 4, 2), row_major_view(z.data(), 3, 2), {.bias = bias}); }),
             Catch::Contains("bias has 3 elements, C has 2 columns"));
  CHECK_THAT(msg([&] { gemm(row_major_view(px, 3, 4), row_major_view(px, 4, 2), row_major_view(z.data(), 3, 2), {.threads = -1}); }),
             Catch::Contains("threads must be >= 0"));
  // Transposes change the shapes checked.
  CHECK_THAT(msg([&] {
               gemm(row_major_view(px, 3, 4), row_major_view(px, 4, 2), row_major_view(z.data(), 3, 2),
                    {.trans_a = trans::yes});
             }),
             Catch::Contains("op(A) is (4 x 3)"));
  scalify::packed_matrix pb(row_major_view(px, 4, 2));
  CHECK(pb.rows() == 4);
  CHECK(pb.cols() == 2);
  CHECK_THAT(msg([&] { gemm(row_major_view(px, 3, 5), pb, row_major_view(z.data(), 3, 2)); }),
             Catch::Contains("packed B is (4 x 2)"));
  CHECK_THAT(msg([&] { gemm(row_major_view(px, 3, 4), pb, row_major_view(z.data(), 3, 2), {.trans_b = trans::yes}); }),
             Catch::Contains("trans_b must be no"));
  CHECK_THROWS_AS(scalify::packed_matrix(row_major_view(px, 4, -2)), scalify::shape_error);
  scalify::packed_matrix moved_to(std::move(pb));
  CHECK(moved_to.cols() == 2);
  CHECK(pb.cols() == 0);  // moved-from: empty, and rejected as a 0 x 0 B
  CHECK_THAT(msg([&] { gemm(row_major_view(px, 3, 4), pb, row_major_view(z.data(), 3, 2)); }),
             Catch::Contains("packed B is (0 x 0)"));
  // Empty matrices may have null data.
  CHECK_NOTHROW(gemm(row_major_view(static_cast<const float*>(nullptr), 0, 4), row_major_view(px, 4, 2),
                     row_major_view(static_cast<float*>(nullptr), 0, 2)));
  // Enumerators out of range are errors, not the default meaning (in every build type).
  CHECK_THAT(msg([&] {
               gemm(row_major_view(px, 3, 4), row_major_view(px, 4, 2), row_major_view(z.data(), 3, 2),
                    {.trans_a = static_cast<trans>(2)});
             }),
             Catch::Contains("the trans option of A is invalid (2)"));
  CHECK_THAT(msg([&] {
               gemm(row_major_view(px, 3, 4), row_major_view(px, 4, 2), row_major_view(z.data(), 3, 2),
                    {.trans_b = static_cast<trans>(-1)});
             }),
             Catch::Contains("the trans option of B is invalid (-1)"));
  CHECK_THAT(msg([&] {
               gemm(row_major_view(px, 3, 4), row_major_view(px, 4, 2), row_major_view(z.data(), 3, 2),
                    {.act = static_cast<scalify::activation>(7)});
             }),
             Catch::Contains("invalid activation (7)"));
  CHECK_THAT(msg([&] {
               gemm(row_major_view(px, 3, 4), scalify::matrix_view<const float>{px, 4, 2, 0, static_cast<layout>(5)},
                    row_major_view(z.data(), 3, 2));
             }),
             Catch::Contains("B has an invalid layout (5)"));
  // Also with an empty C (m = 0): the checks do not depend on the sizes.
  CHECK_THAT(msg([&] {
               gemm(row_major_view(px, 0, 4), row_major_view(px, 4, 2), row_major_view(z.data(), 0, 2),
                    {.act = static_cast<scalify::activation>(3)});
             }),
             Catch::Contains("invalid activation (3)"));
}

TEST_CASE("gemm: a B packed as bfloat16 pairs rejects an A of another type, whatever the sizes",
          "[kernels][gemm][errors]") {
  if (!scalify::cpu_supports(cpu_path::avx512bf16)) {
    WARN("the avx512bf16 path is not available here: not checked");
    return;
  }
  scalify::scoped_cpu_path guard(cpu_path::avx512bf16);
  const std::vector<bfloat16> w(8);
  const scalify::packed_matrix pb(scalify::row_major_view(w.data(), 4, 2));
  REQUIRE(pb.path() == cpu_path::avx512bf16);
  const std::vector<float> x(12);
  std::vector<float> y(6);
  for (const index_t m : {3, 0}) {  // 0: C empty, nothing computed, still an error
    CAPTURE(m);
    CHECK_THROWS_WITH(scalify::gemm(scalify::row_major_view(x.data(), m, 4), pb, scalify::row_major_view(y.data(), m, 2)),
                      Catch::Contains("packed as bfloat16 pairs"));
  }
  const std::vector<bfloat16> xb(12);
  CHECK_NOTHROW(scalify::gemm(scalify::row_major_view(xb.data(), 3, 4), pb, scalify::row_major_view(y.data(), 3, 2)));
}
