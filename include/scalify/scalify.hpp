// scalify: the umbrella header of the library: formats, ScaledArray, the
// scaled ops and the GEMM, layer by layer (docs/api.md has one line per
// header). The layers, losses and optimizers have their own umbrella,
// scalify/nn.hpp, so that programs that do not use them do not compile them.
// The fmt glue is opt-in: include scalify/formats/fmt.hpp (float8 types) or
// scalify/core/fmt.hpp (also ScaledArray and tensor_stats) yourself and link
// scalify::fmt.
#ifndef SCALIFY_SCALIFY_HPP_
#define SCALIFY_SCALIFY_HPP_

// Infrastructure: version, configuration, errors, CPU paths, the activation enum.
#include "scalify/activation.hpp"
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

// core/: ScaledArray, power-of-two helpers, the configuration scope,
// printing (operator<<, to_string) and statistics (stats, tensor_stats).
#include "scalify/core/config_scope.hpp"
#include "scalify/core/pow2.hpp"
#include "scalify/core/print.hpp"
#include "scalify/core/scaled_array.hpp"
#include "scalify/core/stats.hpp"

// kernels/: the GEMM (packing, SIMD micro-kernels, fused epilogue).
#include "scalify/kernels/gemm.hpp"

// ops/: the scaled ops (scale rule + lazy data expression).
#include "scalify/ops/elementwise.hpp"
#include "scalify/ops/matmul.hpp"
#include "scalify/ops/reduce.hpp"
#include "scalify/ops/rescale.hpp"
#include "scalify/ops/shape.hpp"

#endif  // SCALIFY_SCALIFY_HPP_
