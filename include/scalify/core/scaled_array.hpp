// scalify: ScaledArray<Data, Scale>, a tensor stored as (data, scale) with
// value = data * scale.
//
// `Data` is any Eigen dense object or expression; `Scale` is float, double or
// float8_e8m0fnu (a per-tensor scale; per-row/column and block scales are a
// planned extension: they will be new Scale types, the class keeps a single
// `scale_` member of that type).
//
// Scales are eager, data is lazy: an op (scalify/ops/) computes its output
// scale at once and returns a ScaledArray whose Data is an Eigen expression.
// Assigning it into a storage ScaledArray (ScaledMatrix<T>, ScaledVector<T>)
// evaluates the data once, fused, in float32, and rounds once into T.
#ifndef SCALIFY_CORE_SCALED_ARRAY_HPP_
#define SCALIFY_CORE_SCALED_ARRAY_HPP_

#include <Eigen/Core>   // Eigen::DenseBase, Eigen::Matrix, Eigen::Map
#include <algorithm>    // std::min
#include <cmath>        // std::isfinite
#include <cstddef>      // size_t
#include <charconv>     // std::to_chars (numbers in error messages)
#include <limits>       // std::numeric_limits
#include <span>         // std::span
#include <stdexcept>    // std::invalid_argument
#include <string>       // std::string, std::to_string
#include <type_traits>  // std::is_same_v, std::is_base_of_v
#include <utility>      // std::move
#include <vector>       // std::vector (evaluation buffer)

#include "scalify/core/config_scope.hpp"  // current_config
#include "scalify/core/detail/alias.hpp"  // alias_of
#include "scalify/core/detail/parallel.hpp"  // parallel_ranges
#include "scalify/core/pow2.hpp"          // pow2_decompose
#include "scalify/errors.hpp"             // SCALIFY_CHECK
#include "scalify/formats/cast.hpp"       // round_cast
#include "scalify/formats/convert.hpp"    // convert
#include "scalify/formats/detail/eigen_fold.hpp"  // fold_evaluator (e4m3fn decodes' 2^8 to constants)
#include "scalify/formats/eigen.hpp"      // NumTraits of the float8 types
#include "scalify/formats/float16.hpp"    // float16, bfloat16
#include "scalify/formats/float8.hpp"     // float8 types

