// scalify: exception types and argument checks that run in every build type.
#ifndef SCALIFY_ERRORS_HPP_
#define SCALIFY_ERRORS_HPP_

#include <cstddef>    // std::ptrdiff_t
#include <limits>     // std::numeric_limits
#include <stdexcept>  // std::invalid_argument, std::runtime_error
#include <string>     // std::string

namespace scalify {

/// Thrown when operands have incompatible shapes or sizes. The message names
/// the operation and the offending shapes.
///
/// **Example**: `convert(src, dst)` with `src.size() != dst.size()` throws
/// `shape_error("scalify::convert: source has 3 elements, destination has 4")`.
class shape_error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// Thrown when data is malformed: a bad file, an unknown format name, a value
/// that cannot be represented where it must be.
class format_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

/// Size arithmetic that cannot overflow, for the shapes computed from user
/// input (Eigen::Index is std::ptrdiff_t). Each sets `out` and returns true
/// when both operands are >= 0 and the exact result fits, else returns false
/// and leaves `out` alone; the caller throws with a message naming its inputs.
///
/// **Example**:
/// ```
/// std::ptrdiff_t rows = 0;
/// SCALIFY_CHECK(detail::checked_add(top, x.rows(), rows), shape_error, "pad: too many rows");
/// ```
constexpr bool checked_add(std::ptrdiff_t a, std::ptrdiff_t b, std::ptrdiff_t& out) noexcept {
  if (a < 0 || b < 0 || a > std::numeric_limits<std::ptrdiff_t>::max() - b) return false;
  out = a + b;
  return true;
}

/// a * b for sizes, as checked_add(): false for a negative operand or when
/// the product overflows.
constexpr bool checked_mul(std::ptrdiff_t a, std::ptrdiff_t b, std::ptrdiff_t& out) noexcept {
  if (a < 0 || b < 0 || (a != 0 && b > std::numeric_limits<std::ptrdiff_t>::max() / a))
    return false;
  out = a * b;
  return true;
}

/// True when a (rows x cols) shape is valid: both >= 0 and rows * cols fits
/// std::ptrdiff_t (Eigen::Index), so size() is well defined.
constexpr bool valid_shape(std::ptrdiff_t rows, std::ptrdiff_t cols) noexcept {
  std::ptrdiff_t size = 0;
  return checked_mul(rows, cols, size);
}

}  // namespace detail
}  // namespace scalify

/// Checks `cond` in every build type (not an assert) and throws
/// `exception_type(message)` when it is false. `message` is only evaluated on
/// failure, so it may build a string.
///
/// **Example**: `SCALIFY_CHECK(n >= 0, std::invalid_argument, "n must be >= 0");`
#define SCALIFY_CHECK(cond, exception_type, message) \
  do {                                               \
    if (!(cond)) [[unlikely]] {                      \
      throw exception_type(std::string(message));    \
    }                                                \
  } while (false)

#endif  // SCALIFY_ERRORS_HPP_
