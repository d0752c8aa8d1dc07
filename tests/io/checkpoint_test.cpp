// scalify/io/checkpoint.hpp: resuming from a checkpoint gives bit-identical
// losses and weights to an uninterrupted run (an fp8 MLP with SGD, a GPT with
// AdamW, every optimizer storage format); parameters exported in a narrow
// format for inference; every mismatch between a checkpoint and the model or
// optimizer it is loaded into is a format_error that changes nothing.
#include <unistd.h>  // getpid

#include <catch2/catch.hpp>

#include <cmath>       // std::isinf
#include <cstring>     // std::memcmp
#include <filesystem>  // std::filesystem
#include <random>      // std::mt19937_64
#include <string>      // std::string
#include <vector>      // std::vector

#include "scalify/io/checkpoint.hpp"
#include "scalify/nn/gpt.hpp"
#include "scalify/nn/loss.hpp"
#include "scalify/ops/elementwise.hpp"  // Tensor / float
#include "support/temp_dir.hpp"  // TempDir
#include "support/nn_check.hpp"  // random_matrix, to_tensor

namespace fs = std::filesystem;
namespace io = scalify::io;
namespace nn = scalify::nn;

namespace {

using scalify_test::TempDir;

/// The bits of every parameter (data and scale), to compare runs exactly.
std::vector<uint32_t> bits_of(const std::vector<nn::param_ref>& params) {
  std::vector<uint32_t> out;
  for (const auto& p : params) {
    uint32_t s;
    const float scale = p.value->scale();
    std::memcpy(&s, &scale, 4);
    out.push_back(s);
    for (Eigen::Index i = 0; i < p.value->size(); ++i) {
      uint32_t b;
      std::memcpy(&b, p.value->data().data() + i, 4);
      out.push_back(b);
    }
  }
  return out;
}

// An MLP trained with SGD on random batches drawn with a std::mt19937_64.
struct mlp_run {
  nn::sequential net;
  nn::sgd opt;
  std::mt19937_64 gen;
  explicit mlp_run(const nn::state_config& state)
      : net(nn::make_mlp({.sizes = {12, 16, 4}, .linear = nn::linear_config::fp8(), .seed = 5})),
        opt(net.parameters(), {.lr = 0.05f, .momentum = 0.9f, .weight_decay = 1e-3f}, state),
        gen(42) {}
  float step() {
    std::uniform_int_distribution<int> pick(0, 1000);
    const int seed = pick(gen);
    const nn::Tensor x = scalify_test::to_tensor(scalify_test::random_matrix(8, 12, static_cast<uint32_t>(seed)), 0.5f);
    std::vector<int> labels(8);
    for (auto& l : labels) l = pick(gen) % 4;
    net.zero_grad();
    nn::Tensor dlogits;
    const float loss = nn::softmax_cross_entropy(&dlogits, net.forward(x), labels, nn::rescale_mode::l1);
    net.backward(dlogits);
    opt.step();
    return loss;
  }
};

/// A copy of checkpoint `in` as `out` without tensor `drop` (and its scale), with metadata `key` set to
/// `value` (removed if `value` is null).
void rewrite(const std::string& in, const std::string& out, const std::string& drop, const std::string& key = "",
             const char* value = "") {
  const auto f = io::safetensors_file::open(in);
  io::safetensors_writer w;
  for (const auto& t : f.tensors()) {
    if (t.name.size() > 6 && t.name.substr(t.name.size() - 6) == "_scale") continue;
    if (t.name == drop) continue;
    if (t.dtype == io::tensor_dtype::F16) w.add(t.name, f.load<scalify::float16>(t.name));
    if (t.dtype == io::tensor_dtype::F32) w.add(t.name, f.load<float>(t.name));
  }
  for (const auto& [k, v] : f.metadata()) {
    if (k != key) w.set_metadata(k, v);
  }
  if (!key.empty() && value != nullptr) w.set_metadata(key, value);
  w.write(out);
}

}  // namespace

