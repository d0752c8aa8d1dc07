// Optimizers (nn/optim.hpp) against a float64 reference over a few steps,
// and the reason for scaled, stochastically rounded float16 weights: updates
// smaller than half an ulp survive. Non-finite gradients skip the step (or
// throw) and change nothing; weights loaded into the module after the
// optimizer was built are the ones it updates.
#include <catch2/catch.hpp>

#include <bit>
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "scalify/core/config_scope.hpp"
#include "scalify/cpu.hpp"
#include "scalify/formats/cast.hpp"
#include "scalify/nn/optim.hpp"

namespace nn = scalify::nn;
using MatD = nn::RefMatrix<double>;

namespace {

MatD random_matrix(Eigen::Index r, Eigen::Index c, uint32_t seed, double sigma) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> dist(0.0, sigma);
  MatD m(r, c);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = dist(gen);
  return m;
}

MatD values(const nn::Tensor& t) { return t.data().cast<double>() * static_cast<double>(t.scale()); }

double rel_error(const MatD& got, const MatD& want) { return (got - want).norm() / want.norm(); }

/// Two parameters of different magnitudes (weights ~0.05, a bias ~1e-3) and
/// their gradients for step t (deterministic, of different magnitudes too),
/// the weights times `w_scale` and the gradients times `g_scale`.
struct Problem {
  std::vector<nn::Tensor> w, g;
  std::vector<MatD> w_ref;
  double g_scale;
  explicit Problem(double w_scale = 1.0, double g_scale_ = 1.0) : g_scale(g_scale_) {
    const MatD a = random_matrix(16, 8, 1, 0.05 * w_scale), b = random_matrix(1, 8, 2, 1e-3 * w_scale);
    w = {nn::Tensor(a.cast<float>(), 1.0f), nn::Tensor(b.cast<float>(), 1.0f)};
    g = {nn::zeros(16, 8), nn::zeros(1, 8)};
    w_ref = {a.cast<float>().cast<double>(), b.cast<float>().cast<double>()};
  }
  std::vector<nn::param_ref> params() { return {{"w", &w[0], &g[0]}, {"b", &w[1], &g[1]}}; }
  MatD grad(size_t i, int t) const {
    const uint32_t seed = 100 + 10 * static_cast<uint32_t>(t) + static_cast<uint32_t>(i);
    return random_matrix(w_ref[i].rows(), w_ref[i].cols(), seed, (i == 0 ? 1e-2 : 1e-4) * g_scale);
  }
  void set_grads(int t) {
    for (size_t i = 0; i < g.size(); ++i) g[i] = nn::Tensor(grad(i, t).cast<float>(), 1.0f);
  }
};

constexpr int kSteps = 5;

std::vector<MatD> sgd_reference(Problem& p, double lr, double mu, double wd) {
  std::vector<MatD> w = p.w_ref, v(w.size());
  for (int t = 1; t <= kSteps; ++t) {
    for (size_t i = 0; i < w.size(); ++i) {
      const MatD g = p.grad(i, t).cast<float>().cast<double>() + wd * w[i];
      v[i] = t == 1 ? g : MatD(mu * v[i] + g);
      w[i] -= lr * v[i];
    }
  }
  return w;
}

std::vector<MatD> adamw_reference(Problem& p, double lr, double b1, double b2, double eps, double wd) {
  std::vector<MatD> w = p.w_ref, m(w.size()), v(w.size());
  for (int t = 1; t <= kSteps; ++t) {
    for (size_t i = 0; i < w.size(); ++i) {
      const MatD g = p.grad(i, t).cast<float>().cast<double>();
      m[i] = t == 1 ? MatD((1 - b1) * g) : MatD(b1 * m[i] + (1 - b1) * g);
      v[i] = t == 1 ? MatD((1 - b2) * g.cwiseAbs2()) : MatD(b2 * v[i] + (1 - b2) * g.cwiseAbs2());
      const MatD mhat = m[i] / (1 - std::pow(b1, t)), vhat = v[i] / (1 - std::pow(b2, t));
      w[i] = w[i] - lr * (mhat.array() / (vhat.array().sqrt() + eps)).matrix() - lr * wd * w[i];
    }
  }
  return w;
}

// Tolerances: float32 state, 5 steps: a few float32 roundings per step
// (2^-24 each), relative to the weights: 1e-6 is generous. Scaled float16
// state: each store rounds to 2^-11 relative to the RMS-scaled data (up to
// 2^-11 * RMS / |w| for small entries); over 5 steps of master stores plus
// state stores, a normwise error of 5 * 2 * 2^-11 ~ 5e-3 bounds it. bfloat16:
// the same with 2^-8 (4e-2).
struct Format {
  const char* name;
  nn::state_config cfg;
  double tol;
};
const std::vector<Format> kFormats = {
    {"fp32", nn::state_config::fp32(), 1e-6},
    {"fp16 scaled", {nn::dtype::float16, true, true, 1}, 5e-3},
    {"fp16 scaled, nearest", {nn::dtype::float16, true, false, 1}, 5e-3},
    {"bf16 scaled", {nn::dtype::bfloat16, true, true, 1}, 4e-2},
};

}  // namespace

TEST_CASE("sgd with momentum matches float64", "[nn][optim]") {
  for (const auto& f : kFormats) {
    SECTION(f.name) {
      Problem p;
      const auto want = sgd_reference(p, 0.1, 0.9, 1e-2);
      nn::sgd opt(p.params(), {.lr = 0.1f, .momentum = 0.9f, .weight_decay = 1e-2f}, f.cfg);
      for (int t = 1; t <= kSteps; ++t) {
        p.set_grads(t);
        opt.step();
      }
      CHECK(opt.step_count() == kSteps);
      for (size_t i = 0; i < want.size(); ++i) {
        INFO(f.name << " parameter " << i << " error " << rel_error(values(p.w[i]), want[i]));
        CHECK(rel_error(values(p.w[i]), want[i]) < f.tol);
      }
    }
  }
}

