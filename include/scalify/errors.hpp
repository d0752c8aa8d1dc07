// scalify: exception types and argument checks that run in every build type.
#ifndef SCALIFY_ERRORS_HPP_
#define SCALIFY_ERRORS_HPP_

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
