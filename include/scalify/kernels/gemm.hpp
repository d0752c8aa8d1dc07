// scalify: GEMM over float8, float16, bfloat16 and float32 with float32
// accumulation and a fused epilogue.
//
//   C = epilogue(alpha * op(A) * op(B) + beta * C + bias)     op(A): M x K, op(B): K x N, C: M x N
//
//   gemm(a, b, c, options)          matrix_view operands (pointer, rows, cols, ld, layout)
//   gemm(a, packed_b, c, options)   B packed once (packed_matrix) and reused across calls
//   gemm<TC>(eigen_a, eigen_b, options) -> row-major Eigen matrix of TC
//
// A and B may each be float8_e4m3fn, float8_e5m2, float16, bfloat16 or float
// (any mix); C float, float16, bfloat16, float8_e4m3fn or float8_e5m2. The
// structure is GotoBLAS/BLIS, one stage per file: kernels/blocking.hpp (cache
// blocks), kernels/pack.hpp (panels; inputs widened there, once per element),
// kernels/microkernels.hpp (register tiles, one per CPU path, chosen at run
// time; cpu.hpp's SCALIFY_CPU_PATH / scoped_cpu_path force one),
// kernels/epilogue.hpp (alpha, beta, bias, activation, cast, amax in the same
// pass), kernels/gemv.hpp (M <= 4: B streamed, not packed) and
// kernels/thread_pool.hpp (threads). docs/kernels.md has the details.
//
// Paths agree bit for bit wherever they use the same arithmetic (scalar, avx2,
// avx512 and the streaming M <= 4 path all sum k in order with one FMA each);
// the avx512bf16 kernel adds each pair of k odd-first (vdpbf16ps).
#ifndef SCALIFY_KERNELS_GEMM_HPP_
#define SCALIFY_KERNELS_GEMM_HPP_

#include <Eigen/Core>   // Eigen::Matrix, DenseBase
#include <algorithm>    // std::min, std::max
#include <atomic>       // std::atomic
#include <bit>          // std::bit_cast
#include <cmath>        // std::isfinite
#include <cstddef>      // ptrdiff_t, size_t
#include <cstdint>      // uint32_t
#include <exception>    // std::exception_ptr, std::current_exception, std::rethrow_exception
#include <mutex>        // std::mutex, std::lock_guard
#include <new>          // operator new, std::align_val_t
#include <span>         // std::span
#include <string>       // std::string, std::to_string
#include <type_traits>  // std::remove_const_t, std::is_same_v
#include <utility>      // std::swap, std::exchange, std::move
#include <vector>       // std::vector

#include "scalify/cpu.hpp"                   // active_cpu_path, cpu_path
#include "scalify/errors.hpp"                // shape_error, SCALIFY_CHECK
#include "scalify/kernels/epilogue.hpp"      // activation, epilogue_tile, gemm_output
#include "scalify/kernels/gemv.hpp"          // kGemvMaxRows
#include "scalify/kernels/microkernels.hpp"  // microkernel
#include "scalify/kernels/pack.hpp"          // pack_b_panel, gemm_input
#include "scalify/kernels/table.hpp"         // kernels_for, operand_kernels_for, select_microkernel, *_with
#include "scalify/kernels/thread_pool.hpp"   // thread_pool