TEST_CASE("an MLP resumed from a checkpoint trains bit for bit as if never stopped", "[io]") {
  TempDir dir("scalify_checkpoint_test");
  const std::vector<nn::state_config> states = {nn::state_config{}, nn::state_config::fp32(),
                                                nn::state_config{.format = nn::dtype::bfloat16},
                                                nn::state_config{.stochastic_master = false},
                                                nn::state_config::fp16_naive()};
  for (const auto& state : states) {
    INFO(io::detail::state_string(state));
    mlp_run whole(state);
    std::vector<float> losses;
    for (int i = 0; i < 8; ++i) losses.push_back(whole.step());

    mlp_run first(state);
    for (int i = 0; i < 4; ++i) CHECK(first.step() == losses[static_cast<size_t>(i)]);
    const std::string path = dir.file("mlp.safetensors");
    io::save_checkpoint(path, first.net.parameters(), first.opt, {{"rng", io::rng_state(first.gen)}, {"step", "4"}});

    mlp_run second(state);  // a fresh process: same construction, then the checkpoint
    const auto meta = io::load_checkpoint(path, second.net.parameters(), second.opt);
    io::restore_rng(second.gen, meta.at("rng"));
    CHECK(meta.at("step") == "4");
    CHECK(second.opt.step_count() == 4);
    CHECK(bits_of(second.net.parameters()) == bits_of(first.net.parameters()));
    for (int i = 4; i < 8; ++i) CHECK(second.step() == losses[static_cast<size_t>(i)]);
    CHECK(bits_of(second.net.parameters()) == bits_of(whole.net.parameters()));
  }
}

TEST_CASE("a GPT with AdamW resumes bit for bit, tied and untied", "[io]") {
  TempDir dir("scalify_checkpoint_test");
  for (const bool tied : {false, true}) {
    INFO("tied " << tied);
    const nn::gpt_config cfg{.vocab = 9, .context = 6, .layers = 1, .heads = 2, .dim = 8,
                             .linear = nn::linear_config_for(nn::precision::fp8),
                             .attention = nn::attention_config_for(nn::precision::fp8), .tie_head = tied, .seed = 2};
    const auto make = [&] {
      auto model = std::make_unique<nn::gpt>(cfg);
      auto opt = std::make_unique<nn::adamw>(model->parameters(), nn::adamw_config{.lr = 3e-3f, .weight_decay = 0.0f},
                                             nn::state_config_for(nn::precision::fp8));
      return std::pair{std::move(model), std::move(opt)};
    };
    const auto step = [](nn::gpt& model, nn::adamw& opt, int s) {
      std::vector<int> x(12), y(12);
      for (int i = 0; i < 12; ++i) {
        x[static_cast<size_t>(i)] = (i * 7 + s * 3) % 9;
        y[static_cast<size_t>(i)] = (i * 5 + s) % 9;
      }
      model.zero_grad();
      nn::Tensor dlogits;
      const float loss = nn::softmax_cross_entropy(&dlogits, model.forward(x, 2), y);
      model.backward(dlogits);
      nn::clip_grad_norm(model.parameters(), 1.0);
      opt.config().lr = nn::warmup_cosine{.peak = 3e-3f, .warmup = 2, .total = 6}.at(s);
      opt.step();
      return loss;
    };
    auto [m0, o0] = make();
    std::vector<float> losses;
    for (int s = 0; s < 6; ++s) losses.push_back(step(*m0, *o0, s));
    auto [m1, o1] = make();
    for (int s = 0; s < 3; ++s) step(*m1, *o1, s);
    io::save_checkpoint(dir.file("gpt.safetensors"), m1->parameters(), *o1);
    auto [m2, o2] = make();
    io::load_checkpoint(dir.file("gpt.safetensors"), m2->parameters(), *o2);
    for (int s = 3; s < 6; ++s) CHECK(step(*m2, *o2, s) == losses[static_cast<size_t>(s)]);
    CHECK(bits_of(m2->parameters()) == bits_of(m0->parameters()));
  }
}

TEST_CASE("the checkpoint's layout: weights in the optimizer's format, state as stored", "[io]") {
  TempDir dir("scalify_checkpoint_test");
  mlp_run run(nn::state_config{});
  run.step();
  io::save_checkpoint(dir.file("c.safetensors"), run.net.parameters(), run.opt);
  const auto f = io::safetensors_file::open(dir.file("c.safetensors"));
  CHECK(f.at("model.0.w").dtype == io::tensor_dtype::F16);
  CHECK(f.at("model.0.w_scale").dtype == io::tensor_dtype::F32);
  CHECK(f.at("model.0.w").shape == std::vector<int64_t>{12, 16});
  CHECK(f.at("model.2.b").shape == std::vector<int64_t>{1, 4});
  CHECK(f.at("optimizer.0.w.momentum").dtype == io::tensor_dtype::F16);
  CHECK(f.metadata("scalify.optimizer", "") == "sgd");
  CHECK(f.metadata("scalify.step_count", "") == "1");
  CHECK(f.metadata("scalify.checkpoint", "") == io::kCheckpointVersion);
  // A weight the format cannot hold exactly (edited after the step) is kept in F32.
  run.net.parameters()[0].value->data()(0, 0) = 1.0f + 0x1p-20f;
  io::save_checkpoint(dir.file("d.safetensors"), run.net.parameters(), run.opt);
  CHECK(io::safetensors_file::open(dir.file("d.safetensors")).at("model.0.w").dtype == io::tensor_dtype::F32);
}

