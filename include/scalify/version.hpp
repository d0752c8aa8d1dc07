// scalify: version macros.
#ifndef SCALIFY_VERSION_HPP_
#define SCALIFY_VERSION_HPP_

#define SCALIFY_VERSION_MAJOR 0
#define SCALIFY_VERSION_MINOR 1
#define SCALIFY_VERSION_PATCH 0
/// The version as a string, e.g. `"0.1.0"`.
#define SCALIFY_VERSION "0.1.0"

#endif  // SCALIFY_VERSION_HPP_