namespace scalify {

/// Storage order of a matrix_view.
enum class layout { row_major, col_major };

/// Whether gemm() uses an operand as stored or transposed.
enum class trans { no, yes };

/// A strided 2-D view: `rows x cols` elements at `data`, element (r, c) at
/// `data[r * ld + c]` (row_major) or `data[r + c * ld]` (col_major). `ld == 0`
/// means contiguous (cols, resp. rows). T may be const.
///
/// **Example**: `scalify::matrix_view<const scalify::float8_e4m3fn> w{ptr, 4096, 1024};`
template <class T>
struct matrix_view {
  T* data = nullptr;
  std::ptrdiff_t rows = 0, cols = 0;
  std::ptrdiff_t ld = 0;
  layout order = layout::row_major;
};

/// Row-major view. **Example**: `auto a = scalify::row_major_view(x.data(), m, k);`
template <class T>
matrix_view<T> row_major_view(T* data, std::ptrdiff_t rows, std::ptrdiff_t cols, std::ptrdiff_t ld = 0) {
  return {data, rows, cols, ld, layout::row_major};
}
/// Column-major view. **Example**: `auto b = scalify::col_major_view(y.data(), k, n);`
template <class T>
matrix_view<T> col_major_view(T* data, std::ptrdiff_t rows, std::ptrdiff_t cols, std::ptrdiff_t ld = 0) {
  return {data, rows, cols, ld, layout::col_major};
}

/// Options of gemm(): the operand transposes and the fused epilogue (kernels/epilogue.hpp).
///
/// | field | meaning |
/// |---|---|
/// | `trans_a`, `trans_b` | use A, B transposed (op = identity by default) |
/// | `alpha`, `beta` | C = alpha * op(A) op(B) + beta * C; beta == 0 does not read C |
/// | `bias` | empty, or N floats added to each row (one per column of C) |
/// | `act` | activation::none, relu or gelu_tanh, after the bias |
/// | `act_scale` | C's data are on this scale (> 0): GELU is taken of v * act_scale and divided by it |
/// | `saturate` | narrow outputs: finite overflow -> +-max instead of inf/NaN |
/// | `amax` | if set, receives max over C of |C| (NaN skipped; an e4m3fn overflow to NaN: +inf), same pass |
/// | `threads` | 0: thread_limit() (config_scope's threads, else SCALIFY_NUM_THREADS, else all cores); n: at most n, and never above that limit |
///
/// **Example**: `scalify::gemm(x, w, y, {.bias = b, .act = scalify::activation::relu, .amax = &m});`
struct gemm_options {
  trans trans_a = trans::no;
  trans trans_b = trans::no;
  float alpha = 1.0f;
  float beta = 0.0f;
  std::span<const float> bias = {};
  activation act = activation::none;
  float act_scale = 1.0f;
  bool saturate = false;
  float* amax = nullptr;
  int threads = 0;
};

class packed_matrix;

namespace detail::gemm_impl {

using index = std::ptrdiff_t;

inline std::string dims(index r, index c) {
  std::string s(1, '(');  // appended piecewise: GCC 12 warns (-Wrestrict) on "(" + std::string
  s += std::to_string(r);
  s += " x ";
  s += std::to_string(c);
  s += ')';
  return s;
}

/// Checks a view and returns it as strides of op(view) (rows_out x cols_out).
template <class T>
kernels::strided<std::remove_const_t<T>> checked(const char* name, const matrix_view<T>& v, trans t,
                                                 index& rows_out, index& cols_out) {
  SCALIFY_CHECK(v.order == layout::row_major || v.order == layout::col_major, std::invalid_argument,
                std::string("scalify::gemm: ") + name + " has an invalid layout (" +
                    std::to_string(static_cast<int>(v.order)) + ")");
  SCALIFY_CHECK(t == trans::no || t == trans::yes, std::invalid_argument,
                std::string("scalify::gemm: the trans option of ") + name + " is invalid (" +
                    std::to_string(static_cast<int>(t)) + ")");
  SCALIFY_CHECK(v.rows >= 0 && v.cols >= 0, shape_error,
                std::string("scalify::gemm: ") + name + " has negative size " + dims(v.rows, v.cols));
  const index inner = v.order == layout::row_major ? v.cols : v.rows;
  const index ld = v.ld == 0 ? std::max<index>(inner, 1) : v.ld;
  SCALIFY_CHECK(ld >= std::max<index>(inner, 1), shape_error,
                std::string("scalify::gemm: ") + name + " " + dims(v.rows, v.cols) + " has leading dimension " +
                    std::to_string(v.ld) + ", less than its " +
                    (v.order == layout::row_major ? "row length " : "column length ") + std::to_string(inner));
  SCALIFY_CHECK(v.data != nullptr || v.rows == 0 || v.cols == 0, std::invalid_argument,
                std::string("scalify::gemm: ") + name + " " + dims(v.rows, v.cols) + " has a null data pointer");
  index rs = v.order == layout::row_major ? ld : 1, cs = v.order == layout::row_major ? 1 : ld;
  rows_out = v.rows;
  cols_out = v.cols;
  if (t == trans::yes) {
    std::swap(rs, cs);
    std::swap(rows_out, cols_out);
  }
  return {v.data, rs, cs};
}

/// The bytes of a strided operand as `count` runs of `bytes` bytes, `stride`
/// bytes apart (stride >= bytes, as the leading-dimension check ensures),
/// from address `begin`: its rows if its columns are contiguous, else its columns.
struct byte_runs {
  std::uintptr_t begin;
  index count, bytes, stride;
};

template <class T>
byte_runs runs_of(const kernels::strided<T>& s, index rows, index cols) {
  const auto size = static_cast<index>(sizeof(T));
  const auto begin = reinterpret_cast<std::uintptr_t>(s.data);
  if (s.cs == 1) return {begin, rows, cols * size, s.rs * size};
  return {begin, cols, rows * size, s.cs * size};
}

/// floor(x / y) for y > 0.
inline index floor_div(index x, index y) { return x >= 0 ? x / y : -((-x + y - 1) / y); }

/// Whether x and y (each with count >= 1 and bytes >= 1) share a byte: none
/// if their spans (first byte to last) are disjoint, the usual case (O(1));
/// else, for each run of the one with fewer runs, the runs of the other that
/// could meet it form one range of indices (O(min count) divisions, no
/// allocation; 256 x 256 float8 operands took 1.3 % of a 256^3 GEMM in it).
inline bool overlap(const byte_runs& x, const byte_runs& y) {
  // The spans, as unsigned offsets from x.begin (wrap-around arithmetic: a
  // span does not wrap past the end of the address space).
  const auto span = [](const byte_runs& r) {
    return static_cast<std::uintptr_t>((r.count - 1) * r.stride + r.bytes);
  };
  const std::uintptr_t y_start = y.begin - x.begin;  // y's first byte, from x's
  if (y_start >= span(x) && x.begin - y.begin >= span(y)) return false;
  const byte_runs& few = x.count <= y.count ? x : y;
  const byte_runs& many = x.count <= y.count ? y : x;
  // Addresses relative to many.begin (wrap-around subtraction, then signed).
  const auto offset = static_cast<index>(few.begin - many.begin);
  for (index t = 0; t < few.count; ++t) {
    const index s = offset + t * few.stride, e = s + few.bytes;  // run t: [s, e)
    // Run u of `many` is [u * stride, u * stride + bytes): it meets [s, e) iff
    // s - bytes < u * stride < e.
    if (many.count == 1) {
      if (s - many.bytes < 0 && 0 < e) return true;
      continue;
    }
    const index lo = std::max<index>(0, floor_div(s - many.bytes, many.stride) + 1);
    const index hi = std::min<index>(many.count - 1, floor_div(e - 1, many.stride));
    if (lo <= hi) return true;
  }
  return false;
}

/// Throws std::invalid_argument if C (m x n) shares memory with `name` (rows x cols).
template <class T, class TC>
void check_no_overlap(const char* name, const kernels::strided<T>& x, index rows, index cols,
                      const kernels::strided_out<TC>& c, index m, index n) {
  if (rows == 0 || cols == 0 || m == 0 || n == 0) return;
  const byte_runs rc = runs_of(kernels::strided<TC>{c.data, c.rs, c.cs}, m, n);
  SCALIFY_CHECK(!overlap(runs_of(x, rows, cols), rc), std::invalid_argument,
                std::string("scalify::gemm: C ") + dims(m, n) + " overlaps " + name + " " + dims(rows, cols) +
                    ": C is written while " + name + " is read, so it must not share memory with it");
}

/// Allocates on 64-byte boundaries, so that packed rows and tiles start on
/// cache lines (malloc gives 16: every other 32-byte load of a packed B row
/// then split two lines, ~2 % of the GEMM's time).
template <class T>
struct cache_aligned_allocator {
  using value_type = T;
  static constexpr std::align_val_t kAlign{64};
  cache_aligned_allocator() = default;
  template <class U>
  cache_aligned_allocator(const cache_aligned_allocator<U>&) noexcept {}  // NOLINT(google-explicit-constructor)
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlign)); }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, kAlign); }
  friend bool operator==(const cache_aligned_allocator&, const cache_aligned_allocator&) { return true; }
};
template <class T>
using aligned_vector = std::vector<T, cache_aligned_allocator<T>>;

/// Grow-only per-thread buffers: no allocation per call once warmed up.
inline uint32_t* buffer(int which, std::size_t units) {
  thread_local aligned_vector<uint32_t> buffers[2];
  auto& b = buffers[which];
  if (b.size() < units) b.resize(units);
  return b.data();
}
inline float* acc_buffer(std::size_t floats) {
  thread_local aligned_vector<float> acc;
  if (acc.size() < floats) acc.resize(floats);
  return acc.data();
}

/// max over non-negative floats via their bits.
inline void atomic_max(std::atomic<uint32_t>& slot, float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  uint32_t cur = slot.load(std::memory_order_relaxed);
  while (bits > cur && !slot.compare_exchange_weak(cur, bits, std::memory_order_relaxed)) {
  }
}

/// Fewer threads for small products (thread start-up costs ~10 us).
inline int threads_for(int requested, index m, index n, index k) {
  const double flops = 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  if (flops < 2.0e6) return 1;
  return requested;
}

/// The packing of op(B) columns [j0, j0 + n) into panels of mk.block.nr: whole
/// (count() independent tasks, run(t) does task t, into dst) or a slab of KC
/// units at a time (units(), into the caller's buffer). B's element type is
/// erased (units_fn knows it), so that the drivers using it are compiled
/// once, not once per type.
struct b_packer {
  static constexpr index kRows = 64;  // rows of B per task on the SIMD route
  const kernels::microkernel& mk;
  const void* b;  // const kernels::strided<TB>*
  index b_cs;
  bool has_row_packer;  // operand_kernels<TB>::pack_b_f32 (pack_b_bf16) of mk's path
  void (*units_fn)(const b_packer&, index p0, index p1, index u0, index u1, uint32_t* out, index ps);
  index k, n_total, j0, n;
  uint32_t* dst;