TEST_CASE("parameters exported in fp8 for inference load into a fresh model", "[io]") {
  TempDir dir("scalify_checkpoint_test");
  mlp_run run(nn::state_config{});
  for (int i = 0; i < 3; ++i) run.step();
  io::safetensors_writer w;
  io::add_parameters(w, run.net.parameters(), nn::dtype::e4m3fn);
  w.write(dir.file("fp8.safetensors"));
  const auto f = io::safetensors_file::open(dir.file("fp8.safetensors"));
  CHECK(f.at("0.w").dtype == io::tensor_dtype::F8_E4M3);
  nn::sequential fresh = nn::make_mlp({.sizes = {12, 16, 4}, .linear = nn::linear_config::fp8(), .seed = 99});
  io::load_parameters(f, fresh.parameters());
  const auto a = run.net.parameters(), b = fresh.parameters();
  for (size_t i = 0; i < a.size(); ++i) {
    INFO(a[i].name);
    // The fresh model holds the e4m3fn rounding of the trained values, on the same scale.
    const nn::Tensor want = nn::round_to(*a[i].value, nn::dtype::e4m3fn, {.saturate = true});
    CHECK(b[i].value->scale() == want.scale());
    CHECK((b[i].value->data().array() == want.data().array()).all());
  }
}

TEST_CASE("checkpoint mismatches: a clear error and nothing changed", "[io]") {
  TempDir dir("scalify_checkpoint_test");
  mlp_run run(nn::state_config{});
  for (int i = 0; i < 2; ++i) run.step();
  const std::string path = dir.file("c.safetensors");
  io::save_checkpoint(path, run.net.parameters(), run.opt);

  const auto unchanged = [](mlp_run& target, const auto& load) {
    const auto before = bits_of(target.net.parameters());
    const long steps = target.opt.step_count();
    load();
    CHECK(bits_of(target.net.parameters()) == before);
    CHECK(target.opt.step_count() == steps);
  };
  mlp_run other(nn::state_config{});
  other.step();
  unchanged(other, [&] {
    nn::adamw adam(other.net.parameters(), {});
    CHECK_THROWS_WITH(io::load_checkpoint(path, other.net.parameters(), adam),
                      Catch::Contains("c.safetensors") && Catch::Contains("optimizer is 'sgd', not adamw"));
  });
  mlp_run bf16(nn::state_config{.format = nn::dtype::bfloat16});
  unchanged(bf16, [&] {
    CHECK_THROWS_WITH(io::load_checkpoint(path, bf16.net.parameters(), bf16.opt),
                      Catch::Contains("optimizer state is 'fp16 scaled stochastic") &&
                          Catch::Contains("this optimizer's is 'bf16"));
  });
  // A model of another shape; one with fewer layers.
  {
    nn::sequential wide = nn::make_mlp({.sizes = {12, 32, 4}, .linear = nn::linear_config::fp8()});
    nn::sgd opt(wide.parameters(), {});
    const auto before = bits_of(wide.parameters());
    CHECK_THROWS_WITH(io::load_checkpoint(path, wide.parameters(), opt),
                      Catch::Contains("'optimizer.0.w.momentum' has shape [12, 16], the model's is (12 x 32)") ||
                          Catch::Contains("'model.0.w' has shape [12, 16], the model's is (12 x 32)"));
    CHECK(bits_of(wide.parameters()) == before);
    CHECK(opt.step_count() == 0);
    nn::sequential shallow = nn::make_mlp({.sizes = {12, 16}, .linear = nn::linear_config::fp8()});
    nn::sgd opt2(shallow.parameters(), {});
    CHECK_THROWS_WITH(io::load_checkpoint(path, shallow.parameters(), opt2),
                      Catch::Contains("has no parameter or optimizer state here"));
  }
  // A checkpoint missing a state tensor the next step needs; bad counts; not a checkpoint.
  struct broken {
    const char* drop;  // a tensor left out
    const char* key;   // a metadata key changed ...
    const char* value; // ... to this
    const char* message;
  };
  const std::vector<broken> cases = {
      {"optimizer.2.b.momentum", "", "", "no tensor 'optimizer.2.b.momentum'"},
      {"model.0.b", "", "", "no tensor 'model.0.b'"},
      {"", "scalify.step_count", "-3", "'scalify.step_count' is '-3', not a count"},
      {"", "scalify.checkpoint", "99", "checkpoint version 99"},
      {"", "scalify.config", "lr=0x1p-4 momentum=2 weight_decay=0 on_nonfinite=skip", "0 <= momentum < 1"},
      {"", "scalify.config", "lr=0x1p-4", "some hyperparameters are missing"},
      {"", "scalify.config", "lr=fast momentum=0 weight_decay=0 on_nonfinite=skip", "bad entry 'lr=fast'"},
  };
  for (const auto& c : cases) {
    INFO(c.drop << c.key << " " << c.value);
    const std::string broken_path = dir.file("broken.safetensors");
    rewrite(path, broken_path, c.drop, c.key, c.value);
    unchanged(other, [&] {
      CHECK_THROWS_WITH(io::load_checkpoint(broken_path, other.net.parameters(), other.opt),
                        Catch::Contains("broken.safetensors") && Catch::Contains(c.message));
    });
  }
  io::safetensors_writer plain;
  plain.add("w", scalify::ScaledMatrix<float>(Eigen::MatrixXf::Ones(2, 2), 1.0f));
  plain.write(dir.file("plain.safetensors"));
  CHECK_THROWS_WITH(io::load_checkpoint(dir.file("plain.safetensors"), other.net.parameters(), other.opt),
                    Catch::Contains("not a scalify checkpoint"));
}

