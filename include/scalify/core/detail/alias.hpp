// scalify: does an Eigen expression read the memory it is about to be stored into?
//
// Storing a lazy result into a ScaledArray writes the destination chunk by
// chunk, in place when its size does not change (no allocation per
// assignment). That is safe when the expression reads the destination only at
// the position being written (`x = x * y + w`), and wrong when it reads other
// positions (`x = transpose(x)`, `x = reverse(x)`, a shifted block of x) or when
// the destination is resized while the expression still reads it. Eigen leaves
// this to the user (`.eval()`, `noalias()`); scalify checks it at run time, once
// per assignment, by walking the expression tree:
//
//   alias_kind::none            no leaf overlaps the destination
//   alias_kind::same_position   overlapping leaves are the destination itself,
//                               reached only through coefficient-wise nodes
//   alias_kind::other           anything else, including expression nodes this
//                               walk does not know (conservative: the caller
//                               evaluates into a temporary)
#ifndef SCALIFY_CORE_DETAIL_ALIAS_HPP_
#define SCALIFY_CORE_DETAIL_ALIAS_HPP_

#include <Eigen/Core>   // expression node types
#include <algorithm>    // std::max
#include <cstdint>      // std::uintptr_t
#include <type_traits>  // std::true_type, std::false_type

namespace scalify::detail {

enum class alias_kind { none = 0, same_position = 1, other = 2 };

constexpr alias_kind worst(alias_kind a, alias_kind b) { return a > b ? a : b; }

/// The destination: its bytes, shape and storage order.
struct alias_target {
  std::uintptr_t begin = 0, end = 0;  // [begin, end) in bytes
  Eigen::Index rows = 0, cols = 0;
  bool row_major = false;
};

template <class Plain>
alias_target alias_target_of(const Plain& out) {
  const auto begin = reinterpret_cast<std::uintptr_t>(out.data());
  return {begin, begin + static_cast<std::uintptr_t>(out.size()) * sizeof(typename Plain::Scalar), out.rows(),
          out.cols(), (Plain::Flags & Eigen::RowMajorBit) != 0};
}

// Coefficient-wise nodes: coefficient (i, j) of the node reads only
// coefficient (i, j) of its operands.
template <class E>
struct is_coefficient_wise : std::false_type {};
template <class Op, class X>
struct is_coefficient_wise<Eigen::CwiseUnaryOp<Op, X>> : std::true_type {};
template <class Op, class X>
struct is_coefficient_wise<Eigen::CwiseUnaryView<Op, X>> : std::true_type {};
template <class Op, class L, class R>
struct is_coefficient_wise<Eigen::CwiseBinaryOp<Op, L, R>> : std::true_type {};
template <class Op, class A, class B, class C>
struct is_coefficient_wise<Eigen::CwiseTernaryOp<Op, A, B, C>> : std::true_type {};
template <class X>
struct is_coefficient_wise<Eigen::ArrayWrapper<X>> : std::true_type {};
template <class X>
struct is_coefficient_wise<Eigen::MatrixWrapper<X>> : std::true_type {};
template <class C, class T, class E>
struct is_coefficient_wise<Eigen::Select<C, T, E>> : std::true_type {};

struct linear_index_op;  // core/scaled_array.hpp: coefficient (i, j) is its linear index

// Nullary nodes that read no memory (constants, identity, linspaced, linear
// indices). Other functors (scalify's pad and concatenate index into their
// operands) are unknown.
template <class E>
struct is_memoryless : std::false_type {};
template <class P>
struct is_memoryless<Eigen::CwiseNullaryOp<linear_index_op, P>> : std::true_type {};
template <class S, class P>
struct is_memoryless<Eigen::CwiseNullaryOp<Eigen::internal::scalar_constant_op<S>, P>> : std::true_type {};
template <class S, class P>
struct is_memoryless<Eigen::CwiseNullaryOp<Eigen::internal::scalar_identity_op<S>, P>> : std::true_type {};
template <class S, class P>
struct is_memoryless<Eigen::CwiseNullaryOp<Eigen::internal::linspaced_op<S>, P>> : std::true_type {};

/// How the expression `e` reads the destination `t`. `positional`: the path
/// from the root to `e` has only coefficient-wise nodes.
template <class E>
alias_kind alias_of(const E& e, const alias_target& t, bool positional = true) {
  if constexpr (is_memoryless<E>::value) {
    return alias_kind::none;
  } else if constexpr ((E::Flags & Eigen::DirectAccessBit) != 0 && requires {
                         e.data();
                         e.innerStride();
                         e.outerStride();
                       }) {
    // Plain objects, maps, refs and direct-access blocks: the bytes they span.
    if (e.size() == 0) return alias_kind::none;
    const Eigen::Index inner = E::IsRowMajor ? e.cols() : e.rows();
    const Eigen::Index outer = E::IsRowMajor ? e.rows() : e.cols();
    const auto begin = reinterpret_cast<std::uintptr_t>(e.data());
    const auto last = static_cast<std::uintptr_t>((outer - 1) * e.outerStride() + (inner - 1) * e.innerStride());
    const std::uintptr_t end = begin + (last + 1) * sizeof(typename E::Scalar);
    if (end <= t.begin || t.end <= begin) return alias_kind::none;
    const bool same = positional && begin == t.begin && end == t.end && e.rows() == t.rows && e.cols() == t.cols &&
                      (E::IsRowMajor == t.row_major || e.rows() == 1 || e.cols() == 1) && e.innerStride() == 1 &&
                      e.outerStride() == inner;
    return same ? alias_kind::same_position : alias_kind::other;
  } else if constexpr (is_coefficient_wise<E>::value) {
    if constexpr (requires { e.nestedExpression(); }) {
      return alias_of(e.nestedExpression(), t, positional);
    } else if constexpr (requires { e.conditionMatrix(); }) {
      return worst(alias_of(e.conditionMatrix(), t, positional),
                   worst(alias_of(e.thenMatrix(), t, positional), alias_of(e.elseMatrix(), t, positional)));
    } else if constexpr (requires { e.arg3(); }) {
      return worst(alias_of(e.arg1(), t, positional),
                   worst(alias_of(e.arg2(), t, positional), alias_of(e.arg3(), t, positional)));
    } else {
      return worst(alias_of(e.lhs(), t, positional), alias_of(e.rhs(), t, positional));
    }
  } else if constexpr (requires { e.nestedExpression(); }) {
    // Transpose, Reverse, Replicate, Reshaped, blocks of expressions, partial
    // reductions: they read other positions of their operand.
    return alias_of(e.nestedExpression(), t, false);
  } else {
    return alias_kind::other;  // not known to be safe
  }
}

}  // namespace scalify::detail

#endif  // SCALIFY_CORE_DETAIL_ALIAS_HPP_