TEST_CASE("adamw matches float64", "[nn][optim]") {
  for (const auto& f : kFormats) {
    SECTION(f.name) {
      Problem p;
      const auto want = adamw_reference(p, 1e-3, 0.9, 0.999, 1e-8, 0.1);
      nn::adamw opt(p.params(), {.lr = 1e-3f, .weight_decay = 0.1f}, f.cfg);
      for (int t = 1; t <= kSteps; ++t) {
        p.set_grads(t);
        opt.step();
      }
      for (size_t i = 0; i < want.size(); ++i) {
        // Adam's steps are ~lr per element: compare the change of the weights.
        const double err = (values(p.w[i]) - want[i]).norm() / (want[i] - p.w_ref[i]).norm();
        INFO(f.name << " parameter " << i << " error of the update " << err);
        CHECK(err < (f.cfg.format == nn::dtype::float32 ? 1e-4 : 40 * f.tol));
      }
    }
  }
}

TEST_CASE("scaled fp16 master weights keep updates below half an ulp; naive fp16 loses them", "[nn][optim]") {
  // Weights near 1 (float16 ulp 2^-10) and an update of 1e-4 per step
  // (a tenth of an ulp): 200 steps move the weights by 0.02.
  const int steps = 200;
  const double lr = 1e-4;
  auto run = [&](const nn::state_config& cfg) {
    nn::Tensor w(nn::Matrix::Constant(32, 32, 1.0f), 1.0f), g(nn::Matrix::Constant(32, 32, -1.0f), 1.0f);
    nn::sgd opt({{"w", &w, &g}}, {.lr = static_cast<float>(lr), .momentum = 0.0f}, cfg);
    for (int t = 0; t < steps; ++t) opt.step();
    return values(w).mean() - 1.0;
  };
  const double want = steps * lr;
  const double stochastic = run({nn::dtype::float16, true, true, 7});
  const double naive = run(nn::state_config::fp16_naive());
  const double fp32 = run(nn::state_config::fp32());
  CHECK(fp32 == Approx(want).epsilon(1e-3));
  // The mean over 1024 weights of stochastic roundings: standard error ~ ulp / sqrt(1024 * steps).
  CHECK(stochastic == Approx(want).epsilon(0.05));
  CHECK(naive == 0.0);
}

TEST_CASE("scaled fp16 sgd over 300 steps: the weights move as in float64 (no drift of the effective step)",
          "[nn][optim]") {
  // The 5-step tests above bound each rounding; this one catches what only
  // shows over many steps: a few % of effective learning rate or momentum
  // (a scale applied twice, a biased rounding). Weights ~0.05 (64 x 64),
  // gradients ~1e-2, lr 0.05, momentum 0.9: after 300 steps the weights have
  // moved by about their own size. Projected on the float64 change, the
  // scaled float16 change must have length 1 within 0.5 %; its stochastic
  // roundings are unbiased and independent of that direction, so their
  // projection shrinks like 1 / sqrt(4096).
  const int steps = 300;
  const double lr = 0.05, mu = 0.9;
  const MatD w0 = random_matrix(64, 64, 11, 0.05).cast<float>().cast<double>();
  const auto grad = [](int t) {
    return MatD(random_matrix(64, 64, 1000 + static_cast<uint32_t>(t), 1e-2).cast<float>().cast<double>());
  };
  MatD w_ref = w0, v_ref;
  for (int t = 1; t <= steps; ++t) {
    v_ref = t == 1 ? grad(t) : MatD(mu * v_ref + grad(t));
    w_ref -= lr * v_ref;
  }
  const MatD want = w_ref - w0;
  for (const auto& f : {kFormats[0], kFormats[1]}) {  // fp32, fp16 scaled stochastic
    SECTION(f.name) {
      nn::Tensor w(w0.cast<float>(), 1.0f), g = nn::zeros(64, 64);
      nn::sgd opt({{"w", &w, &g}}, {.lr = static_cast<float>(lr), .momentum = static_cast<float>(mu)}, f.cfg);
      for (int t = 1; t <= steps; ++t) {
        g = nn::Tensor(grad(t).cast<float>(), 1.0f);
        opt.step();
      }
      const MatD got = values(w) - w0;
      const double projection = got.cwiseProduct(want).sum() / want.squaredNorm();
      INFO(f.name << ": |change| / |float64 change| projected " << projection << ", relative error "
                  << rel_error(got, want));
      CHECK(std::abs(projection - 1.0) < 5e-3);
      CHECK(rel_error(got, want) < (f.cfg.format == nn::dtype::float32 ? 1e-4 : 0.2));
    }
  }
}

