// scalify: fmt formatters for ScaledArray and tensor_stats. Opt-in (fmt stays
// an optional dependency): link scalify::fmt and include this header.
//
// The text is to_string()'s (scalify/core/print.hpp, core/stats.hpp), so fmt
// and operator<< print the same; a format spec applies to the whole text as
// to a string: `fmt::format("{}", x)`, `fmt::print("{:>40}", scalify::stats(x))`.
#ifndef SCALIFY_CORE_FMT_HPP_
#define SCALIFY_CORE_FMT_HPP_

#include <fmt/format.h>  // fmt::formatter, fmt::string_view

#include "scalify/core/print.hpp"         // to_string(ScaledArray)
#include "scalify/core/scaled_array.hpp"  // ScaledArray
#include "scalify/core/stats.hpp"         // tensor_stats, to_string(tensor_stats)
#include "scalify/formats/fmt.hpp"        // the float8 formatters

/// `fmt::format("{}", x)`: the text of scalify::to_string(x).
template <class D, class S>
struct fmt::formatter<scalify::ScaledArray<D, S>> : fmt::formatter<fmt::string_view> {
  template <class FormatContext>
  auto format(const scalify::ScaledArray<D, S>& x, FormatContext& ctx) const -> decltype(ctx.out()) {
    const std::string text = scalify::to_string(x);
    return fmt::formatter<fmt::string_view>::format(fmt::string_view(text), ctx);
  }
};

/// `fmt::format("{}", scalify::stats(x))`: the text of scalify::to_string(stats).
template <>
struct fmt::formatter<scalify::tensor_stats> : fmt::formatter<fmt::string_view> {
  template <class FormatContext>
  auto format(const scalify::tensor_stats& s, FormatContext& ctx) const -> decltype(ctx.out()) {
    const std::string text = scalify::to_string(s);
    return fmt::formatter<fmt::string_view>::format(fmt::string_view(text), ctx);
  }
};

#endif  // SCALIFY_CORE_FMT_HPP_