namespace scalify {

template <class Data, class Scale = float>
class ScaledArray;

namespace detail {

template <class S>
concept scale_type = std::is_same_v<S, float> || std::is_same_v<S, double> || std::is_same_v<S, float8_e8m0fnu>;

template <class D>
concept eigen_dense = std::is_base_of_v<Eigen::DenseBase<D>, D>;

template <class D>
concept eigen_plain = eigen_dense<D> && std::is_base_of_v<Eigen::PlainObjectBase<D>, D>;

/// The arithmetic type of scale rules: double if any scale is double, else float.
template <class... S>
using scale_math_t = std::conditional_t<(std::is_same_v<S, double> || ...), double, float>;

template <class S>
constexpr scale_math_t<S> scale_value(S s) {
  return static_cast<scale_math_t<S>>(s);
}

/// "(3 x 4)"
inline std::string shape_string(Eigen::Index rows, Eigen::Index cols) {
  std::string s(1, '(');  // appended piecewise: GCC 12 warns (-Wrestrict) on "(" + std::string at -O3
  s += std::to_string(rows);
  s += " x ";
  s += std::to_string(cols);
  s += ')';
  return s;
}

/// A number for an error message: the shortest text that reads back as the
/// same float when `v` is one (1e-20, not 9.99999968e-21 or std::to_string's
/// 0.000000), else as the same double (1e+300).
inline std::string number_string(double v) {
  char buffer[64];
  const float f = static_cast<float>(v);
  const auto r = static_cast<double>(f) == v ? std::to_chars(buffer, buffer + sizeof buffer, f)
                                              : std::to_chars(buffer, buffer + sizeof buffer, v);
  return std::string(buffer, r.ptr);
}

/// The name of a data or scale type, for error messages.
template <class T>
constexpr const char* type_name() {
  if constexpr (std::is_same_v<T, float>) return "float";
  else if constexpr (std::is_same_v<T, double>) return "double";
  else if constexpr (std::is_same_v<T, float16>) return "float16";
  else if constexpr (std::is_same_v<T, bfloat16>) return "bfloat16";
  else if constexpr (std::is_same_v<T, float8_e4m3fn>) return "float8_e4m3fn";
  else if constexpr (std::is_same_v<T, float8_e5m2>) return "float8_e5m2";
  else if constexpr (std::is_same_v<T, float8_e8m0fnu>) return "float8_e8m0fnu";
  else return "its scalar type";
}

/// Throws std::invalid_argument unless `s` is a usable scale (finite, >= 0;
/// > 0 too unless `allow_zero`).
template <class S>
void check_scale(S s, const char* where, bool allow_zero) {
  const double v = static_cast<double>(s);
  SCALIFY_CHECK(std::isfinite(v) && (allow_zero ? v >= 0.0 : v > 0.0), std::invalid_argument,
                std::string(where) + ": the scale must be finite and " + (allow_zero ? ">= 0" : "> 0") +
                    ", got " + number_string(v));
}

/// A result that stores itself into ScaledArray storage instead of being an
/// Eigen expression: a matmul with its fused epilogue (ops/matmul.hpp).
/// `e.store_into(out)` sets out's data and scale (rows(), cols() give the shape).
template <class E>
concept deferred_result = requires { typename E::deferred_result_tag; };

/// Tag of ScaledArray's unchecked constructor, for ops whose scale rule
/// legitimately gives an inf or NaN scale (div by a zero scale, an overflowing
/// mul, pow or prod, dynamic_rescale_* of inf data; docs/scaled_array.md lists
/// them). Internal: users construct with a checked scale.
struct unchecked_scale_t {
  explicit unchecked_scale_t() = default;
};
inline constexpr unchecked_scale_t unchecked_scale{};

/// The largest and the smallest positive power of two of a scale type.
template <class S>
struct scale_range;
template <>
struct scale_range<float> {
  static constexpr float kLargest = 0x1p127f, kSmallest = 0x1p-149f;
};
template <>
struct scale_range<double> {
  static constexpr double kLargest = 0x1p1023, kSmallest = 0x1p-1074;
};
template <>
struct scale_range<float8_e8m0fnu> {
  static constexpr float kLargest = 0x1p127f, kSmallest = 0x1p-127f;
};

/// How a scale `wanted` is stored in a Scale type that may not hold it: the
/// stored scale, and the factor the data is multiplied by so that the values
/// data * scale are kept (`rebased` false: factor 1, the data is untouched).
template <class Scale>
struct stored_scale {
  Scale scale;
  float factor;
  bool rebased;
};

/// Fits `wanted` into Scale (see ScaledArray's converting assignment):
///   - Scale holds it exactly: stored as is;
///   - a positive finite scale Scale rounds (an E8M0 scale that is not a power
///     of two; a double scale in float's subnormal range): the rounded scale,
///     the data rebased by wanted / rounded;
///   - a positive finite scale beyond Scale's range: Scale's largest (smallest)
///     power of two, the data rebased by the rest, if that rest is a normal
///     float (else std::invalid_argument naming both: the values cannot be
///     kept);
///   - 0, inf or NaN that Scale cannot hold (E8M0 has none of them): scale 1,
///     the data multiplied by `wanted`, so the values are d * wanted as in plain
///     math (0, +-inf, NaN).
template <class Scale, class Math>
stored_scale<Scale> fit_scale(Math wanted, const char* where) {
  const Scale stored = static_cast<Scale>(wanted);
  const Math kept = static_cast<Math>(stored);
  if (kept == wanted) return {stored, 1.0f, false};
  if (!std::isfinite(wanted) || wanted == Math(0)) return {Scale(1.0f), static_cast<float>(wanted), true};
  const auto usable = [](float f) { return std::isfinite(f) && f >= std::numeric_limits<float>::min(); };
  if (wanted > Math(0)) {
    if (std::isfinite(kept) && kept > Math(0)) {
      const float factor = static_cast<float>(wanted / kept);
      if (usable(factor)) return {stored, factor, true};
    }
    const Math limit = wanted > Math(1) ? static_cast<Math>(scale_range<Scale>::kLargest)
                                        : static_cast<Math>(scale_range<Scale>::kSmallest);
    const float factor = static_cast<float>(wanted / limit);
    if (usable(factor)) return {static_cast<Scale>(limit), factor, true};
  }
  throw std::invalid_argument(std::string(where) + ": cannot store the scale " + number_string(wanted) + " in a " +
                              type_name<Scale>() + " scale: it is beyond that type's range (" +
                              number_string(static_cast<double>(scale_range<Scale>::kSmallest)) + " to " +
                              number_string(static_cast<double>(scale_range<Scale>::kLargest)) +
                              ") by more than the float data can absorb; rebase the values first (set_scaling) "
                              "or keep a double scale");
}

/// "(2 x 3)" for the shapes an Eigen type can take: "any" for a dynamic size,
/// "<= 4" for a dynamic size with a compile-time bound.
template <class Out>
std::string storage_shape_string() {
  // Appended piecewise: GCC 12 warns (-Wrestrict) on "(" + std::string at -O3.
  std::string s(1, '(');
  const auto dim = [&s](Eigen::Index fixed, Eigen::Index bound) {
    if (fixed != Eigen::Dynamic) {
      s += std::to_string(fixed);
    } else if (bound != Eigen::Dynamic) {
      s += "<= ";
      s += std::to_string(bound);
    } else {
      s += "any";
    }
  };
  dim(Out::RowsAtCompileTime, Out::MaxRowsAtCompileTime);
  s += " x ";
  dim(Out::ColsAtCompileTime, Out::MaxColsAtCompileTime);
  s += ')';
  return s;
}

/// Throws shape_error naming both shapes unless storage of type Out (a
/// fixed-size matrix, a vector, a matrix with compile-time bounds, or a
/// dynamic one) can take the shape (rows x cols). Every store into a
/// ScaledArray goes through here, in every build type: Eigen only asserts
/// (debug builds), and with -DNDEBUG would write past a fixed-size buffer.
template <class Out>
void check_storable(Eigen::Index rows, Eigen::Index cols) {
  constexpr Eigen::Index kRows = Out::RowsAtCompileTime, kCols = Out::ColsAtCompileTime;
  constexpr Eigen::Index kMaxRows = Out::MaxRowsAtCompileTime, kMaxCols = Out::MaxColsAtCompileTime;
  const bool fits = rows >= 0 && cols >= 0 && (kRows == Eigen::Dynamic || rows == kRows) &&
                    (kCols == Eigen::Dynamic || cols == kCols) && (kMaxRows == Eigen::Dynamic || rows <= kMaxRows) &&
                    (kMaxCols == Eigen::Dynamic || cols <= kMaxCols);
  SCALIFY_CHECK(fits, shape_error,
                "scalify::ScaledArray: cannot store a " + shape_string(rows, cols) + " result in storage of shape " +
                    storage_shape_string<Out>());
}

/// Eigen types that store T with the layout of `Like`.
template <class T, class Like>
using plain_like = Eigen::Matrix<T, Like::RowsAtCompileTime, Like::ColsAtCompileTime,
                                 (Like::RowsAtCompileTime == 1 && Like::ColsAtCompileTime != 1)   ? Eigen::RowMajor
                                 : (Like::ColsAtCompileTime == 1 && Like::RowsAtCompileTime != 1) ? Eigen::ColMajor
                                 : (Like::Flags & Eigen::RowMajorBit)                            ? Eigen::RowMajor
                                                                                                  : Eigen::ColMajor,
                                 Like::MaxRowsAtCompileTime, Like::MaxColsAtCompileTime>;

template <class T>
concept bulk_storable = std::is_same_v<T, float8_e4m3fn> || std::is_same_v<T, float8_e5m2> ||
                        std::is_same_v<T, float16> || std::is_same_v<T, bfloat16>;

/// Plain storage of T of the same kind (Matrix or Array), shape and storage
/// order as `Like`.
template <class T, class Like>
using plain_same_kind =
    std::conditional_t<std::is_base_of_v<Eigen::ArrayBase<Like>, Like>,
                       Eigen::Array<T, Like::RowsAtCompileTime, Like::ColsAtCompileTime,
                                    plain_like<T, Like>::Options, Like::MaxRowsAtCompileTime,
                                    Like::MaxColsAtCompileTime>,
                       plain_like<T, Like>>;

/// Coefficient (i, j) is its linear index in a (rows x cols) array of the
/// given storage order (reads no memory: core/detail/alias.hpp).
struct linear_index_op {
  Eigen::Index rows, cols;
  bool row_major;
  Eigen::Index operator()(Eigen::Index i, Eigen::Index j) const { return row_major ? i * cols + j : j * rows + i; }
};

/// x rounded once into T with `options`, x's linear index `at` choosing the
/// random bits of stochastic rounding: stochastic_bits(seed, offset + at),
/// as a bulk convert of the same elements (formats/convert.hpp).
template <class T, class Scalar>
struct indexed_round_op {
  convert_options options;
  stochastic_keys keys;
  T operator()(const Scalar& x, Eigen::Index at) const {
    const uint32_t random =
        options.round == rounding::stochastic ? stochastic_bits(keys, options.offset + static_cast<uint64_t>(at)) : 0u;
    return round_cast<T>(cast_source(x), options.round, options.saturate, random);
  }
};

/// True when Eigen evaluates the float-valued expression V by linear index
/// (coefficient i of its storage order), a packet at a time.
template <class V>
concept linear_packet_access =
    std::is_same_v<std::remove_cv_t<typename V::Scalar>, float> &&
    (static_cast<int>(Eigen::internal::evaluator<V>::Flags) & Eigen::LinearAccessBit) != 0 &&
    (static_cast<int>(Eigen::internal::evaluator<V>::Flags) & Eigen::PacketAccessBit) != 0;

/// out[i] = coefficient `first + i` of `values` in its storage order, for
/// i < n, a packet at a time: Eigen's linear traversal, written out with the
/// evaluator a local, whose pointers and constants then stay in registers
/// (Eigen's own loop reaches its evaluator through a reference and reloads
/// them after every packet store, which may alias anything). float8_e4m3fn
/// operands are screened for NaN codes ahead of the packets, up to the last
/// coefficient read (formats/eigen_packet.hpp), and where the expression
/// multiplies them by constants, their decodes leave the factor 2^8 to those
/// (formats/detail/eigen_fold.hpp).
template <class Values>
void evaluate_linear(const Values& values, Eigen::Index first, Eigen::Index n, float* out) {
  using Packet = typename Eigen::internal::packet_traits<float>::type;
  constexpr Eigen::Index kSize = Eigen::internal::packet_traits<float>::size;
  Eigen::Index i = 0;
#if SCALIFY_EIGEN_PACKET_FLOAT8
  const eigen_packet::screen_scope screen(first + n);
  if constexpr (eigen_packet::folds_completely<Values>) {
    // e4m3fn decodes without their * 2^8, folded into the constant factors:
    // the same bits, one multiply per operand less (formats/detail/eigen_fold.hpp).
    // Runs of packets whose e4m3fn codes were screened clean decode with no
    // check per packet; a packet near a NaN code takes the exact decode.
    const eigen_packet::fold_evaluator<Values> folded(values);
    if (folded.applies()) {
      // AVX2 (8-float packets): blocks of 32 values through staged float16
      // halves, each operand's codes screened as they are staged
      // (eigen_packet::evaluate_staged), unless the evaluation is long (a
      // float result streaming to memory, eigen_packet::kStagedRangeMax).
      if constexpr (kSize == 8 && eigen_packet::stages<eigen_packet::fold_evaluator<Values>>) {  // Packet8f
        if (n <= eigen_packet::kStagedRangeMax && folded.stageable(first + n)) {
          i = n / kSize * kSize;
          eigen_packet::evaluate_staged(folded, first, i, out);
        }
      }
      while (i + kSize <= n) {
        const Eigen::Index run = folded.clean_run(first + i);
        const Eigen::Index stop = run >= n - i ? n : i + run;
        if (i + kSize > stop) {
          Eigen::internal::pstoreu(out + i, folded.template packet<Packet>(first + i));
          i += kSize;
          continue;
        }
        for (; i + kSize <= stop; i += kSize) {
          Eigen::internal::pstoreu(out + i, folded.template packet_clean<Packet>(first + i));
        }
      }
    }
  }
#endif
  if (i == n) return;  // no second evaluator (one may compute a temporary when built)
  const Eigen::internal::evaluator<Values> source(values);
  for (; i + kSize <= n; i += kSize) {
    Eigen::internal::pstoreu(out + i, source.template packet<Eigen::Unaligned, Packet>(first + i));
  }
  for (; i < n; ++i) out[i] = source.coeff(first + i);
}

/// Evaluates rows (by_rows) or columns [begin, end) of the float-valued
/// expression `values` into the same rows/columns of `dst`, rounding once into
/// its scalar type with `options`. Narrow outputs are evaluated `step`
/// rows/columns at a time (a cache-sized chunk) into a float buffer and
/// converted with the SIMD bulk cast, so the whole assignment is one pass over
/// memory.
template <class Out, class Values>
void evaluate_range(Out& dst, const Values& values, const convert_options& options, bool by_rows,
                    Eigen::Index begin, Eigen::Index end, Eigen::Index step) {
  using T = typename Out::Scalar;
  const Eigen::Index inner = by_rows ? values.cols() : values.rows();
  // With the same storage order as dst, values' linear index runs through the
  // range in dst's order: evaluate_in_place splits along dst's outer
  // dimension (rows or columns [begin, end), one after the other), and a
  // vector's linear index is its one index. Then only evaluate_linear is
  // instantiated, not Eigen's assignment loop as well.
  constexpr bool kLinear = linear_packet_access<Values> &&
                           static_cast<bool>(Values::IsRowMajor) == static_cast<bool>(Out::IsRowMajor);
  if constexpr (std::is_same_v<T, float> && kLinear) {
    // Straight into dst, whose linear index is the same.
    evaluate_linear(values, begin * inner, (end - begin) * inner, dst.data() + begin * inner);
    (void)options;
    (void)step;
  } else if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double> || !bulk_storable<T>) {
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      if (by_rows) {
        dst.middleRows(begin, end - begin) = values.middleRows(begin, end - begin).template cast<T>().matrix();
      } else {
        dst.middleCols(begin, end - begin) = values.middleCols(begin, end - begin).template cast<T>().matrix();
      }
    } else {
      // Element by element, each with its linear index in dst's order (the
      // random bits of stochastic rounding: those of the bulk cast below).
      const indexed_round_op<T, float> round{options, make_stochastic_keys(options.seed)};
      for (Eigen::Index o = begin; o < end; ++o) {
        for (Eigen::Index q = 0; q < inner; ++q) {
          const Eigen::Index r = by_rows ? o : q, c = by_rows ? q : o;
          dst(r, c) = round(static_cast<float>(values.coeff(r, c)), o * inner + q);
        }
      }
    }
    (void)step;
  } else {
    // Plain float storage laid out as dst (a matrix, map or array): the bulk
    // cast reads it in place, one call for the whole range (the same bytes:
    // the copy below is exact and the offsets are the elements' positions).
    if constexpr (std::is_same_v<std::remove_cv_t<typename Values::Scalar>, float> &&
                  (static_cast<int>(Values::Flags) & Eigen::DirectAccessBit) != 0) {
      if (static_cast<bool>(Values::IsRowMajor) == by_rows && values.innerStride() == 1 &&
          values.outerStride() == inner) {
        const size_t n = static_cast<size_t>((end - begin) * inner);
        convert_options o = options;
        o.offset = options.offset + static_cast<uint64_t>(begin * inner);
        convert(std::span<const float>(values.data() + begin * inner, n),
                std::span<T>(dst.data() + begin * inner, n), o);
        return;
      }
    }
    std::vector<float> buffer(static_cast<size_t>(std::min(step, end - begin) * inner));
    // Rows or columns [b, b + count) of values into the buffer, in dst's order.
    const auto fill = [&](Eigen::Index b, Eigen::Index count) {
      if constexpr (kLinear) {
        evaluate_linear(values, b * inner, count * inner, buffer.data());
      } else if (by_rows) {
        Eigen::Map<Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> chunk(buffer.data(), count,
                                                                                               values.cols());
        chunk = values.middleRows(b, count).template cast<float>();
      } else {
        Eigen::Map<Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>> chunk(buffer.data(),
                                                                                               values.rows(), count);
        chunk = values.middleCols(b, count).template cast<float>();
      }
    };
    convert_options o = options;
    for (Eigen::Index b = begin; b < end; b += step) {
      const Eigen::Index count = std::min(step, end - b);
      const size_t n = static_cast<size_t>(count * inner);
      fill(b, count);
      o.offset = options.offset + static_cast<uint64_t>(b * inner);
      convert(std::span<const float>(buffer.data(), n), std::span<T>(dst.data() + b * inner, n), o);
    }
  }
}

