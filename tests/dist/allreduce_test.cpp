// scalify/dist/allreduce.hpp under mpirun (ctest: -np 2 and -np 4): the
// scaled all-reduce against a double reference for each wire format, with
// different scales on every rank (2^-20 next to 2^20), zero scales, empty
// tensors and buckets that cut tensors anywhere; every rank ends with the same
// bits; NaN or inf on one rank is seen by all; mismatched tensors throw
// everywhere; data-parallel SGD on P ranks equals one process with P times
// the batch.
//
// Every rank runs every test case in the same order (the collectives must
// match): no REQUIRE, which would stop one rank early. Each rank can rebuild
// any rank's inputs from its rank number, so each computes the reference
// itself.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <mpi.h>

#include <cmath>    // std::ldexp, std::isnan, std::fabs
#include <cstdint>  // uint32_t, uint64_t
#include <cstring>  // std::memcpy
#include <random>   // std::mt19937
#include <vector>   // std::vector

#include "scalify/dist/allreduce.hpp"
#include "scalify/nn/loss.hpp"
#include "scalify/nn/optim.hpp"

namespace dist = scalify::dist;
namespace nn = scalify::nn;

namespace {

int rank_of() { return dist::detail::comm_rank(MPI_COMM_WORLD); }
int size_of() { return dist::detail::comm_size(MPI_COMM_WORLD); }

/// Rank r's tensor i: normal values times 2^(spread * r + i), as data on a
/// power-of-two scale (or `scale` if given).
nn::Tensor input(int r, int i, Eigen::Index rows, Eigen::Index cols, int spread, float scale = 0.0f) {
  std::mt19937 gen(static_cast<uint32_t>(1000 * r + i));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  nn::Matrix d(rows, cols);
  for (Eigen::Index k = 0; k < d.size(); ++k) d.data()[k] = normal(gen);
  const float s = scale != 0.0f ? scale : std::ldexp(1.0f, spread * r + i);
  return nn::Tensor(std::move(d), s);
}

/// The same bits on every rank: a checksum of the data and scale, MAX and MIN over the ranks agree.
bool same_everywhere(const std::vector<nn::Tensor>& ts) {
  uint64_t h = 1469598103934665603ull;
  for (const auto& t : ts) {
    for (Eigen::Index k = 0; k < t.size(); ++k) {
      uint32_t b;
      std::memcpy(&b, t.data().data() + k, 4);
      h = (h ^ b) * 1099511628211ull;
    }
    uint32_t s;
    const float scale = t.scale();
    std::memcpy(&s, &scale, 4);
    h = (h ^ s) * 1099511628211ull;
  }
  uint64_t hi = 0, lo = 0;
  MPI_Allreduce(&h, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
  MPI_Allreduce(&h, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
  return hi == lo;
}

/// Machine epsilon (unit roundoff x 2) of a wire format.
double epsilon(dist::wire_format w) {
  switch (w) {
    case dist::wire_format::float32: return std::ldexp(1.0, -23);
    case dist::wire_format::float16: return std::ldexp(1.0, -10);
    case dist::wire_format::e5m2: return std::ldexp(1.0, -2);
  }
  return 1.0;
}

struct shape {
  Eigen::Index rows, cols;
};

/// All-reduces rank-dependent tensors of `shapes` and checks them against the
/// double reference: |error| <= (P + 1) eps A + the format's subnormal step,
/// A the global amax of the inputs (P roundings into the wire format, one of
/// the sum, float32 additions).
void check_allreduce(const std::vector<shape>& shapes, int spread, const dist::allreduce_options& o,
                     bool zero_first = false) {
  const int p = size_of(), me = rank_of();
  std::vector<nn::Tensor> mine;
  for (size_t i = 0; i < shapes.size(); ++i) {
    mine.push_back(input(me, static_cast<int>(i), shapes[i].rows, shapes[i].cols, spread));
    if (zero_first && i == 0) mine.back().set_scale(0.0f);
  }
  std::vector<nn::Tensor*> ptrs;
  for (auto& t : mine) ptrs.push_back(&t);
  const dist::allreduce_result r = dist::allreduce(ptrs, MPI_COMM_WORLD, o);
  CHECK(r.finite);
  CHECK(same_everywhere(mine));
  for (size_t i = 0; i < shapes.size(); ++i) {
    INFO("tensor " << i << " " << shapes[i].rows << "x" << shapes[i].cols << ", wire " << dist::wire_name(o.wire)
                   << ", P " << p << (o.mean ? " mean" : " sum"));
    Eigen::MatrixXd want = Eigen::MatrixXd::Zero(shapes[i].rows, shapes[i].cols);
    double amax = 0.0;
    for (int q = 0; q < p; ++q) {
      nn::Tensor t = input(q, static_cast<int>(i), shapes[i].rows, shapes[i].cols, spread);
      if (zero_first && i == 0) t.set_scale(0.0f);
      const Eigen::MatrixXd v = t.data().cast<double>() * static_cast<double>(t.scale());
      want += v;
      if (v.size() > 0) amax = std::max(amax, v.cwiseAbs().maxCoeff());
    }
    if (o.mean) want /= p;
    const nn::Tensor& got = mine[i];
    CHECK(got.rows() == shapes[i].rows);
    CHECK(got.cols() == shapes[i].cols);
    if (got.size() == 0) continue;
    const double s = got.scale();
    CHECK(std::isfinite(s));
    const double subnormal =
        o.wire == dist::wire_format::float16 ? std::ldexp(1.0, -24) : o.wire == dist::wire_format::e5m2 ? std::ldexp(1.0, -16) : 0.0;
    const double wire_scale = dist::detail::wire_scale(amax, o.wire, p);
    const double bound = ((p + 1) * epsilon(o.wire) * 2.0 * amax + 2.0 * subnormal * wire_scale * p) / (o.mean ? p : 1);
    const Eigen::MatrixXd have = got.data().cast<double>() * s;
    const double err = (have - want).cwiseAbs().maxCoeff();
    CHECK(err <= bound);
    if (amax == 0.0) CHECK((have.array() == 0.0).all());
  }
}

}  // namespace

TEST_CASE("all-reduce against a double reference, every wire format, sum and mean", "[dist]") {
  const std::vector<shape> shapes = {{7, 5}, {1, 1}, {0, 3}, {64, 33}, {3, 0}, {1, 129}};
  for (auto wire : {dist::wire_format::float32, dist::wire_format::float16, dist::wire_format::e5m2}) {
    for (bool mean : {true, false}) {
      for (size_t bucket : {size_t{8} << 20, size_t{7}, size_t{300}}) {  // one bucket; a value per bucket or two; cuts anywhere
        check_allreduce(shapes, 3, {.wire = wire, .mean = mean, .bucket_bytes = bucket});
      }
    }
  }
}

TEST_CASE("scales far apart across the ranks: 2^-20 on one, 2^20 on another", "[dist]") {
  for (auto wire : {dist::wire_format::float32, dist::wire_format::float16, dist::wire_format::e5m2}) {
    check_allreduce({{16, 16}, {5, 9}}, 40, {.wire = wire});  // rank r: 2^(40 r + i)
    check_allreduce({{16, 16}, {5, 9}}, -40, {.wire = wire, .mean = false});
  }
  // Explicitly: rank 0 at 2^-20, rank 1 at 2^20, the others at 1; the small ones vanish in the sum as in double.
  const int me = rank_of();
  nn::Tensor t = input(me, 0, 8, 8, 0, me == 0 ? 0x1p-20f : me == 1 ? 0x1p20f : 1.0f);
  std::vector<nn::Tensor*> ptrs = {&t};
  dist::allreduce(ptrs, MPI_COMM_WORLD, {.wire = dist::wire_format::float16, .mean = false});
  const nn::Tensor big = input(1, 0, 8, 8, 0, 0x1p20f);
  const double rel = ((t.data().cast<double>() * t.scale()) - (big.data().cast<double>() * 0x1p20)).cwiseAbs().maxCoeff() /
                     (big.data().cast<double>().cwiseAbs().maxCoeff() * 0x1p20);
  CHECK(rel < 4 * size_of() * std::ldexp(1.0, -11) + 1e-5);  // the 2^20 tensor dominates
  CHECK(std::isfinite(t.scale()));
}

TEST_CASE("tiny data on a huge scale, huge data on a tiny scale: rebased without overflow", "[dist]") {
  // Rank r's values are those of input(r, 0) on scale 2^(r - 3), stored as data 2^120
  // times smaller (or larger) on a scale 2^120 times larger (smaller): the ratio of a
  // scale to the wire scale is then beyond float's range, the data times it is not.
  const int me = rank_of(), p = size_of();
  for (int sign : {1, -1}) {
    const auto make = [sign](int q) {
      nn::Tensor t = input(q, 0, 6, 7, 1, std::ldexp(1.0f, q - 3));
      t.data() *= std::ldexp(1.0f, -120 * sign);
      t.set_scale(std::ldexp(t.scale(), 120 * sign));
      return t;
    };
    nn::Tensor t = make(me);
    std::vector<nn::Tensor*> ptrs = {&t};
    CHECK(dist::allreduce(ptrs, MPI_COMM_WORLD, {.wire = dist::wire_format::float16, .mean = false}).finite);
    Eigen::MatrixXd want = Eigen::MatrixXd::Zero(6, 7);
    double amax = 0.0;
    for (int q = 0; q < p; ++q) {
      const nn::Tensor u = make(q);
      const Eigen::MatrixXd v = u.data().cast<double>() * static_cast<double>(u.scale());
      want += v;
      amax = std::max(amax, v.cwiseAbs().maxCoeff());
    }
    const Eigen::MatrixXd have = t.data().cast<double>() * static_cast<double>(t.scale());
    CHECK(have.allFinite());
    CHECK((have - want).cwiseAbs().maxCoeff() <= 2.0 * (p + 1) * std::ldexp(1.0, -10) * amax);
  }
}

TEST_CASE("zero scales, all-zero tensors, no tensors", "[dist]") {
  check_allreduce({{4, 4}, {2, 3}}, 1, {.wire = dist::wire_format::float16}, /*zero_first=*/true);
  nn::Tensor z(nn::Matrix::Zero(3, 3), 0.0f);
  std::vector<nn::Tensor*> ptrs = {&z};
  CHECK(dist::allreduce(ptrs, MPI_COMM_WORLD, {.wire = dist::wire_format::e5m2}).finite);
  CHECK((z.data().array() == 0.0f).all());
  CHECK(z.scale() == 1.0f / static_cast<float>(size_of()));
  std::vector<nn::Tensor*> none;
  const auto r = dist::allreduce(none, MPI_COMM_WORLD);
  CHECK(r.finite);
  CHECK(r.buckets == 0);
}

TEST_CASE("a non-finite value on one rank: every rank sees it, every scale NaN", "[dist]") {
  const int me = rank_of(), p = size_of();
  for (int bad = 0; bad < 3; ++bad) {  // NaN data, inf data, inf scale, each on the last rank
    nn::Tensor a = input(me, 0, 4, 5, 1), b = input(me, 1, 2, 2, 1);
    if (me == p - 1) {
      if (bad == 0) b.data()(1, 1) = std::numeric_limits<float>::quiet_NaN();
      if (bad == 1) a.data()(0, 3) = -std::numeric_limits<float>::infinity();
      if (bad == 2) b.set_scale(scalify::detail::unchecked_scale, std::numeric_limits<float>::infinity());
    }
    std::vector<nn::Tensor*> ptrs = {&a, &b};
    const auto r = dist::allreduce(ptrs, MPI_COMM_WORLD, {.wire = dist::wire_format::float16});
    CHECK_FALSE(r.finite);
    CHECK(r.wire_bytes == 0);
    CHECK(std::isnan(a.scale()));
    CHECK(std::isnan(b.scale()));
  }
  // An optimizer then skips the step on every rank.
  nn::sequential net = nn::make_mlp({.sizes = {3, 2}, .seed = 1});
  nn::sgd opt(net.parameters(), {.lr = 0.1f});
  net.zero_grad();
  for (auto& prm : net.parameters()) prm.grad->data().setOnes();
  if (me == 0) net.parameters()[0].grad->data()(0, 0) = std::numeric_limits<float>::quiet_NaN();
  dist::allreduce_gradients(net.parameters(), MPI_COMM_WORLD);
  CHECK_FALSE(opt.step());
  CHECK(opt.skipped_steps() == 1);
}

TEST_CASE("tensors that differ across the ranks: an error on every rank, nothing changed", "[dist]") {
  const int me = rank_of();
  nn::Tensor a = input(me, 0, 4, me == 0 ? 5 : 6, 1);
  const float before = a.scale();
  std::vector<nn::Tensor*> ptrs = {&a};
  CHECK_THROWS_WITH(dist::allreduce(ptrs, MPI_COMM_WORLD), Catch::Contains("shapes differ across the ranks"));
  CHECK(a.scale() == before);
  nn::Tensor b = input(me, 1, 2, 2, 1);
  std::vector<nn::Tensor*> uneven = {&a};
  if (me == 0) uneven.push_back(&b);
  CHECK_THROWS_WITH(dist::allreduce(uneven, MPI_COMM_WORLD), Catch::Contains("different numbers of tensors"));
  CHECK_THROWS_AS(dist::allreduce(ptrs, MPI_COMM_WORLD, {.bucket_bytes = 0}), std::invalid_argument);
}

TEST_CASE("data-parallel SGD on P ranks equals one process with P times the batch (fp32 wire)", "[dist]") {
  const int p = size_of(), me = rank_of();
  const Eigen::Index per_rank = 6, features = 10, classes = 4;
  const auto make = [] { return nn::make_mlp({.sizes = {features, 16, classes}, .seed = 3}); };
  nn::sequential dp = make(), single = make();
  dist::broadcast_parameters(dp.parameters(), MPI_COMM_WORLD);
  nn::sgd opt_dp(dp.parameters(), {.lr = 0.1f, .momentum = 0.9f}, nn::state_config::fp32());
  nn::sgd opt_single(single.parameters(), {.lr = 0.1f, .momentum = 0.9f}, nn::state_config::fp32());
  for (int step = 0; step < 5; ++step) {
    // The global batch: P * per_rank rows; rank r trains on rows [r * per_rank, (r + 1) * per_rank).
    const nn::Tensor all = input(step, 99, p * per_rank, features, 0, 1.0f);
    std::vector<int> labels(static_cast<size_t>(p * per_rank));
    for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<int>((i * 7 + static_cast<size_t>(step)) % classes);
    const nn::Tensor shard(all.data().middleRows(me * per_rank, per_rank), 1.0f);
    const std::vector<int> shard_labels(labels.begin() + me * per_rank, labels.begin() + (me + 1) * per_rank);
    nn::Tensor d;
    dp.zero_grad();
    nn::softmax_cross_entropy(&d, dp.forward(shard), shard_labels);  // mean over the shard
    dp.backward(d);
    dist::allreduce_gradients(dp.parameters(), MPI_COMM_WORLD, {.wire = dist::wire_format::float32, .mean = true});
    opt_dp.step();
    single.zero_grad();
    nn::softmax_cross_entropy(&d, single.forward(all), labels);  // mean over the whole batch
    single.backward(d);
    opt_single.step();
  }
  const auto a = dp.parameters(), b = single.parameters();
  for (size_t i = 0; i < a.size(); ++i) {
    INFO(a[i].name);
    const Eigen::MatrixXd x = a[i].value->data().cast<double>() * a[i].value->scale();
    const Eigen::MatrixXd y = b[i].value->data().cast<double>() * b[i].value->scale();
    CHECK((x - y).cwiseAbs().maxCoeff() <= 1e-5 * std::max(1.0, y.cwiseAbs().maxCoeff()));
  }
  CHECK(same_everywhere({*a[0].value, *a[1].value}));
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  const int result = Catch::Session().run(argc, argv);
  int worst = 0;
  MPI_Allreduce(&result, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return worst;
}