TEST_CASE("the optimizer's hyperparameters come back with the checkpoint, as in PyTorch", "[io]") {
  TempDir dir("scalify_checkpoint_test");
  nn::sequential net = nn::make_mlp({.sizes = {4, 3}, .seed = 1});
  nn::adamw saved(net.parameters(), {.lr = 1.0f / 3.0f, .beta1 = 0.8f, .beta2 = 0.95f, .eps = 1e-6f,
                                     .weight_decay = 0.125f, .on_nonfinite = nn::nonfinite_policy::raise});
  io::save_checkpoint(dir.file("a.safetensors"), net.parameters(), saved);
  nn::adamw loaded(net.parameters(), {});
  io::load_checkpoint(dir.file("a.safetensors"), net.parameters(), loaded);
  const nn::adamw_config& c = loaded.config();
  CHECK(c.lr == 1.0f / 3.0f);  // exact: written as a hex float
  CHECK(c.beta1 == 0.8f);
  CHECK(c.beta2 == 0.95f);
  CHECK(c.eps == 1e-6f);
  CHECK(c.weight_decay == 0.125f);
  CHECK(c.on_nonfinite == nn::nonfinite_policy::raise);
}


TEST_CASE("a save the file could not hold throws and keeps the previous checkpoint", "[io]") {
  TempDir dir("scalify_checkpoint_test");
  const std::string path = dir.file("c.safetensors");
  mlp_run run(nn::state_config{});
  run.step();
  io::save_checkpoint(path, run.net.parameters(), run.opt);
  const auto before = io::safetensors_file::open(path).metadata("scalify.step_count", "");
  run.step();
  nn::Tensor& w0 = *run.net.parameters()[0].value;
  w0 = w0 / 0.0f;  // a diverged update: scale inf
  REQUIRE(std::isinf(w0.scale()));
  CHECK_THROWS_WITH(io::save_checkpoint(path, run.net.parameters(), run.opt),
                    Catch::Contains("model.0.w") && Catch::Contains("not a finite scale"));
  mlp_run fresh(nn::state_config{});
  io::load_checkpoint(path, fresh.net.parameters(), fresh.opt);  // the previous one, intact
  CHECK(fresh.opt.step_count() == 1);
  CHECK(before == "1");
}

