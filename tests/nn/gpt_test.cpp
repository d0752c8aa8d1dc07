// The GPT pieces (nn/embedding.hpp, nn/gpt.hpp, nn/text.hpp, the schedule
// and clipping of nn/optim.hpp):
//   - embeddings against a scatter-add reference, ids checked;
//   - the transformer block's float32 backward against central finite
//     differences of its float32 forward (input and weights);
//   - the model is causal in fp32 and fp8;
//   - a tiny model overfits a short string in fp32, fp16 and fp8;
//   - warmup + cosine, gradient-norm clipping with scales far from 1;
//   - the character corpus: splits, vocabulary, files, errors.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>  // getpid

#include "scalify/nn/embedding.hpp"
#include "scalify/nn/gpt.hpp"
#include "scalify/nn/loss.hpp"
#include "scalify/nn/optim.hpp"
#include "scalify/nn/text.hpp"
#include "support/nn_check.hpp"

namespace nn = scalify::nn;

using scalify_test::MatD;
using scalify_test::values;

namespace {

/// Normal(0, sigma) float entries.
nn::Matrix random_matrix(Eigen::Index r, Eigen::Index c, uint32_t seed, float sigma = 1.0f) {
  return scalify_test::random_matrix(r, c, seed, sigma).cast<float>();
}

/// fd_worst over every `stride`-th element of a parameter's data, its value moving by h.
template <class Loss>
double fd_worst_param(const nn::param_ref& p, Eigen::Index stride, float h, const Loss& loss) {
  const MatD grad = values(*p.grad);
  return scalify_test::fd_worst(p.value->data().data(), p.value->size(), stride, h / p.value->scale(),
                                p.value->scale(), loss, grad.data(), 0.05);
}

}  // namespace

TEST_CASE("embedding: lookups copy rows, the backward scatter-adds, ids are checked", "[nn][gpt][embedding]") {
  nn::embedding_params p;
  nn::embedding_init(p, 7, 5, 3, 0.5f);
  const std::vector<int> ids = {3, 0, 3, 6, 3};
  nn::Tensor y;
  nn::embedding_forward(y, p, ids);
  CHECK(y.scale() == 0.5f);
  for (size_t i = 0; i < ids.size(); ++i) CHECK(y.data().row(static_cast<Eigen::Index>(i)) == p.table.data().row(ids[i]));

  nn::embedding_grads g;
  nn::embedding_zero_grad(g, p);
  const nn::Tensor dy(random_matrix(5, 5, 4), 0.25f);
  MatD want = MatD::Zero(7, 5);
  for (int pass = 0; pass < 2; ++pass) {
    nn::embedding_backward(g, dy, ids, p);
    nn::embedding_backward_ref<double>(want, values(dy), ids);
    CHECK((values(g.dtable) - want).norm() <= 1e-6 * want.norm());
  }
  CHECK(values(g.dtable).row(1).isZero());  // never looked up

  CHECK_THROWS_AS(nn::embedding_forward(y, p, std::vector<int>{7}), std::out_of_range);
  CHECK_THROWS_AS(nn::embedding_forward(y, p, std::vector<int>{-1}), std::out_of_range);
  CHECK_THROWS_AS(nn::embedding_backward(g, dy, std::vector<int>{1, 2}, p), scalify::shape_error);
  CHECK_THROWS_AS(nn::embedding_init(p, 0, 5, 1), std::invalid_argument);
}

TEST_CASE("transformer block: float32 backward matches finite differences of the forward", "[nn][gpt]") {
  const Eigen::Index B = 2, T = 4, C = 8, H = 2;
  nn::transformer_block block(C, H, nn::linear_config::fp32(), nn::attention_config::fp32(), 5);
  block.set_time(T);
  const nn::Matrix x0 = random_matrix(B * T, C, 6);
  const nn::Matrix r = random_matrix(B * T, C, 7);
  const auto loss = [&](const nn::Matrix& x) {
    const nn::Tensor y = block.forward(nn::Tensor(x, 1.0f));
    return (y.data().cast<double>() * static_cast<double>(y.scale())).cwiseProduct(r.cast<double>()).sum();
  };
  loss(x0);
  block.zero_grad();
  const nn::Tensor dx = block.backward(nn::Tensor(r, 1.0f), true);
  const MatD dx_v = values(dx);
  // Central differences in float32 (h = 1e-2): truncation ~h^2, rounding ~1e-7 |L| / h.
  const float h = 1e-2f;
  nn::Matrix xp = x0;
  const auto loss_xp = [&] { return loss(xp); };
  CHECK(scalify_test::fd_worst(xp.data(), xp.size(), 3, h, 1.0, loss_xp, dx_v.data(), 0.05) < 5e-3);
  // Weights: a few entries of each matrix, perturbed through their data.
  loss(x0);
  const auto loss_x0 = [&] { return loss(x0); };
  for (const auto& p : block.parameters()) {
    if (p.name.find(".w") == std::string::npos && p.name.find("gamma") == std::string::npos) continue;
    INFO(p.name);
    CHECK(fd_worst_param(p, p.value->size() / 5 + 1, h, loss_x0) < 5e-3);
  }
}