  index ku() const { return (k + mk.k_per_unit() - 1) / mk.k_per_unit(); }
  index panels() const { return (n + mk.block.nr - 1) / mk.block.nr; }
  /// Row blocks, each over every panel (the source streams sequentially),
  /// where the path's table has a row packer (kernels/table.hpp).
  bool by_rows() const { return has_row_packer && b_cs == 1 && mk.block.nr % 8 == 0; }
  index count() const { return by_rows() ? (k + kRows - 1) / kRows : panels(); }
  /// Task t of packing all of it into dst (panel p at dst + p * ku() * nr).
  void run(index t) const {
    const index ku = this->ku(), nr = mk.block.nr;
    if (by_rows()) {
      const index step = kRows / mk.k_per_unit(), u0 = t * step;
      units_fn(*this, 0, panels(), u0, std::min(ku, u0 + step), dst + u0 * nr, ku * nr);
    } else {
      units_fn(*this, t, t + 1, 0, ku, dst + t * ku * nr, ku * nr);
    }
  }
  /// Units [u0, u1) of panels [p0, p1): unit u of panel p at out + (p - p0) * ps + (u - u0) * nr.
  void units(index p0, index p1, index u0, index u1, uint32_t* out, index ps) const {
    units_fn(*this, p0, p1, u0, u1, out, ps);
  }
};

/// b_packer::units for B elements of type TB.
template <class TB>
void b_packer_units(const b_packer& p, index p0, index p1, index u0, index u1, uint32_t* out, index ps) {
  const kernels::strided<TB>& b = *static_cast<const kernels::strided<TB>*>(p.b);
  const int nr = p.mk.block.nr;
  const index end = std::min(p.n_total, p.j0 + p.n), c0 = p.j0 + p0 * nr, c1 = std::min(end, p.j0 + p1 * nr);
  if (p.by_rows()) {
    const kernels::operand_kernels<TB>& table = kernels::operand_kernels_for<TB>(p.mk.path);
    const auto pack = p.mk.pack == kernels::packing::f32 ? table.pack_b_f32 : table.pack_b_bf16;
    pack(b, p.k, u0, u1, c0, c1 - c0, nr, out, ps);
    return;
  }
  if (p.mk.pack == kernels::packing::f32 && b.rs == 1) {
    // B's columns contiguous (op(B) = W^T): all the panels at once, as above.
    const auto pack = kernels::operand_kernels_for<TB>(p.mk.path).pack_b_f32_cols;
    if (pack != nullptr) return pack(b, p.k, u0, u1, c0, c1 - c0, nr, out, ps);
  }
  for (index q = p0; q < p1; ++q) {
    uint32_t* panel = out + (q - p0) * ps;
    if (p.mk.pack == kernels::packing::f32) {
      kernels::pack_b_panel_units<kernels::packing::f32>(b, p.k, end, p.j0 + q * nr, nr, u0, u1, panel);
    } else {
      kernels::pack_b_panel_units<kernels::packing::bf16x2>(b, p.k, end, p.j0 + q * nr, nr, u0, u1, panel);
    }
  }
}

/// A b_packer for `b` (which must outlive it).
template <class TB>
b_packer make_b_packer(const kernels::microkernel& mk, const kernels::strided<TB>& b, index k, index n_total,
                       index j0, index n, uint32_t* dst) {
  const kernels::operand_kernels<TB>& table = kernels::operand_kernels_for<TB>(mk.path);
  const bool rows = (mk.pack == kernels::packing::f32 ? table.pack_b_f32 : table.pack_b_bf16) != nullptr;
  return {mk, &b, b.cs, rows, &b_packer_units<TB>, k, n_total, j0, n, dst};
}

/// Runs a b_packer's tasks (in parallel).
inline void run_b_packer(const b_packer& packer, int threads) {
  kernels::thread_pool::instance().run(packer.count(), threads, [&](index t) { packer.run(t); });
}

/// Packs op(B) columns [j0, j0 + n) into panels of mk.block.nr (in parallel).
template <class TB>
void pack_b(const kernels::microkernel& mk, const kernels::strided<TB>& b, index k, index n_total, index j0,
            index n, uint32_t* dst, int threads) {
  run_b_packer(make_b_packer(mk, b, k, n_total, j0, n, dst), threads);
}

/// The element-type-dependent steps of the drivers as plain functions of
/// type-erased operands: run_blocked and run_gemv are compiled once for all
/// the (A, B, C) type triples (25 of them into float alone), each triple adds
/// only these small functions.
struct typed_ops {
  const void* a = nullptr;  // const kernels::strided<TA>*
  const void* b = nullptr;  // const kernels::strided<TB>*
  const void* c = nullptr;  // const kernels::strided_out<TC>*
  float* c_f32 = nullptr;   // C's data when C is float (the fused tile output), else null
  index c_rs = 0, c_cs = 0;
  index b_size = 0;  // sizeof(TB)
  /// Packs rows [i0, i0 + height) of A (zero past m) into one panel for mk, height values per unit.
  void (*pack_a)(const kernels::microkernel& mk, const void* a, index m, index k, index i0, int height,
                 uint32_t* dst) = nullptr;
  /// A b_packer of op(B) columns [j0, j0 + n) into dst.
  b_packer (*b_packer_for)(const kernels::microkernel& mk, const void* b, index k, index n_total, index j0, index n,
                           uint32_t* dst) = nullptr;
  /// kernels::epilogue_tile_on for C.
  float (*epilogue)(cpu_path path, const float* acc, index ld, index m, index n, index i0, index j0,
                    const kernels::epilogue_params& ep, const void* c) = nullptr;
};

template <class TA>
void pack_a_erased(const kernels::microkernel& mk, const void* a, index m, index k, index i0, int height,
                   uint32_t* dst) {
  const auto& as = *static_cast<const kernels::strided<TA>*>(a);
  const kernels::operand_kernels<TA>& table = kernels::operand_kernels_for<TA>(mk.path);
  if (mk.pack == kernels::packing::f32) {
    kernels::pack_a_panel_with<kernels::packing::f32>(table, as, m, k, i0, height, dst);
  } else {
    kernels::pack_a_panel_with<kernels::packing::bf16x2>(table, as, m, k, i0, height, dst);
  }
}

template <class TB>
b_packer b_packer_erased(const kernels::microkernel& mk, const void* b, index k, index n_total, index j0, index n,
                         uint32_t* dst) {
  return make_b_packer(mk, *static_cast<const kernels::strided<TB>*>(b), k, n_total, j0, n, dst);
}

template <class TC>
float epilogue_erased(cpu_path path, const float* acc, index ld, index m, index n, index i0, index j0,
                      const kernels::epilogue_params& ep, const void* c) {
  return kernels::epilogue_tile_with(kernels::kernels_for(path), acc, ld, m, n, i0, j0, ep,
                                     *static_cast<const kernels::strided_out<TC>*>(c));
}

/// typed_ops for operands a, b, c (which must outlive it).
template <class TA, class TB, class TC>
typed_ops make_typed_ops(const kernels::strided<TA>& a, const kernels::strided<TB>& b,
                         const kernels::strided_out<TC>& c) {
  typed_ops ops;
  ops.a = &a;
  ops.b = &b;
  ops.c = &c;
  if constexpr (std::is_same_v<TC, float>) ops.c_f32 = c.data;
  ops.c_rs = c.rs;
  ops.c_cs = c.cs;
  ops.b_size = static_cast<index>(sizeof(TB));
  ops.pack_a = &pack_a_erased<TA>;
  ops.b_packer_for = &b_packer_erased<TB>;
  ops.epilogue = &epilogue_erased<TC>;
  return ops;
}