/// Evaluates the float-valued expression `values` into `dst` (already of the
/// right size), rounding once into its scalar type with `options`; large
/// results are split by rows or columns across the scope's threads
/// (scalify_config::threads). `values` may read `dst` only at the position
/// being written.
template <class Out, class Values>
void evaluate_in_place(Out& dst, const Values& values, const convert_options& options) {
  const Eigen::Index rows = values.rows(), cols = values.cols();
  constexpr bool kRowMajor = (Out::Flags & Eigen::RowMajorBit) != 0;
  // Split along the outer dimension of the output, so each part is contiguous.
  const bool by_rows = cols == 1 || (kRowMajor && rows != 1);
  const Eigen::Index inner = std::max<Eigen::Index>(by_rows ? cols : rows, 1);
  const Eigen::Index outer = by_rows ? rows : cols;
  constexpr Eigen::Index kChunkElements = 8192;        // 32 KiB of float: stays in L1/L2
  constexpr Eigen::Index kThreadElements = 1 << 16;    // per thread: well above the pool's hand-off (~1 us)
  const Eigen::Index step = std::max<Eigen::Index>(1, kChunkElements / inner);
  const Eigen::Index grain = std::max<Eigen::Index>(1, kThreadElements / inner);
  parallel_ranges(outer, grain, step, current_config().threads, [&](int64_t begin, int64_t end) {
    evaluate_range(dst, values, options, by_rows, static_cast<Eigen::Index>(begin), static_cast<Eigen::Index>(end),
                   step);
  });
}

