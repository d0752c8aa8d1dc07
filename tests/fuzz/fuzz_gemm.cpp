// fuzz_gemm: libFuzzer target for scalify::gemm (scalify/kernels/gemm.hpp).
//
// Input (bytes in order; missing ones read as 0):
//   0-2   the types: C from byte 2 (% 5: e4m3fn, e5m2, float16, bfloat16, float);
//         for a float C, A and B from bytes 0 and 1 (% 5, the same list); for
//         another C, (A, B) from byte 0 (% 5): (e4m3fn, e5m2), (e5m2, bfloat16),
//         (float16, e4m3fn), (bfloat16, float), (float, float16)
//   3-5   m, n, k: small (m <= 12, n <= 36, k <= 40), or with the "large" flag
//         up to 200 x 600 x 1100, k cut so that m n k <= 1.2e6 (several cache
//         blocks, the 2-thread schedules: from 1e6)
//   6     flags: bit 0-2 A, B, C column-major; bit 3-4 A, B transposed; bit 5
//         bias; bit 6 saturate; bit 7 large
//   7     bits 0-1 activation (none, relu, gelu_tanh, none); bits 2-3 padding
//         of every leading dimension; bit 4 moderate values (below); bit 5
//         sparse: about half the values +0 (exact zero sums, -0 after a
//         negative alpha)
//   8     alpha (low 4 bits) and beta (high 4 bits) from a table of 16 values
//         with 0, +-1, powers of two, 1e-3, 1e3, 2^-100, 2^60, NaN and inf
//   9...  element codes of A, B, C, then the bias, read cyclically
//         (moderate values: non-finite codes made finite, float32 and
//         bfloat16 exponents squeezed into [2^-20, 2^20))
//
// Every path this machine supports runs the product: 1 thread, 2 threads,
// and B prepacked (packed_matrix) with 1 and 2 threads. Findings (abort):
//   - bits: every run that docs/kernels.md says sums in the same order (the
//     float32 kernels of every path, any thread count, packed or not; the
//     streaming M <= 4 path unless it takes the dot-product form) must give
//     the scalar path's bits; NaN outputs compare equal whatever their
//     payload and sign (IEEE 754 leaves NaN propagation order unspecified);
//   - bound: where every value involved is finite and below 2^100, each
//     element must be within the bound of tests/kernels/gemm_test.cpp of a
//     double reference from the widened inputs (decoded by the independent
//     tests/support/reference.hpp):
//       |pre - exact| <= 1.01 (K + 4) 2^-24 (|alpha| S_ij + |beta C_ij| + |bias_j|) + K 2^-126 |alpha|
//     (S_ij = sum_k |a_ik b_kj|), for GELU x 1.13 + 8 2^-24 |v| + 1e-37, plus
//     half an ulp of C's type and its smallest subnormal. The avx512bf16
//     kernel (e4m3fn, e5m2, bfloat16 inputs) flushes tiny partial sums and
//     products (2 K 2^-126 |alpha| instead of K) and reads denormal inputs as
//     zero (+ |alpha| times the sum of |a_ik b_kj| with a denormal factor):
//     bound only, not bits. Non-saturated outputs may overflow to inf/NaN only
//     where the bound reaches C's largest finite value;
//   - amax must equal max |C| over the stored values (NaN skipped), exactly,
//     or +inf when an e4m3fn C holds a NaN (an overflow is stored as NaN and
//     reported as +inf; required where the reference value was finite);
//   - padding between C's rows (columns) must be untouched;
//   - no exception, except the documented std::invalid_argument for a B
//     prepacked as bfloat16 pairs (avx512bf16) with an A of another type;
//   - crashes, ASan and UBSan reports.
#include <algorithm>  // std::min, std::max, std::clamp
#include <bit>        // std::bit_cast
#include <cmath>      // std::ldexp, std::fabs, std::isnan, std::isfinite
#include <cstdint>    // uint8_t, uint16_t, uint32_t
#include <cstdio>     // std::fprintf, std::snprintf
#include <cstdlib>    // std::abort
#include <limits>     // std::numeric_limits
#include <optional>   // std::optional
#include <stdexcept>  // std::invalid_argument
#include <string>     // std::string
#include <vector>     // std::vector