TEST_CASE("gpt: float32 gradients of the tables and the head match finite differences, tied or not",
          "[nn][gpt]") {
  for (const bool tied : {false, true}) {
    nn::gpt model({.vocab = 7, .context = 5, .layers = 1, .heads = 2, .dim = 8, .tie_head = tied, .seed = 3});
    const std::vector<int> tokens = {1, 5, 2, 2, 6, 0, 3, 4, 1, 6};  // 2 sequences of 5
    const nn::Matrix r = random_matrix(10, 7, 12);
    const auto loss = [&] {
      const nn::Tensor y = model.forward(tokens, 2);
      return (y.data().cast<double>() * static_cast<double>(y.scale())).cwiseProduct(r.cast<double>()).sum();
    };
    loss();
    model.zero_grad();
    model.backward(nn::Tensor(r, 1.0f));
    for (const auto& p : model.parameters()) {
      const bool wanted = p.name == "tok" || p.name == "pos" || p.name == "head.w" || p.name == "ln_f.gamma";
      if (!wanted) continue;
      INFO((tied ? "tied: " : "untied: ") << p.name);
      CHECK(fd_worst_param(p, 3, 1e-2f, loss) < 5e-3);
    }
    size_t heads = 0;
    for (const auto& p : model.parameters()) heads += p.name.rfind("head.", 0) == 0;
    CHECK(heads == (tied ? 0u : 2u));
  }
}

TEST_CASE("gpt: a later token changes no earlier logit, in fp32 and fp8", "[nn][gpt]") {
  for (const auto prec : {nn::precision::fp32, nn::precision::fp8}) {
    nn::gpt model({.vocab = 11, .context = 8, .layers = 2, .heads = 2, .dim = 16,
                   .linear = nn::linear_config_for(prec), .attention = nn::attention_config_for(prec), .seed = 1});
    std::vector<int> tokens = {1, 5, 2, 9, 3, 3, 7, 0, 4, 4, 10, 2, 6, 1, 8, 5};
    const nn::Tensor a = model.forward(tokens, 2);
    for (int b = 0; b < 2; ++b) tokens[static_cast<size_t>(b * 8 + 5)] = 10 - tokens[static_cast<size_t>(b * 8 + 5)];
    const nn::Tensor c = model.forward(tokens, 2);
    INFO(nn::precision_name(prec));
    for (int b = 0; b < 2; ++b) {
      CHECK(values(a).middleRows(b * 8, 5) == values(c).middleRows(b * 8, 5));
      CHECK(values(a).middleRows(b * 8 + 5, 3) != values(c).middleRows(b * 8 + 5, 3));
    }
  }
}