/// Evaluates the float-valued expression `values` once into `out` (resized),
/// rounding once into out's scalar type with `options`. Throws shape_error,
/// before writing anything, when out's type cannot take values' shape
/// (check_storable), and std::invalid_argument for invalid options. In place, without
/// allocating, when out already has the shape and `values` reads out at most
/// at the position being written (`x = x * y`); through a temporary when it
/// reads other positions of out (`x = transpose(x)`), so aliasing is safe.
template <class Out, class Values>
void evaluate_into(Out& out, const Values& values, const convert_options& options) {
  check_storable<Out>(values.rows(), values.cols());
  check_convert_options(options, "scalify::ScaledArray (the scope's store options)");
  const alias_kind kind = alias_of(values, alias_target_of(out));
  if (kind == alias_kind::other) {
    Out result(values.rows(), values.cols());
    evaluate_in_place(result, values, options);
    out = std::move(result);
    return;
  }
  // kind == none: resizing cannot hurt the operands; same_position: same shape.
  out.resize(values.rows(), values.cols());
  evaluate_in_place(out, values, options);
}

}  // namespace detail

/// A tensor stored as (data, scale) with value = data * scale.
///
/// **Example**:
/// ```
/// scalify::ScaledMatrix<scalify::float8_e4m3fn> x = scalify::as_scaled(values, 0.5f);
/// scalify::ScaledMatrix<scalify::float16> y = x * x + x;   // one fused pass
/// Eigen::MatrixXf v = y.to_dense();
/// ```
template <class Data, class Scale>
class ScaledArray {
  static_assert(detail::eigen_dense<Data>,
                "ScaledArray<Data, Scale>: Data must be an Eigen dense matrix, array or expression, "
                "e.g. Eigen::MatrixXf or Eigen::Matrix<scalify::float8_e4m3fn, -1, -1>");
  static_assert(detail::scale_type<Scale>,
                "ScaledArray<Data, Scale>: Scale must be float, double or scalify::float8_e8m0fnu");