/// The A panels of rows [first, first + rows) of a blocked product: `full`
/// panels of MR rows, then `count - full` of MR - 1 (the micro-kernel's short
/// tile), so that no row is padding; or, when the rows cannot be cut so (or
/// the kernel has no short tile), ceil(rows / MR) panels of MR, the last
/// zero-padded. A panel's packed units take its height in values each:
/// panel p starts at row start(p), and at (start(p) - first) * ku in a
/// buffer of consecutive packed panels.
struct row_panels {
  index mr = 1, first = 0, end = 0, full = 0, count = 0;

  row_panels(const kernels::microkernel& mk, index first_row, index rows)
      : mr(mk.block.mr), first(first_row), end(first_row + rows) {
    const bool short_tiles = mk.short_tile != nullptr && mk.short_tile_out != nullptr;
    const index shorts = short_tiles ? (mr - rows % mr) % mr : 0;
    if (shorts > 0 && rows >= shorts * (mr - 1)) {
      full = (rows - shorts * (mr - 1)) / mr;
      count = full + shorts;
    } else {
      full = count = (rows + mr - 1) / mr;
    }
  }
  /// The first row of panel p, for p <= count (start(count) - first: the rows with padding).
  index start(index p) const { return first + p * mr - (p > full ? p - full : 0); }
  /// The rows panel p is packed with (its valid rows: at most end - start(p)).
  int height(index p) const { return static_cast<int>(p < full ? mr : mr - 1); }
  /// The rows with padding of panels [p0, p1): the multiply-adds they cost, per column and k.
  index padded_rows(index p0, index p1) const { return start(p1) - start(p0); }
};