#include "scalify/cpu.hpp"              // all_cpu_paths, cpu_supports, scoped_cpu_path
#include "scalify/kernels/gemm.hpp"     // gemm, packed_matrix, matrix_view, kExactInBf16
#include "support/activation_ref.hpp"   // activation_ref
#include "support/narrow_types.hpp"     // ref_format, code_of, from_code
#include "support/reference.hpp"        // ref::decode

namespace {

namespace ref = scalify_test::ref;
using scalify::activation;
using scalify::cpu_path;
using scalify::layout;
using scalify::trans;
using index_t = std::ptrdiff_t;

[[noreturn]] void finding(const std::string& what) {
  std::fprintf(stderr, "fuzz_gemm finding: %s\n", what.c_str());
  std::abort();
}

// ------------------------------------------------------------------------------
// Element types: codes in, values out (through the reference's decoder)

template <class T>
constexpr bool kIsFloat = std::is_same_v<T, float>;

template <class T>
const char* type_name() {
  if constexpr (kIsFloat<T>) {
    return "float32";
  } else {
    return scalify_test::ref_format<T>.name;
  }
}

template <class T>
uint32_t code_of(T x) {
  if constexpr (kIsFloat<T>) {
    return std::bit_cast<uint32_t>(x);
  } else {
    return scalify_test::code_of(x);
  }
}

template <class T>
T from_code(uint32_t code) {
  if constexpr (kIsFloat<T>) {
    return std::bit_cast<float>(code);
  } else {
    return scalify_test::from_code<T>(code);
  }
}

/// The value of a code, exactly.
template <class T>
double value_of(uint32_t code) {
  if constexpr (kIsFloat<T>) {
    return static_cast<double>(std::bit_cast<float>(code));
  } else {
    return ref::decode(scalify_test::ref_format<T>, code);
  }
}
template <class T>
double value_of(T x) {
  return value_of<T>(code_of(x));
}

/// Exponent e of a float32 or bfloat16 code -> 107 + e % 40: [2^-20, 2^20).
uint32_t squeeze_f32_bits(uint32_t bits) {
  const uint32_t e = (bits >> 23) & 0xFF;
  return (bits & 0x807F'FFFFu) | ((107 + e % 40) << 23);
}

/// "Moderate" codes: finite, and for float32 and bfloat16 of magnitude in [2^-20, 2^20) (or 0).
template <class T>
uint32_t moderate(uint32_t code) {
  if constexpr (kIsFloat<T>) {
    return (code & 0x7FFF'FFFFu) == 0 ? code : squeeze_f32_bits(code);
  } else if constexpr (std::is_same_v<T, scalify::bfloat16>) {
    return (code & 0x7FFFu) == 0 ? code : squeeze_f32_bits(code << 16) >> 16;
  } else {
    const ref::format& f = scalify_test::ref_format<T>;
    if (std::isfinite(value_of<T>(code))) return code;
    const uint32_t sign = code & f.sign_bit();
    return sign | f.max_code();
  }
}

/// Element codes read cyclically from the input's tail.
struct value_stream {
  const uint8_t* data;
  size_t size, pos = 0;
  bool moderate_values, sparse;
  uint8_t byte() {
    if (size == 0) return 0;
    const uint8_t b = data[pos];
    pos = pos + 1 == size ? 0 : pos + 1;
    return b;
  }
  template <class T>
  T next() {
    if (sparse && (byte() & 1) != 0) return from_code<T>(0);  // +0
    uint32_t code = 0;
    for (size_t i = 0; i < sizeof(T); ++i) code |= uint32_t{byte()} << (8 * i);
    return from_code<T>(moderate_values ? moderate<T>(code) : code);
  }
};

// ------------------------------------------------------------------------------
// The case

struct gemm_case {
  index_t m = 0, n = 0, k = 0;
  layout la = layout::row_major, lb = layout::row_major, lc = layout::row_major;
  trans ta = trans::no, tb = trans::no;
  index_t pad = 0;
  float alpha = 1.0f, beta = 0.0f;
  bool bias = false, saturate = false;
  activation act = activation::none;

  std::string describe() const {
    char buf[256];
    std::snprintf(buf, sizeof buf, "%tdx%tdx%td A:%s%s B:%s%s C:%s pad %td alpha %a beta %a%s%s act %d", m, n, k,
                  la == layout::row_major ? "row" : "col", ta == trans::yes ? "^T" : "",
                  lb == layout::row_major ? "row" : "col", tb == trans::yes ? "^T" : "",
                  lc == layout::row_major ? "row" : "col", pad, double(alpha), double(beta), bias ? " bias" : "",
                  saturate ? " saturate" : "", int(act));
    return buf;
  }
};

/// A matrix stored with a layout and padded leading dimension.
template <class T>
struct mat {
  std::vector<T> buf;
  index_t rows = 0, cols = 0, ld = 0;
  layout order = layout::row_major;

  mat(index_t r, index_t c, layout o, index_t pad, value_stream& values) : rows(r), cols(c), order(o) {
    ld = std::max<index_t>(o == layout::row_major ? c : r, 1) + pad;
    const index_t outer = o == layout::row_major ? r : c;
    buf.resize(static_cast<size_t>(std::max<index_t>(outer * ld, 1)));
    for (T& x : buf) x = values.next<T>();  // the padding too: it must stay as it is
  }
  size_t offset(index_t i, index_t j) const {
    return static_cast<size_t>(order == layout::row_major ? i * ld + j : i + j * ld);
  }
  const T& at(index_t i, index_t j) const { return buf[offset(i, j)]; }
  scalify::matrix_view<const T> view() const { return {buf.data(), rows, cols, ld, order}; }
  scalify::matrix_view<T> mview() { return {buf.data(), rows, cols, ld, order}; }
};

const float kScalars[16] = {1.0f, 0.0f, -1.0f, 0.5f, 2.0f, 0.25f, -3.0f, 1e-3f, 1000.0f, 0x1p-100f, 0x1p60f,
                            std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                            -0.0f, 1.5f, -0.125f};

/// Where op(B) is read column by column on a SIMD path (M <= 4, unpacked):
/// another summation order (docs/kernels.md, the streaming path).
bool uses_dot_form(const gemm_case& g, index_t ld_b) {
  if (g.m > 4) return false;
  index_t rs = g.lb == layout::row_major ? ld_b : 1, cs = g.lb == layout::row_major ? 1 : ld_b;
  if (g.tb == trans::yes) std::swap(rs, cs);
  return cs != 1 && rs == 1;
}

/// The expected value of C(i, j) and its tolerance; nothing where the bound does not apply.
struct expectation {
  bool checked = false;
  double post = 0, tol = 0, extra_bf16 = 0;  // extra_bf16: added to tol on the avx512bf16 kernel
  bool may_overflow = false;                 // a narrow non-saturated output may become inf/NaN
};

template <class TA, class TB, class TC>
void run_case(const gemm_case& g, value_stream& values) {
  const index_t ar = g.ta == trans::no ? g.m : g.k, ac = g.ta == trans::no ? g.k : g.m;
  const index_t br = g.tb == trans::no ? g.k : g.n, bc = g.tb == trans::no ? g.n : g.k;
  const mat<TA> a(ar, ac, g.la, g.pad, values);
  const mat<TB> b(br, bc, g.lb, g.pad, values);
  const mat<TC> c0(g.m, g.n, g.lc, g.pad, values);
  std::vector<float> bias;
  if (g.bias) {
    for (index_t j = 0; j < g.n; ++j) bias.push_back(values.next<float>());
  }
  const std::string what = std::string(type_name<TA>()) + " x " + type_name<TB>() + " -> " + type_name<TC>() + " " +
                           g.describe();

  // The double reference and the bound, once.
  // op(A) (m x k) and op(B) (k x n, stored transposed: n x k) decoded once.
  std::vector<double> av(static_cast<size_t>(g.m * g.k)), bv(static_cast<size_t>(g.k * g.n));
  for (index_t i = 0; i < g.m; ++i) {
    for (index_t q = 0; q < g.k; ++q) {
      av[static_cast<size_t>(i * g.k + q)] = value_of<TA>(g.ta == trans::no ? a.at(i, q) : a.at(q, i));
    }
  }
  for (index_t j = 0; j < g.n; ++j) {
    for (index_t q = 0; q < g.k; ++q) {
      bv[static_cast<size_t>(j * g.k + q)] = value_of<TB>(g.tb == trans::no ? b.at(q, j) : b.at(j, q));
    }
  }
  constexpr double u = 0x1p-24, kLimit = 0x1p100;
  double u_out = 0, out_max = std::numeric_limits<float>::max(), out_denorm = 1e-40;
  if constexpr (!kIsFloat<TC>) {
    const ref::format& f = scalify_test::ref_format<TC>;
    u_out = std::ldexp(1.0, -(f.mantissa_bits + 1));
    out_max = ref::decode(f, f.max_code());
    out_denorm = ref::decode(f, 1);
  }
  const double alpha = g.alpha, beta = g.beta;
  std::vector<expectation> expected(static_cast<size_t>(g.m * g.n));
  for (index_t i = 0; i < g.m; ++i) {
    for (index_t j = 0; j < g.n; ++j) {
      expectation& e = expected[static_cast<size_t>(i * g.n + j)];
      double s = 0, sabs = 0, denormal = 0;
      bool finite = std::isfinite(alpha) && std::isfinite(beta);
      const double* ai = av.data() + i * g.k;
      const double* bj_col = bv.data() + j * g.k;
      for (index_t q = 0; q < g.k; ++q) {
        const double x = ai[q], y = bj_col[q], p = x * y;
        finite = finite && std::isfinite(x) && std::isfinite(y);
        s += p;
        sabs += std::fabs(p);
        if ((x != 0 && std::fabs(x) < 0x1p-126) || (y != 0 && std::fabs(y) < 0x1p-126)) denormal += std::fabs(p);
      }
      const double c_old = beta != 0 ? value_of<TC>(c0.at(i, j)) : 0.0;
      const double bj = g.bias ? double(bias[static_cast<size_t>(j)]) : 0.0;
      finite = finite && std::isfinite(c_old) && std::isfinite(bj);
      if (!finite || sabs > kLimit || std::fabs(alpha) * sabs > kLimit || std::fabs(beta * c_old) > kLimit ||
          std::fabs(bj) > kLimit) {
        continue;
      }
      const double pre = alpha * s + beta * c_old + bj;
      double err = 1.01 * double(g.k + 4) * u * (std::fabs(alpha) * sabs + std::fabs(beta * c_old) + std::fabs(bj)) +
                   double(g.k) * 0x1p-126 * std::fabs(alpha);
      double extra = (double(g.k) * 0x1p-126 + denormal) * std::fabs(alpha);
      double post = scalify_test::activation_ref(pre, g.act);
      if (g.act == activation::gelu_tanh) {
        err = 1.13 * err + 8 * u * std::fabs(pre) + 1e-37;
        extra *= 1.13;
      }
      if (g.saturate) post = std::clamp(post, -out_max, out_max);
      e.checked = true;
      e.post = post;
      e.tol = err * (1 + 2 * u_out) + u_out * std::fabs(post) + out_denorm;
      e.extra_bf16 = extra * (1 + 2 * u_out);
      e.may_overflow = !kIsFloat<TC> && !g.saturate && std::fabs(post) + e.tol + e.extra_bf16 >= out_max;
    }
  }

  // One run on the active path: checks the bound, amax and the padding;
  // returns C's codes (row-major order).
  auto run = [&](int threads, bool packed, bool bf16_kernel) -> std::optional<std::vector<uint32_t>> {
    mat<TC> c = c0;
    float amax = -1.0f;
    scalify::gemm_options o{.trans_a = g.ta, .trans_b = g.tb, .alpha = g.alpha, .beta = g.beta, .bias = bias,
                            .act = g.act, .saturate = g.saturate, .amax = &amax, .threads = threads};
    const std::string run_what = what + ", path " + std::string(scalify::to_string(scalify::active_cpu_path())) +
                                 ", threads " + std::to_string(threads) + (packed ? ", packed B" : "");
    if (packed) {
      const scalify::packed_matrix pb(b.view(), g.tb);
      o.trans_b = trans::no;
      if (pb.path() == cpu_path::avx512bf16 && scalify::kernels::kExactInBf16<TB> &&
          !scalify::kernels::kExactInBf16<TA>) {
        try {
          scalify::gemm(a.view(), pb, c.mview(), o);
        } catch (const std::invalid_argument&) {
          return std::nullopt;  // documented
        }
        finding(run_what + ": no std::invalid_argument for an A of another type than the bfloat16-pair packed B");
      }
      scalify::gemm(a.view(), pb, c.mview(), o);
    } else {
      scalify::gemm(a.view(), b.view(), c.mview(), o);
    }
    std::vector<uint32_t> codes;
    float c_amax = 0.0f;
    // An output type without inf (e4m3fn) stores an overflow as NaN, which amax
    // reports as +inf: required where the reference says the value was finite,
    // allowed wherever C holds a NaN (whose pre-cast value the fuzzer does not know).
    bool nan_from_overflow = false, nan_stored = false;
    for (index_t i = 0; i < g.m; ++i) {
      for (index_t j = 0; j < g.n; ++j) {
        const TC stored = c.at(i, j);
        codes.push_back(code_of(stored));
        const double got = value_of(stored);
        const expectation& e = expected[static_cast<size_t>(i * g.n + j)];
        if (std::isnan(got)) {
          nan_stored = true;
          nan_from_overflow = nan_from_overflow || e.checked;
        } else {
          c_amax = std::max(c_amax, static_cast<float>(std::fabs(got)));
        }
        if (!e.checked) continue;
        const double tol = e.tol + (bf16_kernel ? e.extra_bf16 : 0.0);
        if (!std::isfinite(got) && e.may_overflow) continue;
        if (!(std::fabs(got - e.post) <= tol)) {
          char buf[160];
          std::snprintf(buf, sizeof buf, ": C(%td, %td) = %.9g, expected %.9g +- %.3g", i, j, got, e.post, tol);
          finding(run_what + buf);
        }
      }
    }
    if constexpr (std::numeric_limits<TC>::has_infinity) nan_stored = nan_from_overflow = false;
    const float inf = std::numeric_limits<float>::infinity();
    const bool amax_ok = nan_from_overflow ? amax == inf
                                           : std::bit_cast<uint32_t>(amax) == std::bit_cast<uint32_t>(c_amax) ||
                                                 (nan_stored && amax == inf);
    if (g.m > 0 && g.n > 0 && !amax_ok) {
      char buf[128];
      std::snprintf(buf, sizeof buf, ": amax %.9g, max |C| %.9g%s", double(amax), double(c_amax),
                    nan_from_overflow ? " (an overflow stored as NaN: expected inf)" : "");
      finding(run_what + buf);
    }
    const index_t inner = g.lc == layout::row_major ? g.n : g.m, outer = g.lc == layout::row_major ? g.m : g.n;
    for (size_t t = 0; t < c.buf.size(); ++t) {
      const index_t o_idx = static_cast<index_t>(t) / c.ld, i_idx = static_cast<index_t>(t) % c.ld;
      if ((i_idx >= inner || o_idx >= outer) && code_of(c.buf[t]) != code_of(c0.buf[t])) {
        finding(run_what + ": wrote C's padding at " + std::to_string(t));
      }
    }
    return codes;
  };

  auto same_bits = [&](const std::vector<uint32_t>& x, const std::vector<uint32_t>& y) {
    for (size_t t = 0; t < x.size(); ++t) {
      if (x[t] != y[t] && !(std::isnan(value_of<TC>(x[t])) && std::isnan(value_of<TC>(y[t])))) return t;
    }
    return x.size();
  };

  std::vector<uint32_t> base;
  constexpr bool kBf16Pair = scalify::kernels::kExactInBf16<TA> && scalify::kernels::kExactInBf16<TB>;
  const bool dot_form = uses_dot_form(g, b.ld);
  for (cpu_path p : scalify::all_cpu_paths) {
    if (!scalify::cpu_supports(p)) continue;
    scalify::scoped_cpu_path guard(p);
    for (const bool packed : {false, true}) {
      for (const int threads : {1, 2}) {
        const bool bf16_kernel = p == cpu_path::avx512bf16 &&
                                 (packed ? scalify::kernels::kExactInBf16<TB> : kBf16Pair);
        const auto codes = run(threads, packed, bf16_kernel);
        if (!codes) continue;
        if (base.empty() && p == cpu_path::scalar && !packed && threads == 1) {
          base = *codes;
          continue;
        }
        const bool same_order = !bf16_kernel && (p == cpu_path::scalar || packed || !dot_form);
        const size_t t = same_bits(*codes, base);
        if (same_order && t < base.size()) {
          char buf[160];
          std::snprintf(buf, sizeof buf, ": C(%td, %td) has code 0x%x, the scalar path 0x%x", index_t(t) / g.n,
                        index_t(t) % g.n, (*codes)[t], base[t]);
          finding(what + ", path " + std::string(scalify::to_string(p)) + ", threads " + std::to_string(threads) +
                  (packed ? ", packed B" : "") + buf);
        }
      }
    }
  }
}

// ------------------------------------------------------------------------------
// Type dispatch. A float32 C with every (A, B) pair (25 instantiations), the
// other C types with five pairs that put each type once on each side (20):
// all 125 combinations took 8 minutes to compile under the sanitizers, and A
// and B meet C's type only in the epilogue, which each of the 45 exercises.

template <class F>
void with_type(uint8_t which, F&& f) {
  switch (which % 5) {
    case 0: f(scalify::float8_e4m3fn{}); break;
    case 1: f(scalify::float8_e5m2{}); break;
    case 2: f(scalify::float16{}); break;
    case 3: f(scalify::bfloat16{}); break;
    default: f(float{}); break;
  }
}

template <class TC>
void with_pair(uint8_t which, const gemm_case& g, value_stream& values) {
  using scalify::bfloat16, scalify::float16, scalify::float8_e4m3fn, scalify::float8_e5m2;
  switch (which % 5) {
    case 0: run_case<float8_e4m3fn, float8_e5m2, TC>(g, values); break;
    case 1: run_case<float8_e5m2, bfloat16, TC>(g, values); break;
    case 2: run_case<float16, float8_e4m3fn, TC>(g, values); break;
    case 3: run_case<bfloat16, float, TC>(g, values); break;
    default: run_case<float, float16, TC>(g, values); break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto at = [&](size_t i) -> uint8_t { return i < size ? data[i] : 0; };
  gemm_case g;
  const uint8_t flags = at(6), more = at(7);
  if ((flags & 0x80) == 0) {
    g.m = at(3) % 13;
    g.n = at(4) % 37;
    g.k = at(5) % 41;
  } else {
    g.m = 1 + at(3) * 200 / 256;
    g.n = 1 + (at(4) * 600 + at(9) * 2) / 256;
    g.k = 1 + (at(5) * 1100 + at(10) * 4) / 256;
    g.k = std::max<index_t>(1, std::min<index_t>(g.k, 1'200'000 / (g.m * g.n)));
  }
  g.la = (flags & 1) != 0 ? layout::col_major : layout::row_major;
  g.lb = (flags & 2) != 0 ? layout::col_major : layout::row_major;
  g.lc = (flags & 4) != 0 ? layout::col_major : layout::row_major;
  g.ta = (flags & 8) != 0 ? trans::yes : trans::no;
  g.tb = (flags & 16) != 0 ? trans::yes : trans::no;
  g.bias = (flags & 32) != 0;
  g.saturate = (flags & 64) != 0;
  g.act = static_cast<activation>((more & 3) % 3);
  g.pad = (more >> 2) & 3;
  g.alpha = kScalars[at(8) & 15];
  g.beta = kScalars[at(8) >> 4];
  value_stream values{size > 9 ? data + 9 : nullptr, size > 9 ? size - 9 : 0, 0, (more & 16) != 0,
                      (more & 32) != 0};
  try {
    switch (at(2) % 5) {
      case 0: with_pair<scalify::float8_e4m3fn>(at(0), g, values); break;
      case 1: with_pair<scalify::float8_e5m2>(at(0), g, values); break;
      case 2: with_pair<scalify::float16>(at(0), g, values); break;
      case 3: with_pair<scalify::bfloat16>(at(0), g, values); break;
      default:
        with_type(at(0), [&](auto ta) {
          with_type(at(1), [&](auto tb) { run_case<decltype(ta), decltype(tb), float>(g, values); });
        });
    }
  } catch (const std::exception& e) {
    finding(std::string("unexpected exception: ") + e.what() + " in " + g.describe());
  }
  return 0;
}
