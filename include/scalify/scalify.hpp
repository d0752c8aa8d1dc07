// scalify: the umbrella header. Includes every public header, layer by layer
// (see docs/api.md for one line per header). The fmt glue is opt-in:
// include scalify/formats/fmt.hpp yourself and link scalify::fmt.
#ifndef SCALIFY_SCALIFY_HPP_
#define SCALIFY_SCALIFY_HPP_

// Infrastructure: version, configuration, errors, CPU paths.
#include "scalify/config.hpp"
#include "scalify/cpu.hpp"
#include "scalify/errors.hpp"
#include "scalify/version.hpp"

// formats/: number formats, casts, bulk casts, Eigen glue.
#include "scalify/formats/cast.hpp"
#include "scalify/formats/convert.hpp"
#include "scalify/formats/eigen.hpp"
#include "scalify/formats/float16.hpp"
#include "scalify/formats/float8.hpp"

#endif  // SCALIFY_SCALIFY_HPP_