/// The blocked driver. `b_packed` non-null: all of op(B) already packed for mk.
///
/// One task per thread, over its own rows (or columns) of C; each thread
/// packs what it reads into its own buffers, so no packed line passes between
/// cores and there is no barrier (a packed line written by one core and read
/// by another costs a transfer at every call: sharing the packing of B made
/// it no faster on 2 threads than on 1, docs/kernels.md). The operand every
/// thread needs (B when the rows are split, A when the columns are) is packed
/// by each thread, unless B is prepacked (read only, so shared for free).
/// A thread packs its rows of A whole, then B one KC x ncs slab at a time
/// (below), right before all its rows are multiplied with it, NC columns at a
/// time: the packed slab is written into L2 (or L3) and read from there,
/// never from memory. A prepacked B is read in place in the same order, one
/// slab at a time, so each slab comes from memory once per group of rows
/// (reading it in MC x NC blocks of C, all of K each, streamed B from memory
/// once per block of rows: 0.82-0.89x OpenBLAS in long-K shapes). The tiles'
/// float accumulators for those rows stay in a buffer between the KC passes;
/// more rows than slab_rows are taken in groups, B packed (or read) again for
/// each. Every tile gets the same KC passes in the same order either way:
/// same bits.
inline void run_blocked(const kernels::microkernel& mk, const typed_ops& ops, const uint32_t* b_packed, index m,
                        index n, index k, const kernels::epilogue_params& ep, int threads,
                        std::atomic<uint32_t>& amax) {
  const int mr = mk.block.mr, nr = mk.block.nr, nc = mk.block.nc;
  const index kpu = mk.k_per_unit();
  const index ku = (k + kpu - 1) / kpu, kcu = mk.block.kc / kpu;
  const index n_pc = std::max<index>(1, (ku + kcu - 1) / kcu);
  const row_panels panels(mk, 0, m);
  const index n_panels = (n + nr - 1) / nr;
  kernels::thread_pool& pool = kernels::thread_pool::instance();
  // The fused tile output: a float C with contiguous rows, no GELU.
  const bool fused = ops.c_f32 != nullptr && mk.tile_out != nullptr && ops.c_cs == 1 &&
                     ep.act != activation::gelu_tanh;
  // B is packed in slabs of KC x ncs: NC columns, or more for narrow types,
  // so that each row of B gives at least 1 KiB per slab. A slab reads a run of
  // each of KC rows of B, each run on a page of its own for large B: a page
  // walk and a miss per run (on this VM, 256-byte runs of float8 made the
  // packing ~6.5 % of 512 x 4096 x 4096 on one core; 1 KiB runs, ~4 %). The
  // multiplication still goes NC columns at a time.
  const index ncs = nc * std::max<index>(1, 1024 / (nc * std::max<index>(1, ops.b_size)));
  // Rows of C multiplied with one packing of B: their accumulators for a slab
  // take at most 4 MiB, or 16 MiB when K >= ncs (then no more than the rows'
  // packed A takes; 2048^3 on 2 threads is one group per thread). They are
  // read and written once per KC pass: they need not stay in L2. A group
  // packs all of B again: 16 / (2 x rows) of the work, <= 0.8 %.
  const index slab_rows = std::max<index>(mk.block.mc, (index{ku >= ncs ? 1 << 22 : 1 << 20}) / ncs);

  // Packs A panels [p0, p1) of `rp` into this thread's A buffer, one after
  // the other; each element widened once.
  auto pack_a_rows = [&](const row_panels& rp, index p0, index p1) {
    uint32_t* ap = buffer(0, static_cast<std::size_t>(rp.padded_rows(p0, p1) * ku));
    for (index p = p0; p < p1; ++p) {
      ops.pack_a(mk, ops.a, m, k, rp.start(p), rp.height(p), ap + rp.padded_rows(p0, p) * ku);
    }
    return ap;
  };

  // KC pass pc (kun units) of the tile at rows [row, row + rows) and columns
  // [col, col + cols) of C, from A (packed `height` high: MR or MR - 1) and B
  // panels at that pass's units, its float accumulators in `tile`; on the
  // last pass the epilogue, from the kernel's registers for a full tile of a
  // float32 C (tile_out), else through `tile` (epilogue_tile_on). The amax of
  // what it stored into `local_amax`, or into `amax_lanes` (tile_out).
  auto tile_pass = [&](index pc, index kun, const uint32_t* apanel, const uint32_t* bpanel, float* tile, index row,
                       int height, index rows, index col, index cols, float& local_amax, float* amax_lanes) {
    const bool last = pc == n_pc - 1;
    const bool tall = height == mr;  // else a short panel (MR - 1; row_panels: both short kernels exist)
    if (last && fused && rows == height && cols == nr) {
      const kernels::f32_tile_out out{ops.c_f32 + row * ops.c_rs + col, ops.c_rs, ep.alpha, ep.beta,
                                      ep.bias != nullptr ? ep.bias + col : nullptr,
                                      ep.act == activation::relu, ep.amax ? amax_lanes : nullptr};
      (tall ? mk.tile_out : mk.short_tile_out)(kun, apanel, bpanel, pc > 0 ? tile : nullptr, out);
      return;
    }
    (tall ? mk.tile : mk.short_tile)(kun, apanel, bpanel, tile, pc > 0);
    if (last) {
      const float t_amax = ops.epilogue(mk.path, tile, nr, rows, cols, row, col, ep, ops.c);
      local_amax = t_amax > local_amax ? t_amax : local_amax;
    }
  };
  auto publish_amax = [&](float local_amax, const float* amax_lanes) {
    for (index l = 0; l < 16; ++l) local_amax = amax_lanes[l] > local_amax ? amax_lanes[l] : local_amax;
    atomic_max(amax, local_amax);
  };

  // The rows of A panels [p0, p1) of `rp` by columns [j_begin, j_end) of C
  // from `ap` (those panels packed whole) and B one KC x ncs slab at a time:
  // packed here (its panels kcu * nr apart), or read in place from the
  // prepacked B (ku * nr apart); each NC block of the slab against every
  // row, MC rows at a time, before the next slab.
  auto compute_slabs = [&](const row_panels& rp, index p0, index p1, index j_begin, index j_end,
                           const uint32_t* ap) {
    const index ir_total = p1 - p0, ir_block = std::max(1, mk.block.mc / mr);
    float* acc = acc_buffer(static_cast<std::size_t>(ir_total * mr) * static_cast<std::size_t>(ncs));
    uint32_t* slab = b_packed != nullptr ? nullptr : buffer(1, static_cast<std::size_t>(kcu * ncs));
    const b_packer packer = ops.b_packer_for(mk, ops.b, k, n, j_begin, j_end - j_begin, nullptr);
    const index panel_stride = b_packed != nullptr ? ku * nr : kcu * nr;
    float local_amax = 0.0f;
    alignas(64) float amax_lanes[16] = {};
    for (index js = j_begin; js < j_end; js += ncs) {
      const index p_first = (js - j_begin) / nr, ns = std::min<index>(ncs, j_end - js);
      for (index pc = 0; pc < n_pc; ++pc) {
        const index u0 = pc * kcu, kun = std::max<index>(0, std::min(kcu, ku - u0));
        // The slab's first panel at units u0.
        const uint32_t* bs = b_packed != nullptr ? b_packed + (j_begin / nr + p_first) * ku * nr + u0 * nr : slab;
        if (b_packed == nullptr) packer.units(p_first, p_first + (ns + nr - 1) / nr, u0, u0 + kun, slab, kcu * nr);
        for (index j0 = js; j0 < js + ns; j0 += nc) {
          const index nj = std::min<index>(nc, js + ns - j0), jr_count = (nj + nr - 1) / nr;
          const index jr0 = (j0 - js) / nr;
          for (index ib = 0; ib < ir_total; ib += ir_block) {
            const index ib_end = std::min(ir_total, ib + ir_block);
            for (index jr = 0; jr < jr_count; ++jr) {
              const index col = j0 + jr * nr, cols = std::min<index>(nr, nj - jr * nr);
              if (b_packed != nullptr && jr + 1 < jr_count) {
                // A prepacked micro-panel is read from memory (or L3), not
                // from L2 as a slab just packed: fetch the next one into L2
                // while this one is used (128 x 4096 x 4096, 2 threads:
                // e4m3fn and float32 prepacked +10 %).
                const char* next = reinterpret_cast<const char*>(bs + (jr0 + jr + 1) * panel_stride);
                for (index o = 0; o < kun * nr * 4; o += 64) __builtin_prefetch(next + o, 0, 2);
              }
              for (index ir = ib; ir < ib_end; ++ir) {
                const index row = rp.start(p0 + ir);
                const int height = rp.height(p0 + ir);
                const index rows = std::min<index>(height, rp.end - row);
                float* tile = acc + ((jr0 + jr) * ir_total + ir) * mr * nr;
                if (pc > 0) {
                  // The next tile's accumulators, loaded before its first
                  // multiply-add: from L3 or memory (the buffer is larger
                  // than L2), fetched while this tile runs.
                  const float* next = ir + 1 < ib_end      ? tile + mr * nr
                                      : jr + 1 < jr_count ? acc + ((jr0 + jr + 1) * ir_total + ib) * mr * nr
                                                          : nullptr;
                  if (next != nullptr) {
                    for (index o = 0; o < mr * nr; o += 16) __builtin_prefetch(next + o, 0, 3);
                  }
                }
                tile_pass(pc, kun, ap + (row - rp.start(p0)) * ku + u0 * height, bs + (jr0 + jr) * panel_stride,
                          tile, row, height, rows, col, cols, local_amax, amax_lanes);
              }
            }
          }
        }
      }
    }
    publish_amax(local_amax, amax_lanes);
  };

  // One task per thread over its own rows or columns of C: split the rows or
  // the columns, whichever gives the busiest thread less work: its share of
  // the tiles (whole panels: a partial one costs a full one) plus what it
  // packs (all of the operand not split, unless prepacked, and its part of
  // the other), a packed element costing about as much as 16 multiply-adds.
  const int team = std::max(1, std::min(threads, pool.size()));
  auto cost = [&](index a_rows, index b_cols, bool packs_b) {
    const double tiles = static_cast<double>(a_rows) * static_cast<double>(b_cols) * static_cast<double>(k);
    const double packed = static_cast<double>(k) * static_cast<double>(a_rows + (packs_b ? b_cols : 0));
    return tiles + 16.0 * packed;
  };
  const index m_panels = panels.count;
  // Split rows go either as whole panels of `panels`, or as even row ranges,
  // each cut into panels of its own: whichever leaves the busiest thread
  // fewer rows with padding. 128 rows on AVX2, 2 threads: 64 + 64 (9 x 6 +
  // 2 x 5 each), where 22 panels split 11 + 11 gave 66 + 62.
  auto even_rows = [&](index t) { return row_panels(mk, t * m / team, (t + 1) * m / team - t * m / team); };
  index busiest_panels = 0, busiest_even = 0;
  for (index t = 0; t < team; ++t) {
    busiest_panels = std::max(busiest_panels, panels.padded_rows(t * m_panels / team, (t + 1) * m_panels / team));
    const row_panels rp = even_rows(t);
    busiest_even = std::max(busiest_even, rp.padded_rows(0, rp.count));
  }
  const bool even = busiest_even < busiest_panels;
  const index rows_share = std::min(busiest_panels, busiest_even), cols_share = (n_panels + team - 1) / team * nr;
  const bool packs_b = b_packed == nullptr;
  const bool split_rows = m_panels >= team && (n_panels < team || cost(rows_share, n_panels * nr, packs_b) <=
                                                                      cost(panels.start(m_panels), cols_share, packs_b));
  pool.run(team, threads, [&](index t) {
    row_panels rp = panels;
    index p_begin = 0, p_end = m_panels, j_begin = 0, j_end = n;
    if (split_rows && even) {
      rp = even_rows(t);
      p_end = rp.count;
    } else if (split_rows) {
      p_begin = t * m_panels / team;
      p_end = (t + 1) * m_panels / team;
    } else {
      j_begin = t * n_panels / team * nr;
      j_end = std::min<index>(n, (t + 1) * n_panels / team * nr);
    }
    if (p_begin >= p_end || j_begin >= j_end) return;
    // Rows in even groups of at most slab_rows, B packed again (or read
    // again, prepacked) for each.
    const index groups = ((p_end - p_begin) * mr + slab_rows - 1) / slab_rows;
    for (index g = 0; g < groups; ++g) {
      const index p0 = p_begin + g * (p_end - p_begin) / groups, p1 = p_begin + (g + 1) * (p_end - p_begin) / groups;
      compute_slabs(rp, p0, p1, j_begin, j_end, pack_a_rows(rp, p0, p1));
    }
  });
}

/// op(A)'s m x k elements widened (exactly) to a row-major float block in a
/// per-thread buffer: the streaming path reads A as float, so that it is
/// compiled once per B type, not once per (A, B) pair.
template <class TA>
kernels::strided<float> widened_rows(const kernels::strided<TA>& a, index m, index k) {
  thread_local aligned_vector<float> rows;
  const std::size_t size = static_cast<std::size_t>(std::max<index>(m * k, 1));
  if (rows.size() < size) rows.resize(size);
  for (index i = 0; i < m; ++i) {
    for (index q = 0; q < k; ++q) {
      rows[static_cast<std::size_t>(i * k + q)] = std::bit_cast<float>(kernels::widen_f32_bits(a.at(i, q)));
    }
  }
  return {rows.data(), std::max<index>(k, 1), 1};
}