 public:
  using data_type = Data;
  using scale_type = Scale;
  using Scalar = typename Data::Scalar;
  using Index = Eigen::Index;
  /// True for storage (a plain Eigen matrix or array), false for a lazy result.
  static constexpr bool is_storage = detail::eigen_plain<Data>;

  /// An empty tensor with scale 1.
  ScaledArray()
    requires is_storage
      : data_(), scale_(Scale(1.0f)) {}

  /// Pairs `data` with `scale` as they are. Throws std::invalid_argument, in
  /// every build type, for a NaN, infinite or negative scale (0 is allowed:
  /// all values are 0).
  ///
  /// **Example**: `scalify::ScaledMatrix<float> x(m, 0.25f);  // values m * 0.25`
  ScaledArray(Data data, Scale scale) : data_(std::move(data)), scale_(checked_scale(scale, kWhere)) {}

  /// Internal: pairs `data` with `scale` without checking the scale (the ops
  /// whose rules give an inf or NaN scale, see detail::unchecked_scale_t).
  ScaledArray(detail::unchecked_scale_t, Data data, Scale scale) : data_(std::move(data)), scale_(scale) {}

  /// Storage from another Eigen type (e.g. an expression, or a MatrixXf into
  /// a vector): throws shape_error, in every build type, when Data cannot
  /// take its shape (a fixed-size, vector or bounded Data), and
  /// std::invalid_argument for a NaN, infinite or negative scale.
  ///
  /// **Example**: `scalify::ScaledVector<float> v(m.col(0), 0.5f);  // m.col(0) fits; m itself would throw`
  template <class D2>
    requires is_storage && detail::eigen_dense<D2> && (!std::is_same_v<D2, Data>)
  ScaledArray(const D2& data, Scale scale) : data_(checked_data(data)), scale_(checked_scale(scale, kWhere)) {}