TEST_CASE("exactly the state tensors a checkpoint saved are required and restored (scalify.state_tensors)", "[io]") {
  TempDir dir("scalify_checkpoint_test");
  const auto sgd_run = [](float momentum) {
    auto r = std::make_unique<mlp_run>(nn::state_config{});
    r->opt.config().momentum = momentum;
    return r;
  };
  SECTION("momentum switched on after steps without it: the empty buffers come back empty") {
    auto a = sgd_run(0.0f);
    a->step();
    a->step();
    a->opt.config().momentum = 0.9f;  // e.g. a momentum schedule
    io::save_checkpoint(dir.file("m.safetensors"), a->net.parameters(), a->opt);
    CHECK(io::safetensors_file::open(dir.file("m.safetensors")).metadata("scalify.state_tensors", "?") == "[]");
    auto b = sgd_run(0.9f);
    io::load_checkpoint(dir.file("m.safetensors"), b->net.parameters(), b->opt);
    b->gen = a->gen;
    CHECK(b->opt.velocity(0).empty());
    CHECK(b->opt.step_count() == 2);
    // The next steps are the saved run's, bit for bit.
    for (int i = 0; i < 2; ++i) CHECK(b->step() == a->step());
    CHECK(bits_of(b->net.parameters()) == bits_of(a->net.parameters()));
  }
  SECTION("a saved tensor removed from the file is refused, whatever the destination's config") {
    auto a = sgd_run(0.9f);
    a->step();
    a->step();
    io::save_checkpoint(dir.file("c.safetensors"), a->net.parameters(), a->opt);
    rewrite(dir.file("c.safetensors"), dir.file("lost.safetensors"), "optimizer.0.w.momentum");
    for (const float momentum : {0.0f, 0.9f}) {
      INFO("momentum " << momentum);
      auto b = sgd_run(momentum);
      const auto params = bits_of(b->net.parameters());
      CHECK_THROWS_WITH(io::load_checkpoint(dir.file("lost.safetensors"), b->net.parameters(), b->opt),
                        Catch::Contains("lost.safetensors") && Catch::Contains("no tensor 'optimizer.0.w.momentum'"));
      CHECK(b->opt.config().momentum == momentum);
      CHECK(b->opt.step_count() == 0);
      CHECK(bits_of(b->net.parameters()) == params);
    }
    // A file without the list (written before it existed): the restored config decides what is required.
    rewrite(dir.file("c.safetensors"), dir.file("old.safetensors"), "", "scalify.state_tensors", nullptr);
    rewrite(dir.file("c.safetensors"), dir.file("old-lost.safetensors"), "optimizer.0.w.momentum",
            "scalify.state_tensors", nullptr);
    auto b = sgd_run(0.0f);
    CHECK_THROWS_WITH(io::load_checkpoint(dir.file("old-lost.safetensors"), b->net.parameters(), b->opt),
                      Catch::Contains("no tensor 'optimizer.0.w.momentum'"));
    CHECK(b->opt.step_count() == 0);
    io::load_checkpoint(dir.file("old.safetensors"), b->net.parameters(), b->opt);
    CHECK(b->opt.config().momentum == 0.9f);
    b->gen = a->gen;
    CHECK(b->step() == a->step());
    // A list naming a state this optimizer does not have, or not a list.
    const std::string list = io::safetensors_file::open(dir.file("c.safetensors")).metadata("scalify.state_tensors", "");
    REQUIRE(list.rfind("[\"0.w.momentum\",", 0) == 0);
    rewrite(dir.file("c.safetensors"), dir.file("bad.safetensors"), "", "scalify.state_tensors",
            ("[\"9.w.momentum\"," + list.substr(1)).c_str());
    CHECK_THROWS_WITH(io::load_checkpoint(dir.file("bad.safetensors"), b->net.parameters(), b->opt),
                      Catch::Contains("'9.w.momentum'"));
    rewrite(dir.file("c.safetensors"), dir.file("bad.safetensors"), "", "scalify.state_tensors", "0.w.momentum");
    CHECK_THROWS_WITH(io::load_checkpoint(dir.file("bad.safetensors"), b->net.parameters(), b->opt),
                      Catch::Contains("'scalify.state_tensors'"));
  }
}

