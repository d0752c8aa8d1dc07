// scalify: float8_e4m3fn widening with its factor 2^8 folded into the
// constant factors of an expression, for scalify's evaluation of stored
// results (core/scaled_array.hpp's evaluate_linear). Same values as Eigen's
// evaluator of the same expression, bit for bit (NaN for NaN: which NaN
// operand a product keeps is the compiler's choice, as in Eigen).
//
// The AVX2 decode of e4m3fn codes makes the float16 of value * 2^-8 and
// multiplies it by 2^8 after vcvtph2ps (simd/float8_avx2.hpp). Scaled
// expressions multiply their terms by constant factors anyway (add's rule
// gives `(x * y) * a + w * b`), so the decodes may skip their multiply and
// the constants take it: a * 2^16 and b * 2^8, one multiply per code less.
// fold_evaluator<Expr> evaluates Expr that way, node by node:
//   - `codes.cast<float>()` of e4m3fn codes gives value * 2^-8, exactly (a
//     leaf, k = 1; eigen_packet.hpp's packet_over_256);
//   - a product of two folded operands gives value * 2^(-8k), k = kl + kr,
//     exactly, for k <= 7: each leaf is 0, NaN, or 2^-17 <= |v| <= 1.75, so
//     every partial product is 0, NaN, or between 2^-119 (a normal float) and
//     1.75^7 < 51, and scaling the operands by powers of two scales the
//     product exactly, its one rounding included;
//   - a folded operand (k > 0) times a float constant c, on either side,
//     gives the value itself (k = 0): the operand times c * 2^(8k) is the
//     same real number as the product Eigen computes, so it rounds the same,
//     overflow, underflow and NaN included. When c is finite but c * 2^(8k)
//     is not, the fold does not apply (applies() is false) and the caller
//     evaluates the whole expression with Eigen's evaluator;
//   - sums and differences of operands with k = 0 add as Eigen does;
//   - ArrayWrapper and MatrixWrapper pass through.
// Any other node is evaluated by Eigen's evaluator (k = 0, no fold inside).
// The caller uses fold_evaluator only where kFolds (something was folded) and
// kEighths == 0 (nothing left over): the float results are then Eigen's, bit
// for bit, with the operands combined in the same order. (Under
// -ffp-contract=fast, GCC's default in gnu++ mode, the compiler may fuse a
// product into the add that follows, here as in Eigen's loop, and not always
// in both alike; formats/eigen_packet_test builds with -ffp-contract=off.)
//
// With 8-float packets (AVX2), evaluate_staged decodes blocks of up to 512
// codes 32 at a time: each e4m3fn operand first stages the float16 bits of
// its block in a buffer on the stack (stage(): vpmaddubsw, no shift,
// simd::avx2::e4m3fn_halves_over_256), screening the codes for NaN as it
// loads them, and the packets convert the halves from memory
// (packet_staged). On a Zen 2, where shifts, vector stores and the register
// form of vcvtph2ps share one pipe, that takes the three decodes of
// `x * y + w` from 7.1 to 5.0 cycles per 8 values (docs/kernels.md). A block
// with a NaN code is evaluated again packet by packet, exactly. Long
// evaluations (float results written straight to memory, kStagedRangeMax)
// and wider packets go by runs instead: clean_run(i) is how many elements
// from i on every e4m3fn operand has in a window screened clean for NaN codes
// (eigen_packet.hpp), and packet_clean() decodes such packets with no check
// each; evaluate_linear asks once per run (512 codes at most) instead of
// once per packet and operand.
//
// Active where formats/eigen_packet.hpp is (SCALIFY_EIGEN_PACKET_FLOAT8).
#ifndef SCALIFY_FORMATS_DETAIL_EIGEN_FOLD_HPP_
#define SCALIFY_FORMATS_DETAIL_EIGEN_FOLD_HPP_

#include <Eigen/Core>  // Eigen::CwiseBinaryOp, Eigen::internal::evaluator

#include "scalify/formats/eigen.hpp"   // eigen_packet.hpp: SCALIFY_EIGEN_PACKET_FLOAT8, packet_over_256
#include "scalify/formats/float8.hpp"  // float8_e4m3fn
#include "scalify/simd/float8_avx2.hpp"  // cvtph_ps_from

#if SCALIFY_EIGEN_PACKET_FLOAT8