/// The streaming path for m <= kGemvMaxRows (B's rows or columns contiguous),
/// A widened to float (widened_rows), C through ops.epilogue.
template <class TB>
void run_gemv(cpu_path path, const kernels::strided<float>& a, const kernels::strided<TB>& b, index m, index n,
              index k, const typed_ops& ops, const kernels::epilogue_params& ep, int threads,
              std::atomic<uint32_t>& amax) {
  // One column range per thread: each thread streams long runs of B's rows
  // (hardware prefetchers stop at 4 KiB pages; short runs per row starve them).
  const int t_count = std::max(1, std::min(threads <= 0 ? kernels::thread_pool::instance().size() : threads,
                                           kernels::thread_pool::instance().size()));
  const index kBlock = std::max<index>(256, (n + 16 * t_count - 1) / (16 * t_count) * 16);
  const index tasks = (n + kBlock - 1) / kBlock;
  const kernels::operand_kernels<TB>& table = kernels::operand_kernels_for<TB>(path);
  kernels::thread_pool::instance().run(tasks, threads, [&](index t) {
    const index j0 = t * kBlock, nj = std::min(kBlock, n - j0);
    float* acc = acc_buffer(static_cast<std::size_t>(kernels::kGemvMaxRows * (kBlock + k)));
    kernels::gemv_block_with(table, a, b, m, k, j0, nj, acc, kBlock, acc + kernels::kGemvMaxRows * kBlock);
    atomic_max(amax, ops.epilogue(path, acc, kBlock, m, nj, 0, j0, ep, ops.c));
  });
}

template <class TA, class TB, class TC>
void gemm_checked(const kernels::strided<TA>& a, const kernels::strided<TB>& b, const packed_matrix* packed,
                  index m, index n, index k, const kernels::strided_out<TC>& c, const gemm_options& o);

}  // namespace detail::gemm_impl

/// op(B) packed once for the micro-kernel of the CPU path active when packing,
/// for reuse across gemm() calls (e.g. weights). Movable, not copyable by
/// accident (it may be large): use clone().
///
/// On the avx512bf16 path an e4m3fn, e5m2 or bfloat16 B is packed as
/// bfloat16 pairs, and A must then be one of those types too (else
/// std::invalid_argument: pack on another path, e.g. with scoped_cpu_path).
///
/// **Example**:
/// ```
/// scalify::packed_matrix w_packed(scalify::row_major_view(w.data(), k, n));  // once
/// scalify::gemm(scalify::row_major_view(x.data(), m, k), w_packed, scalify::row_major_view(y.data(), m, n));
/// ```
class packed_matrix {
 public:
  packed_matrix() = default;

  /// Packs op(b) (K x N).
  template <class T>
  explicit packed_matrix(matrix_view<T> b, trans op_b = trans::no) {
    using TB = std::remove_const_t<T>;
    static_assert(kernels::gemm_input<TB>,
                  "scalify::packed_matrix: B must be float8_e4m3fn, float8_e5m2, float16, bfloat16 or float");
    const auto s = detail::gemm_impl::checked("B", b, op_b, k_, n_);
    kernel_ = &kernels::select_microkernel(active_cpu_path(), kernels::kExactInBf16<TB>);
    const int nr = kernel_->block.nr;
    const std::ptrdiff_t ku = (k_ + kernel_->k_per_unit() - 1) / kernel_->k_per_unit();
    data_.resize(static_cast<std::size_t>((n_ + nr - 1) / nr * nr * ku));
    detail::gemm_impl::pack_b(*kernel_, s, k_, n_, 0, n_, data_.data(), 0);
  }

  /// A moved-from packed_matrix is empty (0 x 0).
  packed_matrix(packed_matrix&& other) noexcept { *this = std::move(other); }
  packed_matrix& operator=(packed_matrix&& other) noexcept {
    data_ = std::move(other.data_);
    other.data_.clear();
    k_ = std::exchange(other.k_, 0);
    n_ = std::exchange(other.n_, 0);
    kernel_ = std::exchange(other.kernel_, nullptr);
    return *this;
  }
  packed_matrix(const packed_matrix&) = delete;
  packed_matrix& operator=(const packed_matrix&) = delete;
  packed_matrix clone() const {
    packed_matrix p;
    p.data_ = data_;
    p.k_ = k_;
    p.n_ = n_;
    p.kernel_ = kernel_;
    return p;
  }

  std::ptrdiff_t rows() const { return k_; }  ///< K
  std::ptrdiff_t cols() const { return n_; }  ///< N
  /// The CPU path whose micro-kernel it was packed for.
  cpu_path path() const { return kernel_ != nullptr ? kernel_->path : cpu_path::scalar; }
  /// Bytes held.
  std::size_t bytes() const { return data_.size() * sizeof(uint32_t); }

 private:
  template <class TA, class TB, class TC>
  friend void detail::gemm_impl::gemm_checked(const kernels::strided<TA>&, const kernels::strided<TB>&,
                                         const packed_matrix*, std::ptrdiff_t, std::ptrdiff_t, std::ptrdiff_t,
                                         const kernels::strided_out<TC>&, const gemm_options&);
  detail::gemm_impl::aligned_vector<uint32_t> data_;
  std::ptrdiff_t k_ = 0, n_ = 0;
  const kernels::microkernel* kernel_ = nullptr;
};