TEST_CASE("a hostile step count is refused, naming it (the steps' counters would overflow)", "[io]") {
  TempDir dir("scalify_checkpoint_test");
  mlp_run run(nn::state_config{});
  run.step();
  io::save_checkpoint(dir.file("c.safetensors"), run.net.parameters(), run.opt);
  rewrite(dir.file("c.safetensors"), dir.file("huge.safetensors"), "optimizer.0.w.momentum", "scalify.step_count",
          "9223372036854775807");
  rewrite(dir.file("huge.safetensors"), dir.file("huge-old.safetensors"), "", "scalify.state_tensors", nullptr);
  mlp_run other(nn::state_config{});
  for (const char* file : {"huge.safetensors", "huge-old.safetensors"}) {
    INFO(file);
    CHECK_THROWS_WITH(io::load_checkpoint(dir.file(file), other.net.parameters(), other.opt),
                      Catch::Contains("'scalify.step_count' is '9223372036854775807', not a count in [0, 2^62]"));
    CHECK(other.opt.step_count() == 0);
  }
  // The optimizer refuses it too, changing nothing.
  CHECK_THROWS_AS(other.opt.restore_counters(nn::detail::optimizer_base::kMaxStepCount + 1, 0), std::invalid_argument);
  CHECK_THROWS_AS(other.opt.restore_counters(0, -1), std::invalid_argument);
  CHECK(other.opt.step_count() == 0);
  other.opt.restore_counters(nn::detail::optimizer_base::kMaxStepCount, 3);
  CHECK(other.opt.step_count() == nn::detail::optimizer_base::kMaxStepCount);
}

TEST_CASE("scalify.config: every hyperparameter exactly once", "[io]") {
  TempDir dir("scalify_checkpoint_test");
  mlp_run run(nn::state_config{});
  run.step();
  io::save_checkpoint(dir.file("c.safetensors"), run.net.parameters(), run.opt);
  const std::vector<std::pair<const char*, const char*>> cases = {
      {"lr=0x1p-4 lr=0x1p-4 momentum=0x1.ccccccp-1 on_nonfinite=skip", "'lr' appears twice"},
      {"lr=0x1p-4 momentum=0 weight_decay=0 on_nonfinite=skip on_nonfinite=raise", "'on_nonfinite' appears twice"},
      {"lr=0x1p-4 momentum=0 weight_decay=0", "missing"},
      {"lr=0x1p-4 momentum=0 weight_decay=0x1p-4000 on_nonfinite=skip", "bad entry 'weight_decay=0x1p-4000'"},
      {"lr=0x1p-4 momentum=0 weight_decay=+0x1p-4 on_nonfinite=skip", "bad entry"},
  };
  mlp_run other(nn::state_config{});
  other.opt.config().weight_decay = 0.5f;
  for (const auto& [config, message] : cases) {
    INFO(config);
    rewrite(dir.file("c.safetensors"), dir.file("cfg.safetensors"), "", "scalify.config", config);
    CHECK_THROWS_WITH(io::load_checkpoint(dir.file("cfg.safetensors"), other.net.parameters(), other.opt),
                      Catch::Contains("'scalify.config'") && Catch::Contains(message));
    CHECK(other.opt.config().weight_decay == 0.5f);
  }
  // Hex floats and decimals, in any order: read exactly.
  rewrite(dir.file("c.safetensors"), dir.file("cfg.safetensors"), "", "scalify.config",
          "momentum=0.5 lr=0x1.8p-4 weight_decay=-0x0p+0 on_nonfinite=raise");
  io::load_checkpoint(dir.file("cfg.safetensors"), other.net.parameters(), other.opt);
  CHECK(other.opt.config().lr == 0x1.8p-4f);
  CHECK(other.opt.config().momentum == 0.5f);
  CHECK(other.opt.config().weight_decay == 0.0f);
  CHECK(other.opt.config().on_nonfinite == nn::nonfinite_policy::raise);
  CHECK(io::detail::config_string(nn::sgd_config{.lr = 0.05f, .momentum = 0.0f, .weight_decay = 1e-45f}) ==
        "lr=0x1.99999ap-5 momentum=0x0p+0 weight_decay=0x1p-149 on_nonfinite=skip");
}

TEST_CASE("RNG states round-trip as text; bad text is an error", "[io]") {
  std::mt19937_64 g(123);
  g.discard(1000);
  std::mt19937_64 h;
  io::restore_rng(h, io::rng_state(g));
  CHECK(h == g);
  CHECK(h() == g());
  CHECK_THROWS_WITH(io::restore_rng(h, "1 2 3", "train.rng"), Catch::Contains("train.rng is not a std::mt19937_64"));
  CHECK_THROWS_WITH(io::restore_rng(h, io::rng_state(g) + " 7"), Catch::Contains("not a std::mt19937_64"));
}