TEST_CASE("sgd's stores rebase to pow2_round_down(RMS) of the stored values, whatever the thread count",
          "[nn][optim]") {
  // The step computes the momentum and the sums of squares behind both
  // stores' scales in one pass (and updates plain float32 momentum in
  // place): each step is checked against float64 arithmetic on the values
  // the optimizer held before it, and 1 thread against 2, bit for bit. 600 x
  // 300 values: several blocks of rows on each of 2 threads. The gradient
  // has scale 0.5 (the data is read with its scale).
  const Eigen::Index rows = 600, cols = 300;
  const double lr = 0.1, mu = 0.9, wd = 1e-2;
  const MatD w0 = random_matrix(rows, cols, 21, 0.05).cast<float>().cast<double>();
  const auto pow2_down = [](double x) { return std::exp2(std::floor(std::log2(x))); };
  const auto rms = [](const MatD& m) { return std::sqrt(m.squaredNorm() / static_cast<double>(m.size())); };
  for (const auto& f : {kFormats[0], kFormats[1], kFormats[3]}) {  // fp32 plain, fp16 and bf16 scaled
    SECTION(f.name) {
      struct state {
        nn::Matrix w, v;
        float w_scale, v_scale;
      };
      auto run = [&](int threads) {
        const scalify::config_scope scope({.threads = threads});
        nn::Tensor w(w0.cast<float>(), 1.0f), g = nn::zeros(rows, cols);
        nn::sgd opt({{"w", &w, &g}}, {.lr = static_cast<float>(lr), .momentum = static_cast<float>(mu),
                                      .weight_decay = static_cast<float>(wd)},
                    f.cfg);
        for (int t = 1; t <= 3; ++t) {
          g = nn::Tensor(random_matrix(rows, cols, 50 + static_cast<uint32_t>(t), 2e-2).cast<float>(), 0.5f);
          const MatD before = values(w);
          const MatD v_prev = t == 1 ? MatD::Zero(rows, cols) : values(opt.velocity(0).load());
          const MatD v = values(g) + wd * before + mu * v_prev;
          const MatD w_new = before - lr * v;
          opt.step();
          INFO(f.name << ", " << threads << " thread(s), step " << t);
          const bool dynamic = f.cfg.dynamic_scale;
          CHECK(opt.velocity(0).scale() == (dynamic ? pow2_down(rms(v)) : 1.0));
          CHECK(w.scale() == (dynamic ? pow2_down(rms(w_new)) : 1.0));
          CHECK(rel_error(values(opt.velocity(0).load()), v) < f.tol);
          CHECK(rel_error(values(w), w_new) < f.tol);
        }
        const nn::Tensor v = opt.velocity(0).load();
        return state{w.data(), v.data(), w.scale(), v.scale()};
      };
      const state one = run(1), two = run(2);
      CHECK(one.w_scale == two.w_scale);
      CHECK(one.v_scale == two.v_scale);
      CHECK(one.w == two.w);
      CHECK(one.v == two.v);
    }
  }
}

TEST_CASE("sgd stores, element by element, the rounded update its file comment defines",
          "[nn][optim][threads]") {
  // Against scalar arithmetic written here from the definition (float32, the
  // fused multiply-adds of nn/detail/sgd_kernels.hpp) and round_cast with the
  // documented random bits: element i of parameter j's weights at step t is
  // rounded with stochastic_bits(mix_seed(seed, (t << 20) + 3 j), i). Bit for
  // bit, on every path this CPU has and on 1 and 2 threads, over 3 steps (the
  // momentum is then read and stored in place), for a parameter of many
  // blocks with a ragged end (613 x 301) and a small one.
  using scalify::float16;
  const float lr = 0.05f, mu = 0.9f, wd = 1e-2f;
  const nn::state_config cfg{nn::dtype::float16, true, true, 9};
  for (scalify::cpu_path path : scalify::all_cpu_paths) {
    if (!scalify::cpu_supports(path)) continue;
    for (int threads : {1, 2}) {
      INFO(to_string(path) << ", " << threads << " thread(s)");
      const scalify::scoped_cpu_path use(path);
      const scalify::config_scope scope({.threads = threads});
      std::vector<nn::Tensor> w = {nn::Tensor(random_matrix(613, 301, 31, 0.05).cast<float>(), 1.0f),
                                   nn::Tensor(random_matrix(3, 5, 32, 1e-3).cast<float>(), 1.0f)};
      std::vector<nn::Tensor> g = {nn::zeros(613, 301), nn::zeros(3, 5)};
      nn::sgd opt({{"a", &w[0], &g[0]}, {"b", &w[1], &g[1]}}, {.lr = lr, .momentum = mu, .weight_decay = wd}, cfg);
      for (int t = 1; t <= 3; ++t) {
        INFO("step " << t);
        for (size_t j = 0; j < 2; ++j) {
          g[j] = nn::Tensor(random_matrix(w[j].rows(), w[j].cols(), 70 + 2 * t + static_cast<uint32_t>(j), 1e-2)
                                .cast<float>(),
                            0.25f);
        }
        // The definition, from the state before the step.
        std::vector<std::vector<float>> v_want(2), u_want(2);
        std::vector<float> sv(2), su(2);
        for (size_t j = 0; j < 2; ++j) {
          const auto n = static_cast<size_t>(w[j].size());
          std::vector<float> p(n, 0.0f);
          float ps = 0.0f;
          if (t > 1) {
            const auto& stored = std::get<scalify::ScaledMatrix<float16>>(opt.velocity(j).stored());
            for (size_t i = 0; i < n; ++i) p[i] = static_cast<float>(stored.data().data()[i]);
            ps = stored.scale();
          }
          std::vector<float> v(n), u(n);
          double sum_v = 0.0, sum_u = 0.0;
          for (size_t i = 0; i < n; ++i) {
            const float wi = w[j].data().data()[i] * w[j].scale();
            float vi = std::fma(wd, wi, g[j].data().data()[i] * g[j].scale());
            if (t > 1) vi = std::fma(mu, p[i] * ps, vi);
            v[i] = vi;
            u[i] = std::fma(-lr, vi, wi);
            sum_v += double(vi) * vi;
            sum_u += double(u[i]) * u[i];
          }
          const auto pow2_down = [](double x) { return static_cast<float>(std::exp2(std::floor(std::log2(x)))); };
          sv[j] = pow2_down(std::sqrt(sum_v / double(n)));
          su[j] = pow2_down(std::sqrt(sum_u / double(n)));
          const uint64_t seed = nn::detail::mix_seed(cfg.seed, (static_cast<uint64_t>(t) << 20) + 3 * j);
          for (size_t i = 0; i < n; ++i) {
            v_want[j].push_back(static_cast<float>(
                scalify::round_cast<float16>(v[i] / sv[j], scalify::rounding::nearest_even, true)));
            u_want[j].push_back(static_cast<float>(scalify::round_cast<float16>(
                u[i] / su[j], scalify::rounding::stochastic, true, scalify::stochastic_bits(seed, i))));
          }
        }
        REQUIRE(opt.step());
        for (size_t j = 0; j < 2; ++j) {
          INFO("parameter " << j);
          CHECK(w[j].scale() == su[j]);
          CHECK(opt.velocity(j).scale() == sv[j]);
          const nn::Tensor v_got = opt.velocity(j).load();
          size_t w_mismatches = 0, v_mismatches = 0;
          for (size_t i = 0; i < u_want[j].size(); ++i) {
            w_mismatches += std::bit_cast<uint32_t>(w[j].data().data()[i]) != std::bit_cast<uint32_t>(u_want[j][i]);
            v_mismatches += std::bit_cast<uint32_t>(v_got.data().data()[i]) != std::bit_cast<uint32_t>(v_want[j][i]);
          }
          CHECK(w_mismatches == 0);
          CHECK(v_mismatches == 0);
        }
      }
    }
  }
}

