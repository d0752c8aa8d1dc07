// scalify: batched matrix products of scaled tensors, the per-head products
// of attention, read and written in place in their matrices.
//
//   block_grid                         where the blocks of a batch sit in a matrix:
//                                      a grid of outer x inner blocks, each rows x cols
//   block_grid::heads(B, T, H, d, c0)  block (b, h) of (B*T, C) activations: rows b*T.., cols c0 + h*d..
//   block_grid::stacked(n, m, r, c)    n*m blocks of r x c stacked vertically ((n*m*r) x c)
//   batched_matmul(out, gc, a, ga, op_a, b, gb, op_b, options)
//                                      out's block t = op_a(a's block t) x op_b(b's block t)
//
// One scale per tensor, as everywhere in scalify: every block of `out` gets
// the matmul rule's scale, sa * sb * R(sqrt K) (times options.scale_factor,
// the data unchanged: attention's 1/sqrt(d) is folded into the scale so the
// fp8 data stays unit-sized), and data (da x db) / R(sqrt K) for each block.
// The views copy nothing: a block of a row-major (B*T, 3C) QKV matrix is
// read by the GEMM with leading dimension 3C. All products go to
// scalify::gemm's kernels in one pool dispatch (one product per thread when
// there are at least as many as threads).
//
// A 4-D (B, H, T, d) tensor is then a 2-D matrix plus a grid: (B*T, H*d) with
// heads(B, T, H, d), or (B*H*T, d) with stacked(B, H, T, d). Reshapes and
// transposes between the two are grids over the same data, and, as
// jax-scalify's reshape and transpose, keep the scale.
#ifndef SCALIFY_OPS_BATCHED_HPP_
#define SCALIFY_OPS_BATCHED_HPP_

#include <Eigen/Core>   // Eigen::Index
#include <cmath>        // std::isfinite
#include <cstddef>      // size_t
#include <stdexcept>    // std::invalid_argument
#include <string>       // std::string, std::to_string
#include <type_traits>  // std::is_same_v, std::remove_cv_t
#include <utility>      // std::pair
#include <vector>       // std::vector

#include "scalify/core/config_scope.hpp"  // current_config
#include "scalify/core/scaled_array.hpp"  // ScaledArray, fit_scale, check_storable
#include "scalify/errors.hpp"             // shape_error, SCALIFY_CHECK, checked_add, checked_mul
#include "scalify/kernels/gemm.hpp"       // gemm_batched, kernels::gemm_input, gemm_output
#include "scalify/ops/detail/common.hpp"  // shape_string, sqrt_n_factor, scale_product, RowMatrixF

namespace scalify {

/// Where the blocks of a batch sit in a matrix: a grid of `outer` x `inner`
/// blocks, each `rows` x `cols`; block (i, j) (batch item i * inner + j) has
/// its top-left element at row `row0 + i * outer_row_step + j * inner_row_step`,
/// column `col0 + i * outer_col_step + j * inner_col_step`. All fields >= 0.
///
/// **Example**: `auto q = scalify::block_grid::heads(B, T, H, d);  // (b, h): rows b*T.., cols h*d..`
struct block_grid {
  Eigen::Index outer = 1, inner = 1;
  Eigen::Index rows = 0, cols = 0;
  Eigen::Index row0 = 0, col0 = 0;
  Eigen::Index outer_row_step = 0, outer_col_step = 0;
  Eigen::Index inner_row_step = 0, inner_col_step = 0;

  /// The whole of a rows x cols matrix, one block.
  static block_grid whole(Eigen::Index rows, Eigen::Index cols) { return {1, 1, rows, cols}; }

  /// The heads of (batch * time) x (heads * head_dim) activations (or of the
  /// columns from col0 on): block (b, h) is rows [b * time, (b + 1) * time),
  /// columns col0 + [h * head_dim, (h + 1) * head_dim).
  static block_grid heads(Eigen::Index batch, Eigen::Index time, Eigen::Index heads, Eigen::Index head_dim,
                          Eigen::Index col0 = 0) {
    return {batch, heads, time, head_dim, 0, col0, time, 0, 0, head_dim};
  }