  ScaledArray(const ScaledArray&) = default;
  ScaledArray(ScaledArray&&) = default;
  ScaledArray& operator=(const ScaledArray&) = default;
  ScaledArray& operator=(ScaledArray&&) = default;

  /// Evaluates `other` (usually a lazy op result) into this storage: the data
  /// once, in float32 (double for double storage), rounded once into Scalar
  /// with the scope's store options (current_config().store: by default
  /// finite data beyond Scalar's range saturates to its largest finite value,
  /// see docs/scaled_array.md). If Scale cannot hold other's scale exactly (an
  /// E8M0 scale and a scale that is not a power of two; a double scale beyond
  /// float's range) the scale is rounded or
  /// clamped and the data rebased, so the values are kept (detail::fit_scale);
  /// std::invalid_argument when they cannot be.
  ///
  /// Throws shape_error, in every build type and before anything is written,
  /// when the storage cannot take other's shape: a `ScaledScalar` (1 x 1), a
  /// `ScaledVector` (n x 1) or another fixed-size or bounded Data.
  template <class D2, class S2>
    requires is_storage
  ScaledArray(const ScaledArray<D2, S2>& other) {  // NOLINT(google-explicit-constructor): assigning evaluates
    assign(other);
  }
  template <class D2, class S2>
    requires is_storage
  ScaledArray& operator=(const ScaledArray<D2, S2>& other) {
    assign(other);
    return *this;
  }

  /// Stores a deferred result (detail::deferred_result: `matmul(a, b)`,
  /// `relu(matmul(a, b) + bias)`, ...) into this storage: the GEMM writes the
  /// data in its epilogue, cast once into Scalar (ops/matmul.hpp).
  template <class E>
    requires is_storage && detail::deferred_result<E>
  ScaledArray(const E& result) {  // NOLINT(google-explicit-constructor): assigning evaluates
    result.store_into(*this);
  }
  template <class E>
    requires is_storage && detail::deferred_result<E>
  ScaledArray& operator=(const E& result) {
    result.store_into(*this);
    return *this;
  }

  const Data& data() const { return data_; }
  Data& data()
    requires is_storage
  {
    return data_;
  }
  Scale scale() const { return scale_; }
  /// Sets the scale without touching the data (the values change). Throws
  /// std::invalid_argument for a NaN, infinite or negative scale, leaving
  /// the scale as it was.
  ///
  /// **Example**: `w.set_scale(w.scale() * 0.5f);  // halves every value`
  void set_scale(Scale s)
    requires is_storage
  {
    scale_ = checked_scale(s, "scalify::ScaledArray::set_scale");
  }

  /// Internal: sets the scale unchecked (a deferred result whose rule gives
  /// an inf or NaN scale, see detail::unchecked_scale_t).
  void set_scale(detail::unchecked_scale_t, Scale s)
    requires is_storage
  {
    scale_ = s;
  }

  Index rows() const { return data_.rows(); }
  Index cols() const { return data_.cols(); }
  Index size() const { return data_.size(); }

  /// The values data * scale as a float matrix, computed in float from the
  /// widened data (so a large scale with small data does not overflow the
  /// narrow type); in double first when Scale is double.
  Eigen::MatrixXf to_dense() const {
    if constexpr (std::is_same_v<Scale, double>) {
      return (data_.template cast<double>() * static_cast<double>(scale_)).template cast<float>();
    } else {
      return data_.template cast<float>() * static_cast<float>(scale_);
    }
  }

  /// The value data * scale of a (1 x 1) array (e.g. a full reduction),
  /// formed in double and rounded once: a float, or a double for a double
  /// scale. Throws shape_error for any other shape.
  ///
  /// **Example**: `float total = scalify::sum(x).item();`
  detail::scale_math_t<Scale> item() const {
    SCALIFY_CHECK(rows() == 1 && cols() == 1, shape_error,
                  "scalify::ScaledArray::item: needs a (1 x 1) array, got " + detail::shape_string(rows(), cols()));
    const auto d = detail::cast_source(static_cast<Scalar>(data_(0, 0)));
    return static_cast<detail::scale_math_t<Scale>>(static_cast<double>(d) * static_cast<double>(scale_));
  }