TEST_CASE("optimizers check their arguments", "[nn][optim]") {
  nn::Tensor w(nn::Matrix::Ones(2, 2), 1.0f), g(nn::Matrix::Ones(2, 3), 1.0f);
  CHECK_THROWS_AS(nn::sgd({{"w", &w, &g}}, {}), scalify::shape_error);
  nn::Tensor g2(nn::Matrix::Ones(2, 2), 1.0f);
  CHECK_THROWS_AS(nn::sgd({{"w", &w, &g2}}, {.lr = 0.1f, .momentum = 1.5f}), std::invalid_argument);
  CHECK_THROWS_AS(nn::adamw({{"w", &w, &g2}}, {.eps = 0.0f}), std::invalid_argument);
  CHECK_THROWS_AS(nn::sgd({{"w", &w, nullptr}}, {}), std::invalid_argument);
}

TEST_CASE("optimizers reject a state tensor restored with another shape, changing nothing", "[nn][optim][errors]") {
  for (const auto& f : {kFormats[0], kFormats[1]}) {  // plain float32 (sgd: updated in place), scaled float16
    for (int which = 0; which < 3; ++which) {  // sgd's momentum, adamw's m, adamw's r
      DYNAMIC_SECTION(f.name << ", state tensor " << which) {
        nn::Tensor w(random_matrix(4, 3, 5, 0.1).cast<float>(), 1.0f);
        nn::Tensor g(random_matrix(4, 3, 6, 0.1).cast<float>(), 1.0f);
        nn::sgd sgd({{"w", &w, &g}}, {.lr = 0.1f, .momentum = 0.9f}, f.cfg);
        nn::adamw adamw({{"w", &w, &g}}, {.lr = 0.1f}, f.cfg);
        const auto step = [&] { return which == 0 ? sgd.step() : adamw.step(); };
        REQUIRE(step());
        const nn::Matrix before = w.data();
        auto states = which == 0 ? sgd.state_tensors() : adamw.state_tensors();
        const nn::Tensor wrong(nn::Matrix::Ones(3, 4), 1.0f);
        states.at(static_cast<size_t>(which == 0 ? 0 : which - 1)).buffer->restore(wrong);
        const char* what = which == 0 ? "momentum" : which == 1 ? "first moment" : "second moment's root";
        CHECK_THROWS_WITH(step(), Catch::Contains(std::string(what) + " of parameter 'w' is (3 x 4)") &&
                                      Catch::Contains("parameter is (4 x 3)"));
        CHECK((which == 0 ? sgd.step_count() : adamw.step_count()) == 1);
        CHECK(w.data() == before);
        CHECK_THROWS_AS(step(), scalify::shape_error);
      }
    }
  }
}

TEST_CASE("optimizers reject a state format outside the dtype enum", "[nn][optim][errors]") {
  nn::Tensor w(nn::Matrix::Constant(2, 2, 0.5f), 1.0f), g(nn::Matrix::Zero(2, 2), 1.0f);
  const std::vector<nn::param_ref> params = {{"w", &w, &g}};
  nn::state_config state;
  state.format = static_cast<nn::dtype>(77);
  CHECK_THROWS_AS(nn::sgd(params, {}, state), std::invalid_argument);
  CHECK_THROWS_WITH(nn::adamw(params, {}, state), Catch::Contains("state_config.format") && Catch::Contains("77"));
  CHECK(w.data()(0, 0) == 0.5f);  // untouched
}

// ----------------------------------------------------------------------------
// Non-finite gradients: the whole step is skipped (or throws), nothing changes.