#include <algorithm>    // std::min
#include <cmath>        // std::isfinite, std::ldexp
#include <cstdint>      // uint16_t
#include <type_traits>  // std::conditional_t, std::remove_const_t

namespace scalify::detail::eigen_packet {

using Eigen::internal::Packet8f;
using scalify::simd::avx2::nan_screen;

/// Codes an operand stages at a time (evaluate_staged): 1 KiB of halves on
/// the stack per operand.
inline constexpr Index kStageCodes = 512;

/// Where the 8 codes of packet `slot` (0-3) of a block of 32 lie among the
/// block's staged halves (simd::avx2::e4m3fn_halves_over_256's order).
inline constexpr Index kStagedOffset[4] = {0, 16, 8, 24};

/// A node evaluated by Eigen's evaluator: packets of its value (k = 0).
template <class Expr>
struct eigen_node {
  static constexpr int kEighths = 0;    ///< packets hold value * 2^(-8 * kEighths)
  static constexpr bool kFolds = false; ///< a 2^8 was folded somewhere inside
  explicit eigen_node(const Expr& expr) : ev_(expr) {}
  bool applies() const { return true; }
  template <class Packet>
  EIGEN_STRONG_INLINE Packet packet(Index index) const {
    return ev_.template packet<Eigen::Unaligned, Packet>(index);
  }
  Index clean_run(Index) const { return Eigen::NumTraits<Index>::highest(); }
  template <class Packet>
  EIGEN_STRONG_INLINE Packet packet_clean(Index index) const {
    return packet<Packet>(index);
  }
  static constexpr int kStagedLeaves = 0;  ///< e4m3fn operands that stage halves, here and below
  bool stageable(Index) const { return true; }
  void stage(Index, Index, uint16_t*, nan_screen&) const {}
  template <int kSlot>
  EIGEN_STRONG_INLINE Packet8f packet_staged(Index index, Index, const uint16_t*) const {
    return packet<Packet8f>(index);
  }
  Eigen::internal::evaluator<Expr> ev_;
};

/// The node types that fold; kApplies false for every other (and for these
/// where the operands do not allow it).
template <class Expr>
struct fold_node {
  static constexpr bool kApplies = false;
};

/// The evaluator of one node: fold_node where it applies, else eigen_node.
template <class Expr>
using fold_evaluator =
    std::conditional_t<fold_node<std::remove_const_t<Expr>>::kApplies, fold_node<std::remove_const_t<Expr>>,
                       eigen_node<std::remove_const_t<Expr>>>;

template <class Expr>
inline constexpr bool is_float_constant = false;
template <class Plain>
inline constexpr bool is_float_constant<Eigen::CwiseNullaryOp<Eigen::internal::scalar_constant_op<float>, Plain>> =
    true;

/// Leaf: e4m3fn codes widened to float, as value * 2^-8.
template <class Arg>
struct fold_node<Eigen::CwiseUnaryOp<Eigen::internal::scalar_cast_op<float8_e4m3fn, float>, Arg>> {
  using Expr = Eigen::CwiseUnaryOp<Eigen::internal::scalar_cast_op<float8_e4m3fn, float>, Arg>;
  static constexpr bool kApplies = true;
  static constexpr int kEighths = 1;
  static constexpr bool kFolds = false;
  explicit fold_node(const Expr& expr) : ev_(expr) {}
  bool applies() const { return true; }
  template <class Packet>
  EIGEN_STRONG_INLINE Packet packet(Index index) const {
    return ev_.template packet_over_256<Packet>(index);
  }
  Index clean_run(Index index) const { return ev_.clean_run(index); }
  template <class Packet>
  EIGEN_STRONG_INLINE Packet packet_clean(Index index) const {
    return ev_.template packet_clean_over_256<Packet>(index);
  }
  /// Whether stage() may read the codes below linear index `end` (codes in
  /// memory only: others decode in packet_staged).
  bool stageable(Index end) const {
    if constexpr (kStagedLeaves > 0) {
      return ev_.stageable(end);
    } else {
      static_cast<void>(end);
      return true;
    }
  }
  /// Stages the float16 halves of the `count` codes from `index` on into
  /// `halves` (kStageCodes of them), the codes through `screen`.
  void stage(Index index, Index count, uint16_t* halves, nan_screen& screen) const {
    if constexpr (kStagedLeaves > 0) ev_.stage_over_256(index, count, halves, screen);
  }
  /// The packet at `index`, packet kSlot of the block of 32 staged `block`
  /// codes past the start of `halves`.
  template <int kSlot>
  EIGEN_STRONG_INLINE Packet8f packet_staged(Index index, Index block, const uint16_t* halves) const {
    if constexpr (kStagedLeaves > 0) {
      return scalify::simd::avx2::cvtph_ps_from(halves + block + kStagedOffset[kSlot]);
    } else {
      return packet_clean<Packet8f>(index);
    }
  }