namespace detail::gemm_impl {

template <class TA, class TB, class TC>
void gemm_checked(const kernels::strided<TA>& a_view, const kernels::strided<TB>& b_view,
                  const packed_matrix* packed, index m, index n, index k, const kernels::strided_out<TC>& c,
                  const gemm_options& o) {
  SCALIFY_CHECK(o.bias.empty() || static_cast<index>(o.bias.size()) == n, shape_error,
                "scalify::gemm: bias has " + std::to_string(o.bias.size()) + " elements, C has " +
                    std::to_string(n) + " columns");
  SCALIFY_CHECK(o.threads >= 0, std::invalid_argument,
                "scalify::gemm: threads must be >= 0 (0 = all), got " + std::to_string(o.threads));
  SCALIFY_CHECK(o.act == activation::none || o.act == activation::relu || o.act == activation::gelu_tanh,
                std::invalid_argument,
                "scalify::gemm: invalid activation (" + std::to_string(static_cast<int>(o.act)) + ")");
  SCALIFY_CHECK(std::isfinite(o.act_scale) && o.act_scale > 0.0f, std::invalid_argument,
                "scalify::gemm: act_scale must be finite and > 0, got " + std::to_string(o.act_scale));
  // Checked whatever the sizes, so that an error does not depend on C being empty.
  SCALIFY_CHECK(packed == nullptr || packed->kernel_ == nullptr ||
                    packed->kernel_->pack == kernels::packing::f32 || kernels::kExactInBf16<TA>,
                std::invalid_argument,
                "scalify::gemm: B was packed as bfloat16 pairs (avx512bf16 path); A must then be "
                "float8_e4m3fn, float8_e5m2 or bfloat16");
  check_no_overlap("A", a_view, m, k, c, m, n);
  if (packed == nullptr) check_no_overlap("B", b_view, k, n, c, m, n);
  // With k == 0 (C = epilogue(0)) A and B have no elements and may be null:
  // the packers then get a real element and zero strides, so that no offset is
  // ever applied to a null pointer.
  static const TA a_dummy{};
  static const TB b_dummy{};
  const kernels::strided<TA> a_in = k == 0 ? kernels::strided<TA>{&a_dummy, 0, 0} : a_view;
  const kernels::strided<TB> b_in = k == 0 ? kernels::strided<TB>{&b_dummy, 0, 0} : b_view;
  std::atomic<uint32_t> amax{0};
  if (m > 0 && n > 0) {
    const kernels::epilogue_params ep{o.alpha, o.beta, o.bias.empty() ? nullptr : o.bias.data(), o.act, o.saturate,
                                      o.amax != nullptr, o.act_scale};
    const int threads = threads_for(thread_limit(o.threads), m, n, k);  // 0: the configured limit
    const typed_ops ops = make_typed_ops(a_in, b_in, c);
    if (packed != nullptr) {
      run_blocked(*packed->kernel_, ops, packed->data_.data(), m, n, k, ep, threads, amax);
    } else {
      const cpu_path path = active_cpu_path();
      if (m <= kernels::kGemvMaxRows && (b_in.cs == 1 || b_in.rs == 1)) {
        run_gemv(path, widened_rows(a_in, m, k), b_in, m, n, k, ops, ep, threads, amax);
      } else {
        const auto& mk = kernels::select_microkernel(path, kernels::kExactInBf16<TA> && kernels::kExactInBf16<TB>);
        run_blocked(mk, ops, nullptr, m, n, k, ep, threads, amax);
      }
    }
  }
  if (o.amax != nullptr) *o.amax = std::bit_cast<float>(amax.load());
}

template <class TC>
kernels::strided_out<TC> checked_out(const matrix_view<TC>& c, index m, index n) {
  index rows = 0, cols = 0;
  const auto s = checked("C", c, trans::no, rows, cols);
  SCALIFY_CHECK(rows == m && cols == n, shape_error,
                "scalify::gemm: C is " + dims(rows, cols) + " but op(A) op(B) is " + dims(m, n));
  return {const_cast<TC*>(s.data), s.rs, s.cs};
}

/// Where one product of a batch reads A and B and writes C: element offsets
/// from the batch's base pointers.
struct batch_item {
  index a = 0, b = 0, c = 0;
};

/// A batch of products of one shape, C_t = epilogue(op(A_t) op(B_t)) with
/// A_t = a offset by items[t].a (a: the strides of op(A), m x k), and so on:
/// one pool dispatch for the whole batch. With at least as many products as
/// threads, each product runs on one thread; with fewer, they run one after
/// the other, each on all of them. o.amax receives the max over the batch.
/// The caller checks the offsets (ops/batched.hpp); an exception of one
/// product (e.g. gemm's overlap check) is rethrown here, the first one.
template <class TA, class TB, class TC>
void gemm_batched(const kernels::strided<TA>& a, const kernels::strided<TB>& b, index m, index n, index k,
                  const kernels::strided_out<TC>& c, std::span<const batch_item> items, const gemm_options& o) {
  const auto count = static_cast<index>(items.size());
  const int threads = thread_limit(o.threads);
  const bool across = threads > 1 && count >= threads;
  std::atomic<uint32_t> amax{0};
  std::exception_ptr error;
  std::atomic<bool> failed{false};
  const auto one = [&](index t) {
    const batch_item& it = items[static_cast<std::size_t>(t)];
    gemm_options ot = o;
    float item_amax = 0.0f;
    ot.amax = o.amax != nullptr ? &item_amax : nullptr;
    ot.threads = across ? 1 : o.threads;
    gemm_checked<TA, TB, TC>({a.data + it.a, a.rs, a.cs}, {b.data + it.b, b.rs, b.cs}, nullptr, m, n, k,
                             {c.data + it.c, c.rs, c.cs}, ot);
    if (o.amax != nullptr) atomic_max(amax, item_amax);
  };
  if (across) {
    std::mutex error_mutex;
    kernels::thread_pool::instance().run(count, threads, [&](std::ptrdiff_t t) {
      if (failed.load(std::memory_order_relaxed)) return;
      try {
        one(t);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        failed.store(true, std::memory_order_relaxed);
      }
    });
    if (error) std::rethrow_exception(error);
  } else {
    for (index t = 0; t < count; ++t) one(t);
  }
  if (o.amax != nullptr) *o.amax = std::bit_cast<float>(amax.load());
}

}  // namespace detail::gemm_impl

/// C = epilogue(alpha * op(A) op(B) + beta * C + bias) (see gemm_options).
/// Throws shape_error / std::invalid_argument on negative sizes, leading
/// dimensions too small, mismatched shapes, null data with a nonzero size, a
/// bias of the wrong length, and a C that shares memory with A or B.
///
/// **Example**:
/// ```
/// std::vector<scalify::float8_e4m3fn> x(m * k), w(k * n);  std::vector<float> y(m * n);
/// scalify::gemm(scalify::row_major_view(x.data(), m, k), scalify::row_major_view(w.data(), k, n),
///               scalify::row_major_view(y.data(), m, n), {.alpha = 0.5f});
/// ```
template <class A, class B, class C>
void gemm(matrix_view<A> a, matrix_view<B> b, matrix_view<C> c, const gemm_options& options = {}) {
  using TA = std::remove_const_t<A>;
  using TB = std::remove_const_t<B>;
  static_assert(kernels::gemm_input<TA> && kernels::gemm_input<TB>,
                "scalify::gemm: A and B must be float8_e4m3fn, float8_e5m2, float16, bfloat16 or float");
  static_assert(kernels::gemm_output<C> && !std::is_const_v<C>,
                "scalify::gemm: C must be mutable float, float16, bfloat16, float8_e4m3fn or float8_e5m2");
  detail::gemm_impl::index m = 0, ka = 0, kb = 0, n = 0;
  const auto sa = detail::gemm_impl::checked("A", a, options.trans_a, m, ka);
  const auto sb = detail::gemm_impl::checked("B", b, options.trans_b, kb, n);
  SCALIFY_CHECK(ka == kb, shape_error,
                "scalify::gemm: op(A) is " + detail::gemm_impl::dims(m, ka) + " and op(B) is " +
                    detail::gemm_impl::dims(kb, n) + ": inner sizes differ");
  const auto sc = detail::gemm_impl::checked_out(c, m, n);
  detail::gemm_impl::gemm_checked(sa, sb, nullptr, m, n, ka, sc, options);
}

/// gemm() with a prepacked B (options.trans_b must be no: the transpose was
/// applied when packing).
///
/// **Example**: `scalify::gemm(x_view, w_packed, y_view, {.act = scalify::activation::gelu_tanh});`
template <class A, class C>
void gemm(matrix_view<A> a, const packed_matrix& b, matrix_view<C> c, const gemm_options& options = {}) {
  using TA = std::remove_const_t<A>;
  static_assert(kernels::gemm_input<TA>,
                "scalify::gemm: A must be float8_e4m3fn, float8_e5m2, float16, bfloat16 or float");
  static_assert(kernels::gemm_output<C> && !std::is_const_v<C>,
                "scalify::gemm: C must be mutable float, float16, bfloat16, float8_e4m3fn or float8_e5m2");
  SCALIFY_CHECK(options.trans_b == trans::no, std::invalid_argument,
                "scalify::gemm: trans_b must be no with a packed_matrix (transpose when packing)");
  detail::gemm_impl::index m = 0, ka = 0;
  const auto sa = detail::gemm_impl::checked("A", a, options.trans_a, m, ka);
  SCALIFY_CHECK(ka == b.rows(), shape_error,
                "scalify::gemm: op(A) is " + detail::gemm_impl::dims(m, ka) + " and the packed B is " +
                    detail::gemm_impl::dims(b.rows(), b.cols()) + ": inner sizes differ");
  const auto sc = detail::gemm_impl::checked_out(c, m, b.cols());
  const kernels::strided<float> unused{nullptr, 0, 0};
  detail::gemm_impl::gemm_checked(sa, unused, &b, m, b.cols(), ka, sc, options);
}