namespace {

/// The bits of a tensor: data and scale.
std::vector<uint32_t> bits(const nn::Tensor& t) {
  std::vector<uint32_t> b;
  for (Eigen::Index i = 0; i < t.size(); ++i) b.push_back(std::bit_cast<uint32_t>(t.data().data()[i]));
  b.push_back(std::bit_cast<uint32_t>(t.scale()));
  return b;
}

/// Everything an optimizer step may change: the weights, the state buffers, the step count.
template <class Opt>
std::vector<std::vector<uint32_t>> snapshot(const Problem& p, const Opt& opt) {
  std::vector<std::vector<uint32_t>> s;
  for (size_t i = 0; i < p.w.size(); ++i) {
    s.push_back(bits(p.w[i]));
    if constexpr (std::is_same_v<Opt, nn::sgd>) {
      s.push_back(bits(opt.velocity(i).load()));
    } else {
      s.push_back(bits(opt.first_moment(i).load()));
      s.push_back(bits(opt.second_moment_sqrt(i).load()));
    }
  }
  s.push_back({static_cast<uint32_t>(opt.step_count())});
  return s;
}

/// `g`'s data with any scale, valid or not (as an op's scale rule can make it).
nn::Tensor with_scale(const nn::Tensor& g, float scale) {
  return nn::Tensor(scalify::detail::unchecked_scale, g.data(), scale);
}

/// The ways a gradient can be non-finite: NaN or inf data, an inf or NaN scale,
/// finite data and scale whose product overflows float.
const std::vector<std::pair<const char*, std::function<void(Problem&)>>> kInjections = {
    {"NaN in the weight gradient", [](Problem& p) { p.g[0].data()(3, 2) = std::nanf(""); }},
    {"inf in the bias gradient", [](Problem& p) { p.g[1].data()(0, 5) = std::numeric_limits<float>::infinity(); }},
    {"-inf in the weight gradient", [](Problem& p) { p.g[0].data()(0, 0) = -std::numeric_limits<float>::infinity(); }},
    // The public set_scale refuses these; the ops and layers make them from
    // their scale rules (e.g. a dynamic rescale of a NaN amax) through the unchecked path.
    {"inf scale", [](Problem& p) { p.g[0] = with_scale(p.g[0], std::numeric_limits<float>::infinity()); }},
    {"NaN scale", [](Problem& p) { p.g[1] = with_scale(p.g[1], std::nanf("")); }},
    {"data * scale overflows", [](Problem& p) {
       p.g[0].data()(1, 1) = 3e30f;
       p.g[0].set_scale(1e10f);
     }},
};

template <class Opt, class Cfg>
void check_skips(const Cfg& cfg, const nn::state_config& state) {
  for (const auto& [name, inject] : kInjections) {
    INFO(name);
    Problem p, twin;
    Opt opt(p.params(), cfg, state), twin_opt(twin.params(), cfg, state);
    for (int t = 1; t <= 2; ++t) {
      p.set_grads(t);
      twin.set_grads(t);
      CHECK(opt.step());
      CHECK(twin_opt.step());
    }
    const auto before = snapshot(p, opt);
    p.set_grads(3);
    inject(p);
    CHECK_FALSE(opt.step());
    CHECK(opt.skipped_steps() == 1);
    CHECK(opt.step_count() == 2);
    CHECK(snapshot(p, opt) == before);  // weights, momentum / moments, step count: bit for bit
    CHECK_FALSE(opt.step());            // the same bad gradient again: skipped again
    CHECK(opt.skipped_steps() == 2);
    CHECK(snapshot(p, opt) == before);
    // A finite step afterwards is the step the twin (which never saw the bad gradient) takes: same bits.
    p.set_grads(3);
    twin.set_grads(3);
    CHECK(opt.step());
    CHECK(twin_opt.step());
    CHECK(opt.step_count() == 3);
    CHECK(opt.skipped_steps() == 2);
    CHECK(snapshot(p, opt) == snapshot(twin, twin_opt));
  }
}

}  // namespace

TEST_CASE("optimizers skip a step whose gradient is not finite, changing nothing", "[nn][optim][nonfinite]") {
  for (const auto& f : {kFormats[0], kFormats[1]}) {  // fp32, fp16 scaled stochastic
    SECTION(std::string("sgd, ") + f.name) {
      check_skips<nn::sgd>(nn::sgd_config{.lr = 0.1f, .momentum = 0.9f, .weight_decay = 1e-2f}, f.cfg);
    }
    SECTION(std::string("adamw, ") + f.name) {
      check_skips<nn::adamw>(nn::adamw_config{.lr = 1e-3f, .weight_decay = 0.1f}, f.cfg);
    }
  }
}

TEST_CASE("optimizers with nonfinite_policy::raise throw and change nothing", "[nn][optim][nonfinite]") {
  Problem p;
  nn::sgd opt(p.params(), {.lr = 0.1f, .momentum = 0.9f, .on_nonfinite = nn::nonfinite_policy::raise});
  p.set_grads(1);
  CHECK(opt.step());
  const auto before = snapshot(p, opt);
  p.set_grads(2);
  p.g[0].data()(3, 2) = std::nanf("");
  CHECK_THROWS_AS(opt.step(), nn::nonfinite_gradient_error);
  CHECK_THROWS_WITH(opt.step(), Catch::Contains("scalify::nn::sgd::step") && Catch::Contains("parameter 'w'") &&
                                    Catch::Contains("(16 x 8)") && Catch::Contains("not finite") &&
                                    Catch::Contains("at (3, 2)") && Catch::Contains("nan"));
  CHECK(opt.skipped_steps() == 2);
  CHECK(snapshot(p, opt) == before);
  p.set_grads(2);
  CHECK(opt.step());
  CHECK(opt.step_count() == 2);

  Problem q;
  nn::adamw aw(q.params(), {.on_nonfinite = nn::nonfinite_policy::raise});
  const auto q_before = bits(q.w[1]);  // as the constructor stored it (float16)
  q.set_grads(1);
  q.g[1] = with_scale(q.g[1], std::numeric_limits<float>::infinity());
  CHECK_THROWS_WITH(aw.step(), Catch::Contains("scalify::nn::adamw::step") && Catch::Contains("parameter 'b'") &&
                                   Catch::Contains("scale inf"));
  CHECK(aw.step_count() == 0);
  CHECK(bits(q.w[1]) == q_before);
  // An enum value outside nonfinite_policy is rejected.
  nn::sgd bad(p.params(), {.on_nonfinite = static_cast<nn::nonfinite_policy>(7)});
  CHECK_THROWS_WITH(bad.step(), Catch::Contains("nonfinite_policy 7"));
}

