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
#include <span>         // std::span
#include <string>       // std::string
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

/// Throws std::invalid_argument unless `s` is a usable scale (finite, >= 0;
/// > 0 too unless `allow_zero`).
template <class S>
void check_scale(S s, const char* where, bool allow_zero) {
  const double v = static_cast<double>(s);
  SCALIFY_CHECK(std::isfinite(v) && (allow_zero ? v >= 0.0 : v > 0.0), std::invalid_argument,
                std::string(where) + ": the scale must be finite and " + (allow_zero ? ">= 0" : "> 0") +
                    ", got " + std::to_string(v));
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
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double> || !bulk_storable<T>) {
    const auto store = [&](auto target, auto source) {
      if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
        target = source.template cast<T>().matrix();
      } else {
        const auto op = [&](float v) { return round_cast<T>(v, options.round, options.saturate); };
        target = source.template cast<float>().unaryExpr(op).matrix();
      }
    };
    if (by_rows) {
      store(dst.middleRows(begin, end - begin), values.middleRows(begin, end - begin));
    } else {
      store(dst.middleCols(begin, end - begin), values.middleCols(begin, end - begin));
    }
    (void)step;
  } else {
    const Eigen::Index inner = by_rows ? values.cols() : values.rows();
    std::vector<float> buffer(static_cast<size_t>(std::min(step, end - begin) * inner));
    convert_options o = options;
    for (Eigen::Index b = begin; b < end; b += step) {
      const Eigen::Index count = std::min(step, end - b);
      const size_t n = static_cast<size_t>(count * inner);
      if (by_rows) {
        Eigen::Map<Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> chunk(buffer.data(), count,
                                                                                               values.cols());
        chunk = values.middleRows(b, count).template cast<float>();
      } else {
        Eigen::Map<Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>> chunk(buffer.data(),
                                                                                               values.rows(), count);
        chunk = values.middleCols(b, count).template cast<float>();
      }
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
/// rounding once into out's scalar type with `options`. In place, without
/// allocating, when out already has the shape and `values` reads out at most
/// at the position being written (`x = x * y`); through a temporary when it
/// reads other positions of out (`x = transpose(x)`), so aliasing is safe.
template <class Out, class Values>
void evaluate_into(Out& out, const Values& values, const convert_options& options) {
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

  /// Pairs `data` with `scale` as they are (no checks: see make_scaled()).
  ScaledArray(Data data, Scale scale) : data_(std::move(data)), scale_(scale) {}

  ScaledArray(const ScaledArray&) = default;
  ScaledArray(ScaledArray&&) = default;
  ScaledArray& operator=(const ScaledArray&) = default;
  ScaledArray& operator=(ScaledArray&&) = default;

  /// Evaluates `other` (usually a lazy op result) into this storage: the data
  /// once, in float32, rounded once into Scalar with the scope's store options
  /// (current_config().store). If Scale cannot hold other's scale exactly (an
  /// E8M0 scale and a scale that is not a power of two) the scale is rounded
  /// and the data rebased, so the values are kept.
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

  const Data& data() const { return data_; }
  Data& data()
    requires is_storage
  {
    return data_;
  }
  Scale scale() const { return scale_; }
  /// Sets the scale without touching the data (the values change).
  void set_scale(Scale s)
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

  /// The same values with the data cast to T (rounded once with `options`);
  /// the scale is unchanged. Lazy: evaluated when assigned.
  ///
  /// **Example**: `ScaledMatrix<float8_e5m2> g8 = g.cast<float8_e5m2>({.saturate = true});`
  template <class T>
  auto cast(const convert_options& options = current_config().store) const {
    const auto op = [options](const Scalar& v) {
      if constexpr (std::is_same_v<T, float>) {
        return static_cast<float>(v);
      } else {
        return round_cast<T>(static_cast<float>(v), options.round, options.saturate);
      }
    };
    auto expr = data_.unaryExpr(op);
    return ScaledArray<decltype(expr), Scale>(expr, scale_);
  }

 private:
  template <class D2, class S2>
  void assign(const ScaledArray<D2, S2>& other) {
    using Math = detail::scale_math_t<Scale, S2>;
    const Math wanted = static_cast<Math>(other.scale());
    Scale stored = static_cast<Scale>(wanted);
    const Math kept = static_cast<Math>(stored);
    const auto& options = current_config().store;
    // Scale holds every S2 exactly: no rebasing, and no second evaluate_into to instantiate.
    constexpr bool kExact = std::is_same_v<Scale, S2> || std::is_same_v<Scale, double> ||
                            (std::is_same_v<Scale, float> && std::is_same_v<S2, float8_e8m0fnu>);
    if constexpr (kExact) {
      detail::evaluate_into(data_, other.data().array().template cast<float>(), options);
    } else if (kept == wanted || !(kept > Math(0)) || !std::isfinite(static_cast<double>(kept))) {
      if (!(kept == wanted)) stored = static_cast<Scale>(wanted);
      detail::evaluate_into(data_, other.data().array().template cast<float>(), options);
    } else {
      const float rebase = static_cast<float>(wanted / kept);
      detail::evaluate_into(data_, other.data().array().template cast<float>() * rebase, options);
    }
    scale_ = stored;
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
  return ScaledArray<Plain, S>(Plain(data), scale);
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

/// Stores `values` as (values / scale, scale), computed in float and rounded
/// once into the values' scalar type. Throws std::invalid_argument unless
/// `scale` is finite and > 0.
///
/// **Example**: `auto x = scalify::as_scaled(values, 1024.0f);  // data = values / 1024`
template <class D, class S>
  requires detail::eigen_dense<D> && detail::scale_type<S>
auto as_scaled(const D& values, S scale) {
  detail::check_scale(scale, "scalify::as_scaled", /*allow_zero=*/false);
  using Plain = typename D::PlainObject;
  Plain data(values.rows(), values.cols());
  const float divisor = static_cast<float>(scale);  // a division rounds once; * (1 / s) would round twice
  detail::evaluate_into(data, values.array().template cast<float>() / divisor, current_config().store);
  return ScaledArray<Plain, S>(std::move(data), scale);
}

/// A scaled scalar: data in [1, 2) (sign included), scale a power of two;
/// 0 gives (0, 0).
///
/// **Example**: `auto c = scalify::make_scaled_scalar(6.0f);  // data 1.5, scale 4`
inline ScaledScalar<float> make_scaled_scalar(float x) {
  const auto [scale, mantissa] = pow2_decompose(x);
  Eigen::Matrix<float, 1, 1> data;
  data(0, 0) = mantissa;
  return ScaledScalar<float>(data, scale);
}

}  // namespace scalify

#endif  // SCALIFY_CORE_SCALED_ARRAY_HPP_