namespace detail::gemm_impl {

/// Calls f(view) on a view of x's storage, evaluating x first if it has none.
template <class D, class F>
decltype(auto) with_view(const Eigen::DenseBase<D>& x, F&& f) {
  using Scalar = typename D::Scalar;
  constexpr bool kDirect = (int(Eigen::internal::traits<D>::Flags) & Eigen::DirectAccessBit) != 0;
  if constexpr (kDirect) {
    const D& d = x.derived();
    if (d.innerStride() == 1) {
      const layout order = D::IsRowMajor ? layout::row_major : layout::col_major;
      const index ld = d.rows() == 0 || d.cols() == 0 ? 0 : d.outerStride();
      return f(matrix_view<const Scalar>{d.data(), d.rows(), d.cols(), ld, order});
    }
  }
  const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> tmp = x;
  return f(row_major_view(tmp.data(), tmp.rows(), tmp.cols()));
}

}  // namespace detail::gemm_impl

/// Eigen-facing gemm(): returns epilogue(alpha * op(a) op(b) + bias) as a
/// row-major matrix of TC (float by default). beta must be 0 (there is no C
/// to add). Expressions are evaluated first.
///
/// **Example**:
/// ```
/// Eigen::Matrix<scalify::float8_e4m3fn, -1, -1> x = ..., w = ...;
/// auto y = scalify::gemm(x, w, {.alpha = 0.25f});   // Eigen::Matrix<float, -1, -1, RowMajor>
/// ```
template <class TC = float, class DA, class DB>
Eigen::Matrix<TC, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> gemm(const Eigen::DenseBase<DA>& a,
                                                                         const Eigen::DenseBase<DB>& b,
                                                                         const gemm_options& options = {}) {
  SCALIFY_CHECK(options.beta == 0.0f, std::invalid_argument,
                "scalify::gemm: beta must be 0 for the Eigen overload (it returns a new matrix)");
  const auto m = options.trans_a == trans::no ? a.rows() : a.cols();
  const auto n = options.trans_b == trans::no ? b.cols() : b.rows();
  Eigen::Matrix<TC, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> c(m, n);
  detail::gemm_impl::with_view(a, [&](auto va) {
    detail::gemm_impl::with_view(b, [&](auto vb) { gemm(va, vb, row_major_view(c.data(), m, n), options); });
  });
  return c;
}

}  // namespace scalify

// ------------------------------------------------------------------------------
// The optional compiled part. Every gemm() call ends in one of 125
// gemm_checked<TA, TB, TC> (5 input types for A, 5 for B, 5 output types for
// C) and every packed_matrix in one of 5 pack_b<TB>; instantiating one of them
// compiles the kernels of every CPU path (about 1.5 s of g++ -O2 per
// translation unit). With SCALIFY_COMPILED_LIB defined, as linking the CMake
// target scalify::compiled does, they are declared here and defined once, in
// that library (src/gemm_instances.cpp). Header-only (the default) otherwise.

/// Calls X(TA, TB, TC) for the 125 type triples of gemm().
#define SCALIFY_GEMM_FOR_EACH_C_(X, TA, TB)                                                             \
  X(TA, TB, float) X(TA, TB, ::scalify::float16) X(TA, TB, ::scalify::bfloat16)                        \
  X(TA, TB, ::scalify::float8_e4m3fn) X(TA, TB, ::scalify::float8_e5m2)
#define SCALIFY_GEMM_FOR_EACH_B_(X, TA)                                                                 \
  SCALIFY_GEMM_FOR_EACH_C_(X, TA, float) SCALIFY_GEMM_FOR_EACH_C_(X, TA, ::scalify::float16)           \
  SCALIFY_GEMM_FOR_EACH_C_(X, TA, ::scalify::bfloat16)                                                 \
  SCALIFY_GEMM_FOR_EACH_C_(X, TA, ::scalify::float8_e4m3fn)                                            \
  SCALIFY_GEMM_FOR_EACH_C_(X, TA, ::scalify::float8_e5m2)
#define SCALIFY_GEMM_FOR_EACH_TRIPLE(X)                                                                 \
  SCALIFY_GEMM_FOR_EACH_B_(X, float) SCALIFY_GEMM_FOR_EACH_B_(X, ::scalify::float16)                   \
  SCALIFY_GEMM_FOR_EACH_B_(X, ::scalify::bfloat16) SCALIFY_GEMM_FOR_EACH_B_(X, ::scalify::float8_e4m3fn) \
  SCALIFY_GEMM_FOR_EACH_B_(X, ::scalify::float8_e5m2)
/// Calls X(T) for the 5 input types of gemm().
#define SCALIFY_GEMM_FOR_EACH_INPUT(X)                                                                 \
  X(float) X(::scalify::float16) X(::scalify::bfloat16) X(::scalify::float8_e4m3fn) X(::scalify::float8_e5m2)

/// `prefix template` (extern: a declaration; nothing: a definition) of
/// gemm_checked<TA, TB, TC> and pack_b<TB>.
#define SCALIFY_GEMM_INSTANCE_(prefix, TA, TB, TC)                                                       \
  prefix template void ::scalify::detail::gemm_impl::gemm_checked<TA, TB, TC>(                            \
      const ::scalify::kernels::strided<TA>&, const ::scalify::kernels::strided<TB>&,                      \
      const ::scalify::packed_matrix*, std::ptrdiff_t, std::ptrdiff_t, std::ptrdiff_t,                     \
      const ::scalify::kernels::strided_out<TC>&, const ::scalify::gemm_options&);
#define SCALIFY_PACK_B_INSTANCE_(prefix, TB)                                                             \
  prefix template void ::scalify::detail::gemm_impl::pack_b<TB>(                                         \
      const ::scalify::kernels::microkernel&, const ::scalify::kernels::strided<TB>&, std::ptrdiff_t,        \
      std::ptrdiff_t, std::ptrdiff_t, std::ptrdiff_t, uint32_t*, int);

#if defined(SCALIFY_COMPILED_LIB)
#define SCALIFY_GEMM_EXTERN_(TA, TB, TC) SCALIFY_GEMM_INSTANCE_(extern, TA, TB, TC)
#define SCALIFY_PACK_B_EXTERN_(TB) SCALIFY_PACK_B_INSTANCE_(extern, TB)
SCALIFY_GEMM_FOR_EACH_TRIPLE(SCALIFY_GEMM_EXTERN_)
SCALIFY_GEMM_FOR_EACH_INPUT(SCALIFY_PACK_B_EXTERN_)
#undef SCALIFY_GEMM_EXTERN_
#undef SCALIFY_PACK_B_EXTERN_
#endif

#endif  // SCALIFY_KERNELS_GEMM_HPP_