// ----------------------------------------------------------------------------
// The weights live in the module: weights loaded after the optimizer is built
// are the ones it updates.

namespace {

nn::linear_layer& first_linear(nn::sequential& net) { return dynamic_cast<nn::linear_layer&>(net[0]); }

/// The bits of the values data * scale (exact: the scales are powers of two). A
/// store may move a factor 2 between data and scale; the values are what the layer computes with.
std::vector<uint32_t> value_bits(const nn::Tensor& t) {
  std::vector<uint32_t> b;
  for (Eigen::Index i = 0; i < t.size(); ++i) b.push_back(std::bit_cast<uint32_t>(t.data().data()[i] * t.scale()));
  return b;
}

}  // namespace

TEST_CASE("optimizers update the weights loaded into the module after they were built", "[nn][optim]") {
  for (const auto& f : {kFormats[0], kFormats[1]}) {  // fp32, fp16 scaled stochastic
    SECTION(f.name) {
      nn::sequential net = nn::make_mlp({.sizes = {16, 8, 4}, .seed = 3});
      nn::sgd opt(net.parameters(), {.lr = 0.0f, .momentum = 0.9f}, f.cfg);
      nn::linear_layer& lin = first_linear(net);

      // Load 0.5 everywhere (the report: lr 0 and zero gradients moved 0.5 to -0.193).
      lin.params().w = nn::Tensor(nn::Matrix::Constant(16, 8, 0.5f), 1.0f);
      const auto loaded = value_bits(lin.params().w);
      net.zero_grad();
      CHECK(opt.step());
      CHECK(value_bits(lin.params().w) == loaded);

      // Arbitrary float32 weights: round_parameters() rounds them to the state
      // format (nearest even on the pow2 RMS scale), after which an empty step keeps every bit.
      const MatD w0 = random_matrix(16, 8, 21, 0.3);
      lin.params().w = nn::Tensor(w0.cast<float>(), 1.0f);
      opt.round_parameters();
      if (f.cfg.format == nn::dtype::float32) {
        CHECK(values(lin.params().w) == w0.cast<float>().cast<double>());
      } else {
        // Independent reference: scale 2^floor(log2(RMS)), data rounded to float16 (Eigen::half, nearest even).
        const double rms = std::sqrt(w0.cast<float>().cast<double>().squaredNorm() / 128.0);
        const double scale = std::exp2(std::floor(std::log2(rms)));
        CHECK(lin.params().w.scale() == static_cast<float>(scale));
        for (Eigen::Index i = 0; i < w0.size(); ++i) {
          const float x = static_cast<float>(w0.data()[i]) / static_cast<float>(scale);
          const float want = static_cast<float>(Eigen::half(x));
          CHECK(lin.params().w.data().data()[i] == want);
        }
      }
      const auto rounded = value_bits(lin.params().w);
      net.zero_grad();
      CHECK(opt.step());
      CHECK(value_bits(lin.params().w) == rounded);

      // A real step after a load: momentum from an earlier step plus the new gradient, applied to the loaded weights.
      opt.config().lr = 0.1f;
      const MatD g1 = random_matrix(16, 8, 31, 1e-2), g2 = random_matrix(16, 8, 32, 1e-2);
      nn::sgd opt2(net.parameters(), {.lr = 0.1f, .momentum = 0.9f}, f.cfg);
      lin.grads().dw = nn::Tensor(g1.cast<float>(), 1.0f);
      CHECK(opt2.step());  // v = g1
      const MatD w1 = random_matrix(16, 8, 22, 0.3);
      lin.params().w = nn::Tensor(w1.cast<float>(), 1.0f);  // loaded after opt2 was built and stepped
      lin.grads().dw = nn::Tensor(g2.cast<float>(), 1.0f);
      CHECK(opt2.step());
      const MatD want = w1.cast<float>().cast<double>() - 0.1 * (0.9 * g1.cast<float>().cast<double>() +
                                                                 g2.cast<float>().cast<double>());
      const MatD change = values(lin.params().w) - w1.cast<float>().cast<double>();
      const MatD want_change = want - w1.cast<float>().cast<double>();
      INFO("relative error of the weights " << rel_error(values(lin.params().w), want) << ", of the update "
                                            << rel_error(change, want_change));
      // fp32: float32 roundings; fp16: one stochastic rounding of the weights (2^-11 of their RMS, 0.3)
      // and of the momentum: normwise below 2^-10 * 0.3 / |update| ~ 0.1 of the update, 1e-3 of the weights.
      CHECK(rel_error(values(lin.params().w), want) < (f.cfg.format == nn::dtype::float32 ? 1e-6 : 1e-3));
      CHECK(rel_error(change, want_change) < (f.cfg.format == nn::dtype::float32 ? 1e-4 : 0.15));
    }
  }
}

// ----------------------------------------------------------------------------
// Bad hyperparameters: refused by the constructor and by every step, before
// anything changes.