  /// The same values with the data cast to T (rounded once with `options`;
  /// float and double: a plain conversion; the same type: the same values); the scale
  /// is unchanged. Stochastic rounding gives element i of the data, in its
  /// storage order, the bits stochastic_bits(seed, offset + i): the bytes a
  /// bulk `convert` of the data with the same options gives. Lazy: evaluated
  /// when assigned. Throws std::invalid_argument for a rounding mode outside
  /// the enum.
  ///
  /// **Example**: `ScaledMatrix<float8_e5m2> g8 = g.cast<float8_e5m2>({.round = scalify::rounding::stochastic});`
  template <class T>
  auto cast(const convert_options& options = current_config().store) const {
    detail::check_convert_options(options, "scalify::ScaledArray::cast");
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      // Exact, or double -> float rounded to nearest.
      auto expr = data_.unaryExpr([](const Scalar& v) { return static_cast<T>(detail::cast_source(v)); });
      return ScaledArray<decltype(expr), Scale>(detail::unchecked_scale, expr, scale_);
    } else {
      using Index = detail::plain_same_kind<Eigen::Index, Data>;
      const auto index = Index::NullaryExpr(
          rows(), cols(), detail::linear_index_op{rows(), cols(), (Data::Flags & Eigen::RowMajorBit) != 0});
      auto expr = data_.binaryExpr(
          index, detail::indexed_round_op<T, Scalar>{options, detail::make_stochastic_keys(options.seed)});
      return ScaledArray<decltype(expr), Scale>(detail::unchecked_scale, expr, scale_);
    }
  }

 private:
  static constexpr const char* kWhere = "scalify::ScaledArray";

  /// `s`, or std::invalid_argument naming `where` and `s` unless it is
  /// finite and >= 0. One comparison on the path that succeeds.
  static Scale checked_scale(Scale s, const char* where) {
    detail::check_scale(s, where, /*allow_zero=*/true);
    return s;
  }
  template <class D2>
  static const D2& checked_data(const D2& data) {
    detail::check_storable<Data>(data.rows(), data.cols());
    return data;
  }

  template <class D2, class S2>
  void assign(const ScaledArray<D2, S2>& other) {
    using Math = detail::scale_math_t<Scale, S2>;
    const Math wanted = static_cast<Math>(other.scale());
    const auto& options = current_config().store;
    // Evaluated in float; in double for double storage, so double data is not rounded to float.
    using V = std::conditional_t<std::is_same_v<Scalar, double>, double, float>;
    // Scale holds every S2 exactly: no rebasing, and no second evaluate_into to instantiate.
    constexpr bool kExact = std::is_same_v<Scale, S2> || std::is_same_v<Scale, double> ||
                            (std::is_same_v<Scale, float> && std::is_same_v<S2, float8_e8m0fnu>);
    if constexpr (kExact) {
      if constexpr (kWidensStorage<D2>) {
        if (widen_from(other.data())) {
          scale_ = static_cast<Scale>(wanted);
          return;
        }
      }
      detail::evaluate_into(data_, other.data().array().template cast<V>(), options);
      scale_ = static_cast<Scale>(wanted);
    } else {
      // Checked before the data is touched: a failure leaves *this as it was.
      const auto fit = detail::fit_scale<Scale>(wanted, "scalify::ScaledArray");
      if (!fit.rebased) {
        detail::evaluate_into(data_, other.data().array().template cast<V>(), options);
      } else {
        detail::evaluate_into(data_, other.data().array().template cast<V>() * static_cast<V>(fit.factor),
                              options);
      }
      scale_ = fit.scale;
    }
  }

  /// Float storage from narrow storage (float8, float16, bfloat16) laid out
  /// in the same order: an exact widening, done by the bulk cast (SIMD).
  template <class D2>
  static constexpr bool kWidensStorage =
      std::is_same_v<Scalar, float> && detail::eigen_plain<D2> && detail::bulk_storable<typename D2::Scalar>;

  /// Widens `src` into data_ with the bulk cast if the two store their
  /// elements in the same order (same storage order, or a vector); false
  /// (nothing written) otherwise.
  template <class D2>
  bool widen_from(const D2& src) {
    const bool same_order = (int(Data::Flags) & Eigen::RowMajorBit) == (int(D2::Flags) & Eigen::RowMajorBit) ||
                            src.rows() == 1 || src.cols() == 1;
    if (!same_order) return false;
    detail::check_storable<Data>(src.rows(), src.cols());
    // Exact, so the store options do not matter; still rejected when invalid, as every store does.
    detail::check_convert_options(current_config().store, "scalify::ScaledArray (the scope's store options)");
    data_.resize(src.rows(), src.cols());
    // Split across the scope's threads as the other stores are (the bytes do not depend on the split).
    const auto* from = src.data();
    float* to = data_.data();
    detail::parallel_ranges(src.size(), int64_t{1} << 16, 64, current_config().threads, [&](int64_t begin, int64_t end) {
      const auto n = static_cast<std::size_t>(end - begin);
      convert(std::span<const typename D2::Scalar>(from + begin, n), std::span<float>(to + begin, n));
    });
    return true;
  }

  Data data_;
  Scale scale_;
};

/// Row-major dynamic matrix storage with a per-tensor scale.
template <class T, class Scale = float>
using ScaledMatrix = ScaledArray<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>, Scale>;
/// Column vector storage with a per-tensor scale.
template <class T, class Scale = float>
using ScaledVector = ScaledArray<Eigen::Matrix<T, Eigen::Dynamic, 1>, Scale>;
/// A scaled scalar (1 x 1).
template <class T = float, class Scale = float>
using ScaledScalar = ScaledArray<Eigen::Matrix<T, 1, 1>, Scale>;

/// Pairs `data` (copied as is) with `scale`. Throws std::invalid_argument for
/// a negative or non-finite scale; a zero scale is allowed (all values 0).
///
/// **Example**: `auto x = scalify::make_scaled(codes, 0.25f);  // value = codes * 0.25`
template <class D, class S = float>
  requires detail::eigen_dense<D>
auto make_scaled(const D& data, S scale = S(1.0f)) {
  detail::check_scale(scale, "scalify::make_scaled", /*allow_zero=*/true);
  using Plain = typename D::PlainObject;
  return ScaledArray<Plain, S>(detail::unchecked_scale, Plain(data), scale);  // checked above
}

