// scalify nn: the umbrella header of the layers (forward/backward pairs),
// losses, the MLP builder and the optimizers, with the library under them
// (scalify/scalify.hpp). The IDX data loader, scalify/nn/idx.hpp, needs zlib:
// include it yourself.
#ifndef SCALIFY_NN_HPP_
#define SCALIFY_NN_HPP_

#include "scalify/scalify.hpp"

#include "scalify/nn/activations.hpp"
#include "scalify/nn/attention.hpp"
#include "scalify/nn/embedding.hpp"
#include "scalify/nn/gpt.hpp"
#include "scalify/nn/layernorm.hpp"
#include "scalify/nn/linear.hpp"
#include "scalify/nn/loss.hpp"
#include "scalify/nn/mlp.hpp"
#include "scalify/nn/optim.hpp"
#include "scalify/nn/tensor.hpp"

#endif  // SCALIFY_NN_HPP_