namespace {

const float kInf = std::numeric_limits<float>::infinity(), kNaN = std::numeric_limits<float>::quiet_NaN();

/// sgd_configs with one field out of range (the others valid), and what the
/// message names.
const std::vector<std::pair<nn::sgd_config, const char*>> kBadSgd = {
    {{.lr = -1.0f}, "lr -1"},
    {{.lr = kNaN}, "lr nan"},
    {{.lr = kInf}, "lr inf"},
    {{.momentum = 1.0f}, "momentum 1"},
    {{.momentum = 1.5f}, "momentum 1.5"},
    {{.momentum = -0.5f}, "momentum -0.5"},
    {{.momentum = kNaN}, "momentum nan"},
    {{.weight_decay = -1e-2f}, "weight_decay -0.01"},
    {{.weight_decay = kInf}, "weight_decay inf"},
    {{.weight_decay = kNaN}, "weight_decay nan"},
};

const std::vector<std::pair<nn::adamw_config, const char*>> kBadAdamw = {
    {{.lr = -1e-3f}, "lr -0.001"},
    {{.lr = -kInf}, "lr -inf"},
    {{.lr = kInf}, "lr inf"},
    {{.lr = kNaN}, "lr nan"},
    {{.beta1 = 1.0f}, "beta1 1,"},
    {{.beta1 = kNaN}, "beta1 nan"},
    {{.beta2 = -0.1f}, "beta2 -0.1"},
    {{.beta2 = kInf}, "beta2 inf"},
    {{.eps = 0.0f}, "eps 0,"},
    {{.eps = -1e-8f}, "eps -1e-08"},
    {{.eps = kInf}, "eps inf"},
    {{.eps = kNaN}, "eps nan"},
    {{.weight_decay = -0.1f}, "weight_decay -0.1"},
    {{.weight_decay = kInf}, "weight_decay inf"},
};

}  // namespace

TEST_CASE("optimizers refuse a bad config in the constructor before rounding the parameters", "[nn][optim][errors]") {
  // 0.1 is not a float16: the constructor's rounding into the state format
  // would change it (to 0.0999755859), so a constructor that rounds and then
  // throws shows.
  for (const auto& f : kFormats) {
    INFO(f.name);
    nn::Tensor w(nn::Matrix::Constant(3, 2, 0.1f), 1.0f), g = nn::zeros(3, 2);
    const auto before = bits(w);
    for (const auto& [cfg, what] : kBadSgd) {
      INFO("sgd, " << what);
      CHECK_THROWS_WITH(nn::sgd({{"w", &w, &g}}, cfg, f.cfg),
                        Catch::Contains("scalify::nn::sgd: need") && Catch::Contains(what));
      CHECK(bits(w) == before);
    }
    for (const auto& [cfg, what] : kBadAdamw) {
      INFO("adamw, " << what);
      CHECK_THROWS_WITH(nn::adamw({{"w", &w, &g}}, cfg, f.cfg),
                        Catch::Contains("scalify::nn::adamw: need") && Catch::Contains(what));
      CHECK(bits(w) == before);
    }
  }
}

TEST_CASE("optimizers check the config (the constructor's checks) at every step, changing nothing",
          "[nn][optim][errors]") {
  // Two good steps, then a bad config: the step throws, nothing changes; the good config steps again.
  const auto check = [&]<class Opt>(const auto& state, const auto& bad_configs, const auto& good, const char* name) {
    for (const auto& [bad, what] : bad_configs) {
      INFO(state.name << ", " << name << ", " << what);
      Problem p;
      Opt opt(p.params(), good, state.cfg);
      for (int t = 1; t <= 2; ++t) {
        p.set_grads(t);
        REQUIRE(opt.step());
      }
      p.set_grads(3);
      const auto before = snapshot(p, opt);
      opt.config() = bad;
      CHECK_THROWS_WITH(opt.step(), Catch::Contains(std::string("scalify::nn::") + name + ": need") &&
                                        Catch::Contains(what));
      CHECK(snapshot(p, opt) == before);
      CHECK(opt.skipped_steps() == 0);
      opt.config() = good;
      CHECK(opt.step());
      CHECK(opt.step_count() == 3);
    }
  };
  for (const auto& f : {kFormats[0], kFormats[1]}) {  // fp32 (sgd: momentum updated in place), fp16 scaled
    check.operator()<nn::sgd>(f, kBadSgd, nn::sgd_config{.lr = 0.1f, .momentum = 0.9f, .weight_decay = 1e-2f},
                              "sgd");
    check.operator()<nn::adamw>(f, kBadAdamw, nn::adamw_config{.lr = 1e-3f, .weight_decay = 0.1f}, "adamw");
  }
}

// ----------------------------------------------------------------------------
// State restored in part: an empty state tensor reads as zero.

TEST_CASE("adamw reads a moment left empty (restore_counters without it) as zero",
          "[nn][optim]") {
  // A checkpoint may hold the step count but not every state tensor (an
  // absent one is restored empty). AdamW's step t then starts that moment
  // from zero: m = (1 - b1) g, v = b2 r^2 + (1 - b2) g^2 (or the reverse),
  // with the bias corrections of step t. Checked against float64.
  const double lr = 1e-3, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1;
  const nn::adamw_config cfg{.lr = static_cast<float>(lr), .weight_decay = static_cast<float>(wd)};
  for (const auto& f : {kFormats[0], kFormats[1]}) {
    for (int kept = 0; kept < 3; ++kept) {  // none, m only, r only
      INFO(f.name << ", kept " << (kept == 0 ? "none" : kept == 1 ? "m" : "r"));
      // A first optimizer makes the state of steps 1 and 2.
      Problem p;
      nn::adamw first(p.params(), cfg, f.cfg);
      for (int t = 1; t <= 2; ++t) {
        p.set_grads(t);
        REQUIRE(first.step());
      }
      // A second one on the same weights, given only the step count (and one moment, or none).
      nn::adamw second(p.params(), cfg, f.cfg);
      second.restore_counters(2, 0);
      auto from = first.state_tensors(), to = second.state_tensors();  // w.adam_m, b.adam_m, w.adam_r, b.adam_r
      for (size_t i = 0; i < to.size(); ++i) {
        if ((kept == 1 && i < 2) || (kept == 2 && i >= 2)) to[i].buffer->restore(from[i].buffer->stored());
      }
      std::vector<MatD> before(p.w.size()), want(p.w.size());
      for (size_t i = 0; i < p.w.size(); ++i) {
        const MatD g = p.grad(i, 3).cast<float>().cast<double>();
        before[i] = values(p.w[i]);
        MatD m = (1 - b1) * g, v = (1 - b2) * g.cwiseAbs2();
        if (kept == 1) m += b1 * values(first.first_moment(i).load());
        if (kept == 2) v += b2 * values(first.second_moment_sqrt(i).load()).cwiseAbs2();
        const MatD mhat = m / (1 - std::pow(b1, 3)), vhat = v / (1 - std::pow(b2, 3));
        want[i] = before[i] - lr * (mhat.array() / (vhat.array().sqrt() + eps)).matrix() - lr * wd * before[i];
      }
      p.set_grads(3);
      REQUIRE(second.step());
      CHECK(second.step_count() == 3);
      for (size_t i = 0; i < p.w.size(); ++i) {
        // Adam's steps are ~lr per element: compare the change of the weights (as "adamw matches float64").
        const double err = (values(p.w[i]) - want[i]).norm() / (want[i] - before[i]).norm();
        INFO("parameter " << i << " error of the update " << err);
        CHECK(err < (f.cfg.format == nn::dtype::float32 ? 1e-4 : 40 * f.tol));
      }
    }
  }
}