/// `values` with scale 1 (the data is not normalised).
///
/// **Example**: `auto x = scalify::as_scaled(Eigen::MatrixXf::Random(3, 4));`
template <class D>
  requires detail::eigen_dense<D>
auto as_scaled(const D& values) {
  using Plain = typename D::PlainObject;
  return ScaledArray<Plain, float>(Plain(values), 1.0f);
}

namespace detail {

/// as_scaled's range check: the largest finite |value| divided by the scale,
/// rounded into T as the store does it (through float for narrow T), must be
/// finite (else some value would become inf or NaN, or saturate) and nonzero
/// (else every value would become 0). Rounding is monotonic, so the largest
/// value decides for all. `Q` is the type of the division.
template <class T, class Q>
void check_as_scaled_range(double amax, Q divisor, double scale) {
  if (!(amax > 0.0)) return;  // no finite nonzero value: nothing to lose
  const Q q = static_cast<Q>(amax) / divisor;
  double stored;
  if constexpr (std::is_same_v<T, double>) {
    stored = static_cast<double>(q);
  } else if constexpr (std::is_same_v<T, float>) {
    stored = static_cast<double>(static_cast<float>(q));
  } else {
    stored = static_cast<double>(round_cast<T>(static_cast<float>(q), rounding::nearest_even, false));
  }
  const std::string what = std::string("scalify::as_scaled: the scale ") + number_string(scale) + " is too ";
  const std::string detail = " for these values: the largest |value| " + number_string(amax) + " / scale = " +
                             number_string(static_cast<double>(q)) + " ";
  SCALIFY_CHECK(std::isfinite(stored), std::invalid_argument,
                what + "small" + detail + "overflows " + type_name<T>() + " (the data would be inf or NaN)");
  SCALIFY_CHECK(stored != 0.0, std::invalid_argument,
                what + "large" + detail + "rounds to 0 in " + type_name<T>() + " (every value would be 0)");
}

}  // namespace detail

/// Stores `values` as (values / scale, scale): one division, in float (in
/// double when the scale or the values are double), rounded into the values'
/// scalar type with the scope's store options. Throws std::invalid_argument
/// unless `scale` is finite and > 0, and when it cannot represent the values:
/// when the largest finite |value| / scale overflows the data type (whatever
/// the store's saturation) or rounds to 0 in it. (Single small values may
/// still round to 0, as in any cast; NaN and inf values stay NaN and inf.)
///
/// **Example**: `auto x = scalify::as_scaled(values, 1024.0f);  // data = values / 1024`
template <class D, class S>
  requires detail::eigen_dense<D> && detail::scale_type<S>
auto as_scaled(const D& values, S scale) {
  detail::check_scale(scale, "scalify::as_scaled", /*allow_zero=*/false);
  using Plain = typename D::PlainObject;
  using T = typename Plain::Scalar;
  // The division in double when the scale or the values are double (a float
  // divisor would turn 1e300 into inf and 1e-300 into 0), else in float: one
  // rounding; * (1 / s) would round twice.
  using Q = std::conditional_t<std::is_same_v<S, double> || std::is_same_v<T, double>, double, float>;
  const Q divisor = static_cast<Q>(detail::scale_value(scale));
  const auto& v = values.eval();  // a plain object by reference, an expression evaluated once
  double amax = 0.0;              // the largest finite |value|
  if (v.size() > 0) {
    const auto a = v.array().template cast<double>().abs();
    amax = a.isFinite().select(a, 0.0).maxCoeff();
  }
  detail::check_as_scaled_range<T>(amax, divisor, static_cast<double>(scale));
  Plain data(v.rows(), v.cols());
  detail::evaluate_into(data, v.array().template cast<Q>() / divisor, current_config().store);
  return ScaledArray<Plain, S>(detail::unchecked_scale, std::move(data), scale);  // checked above
}

namespace detail {

/// A float constant as a scaled scalar (jax-scalify's make_scaled_scalar):
/// {pow2_round_down(|c|), c / that} with |mantissa| in [1, 2); 0 gives
/// {0, 0} (a zero constant has scale 0); +-inf and NaN give {1, c}, so the
/// scale stays finite and the value is c.
inline pow2_parts<float> scalar_parts(float c) {
  if (!std::isfinite(c)) return {1.0f, c};
  return pow2_decompose(c);
}

}  // namespace detail

/// A scaled scalar: data in [1, 2) (sign included), scale a power of two;
/// 0 gives (0, 0); +-inf and NaN give data x with scale 1.
///
/// **Example**: `auto c = scalify::make_scaled_scalar(6.0f);  // data 1.5, scale 4`
inline ScaledScalar<float> make_scaled_scalar(float x) {
  const auto [scale, mantissa] = detail::scalar_parts(x);
  Eigen::Matrix<float, 1, 1> data;
  data(0, 0) = mantissa;
  return ScaledScalar<float>(std::move(data), scale);
}

}  // namespace scalify

// x.cast<T>() pairs each element of x with its linear index (Eigen::Index) in
// one binary expression: its result type, for Eigen's mixed-type check.
template <class T, class Scalar>
struct Eigen::ScalarBinaryOpTraits<Scalar, Eigen::Index, scalify::detail::indexed_round_op<T, Scalar>> {
  using ReturnType = T;
};

#endif  // SCALIFY_CORE_SCALED_ARRAY_HPP_
