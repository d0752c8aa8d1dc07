// scalify: fmt formatters for the float8 types. Opt-in (fmt stays an optional
// dependency): link scalify::fmt and include this header.
//
// A float8 formats exactly like the float it widens to, with every float
// format spec: `fmt::format("{:.3f}", float8_e4m3fn(0.3f))` is "0.312".
#ifndef SCALIFY_FORMATS_FMT_HPP_
#define SCALIFY_FORMATS_FMT_HPP_

#include <fmt/format.h>  // fmt::formatter

#include <type_traits>  // std::enable_if_t

#include "scalify/formats/float8.hpp"  // float8 types, detail::float8_type

template <class T, class Char>
struct fmt::formatter<T, Char, std::enable_if_t<scalify::detail::float8_type<T>>> : fmt::formatter<float, Char> {
  template <class FormatContext>
  auto format(T x, FormatContext& ctx) const -> decltype(ctx.out()) {
    return fmt::formatter<float, Char>::format(static_cast<float>(x), ctx);
  }
};

#endif  // SCALIFY_FORMATS_FMT_HPP_