// ----------------------------------------------------------------------------
// Stores of values whose squares are outside float's range.

TEST_CASE("optimizers' stores rebase values whose squares underflow or overflow float32", "[nn][optim]") {
  // A value of 2^-75 has a square (2^-150) below float's smallest subnormal,
  // one of 2^66 a square above its largest finite number: the RMS behind the
  // dynamic scale must not come from a float32 sum of the squares (which gave
  // scale 1: 2^-75 stored in float16 as 0, 2^66 as 65504).
  const auto pow2_down = [](double x) { return std::exp2(std::floor(std::log2(x))); };
  const auto rms = [](const MatD& m) { return std::sqrt(m.squaredNorm() / static_cast<double>(m.size())); };
  SECTION("the constructor's rounding of the parameters") {
    for (const auto& f : kFormats) {
      for (int e : {-140, -126, -100, -75, 66, 100, 127}) {
        INFO(f.name << ", values 2^" << e);
        nn::Tensor w(nn::Matrix::Constant(4, 4, 1.0f), std::ldexp(1.0f, e)), g = nn::zeros(4, 4);
        w.data()(1, 2) = -1.5f;
        const MatD want = values(w);
        nn::sgd opt({{"w", &w, &g}}, {.lr = 0.0f}, f.cfg);
        CHECK(values(w) == want);  // 1 and -1.5 are float16 and bfloat16 numbers
        // Scale 2^floor(log2(RMS)), but at least 2^-126 (float's smallest normal; see scaled_buffer::scale_for).
        if (f.cfg.dynamic_scale) CHECK(w.scale() == std::max(0x1p-126, pow2_down(rms(want))));
      }
    }
  }
  for (const double scale : {0x1p-80, 0x1p70}) {
    for (const auto& f : {kFormats[1], kFormats[2], kFormats[3]}) {  // the scaled formats
      DYNAMIC_SECTION(f.name << ", weights and gradients times " << scale) {
        // sgd: linear in (w, g), so the float64 reference of the other tests scales along.
        Problem p(scale, scale);
        const auto want = sgd_reference(p, 0.1, 0.9, 1e-2);
        nn::sgd opt(p.params(), {.lr = 0.1f, .momentum = 0.9f, .weight_decay = 1e-2f}, f.cfg);
        for (int t = 1; t <= kSteps; ++t) {
          p.set_grads(t);
          REQUIRE(opt.step());
        }
        for (size_t i = 0; i < want.size(); ++i) {
          INFO("sgd, parameter " << i << " error " << rel_error(values(p.w[i]), want[i]));
          CHECK(rel_error(values(p.w[i]), want[i]) < f.tol);
          // The data's RMS in [1, 2) (up to the rounding of the data).
          CHECK(rms(p.w[i].data().cast<double>()) == Approx(1.5).margin(0.51));
          CHECK(rms(opt.velocity(i).load().data().cast<double>()) == Approx(1.5).margin(0.51));
        }
      }
      // adamw: its update (~lr per element) does not scale with the gradient, and
      // v = g^2 is computed in float32 (overflows for |g| above 2^64): the
      // tiny gradients (the moments' stores) and the huge weights (the weights' stores).
      DYNAMIC_SECTION(f.name << ", adamw, weights times " << scale << ", gradients times "
                             << std::min(scale, 1.0)) {
        Problem p(scale, std::min(scale, 1.0));
        const auto want = adamw_reference(p, 1e-3, 0.9, 0.999, 1e-8, 0.1);
        nn::adamw opt(p.params(), {.lr = 1e-3f, .weight_decay = 0.1f}, f.cfg);
        for (int t = 1; t <= kSteps; ++t) {
          p.set_grads(t);
          REQUIRE(opt.step());
        }
        for (size_t i = 0; i < want.size(); ++i) {
          const double err = (values(p.w[i]) - want[i]).norm() / (want[i] - p.w_ref[i]).norm();
          INFO("adamw, parameter " << i << " error of the update " << err << ", of the weights "
                                   << rel_error(values(p.w[i]), want[i]));
          CHECK(rel_error(values(p.w[i]), want[i]) < f.tol);
          if (scale < 1) CHECK(err < 40 * f.tol);  // with huge weights the update is below their rounding
          CHECK(rms(p.w[i].data().cast<double>()) == Approx(1.5).margin(0.51));
          CHECK(rms(opt.first_moment(i).load().data().cast<double>()) == Approx(1.5).margin(0.51));
        }
      }
    }
  }
}