  /// outer x inner blocks of rows x cols stacked vertically, in batch order:
  /// block (i, j) is rows [(i * inner + j) * rows, ...) of an
  /// (outer * inner * rows) x cols matrix.
  static block_grid stacked(Eigen::Index outer, Eigen::Index inner, Eigen::Index rows, Eigen::Index cols) {
    return {outer, inner, rows, cols, 0, 0, inner * rows, 0, rows, 0};
  }

  /// outer * inner.
  Eigen::Index count() const { return outer * inner; }
};

/// Options of batched_matmul.
///
/// | field | meaning |
/// |---|---|
/// | `scale_factor` | multiplies the result's scale, not its data (> 0, finite): attention's 1/sqrt(d) |
/// | `amax` | if set, receives max \|stored data\| over the output (NaN skipped), as scaled_matmul::with_amax |
struct batched_options {
  double scale_factor = 1.0;
  float* amax = nullptr;
};

namespace detail {

/// "grid (2 x 4 blocks of 16 x 8 at (0, 0), steps (16, 0) and (0, 8))"
inline std::string grid_string(const block_grid& g) {
  return "grid (" + std::to_string(g.outer) + " x " + std::to_string(g.inner) + " blocks of " +
         shape_string(g.rows, g.cols) + " at (" + std::to_string(g.row0) + ", " + std::to_string(g.col0) +
         "), steps (" + std::to_string(g.outer_row_step) + ", " + std::to_string(g.outer_col_step) + ") and (" +
         std::to_string(g.inner_row_step) + ", " + std::to_string(g.inner_col_step) + "))";
}

/// The rows and columns a grid's blocks span from (0, 0) (its bounding box
/// from the matrix's origin). Throws shape_error for a negative field or an
/// extent that overflows Eigen::Index. An empty grid spans (0 x 0).
struct grid_extent {
  Eigen::Index rows = 0, cols = 0;
};
inline grid_extent extent_of(const char* name, const block_grid& g) {
  const bool nonnegative = g.outer >= 0 && g.inner >= 0 && g.rows >= 0 && g.cols >= 0 && g.row0 >= 0 &&
                           g.col0 >= 0 && g.outer_row_step >= 0 && g.outer_col_step >= 0 &&
                           g.inner_row_step >= 0 && g.inner_col_step >= 0;
  SCALIFY_CHECK(nonnegative, shape_error,
                std::string("scalify::batched_matmul: ") + name + "'s " + grid_string(g) +
                    " has a negative field (all must be >= 0)");
  grid_extent e;
  if (g.outer == 0 || g.inner == 0) return e;
  // row0 + (outer - 1) * outer_row_step + (inner - 1) * inner_row_step + rows, and the same for columns.
  const auto span = [&](Eigen::Index origin, Eigen::Index outer_step, Eigen::Index inner_step, Eigen::Index size,
                        Eigen::Index& out) {
    Eigen::Index a = 0, b = 0, s = 0;
    return checked_mul(g.outer - 1, outer_step, a) && checked_mul(g.inner - 1, inner_step, b) &&
           checked_add(origin, a, s) && checked_add(s, b, s) && checked_add(s, size, out);
  };
  Eigen::Index count = 0;
  SCALIFY_CHECK(span(g.row0, g.outer_row_step, g.inner_row_step, g.rows, e.rows) &&
                    span(g.col0, g.outer_col_step, g.inner_col_step, g.cols, e.cols) &&
                    checked_mul(g.outer, g.inner, count) && valid_shape(e.rows, e.cols),
                shape_error,
                std::string("scalify::batched_matmul: ") + name + "'s " + grid_string(g) +
                    " spans more elements than Eigen::Index holds");
  return e;
}

/// Throws shape_error unless the output grid's blocks are disjoint and cover
/// its extent exactly (every element of the output is written once). Disjoint
/// is checked by a sufficient rule: consecutive inner blocks are apart along
/// rows or columns, and so are the boxes of consecutive outer rows of blocks.
inline void check_exact_cover(const block_grid& g, const grid_extent& e) {
  if (g.count() == 0 || g.rows == 0 || g.cols == 0) {
    SCALIFY_CHECK(e.rows == 0 || e.cols == 0 || g.count() == 0, shape_error,
                  "scalify::batched_matmul: the output " + grid_string(g) + " writes no element of its " +
                      shape_string(e.rows, e.cols) + " extent");
    return;
  }
  const Eigen::Index box_rows = (g.inner - 1) * g.inner_row_step + g.rows;  // no overflow: within e
  const Eigen::Index box_cols = (g.inner - 1) * g.inner_col_step + g.cols;
  const bool inner_apart = g.inner == 1 || g.inner_row_step >= g.rows || g.inner_col_step >= g.cols;
  const bool outer_apart = g.outer == 1 || g.outer_row_step >= box_rows || g.outer_col_step >= box_cols;
  SCALIFY_CHECK(inner_apart && outer_apart, shape_error,
                "scalify::batched_matmul: the output " + grid_string(g) +
                    " has blocks that may overlap (each block must be apart from the next along rows or columns)");
  Eigen::Index area = 0;
  const bool fits = checked_mul(g.count(), g.rows, area) && checked_mul(area, g.cols, area);
  SCALIFY_CHECK(fits && area == e.rows * e.cols, shape_error,
                "scalify::batched_matmul: the output " + grid_string(g) + " does not cover its " +
                    shape_string(e.rows, e.cols) +
                    " extent exactly (every element of the output must be written; start at (0, 0), no gaps)");
}

/// The element offset of block t of grid g in plain storage with strides (rs, cs).
inline Eigen::Index block_offset(const block_grid& g, Eigen::Index t, Eigen::Index rs, Eigen::Index cs) {
  const Eigen::Index i = t / g.inner, j = t % g.inner;
  const Eigen::Index r = g.row0 + i * g.outer_row_step + j * g.inner_row_step;
  const Eigen::Index c = g.col0 + i * g.outer_col_step + j * g.inner_col_step;
  return r * rs + c * cs;
}

/// (row stride, column stride) of plain Eigen storage.
template <class D>
std::pair<Eigen::Index, Eigen::Index> strides_of(const D& d) {
  if constexpr (D::IsRowMajor) {
    return {d.outerStride(), 1};
  } else {
    return {1, d.outerStride()};
  }
}

/// True if the storage of x and y share memory.
template <class DX, class DY>
bool shares_memory(const DX& x, const DY& y) {
  if (x.size() == 0 || y.size() == 0) return false;
  const auto* xb = reinterpret_cast<const unsigned char*>(x.data());
  const auto* yb = reinterpret_cast<const unsigned char*>(y.data());
  const auto* xe = reinterpret_cast<const unsigned char*>(x.data() + x.size());
  const auto* ye = reinterpret_cast<const unsigned char*>(y.data() + y.size());
  return xb < ye && yb < xe;
}

/// The sizes of a batched_matmul: each product op_a(A_t) (m x k) op_b(B_t)
/// (k x n), and the output's extent. All of batched_matmul's shape and
/// argument checks, compiled once whatever the operand types.
struct batched_dims {
  Eigen::Index m = 0, n = 0, k = 0;
  grid_extent out;
};
inline batched_dims check_batched(const block_grid& grid_out, Eigen::Index a_rows, Eigen::Index a_cols,
                                  const block_grid& grid_a, trans op_a, Eigen::Index b_rows, Eigen::Index b_cols,
                                  const block_grid& grid_b, trans op_b, double scale_factor) {
  SCALIFY_CHECK((op_a == trans::no || op_a == trans::yes) && (op_b == trans::no || op_b == trans::yes),
                std::invalid_argument,
                "scalify::batched_matmul: unknown trans values " + std::to_string(static_cast<int>(op_a)) + ", " +
                    std::to_string(static_cast<int>(op_b)) + " (expected trans::no or trans::yes)");
  SCALIFY_CHECK(std::isfinite(scale_factor) && scale_factor > 0.0, std::invalid_argument,
                "scalify::batched_matmul: scale_factor must be finite and > 0, got " +
                    number_string(scale_factor));
  SCALIFY_CHECK(grid_a.outer == grid_out.outer && grid_a.inner == grid_out.inner &&
                    grid_b.outer == grid_out.outer && grid_b.inner == grid_out.inner,
                shape_error,
                "scalify::batched_matmul: the grids must have the same counts: out " + grid_string(grid_out) +
                    ", a " + grid_string(grid_a) + ", b " + grid_string(grid_b));
  const auto ea = extent_of("a", grid_a);
  const auto eb = extent_of("b", grid_b);
  const auto ec = extent_of("out", grid_out);
  SCALIFY_CHECK(ea.rows <= a_rows && ea.cols <= a_cols, shape_error,
                "scalify::batched_matmul: a's " + grid_string(grid_a) + " does not fit in a " +
                    shape_string(a_rows, a_cols));
  SCALIFY_CHECK(eb.rows <= b_rows && eb.cols <= b_cols, shape_error,
                "scalify::batched_matmul: b's " + grid_string(grid_b) + " does not fit in b " +
                    shape_string(b_rows, b_cols));
  check_exact_cover(grid_out, ec);
  const Eigen::Index m = op_a == trans::no ? grid_a.rows : grid_a.cols;
  const Eigen::Index k = op_a == trans::no ? grid_a.cols : grid_a.rows;
  const Eigen::Index kb = op_b == trans::no ? grid_b.rows : grid_b.cols;
  const Eigen::Index n = op_b == trans::no ? grid_b.cols : grid_b.rows;
  SCALIFY_CHECK(k == kb && grid_out.rows == m && grid_out.cols == n, shape_error,
                "scalify::batched_matmul: blocks " + std::string(op_a == trans::no ? "" : "transpose ") +
                    shape_string(grid_a.rows, grid_a.cols) + " x " +
                    (op_b == trans::no ? "" : "transpose ") + shape_string(grid_b.rows, grid_b.cols) +
                    " into " + shape_string(grid_out.rows, grid_out.cols) +
                    (k != kb ? ": inner sizes differ" : ": the output blocks must be " + shape_string(m, n)));
  return {m, n, k, ec};
}

/// Where each product of the batch reads and writes: element offsets of the
/// blocks in storage with strides (rs, cs) for a, b and out.
inline std::vector<gemm_impl::batch_item> batch_items(const block_grid& grid_out, Eigen::Index c_rs,
                                                      Eigen::Index c_cs, const block_grid& grid_a, Eigen::Index a_rs,
                                                      Eigen::Index a_cs, const block_grid& grid_b, Eigen::Index b_rs,
                                                      Eigen::Index b_cs) {
  std::vector<gemm_impl::batch_item> items(static_cast<std::size_t>(grid_out.count()));
  for (Eigen::Index t = 0; t < grid_out.count(); ++t) {
    items[static_cast<std::size_t>(t)] = {block_offset(grid_a, t, a_rs, a_cs), block_offset(grid_b, t, b_rs, b_cs),
                                          block_offset(grid_out, t, c_rs, c_cs)};
  }
  return items;
}

}  // namespace detail

/// out's block t = op_a(a's block t) x op_b(b's block t) for every block of
/// the grids (which must have the same outer and inner counts), with the
/// matmul scale rule (see the file comment). `out` is resized to the extent
/// of `grid_out`, whose blocks must cover it exactly (start at (0, 0), no
/// gaps, no overlap); its data is rounded into its scalar type in the GEMM's
/// epilogue with the scope's store options (stochastic or toward-zero
/// rounding: through float32, then the store cast), its scale fitted as any
/// store does (E8M0: rebased). a and b are read in place: any plain storage,
/// row- or column-major, their grids within their shapes (blocks may
/// overlap: e.g. one B for every block with zero steps).
///
/// Throws shape_error for grids that do not fit, inner sizes that differ
/// (op_a's block columns vs op_b's block rows) or an output block of another
/// shape; std::invalid_argument for a trans value outside the enum, a
/// scale_factor that is not finite and > 0, or an `out` that shares memory
/// with a or b.
///
/// **Example** (attention scores, one (T x T) block per batch and head):
/// ```
/// // qkv8: (B*T, 3C) e4m3fn; scores: (B*H*T, T) float, scale sq*sk*R(sqrt d)/sqrt d
/// scalify::batched_matmul(scores, block_grid::stacked(B, H, T, T),
///                         qkv8, block_grid::heads(B, T, H, d, 0), trans::no,
///                         qkv8, block_grid::heads(B, T, H, d, C), trans::yes,
///                         {.scale_factor = 1.0 / std::sqrt(d)});
/// ```
template <class DC, class SC, class DA, class SA, class DB, class SB>
void batched_matmul(ScaledArray<DC, SC>& out, const block_grid& grid_out, const ScaledArray<DA, SA>& a,
                    const block_grid& grid_a, trans op_a, const ScaledArray<DB, SB>& b, const block_grid& grid_b,
                    trans op_b, const batched_options& options = {}) {
  using TA = std::remove_cv_t<typename DA::Scalar>;
  using TB = std::remove_cv_t<typename DB::Scalar>;
  using TC = typename DC::Scalar;
  static_assert(detail::eigen_plain<DA> && detail::eigen_plain<DB> && detail::eigen_plain<DC>,
                "scalify::batched_matmul: the operands and the output must be storage (Eigen::Matrix or Array)");
  static_assert(kernels::gemm_input<TA> && kernels::gemm_input<TB>,
                "scalify::batched_matmul: the operands must be float8_e4m3fn, float8_e5m2, float16, bfloat16 or "
                "float");
  static_assert(std::is_same_v<TC, float> || kernels::gemm_output<TC>,
                "scalify::batched_matmul: the output must be float, float16, bfloat16, float8_e4m3fn or float8_e5m2");
  const auto dims = detail::check_batched(grid_out, a.rows(), a.cols(), grid_a, op_a, b.rows(), b.cols(), grid_b,
                                         op_b, options.scale_factor);
  const Eigen::Index m = dims.m, n = dims.n, k = dims.k;
  const auto ec = dims.out;
  SCALIFY_CHECK(!detail::shares_memory(out.data(), a.data()) && !detail::shares_memory(out.data(), b.data()),
                std::invalid_argument, "scalify::batched_matmul: the output shares memory with an operand");

  // The scale: the matmul rule, then the factor; where a product leaves S's range, alpha carries the rest.
  using S = detail::result_scale_t<SA, SB>;
  const S sqrt_k = detail::sqrt_n_factor<S>(k);
  const auto ab = detail::scale_product<S>(static_cast<S>(a.scale()), static_cast<S>(b.scale()));
  const auto with_k = detail::scale_product<S>(ab.scale, sqrt_k);
  const auto scaled = detail::scale_product<S>(with_k.scale, static_cast<S>(options.scale_factor));
  const float alpha = 1.0f / static_cast<float>(sqrt_k) * (ab.rest * with_k.rest * scaled.rest);

  const convert_options& to_store = current_config().store;
  if (!std::is_same_v<TC, float> && to_store.round != rounding::nearest_even) {
    ScaledArray<detail::RowMatrixF, S> wide;  // two passes: float32, then the store cast
    batched_matmul(wide, grid_out, a, grid_a, op_a, b, grid_b, op_b, options);
    out = wide;
    if (options.amax != nullptr) *options.amax = detail::stored_amax(out.data(), wide.data());  // of the stored data
    return;
  }
  detail::check_storable<DC>(ec.rows, ec.cols);
  using Math = detail::scale_math_t<SC, S>;
  const auto fit = detail::fit_scale<SC>(static_cast<Math>(scaled.scale), "scalify::batched_matmul");
  out.data().resize(ec.rows, ec.cols);
  const Eigen::Index count = grid_out.count();
  if (count > 0 && ec.rows > 0 && ec.cols > 0) {
    const auto [a_rs, a_cs] = detail::strides_of(a.data());
    const auto [b_rs, b_cs] = detail::strides_of(b.data());
    const auto [c_rs, c_cs] = detail::strides_of(out.data());
    const auto items = detail::batch_items(grid_out, c_rs, c_cs, grid_a, a_rs, a_cs, grid_b, b_rs, b_cs);
    // The strides of op(A) and op(B): a transpose swaps them.
    const kernels::strided<TA> sa{a.data().data(), op_a == trans::no ? a_rs : a_cs, op_a == trans::no ? a_cs : a_rs};
    const kernels::strided<TB> sb{b.data().data(), op_b == trans::no ? b_rs : b_cs, op_b == trans::no ? b_cs : b_rs};
    gemm_options o;
    o.alpha = alpha * fit.factor;
    o.saturate = to_store.saturate;
    o.amax = options.amax;
    o.threads = current_config().threads;
    detail::gemm_impl::gemm_batched<TA, TB, TC>(sa, sb, m, n, k, {out.data().data(), c_rs, c_cs}, items, o);
  } else if (options.amax != nullptr) {
    *options.amax = 0.0f;
  }
  out.set_scale(detail::unchecked_scale, fit.scale);
}

}  // namespace scalify

#endif  // SCALIFY_OPS_BATCHED_HPP_