namespace {

/// Every parameter's gradient values, in parameters() order.
std::vector<MatD> gradients(nn::gpt& model) {
  std::vector<MatD> all;
  for (const auto& p : model.parameters()) all.push_back(values(*p.grad));
  return all;
}

bool all_zero(const std::vector<MatD>& grads) {
  for (const MatD& g : grads) {
    if (g.cwiseAbs().maxCoeff() != 0.0) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("gpt: a forward pass that throws on a token id changes nothing: backward goes back through the last one",
          "[nn][gpt][errors]") {
  // It had set the tokens, then thrown from the embedding: backward accumulated every block's gradients
  // (the caches were the good pass's) and threw from embedding_backward on the bad id.
  for (const bool tied : {false, true}) {
    INFO((tied ? "tied" : "untied"));
    nn::gpt model({.vocab = 5, .context = 4, .layers = 1, .heads = 1, .dim = 4, .tie_head = tied, .seed = 1});
    const std::vector<int> good = {1, 2, 3, 4}, targets = {2, 3, 4, 0}, bad = {1, 2, 9, 4};
    nn::Tensor dlogits;
    nn::softmax_cross_entropy(&dlogits, model.forward(good, 1), targets);
    model.zero_grad();
    model.backward(dlogits);
    const std::vector<MatD> once = gradients(model);
    model.zero_grad();
    CHECK_THROWS_AS(model.forward(bad, 1), std::out_of_range);
    CHECK_THROWS_AS(model.forward(std::vector<int>{1, 2, -1, 4}, 2), std::out_of_range);
    CHECK(all_zero(gradients(model)));
    model.backward(dlogits);
    CHECK(gradients(model) == once);
  }
}

TEST_CASE("gpt: backward checks that a forward pass ran and dlogits' shape first, tied head or not",
          "[nn][gpt][errors]") {
  // The tied head's backward had reached its matmul: "scalify::matmul: cannot multiply transpose (3 x 5) ...".
  for (const bool tied : {false, true}) {
    INFO((tied ? "tied" : "untied"));
    nn::gpt model({.vocab = 5, .context = 4, .layers = 1, .heads = 1, .dim = 4, .tie_head = tied, .seed = 1});
    const auto require_shape_error = [&](const nn::Matrix& d, const std::string& part) {
      try {
        model.backward(nn::Tensor(d, 1.0f));
        FAIL("no shape_error");
      } catch (const scalify::shape_error& e) {
        CHECK_THAT(std::string(e.what()), Catch::Matchers::Contains(part));
      }
      CHECK(all_zero(gradients(model)));
    };
    require_shape_error(nn::Matrix::Ones(4, 5), "scalify::nn::gpt::backward: no forward pass");
    model.forward(std::vector<int>{1, 2, 3, 4}, 1);
    require_shape_error(nn::Matrix::Ones(4, 6), "scalify::nn::gpt::backward: dlogits: got (4 x 6), expected (4 x 5)");
    require_shape_error(nn::Matrix::Ones(3, 5), "scalify::nn::gpt::backward: dlogits: got (3 x 5), expected (4 x 5)");
    model.backward(nn::Tensor(nn::Matrix::Ones(4, 5), 1.0f));
    CHECK(!all_zero(gradients(model)));
  }
}

TEST_CASE("gpt: a tiny model overfits a short string in fp32, fp16 and fp8 (and fp8 with a tied head)", "[nn][gpt]") {
  const std::string text = "scalify trains in fp8. ";
  const nn::char_corpus corpus = nn::make_char_corpus(text + text, 0.0);
  const std::vector<int> ids = corpus.train;
  const Eigen::Index T = 16, B = 4;
  struct Case {
    nn::precision prec;
    bool tied;
  };
  for (const auto [prec, tied] : {Case{nn::precision::fp32, false}, Case{nn::precision::fp16, false},
                                  Case{nn::precision::fp8, false}, Case{nn::precision::fp8, true}}) {
    nn::gpt model({.vocab = corpus.vocab_size(), .context = T, .layers = 1, .heads = 2, .dim = 32,
                   .linear = nn::linear_config_for(prec), .attention = nn::attention_config_for(prec),
                   .tie_head = tied, .seed = 2});
    nn::adamw opt(model.parameters(), {.lr = 3e-3f, .weight_decay = 0.0f},
                  prec == nn::precision::fp32 ? nn::state_config::fp32() : nn::state_config{});
    float loss = 0.0f;
    for (int step = 0; step < 150; ++step) {
      std::vector<int> x, y;
      for (Eigen::Index b = 0; b < B; ++b) {
        const size_t start = static_cast<size_t>((step * 3 + b * 5) % static_cast<int>(text.size()));
        for (Eigen::Index t = 0; t < T; ++t) {
          x.push_back(ids[start + static_cast<size_t>(t)]);
          y.push_back(ids[start + static_cast<size_t>(t) + 1]);
        }
      }
      model.zero_grad();
      const nn::Tensor logits = model.forward(x, B);
      nn::Tensor dlogits;
      loss = nn::softmax_cross_entropy(&dlogits, logits, y);
      model.backward(dlogits);
      opt.step();
    }
    INFO(nn::precision_name(prec) << (tied ? " tied" : "") << ": final loss " << loss);
    // Unigram entropy of the string is ~2.6 nats; memorized, the loss goes near 0.
    CHECK(loss < 0.25f);
  }
}

TEST_CASE("warmup_cosine and clip_grad_norm", "[nn][gpt][optim]") {
  const nn::warmup_cosine s{.peak = 1e-3f, .min_lr = 1e-4f, .warmup = 10, .total = 110};
  CHECK(s.at(0) == Approx(1e-4));
  CHECK(s.at(9) == Approx(1e-3));
  CHECK(s.at(10) == Approx(1e-3));
  CHECK(s.at(60) == Approx(1e-4 + 0.9e-3 * 0.5));
  CHECK(s.at(110) == Approx(1e-4));
  CHECK(s.at(500) == Approx(1e-4));
  CHECK_THROWS_AS((nn::warmup_cosine{.peak = 1e-3f, .min_lr = 1e-2f}.at(0)), std::invalid_argument);
  CHECK_THROWS_AS(s.at(-1), std::invalid_argument);

  // Two gradients on scales 2^100 and 2^-100: the norm in double, then clipped through the scales.
  nn::Tensor g1(random_matrix(3, 4, 8), 0x1p100f), g2(random_matrix(2, 2, 9), 0x1p-100f), v1, v2;
  const nn::Matrix d1 = g1.data(), d2 = g2.data();
  const std::vector<nn::param_ref> params = {{"a", &v1, &g1}, {"b", &v2, &g2}};
  const double want = std::sqrt(std::ldexp(d1.cast<double>().squaredNorm(), 200) +
                                std::ldexp(d2.cast<double>().squaredNorm(), -200));
  const double norm = nn::clip_grad_norm(params, 1.0);
  CHECK(norm == Approx(want).epsilon(1e-12));
  CHECK(g1.data() == d1);
  const double after = std::sqrt(values(g1).squaredNorm() + values(g2).squaredNorm());
  CHECK(after == Approx(1.0).epsilon(1e-6));
  CHECK(nn::clip_grad_norm(params, 2.0) == Approx(1.0).epsilon(1e-6));  // below max: unchanged
  CHECK(values(g1).norm() == Approx(after).epsilon(1e-6));
  g2.data()(0, 0) = std::numeric_limits<float>::infinity();
  const float s1 = g1.scale();
  CHECK(!std::isfinite(nn::clip_grad_norm(params, 1e-3)));
  CHECK(g1.scale() == s1);
  CHECK_THROWS_AS(nn::clip_grad_norm(params, 0.0), std::invalid_argument);
}

TEST_CASE("char corpus: splits, vocabulary, encoding, files and errors", "[nn][gpt][text]") {
  const nn::char_corpus c = nn::make_char_corpus("abcab" "xaz", 0.375);  // 3 of 8 bytes for validation
  CHECK(c.vocab == "abc");
  CHECK(c.vocab_size() == 4);
  CHECK(c.train == std::vector<int>{1, 2, 3, 1, 2});
  CHECK(c.val == std::vector<int>{0, 1, 0});  // x and z are not in the training split
  CHECK(c.decode(c.val) == "?a?");
  CHECK_THROWS_AS(c.decode({4}), std::out_of_range);
  CHECK_THROWS_AS(nn::make_char_corpus("ab", 1.0), std::invalid_argument);

  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("scalify_text_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const auto write = [&](const char* name, const std::string& s) { std::ofstream(dir / name) << s; };
  write("b", "second\n%\nthird\n");
  write("a", "first\n%\n");
  write("a.dat", "binary index");
  write("a.u8", "link");
  const nn::char_corpus f = nn::load_char_corpus(dir.string(), 0.0);
  CHECK(f.files == std::vector<std::string>{"a", "b"});
  CHECK(f.decode(f.train) == "first\nsecond\nthird\n");
  fs::remove_all(dir);
  try {
    nn::load_char_corpus((dir / "missing").string());
    FAIL("no exception");
  } catch (const std::runtime_error& e) {
    CHECK_THAT(std::string(e.what()), Catch::Matchers::Contains("missing"));
  }
  if (!fs::is_directory(nn::kFortunesDir)) {
    CHECK_THROWS_WITH(nn::load_char_corpus(), Catch::Matchers::Contains("apt-get install fortunes"));
  }
}