  using Evaluator = Eigen::internal::evaluator<Expr>;  // scalify_cast_evaluator
  static constexpr int kStagedLeaves = Evaluator::kStageable ? 1 : 0;
  Evaluator ev_;
};

/// What the binary nodes share: their operands, and packets that are
/// Derived::combine() of the operands' packets. combine(get) calls
/// get(lhs_, std::false_type{}) and get(rhs_, std::true_type{}): the second
/// argument tells the right operand apart at compile time (packet_staged
/// hands it the right operand's halves).
template <class Derived, class L, class R>
struct fold_binary {
  using LEval = fold_evaluator<L>;
  using REval = fold_evaluator<R>;
  template <class Expr>
  explicit fold_binary(const Expr& expr) : lhs_(expr.lhs()), rhs_(expr.rhs()) {}
  template <class Packet>
  EIGEN_STRONG_INLINE Packet packet(Index index) const {
    return derived().template combine<Packet>(
        [&](const auto& node, auto) { return node.template packet<Packet>(index); });
  }
  Index clean_run(Index index) const { return std::min(lhs_.clean_run(index), rhs_.clean_run(index)); }
  template <class Packet>
  EIGEN_STRONG_INLINE Packet packet_clean(Index index) const {
    return derived().template combine<Packet>(
        [&](const auto& node, auto) { return node.template packet_clean<Packet>(index); });
  }
  /// The operands' halves: the left one's, then the right one's.
  static constexpr int kStagedLeaves = LEval::kStagedLeaves + REval::kStagedLeaves;
  static constexpr Index kRightHalves = LEval::kStagedLeaves * kStageCodes;
  bool stageable(Index end) const { return lhs_.stageable(end) && rhs_.stageable(end); }
  void stage(Index index, Index count, uint16_t* halves, nan_screen& screen) const {
    lhs_.stage(index, count, halves, screen);
    rhs_.stage(index, count, halves + kRightHalves, screen);
  }
  template <int kSlot>
  EIGEN_STRONG_INLINE Packet8f packet_staged(Index index, Index block, const uint16_t* halves) const {
    return derived().template combine<Packet8f>([&](const auto& node, auto right) {
      return node.template packet_staged<kSlot>(index, block, right ? halves + kRightHalves : halves);
    });
  }
  const Derived& derived() const { return static_cast<const Derived&>(*this); }
  LEval lhs_;
  REval rhs_;
};

/// Products: of two folded operands (k adds up), or of a folded operand and a
/// float constant, which takes the operand's 2^(8k).
template <class L, class R>
struct fold_node<Eigen::CwiseBinaryOp<Eigen::internal::scalar_product_op<float, float>, L, R>>
    : fold_binary<fold_node<Eigen::CwiseBinaryOp<Eigen::internal::scalar_product_op<float, float>, L, R>>, L, R> {
  using Expr = Eigen::CwiseBinaryOp<Eigen::internal::scalar_product_op<float, float>, L, R>;
  using Base = fold_binary<fold_node, L, R>;
  using typename Base::LEval;
  using typename Base::REval;
  using Base::lhs_;
  using Base::rhs_;
  static constexpr bool kConstantRight = is_float_constant<std::remove_const_t<R>> && LEval::kEighths > 0;
  static constexpr bool kConstantLeft = is_float_constant<std::remove_const_t<L>> && REval::kEighths > 0;
  static constexpr bool kBothFolded =
      LEval::kEighths > 0 && REval::kEighths > 0 && LEval::kEighths + REval::kEighths <= 7;
  static constexpr bool kApplies = kConstantRight || kConstantLeft || kBothFolded;
  static constexpr int kEighths = kBothFolded ? LEval::kEighths + REval::kEighths : 0;
  static constexpr bool kFolds = kConstantRight || kConstantLeft || LEval::kFolds || REval::kFolds;

  explicit fold_node(const Expr& expr) : Base(expr) {
    if constexpr (kConstantRight || kConstantLeft) {
      float c;
      if constexpr (kConstantRight) {
        c = expr.rhs().functor().m_other;
      } else {
        c = expr.lhs().functor().m_other;
      }
      constexpr int k = kConstantRight ? LEval::kEighths : REval::kEighths;
      constant_ = std::ldexp(c, 8 * k);  // exact unless it overflows
      fits_ = std::isfinite(constant_) || !std::isfinite(c);
    }
  }
  bool applies() const {
    if constexpr (kConstantRight) {
      return fits_ && lhs_.applies();
    } else if constexpr (kConstantLeft) {
      return fits_ && rhs_.applies();
    } else {
      return lhs_.applies() && rhs_.applies();
    }
  }
  /// The product of the operands' packets, `get(operand, right)`, in Eigen's order.
  template <class Packet, class Get>
  EIGEN_STRONG_INLINE Packet combine(const Get& get) const {
    if constexpr (kConstantRight) {
      return Eigen::internal::pmul(get(lhs_, std::false_type{}), Eigen::internal::pset1<Packet>(constant_));
    } else if constexpr (kConstantLeft) {
      return Eigen::internal::pmul(Eigen::internal::pset1<Packet>(constant_), get(rhs_, std::true_type{}));
    } else {
      return Eigen::internal::pmul(get(lhs_, std::false_type{}), get(rhs_, std::true_type{}));
    }
  }

  float constant_ = 0.0f;
  bool fits_ = true;
};

/// Sums and differences of operands holding their values (k = 0), at least
/// one of them folded inside.
template <class Op, class L, class R>
  requires std::is_same_v<Op, Eigen::internal::scalar_sum_op<float, float>> ||
           std::is_same_v<Op, Eigen::internal::scalar_difference_op<float, float>>
struct fold_node<Eigen::CwiseBinaryOp<Op, L, R>> : fold_binary<fold_node<Eigen::CwiseBinaryOp<Op, L, R>>, L, R> {
  using Expr = Eigen::CwiseBinaryOp<Op, L, R>;
  using Base = fold_binary<fold_node, L, R>;
  using typename Base::LEval;
  using typename Base::REval;
  using Base::lhs_;
  using Base::rhs_;
  static constexpr bool kApplies =
      LEval::kEighths == 0 && REval::kEighths == 0 && (LEval::kFolds || REval::kFolds);
  static constexpr int kEighths = 0;
  static constexpr bool kFolds = true;
  explicit fold_node(const Expr& expr) : Base(expr) {}
  bool applies() const { return lhs_.applies() && rhs_.applies(); }
  template <class Packet, class Get>
  EIGEN_STRONG_INLINE Packet combine(const Get& get) const {
    if constexpr (std::is_same_v<Op, Eigen::internal::scalar_sum_op<float, float>>) {
      return Eigen::internal::padd(get(lhs_, std::false_type{}), get(rhs_, std::true_type{}));
    } else {
      return Eigen::internal::psub(get(lhs_, std::false_type{}), get(rhs_, std::true_type{}));
    }
  }
};

/// ArrayWrapper and MatrixWrapper: their operand's packets.
template <class Wrapper, class Nested>
struct fold_wrapper {
  using NestedEval = fold_evaluator<Nested>;
  static constexpr bool kApplies = NestedEval::kEighths > 0 || NestedEval::kFolds;
  static constexpr int kEighths = NestedEval::kEighths;
  static constexpr bool kFolds = NestedEval::kFolds;
  explicit fold_wrapper(const Wrapper& expr) : nested_(expr.nestedExpression()) {}
  bool applies() const { return nested_.applies(); }
  template <class Packet>
  EIGEN_STRONG_INLINE Packet packet(Index index) const {
    return nested_.template packet<Packet>(index);
  }
  Index clean_run(Index index) const { return nested_.clean_run(index); }
  template <class Packet>
  EIGEN_STRONG_INLINE Packet packet_clean(Index index) const {
    return nested_.template packet_clean<Packet>(index);
  }
  static constexpr int kStagedLeaves = NestedEval::kStagedLeaves;
  bool stageable(Index end) const { return nested_.stageable(end); }
  void stage(Index index, Index count, uint16_t* halves, nan_screen& screen) const {
    nested_.stage(index, count, halves, screen);
  }
  template <int kSlot>
  EIGEN_STRONG_INLINE Packet8f packet_staged(Index index, Index block, const uint16_t* halves) const {
    return nested_.template packet_staged<kSlot>(index, block, halves);
  }
  NestedEval nested_;
};
template <class Nested>
struct fold_node<Eigen::ArrayWrapper<Nested>> : fold_wrapper<Eigen::ArrayWrapper<Nested>, Nested> {
  using fold_wrapper<Eigen::ArrayWrapper<Nested>, Nested>::fold_wrapper;
};
template <class Nested>
struct fold_node<Eigen::MatrixWrapper<Nested>> : fold_wrapper<Eigen::MatrixWrapper<Nested>, Nested> {
  using fold_wrapper<Eigen::MatrixWrapper<Nested>, Nested>::fold_wrapper;
};

/// True when fold_evaluator<Expr> folds something and leaves no factor over:
/// worth a loop of its own.
template <class Expr>
inline constexpr bool folds_completely = fold_evaluator<Expr>::kFolds && fold_evaluator<Expr>::kEighths == 0;

/// The longest evaluation (elements) that evaluate_linear runs through
/// evaluate_staged. Longer ones are float results written straight to
/// their storage (narrow results go through chunks of 8192 floats), which
/// then stream to memory: there, decoding packet by packet measured faster
/// (Zen 2, e4m3fn `x * y + w` into float32, one thread: 1024 x 1024, 1 Mi
/// elements, 3.22 -> 3.81 G/s staged; 2048 x 2048 2.49 -> 2.36; 4096 x 4096
/// 2.33 -> 1.89).
inline constexpr Index kStagedRangeMax = Index{1} << 20;

/// Whether evaluate_linear stages the e4m3fn operands of fold_evaluator
/// `Node`: some are in memory, and at most 8 (their halves, 1 KiB each, are
/// on the stack).
template <class Node>
inline constexpr bool stages = Node::kStagedLeaves > 0 && Node::kStagedLeaves <= 8;

/// Evaluates the `count` values (a multiple of 8) from linear index `first`
/// on into `out`, where node.stageable(first + count): blocks of up to
/// kStageCodes codes, each e4m3fn operand staging its halves on the stack
/// (stage) and screening its codes as it goes; a block without a NaN code
/// then evaluates 32 values at a time from the halves (packet_staged), a
/// block with one packet by packet, exactly (packet). The rest (fewer than
/// 32 values) packet by packet. For 8-float packets.
template <class Node>
void evaluate_staged(const Node& node, Index first, Index count, float* out) {
  static_assert(stages<Node>);
  alignas(32) uint16_t halves[Node::kStagedLeaves * kStageCodes];
  Index i = 0;
  while (count - i >= 32) {
    const Index m = std::min(count - i, kStageCodes) / 32 * 32;
    nan_screen screen;
    node.stage(first + i, m, halves, screen);
    if (!screen.hit()) [[likely]] {
      for (Index b = 0; b < m; b += 32) {
        const Index at = first + i + b;
        Eigen::internal::pstoreu(out + i + b, node.template packet_staged<0>(at, b, halves));
        Eigen::internal::pstoreu(out + i + b + 8, node.template packet_staged<1>(at + 8, b, halves));
        Eigen::internal::pstoreu(out + i + b + 16, node.template packet_staged<2>(at + 16, b, halves));
        Eigen::internal::pstoreu(out + i + b + 24, node.template packet_staged<3>(at + 24, b, halves));
      }
    } else {
      for (Index b = 0; b < m; b += 8) {
        Eigen::internal::pstoreu(out + i + b, node.template packet<Packet8f>(first + i + b));
      }
    }
    i += m;
  }
  for (; i + 8 <= count; i += 8) {
    Eigen::internal::pstoreu(out + i, node.template packet<Packet8f>(first + i));
  }
}

}  // namespace scalify::detail::eigen_packet

#endif  // SCALIFY_EIGEN_PACKET_FLOAT8
#endif  // SCALIFY_FORMATS_DETAIL_EIGEN_FOLD_HPP_
