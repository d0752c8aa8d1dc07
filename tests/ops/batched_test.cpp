// Batched scaled matmul (ops/batched.hpp): every block against a double
// product of that block's values, computed here from the grid's definition
// (not from the library's offsets); the scale rule; in-place views of
// attention's layouts; outputs of every type; thread counts; errors.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "scalify/core/config_scope.hpp"
#include "scalify/ops/batched.hpp"
#include "scalify/ops/matmul.hpp"
#include "support/scaled.hpp"

using scalify::bfloat16;
using scalify::block_grid;
using scalify::float16;
using scalify::float8_e4m3fn;
using scalify::float8_e5m2;
using scalify::ScaledMatrix;
using scalify::trans;

namespace {

/// pow2 of sqrt(K), rounded down (the default scope), computed independently.
double factor_down(Eigen::Index k) { return std::exp2(std::floor(std::log2(std::sqrt(static_cast<double>(k))))); }

/// The values of block t of grid g over x (values in double), transposed if op is yes.
Eigen::MatrixXd block_values(const Eigen::MatrixXd& x, const block_grid& g, Eigen::Index t, trans op) {
  const Eigen::Index i = t / g.inner, j = t % g.inner;
  const Eigen::Index r = g.row0 + i * g.outer_row_step + j * g.inner_row_step;
  const Eigen::Index c = g.col0 + i * g.outer_col_step + j * g.inner_col_step;
  Eigen::MatrixXd b = x.block(r, c, g.rows, g.cols);
  if (op == trans::yes) b.transposeInPlace();
  return b;
}

/// Checks every block of `out` (values) against op_a(a_t) op_b(b_t) in double within
/// float32 accumulation error plus one rounding into TC.
template <class TC>
void check_blocks(const Eigen::MatrixXd& out, const block_grid& gc, const Eigen::MatrixXd& a, const block_grid& ga,
                  trans op_a, const Eigen::MatrixXd& b, const block_grid& gb, trans op_b, double out_scale,
                  const std::string& context) {
  for (Eigen::Index t = 0; t < gc.count(); ++t) {
    const Eigen::MatrixXd va = block_values(a, ga, t, op_a), vb = block_values(b, gb, t, op_b);
    const Eigen::MatrixXd expected = va * vb;
    const Eigen::MatrixXd actual = block_values(out, gc, t, trans::no);
    const double k = static_cast<double>(va.cols());
    const double sum_abs = k == 0 ? 0.0 : (va.cwiseAbs() * vb.cwiseAbs()).maxCoeff();
    const double denorm = static_cast<double>(std::numeric_limits<TC>::denorm_min()) * out_scale;
    scalify_test::check_close(actual, expected, scalify_test::unit_roundoff<TC>(),
                              4.0 * k * 0x1p-24 * sum_abs + denorm, context + ", block " + std::to_string(t));
  }
}

/// True if x and y have the same bit pattern.
template <class T>
bool same_bits(const T& x, const T& y) {
  return std::memcmp(&x, &y, sizeof(T)) == 0;
}

/// A scaled matrix of T, rows x cols, unit-variance data on scale s.
template <class T>
ScaledMatrix<T> random_matrix(Eigen::Index rows, Eigen::Index cols, float s, uint32_t seed) {
  return scalify_test::random_scaled<T>(rows, cols, s, seed);
}

}  // namespace

TEMPLATE_TEST_CASE("batched_matmul: attention's products in place, every input format and transpose, vs double",
                   "[ops][batched]", SCALIFY_STORAGE_FORMATS) {
  using T = TestType;
  // (B*T, 3C) QKV with B = 2, T = 5, H = 3, d = 4: C = 12.
  const Eigen::Index B = 2, Tm = 5, H = 3, d = 4, C = H * d;
  const auto qkv = random_matrix<T>(B * Tm, 3 * C, 0.375f, 7);
  const Eigen::MatrixXd v = scalify_test::values_d(qkv);
  uint32_t seed = 100;
  for (const trans op_b : {trans::yes, trans::no}) {
    // Scores Q K^T (K read transposed) or, with op_b = no, Q (K^T stored) from a (B*H*d, T) matrix.
    const auto kt = random_matrix<T>(B * H * d, Tm, 3.0f, seed++);
    const block_grid gq = block_grid::heads(B, Tm, H, d, 0);
    const block_grid gk = op_b == trans::yes ? block_grid::heads(B, Tm, H, d, C) : block_grid::stacked(B, H, d, Tm);
    const auto& bsrc = op_b == trans::yes ? qkv : kt;
    const block_grid gs = block_grid::stacked(B, H, Tm, Tm);
    ScaledMatrix<float> scores;
    scalify::batched_matmul(scores, gs, qkv, gq, trans::no, bsrc, gk, op_b);
    INFO("op_b " << (op_b == trans::yes ? "yes" : "no"));
    REQUIRE(scores.rows() == B * H * Tm);
    REQUIRE(scores.cols() == Tm);
    CHECK(scores.scale() == static_cast<float>(0.375 * static_cast<double>(bsrc.scale()) * factor_down(d)));
    check_blocks<float>(scalify_test::values_d(scores), gs, v, gq, trans::no, scalify_test::values_d(bsrc), gk,
                        op_b, scores.scale(), "scores");
  }
  // P V with P read transposed from a (B*H*T, T) matrix (dV = P^T dO's pattern), into (B*T, C) heads.
  const auto p = random_matrix<T>(B * H * Tm, Tm, 0.5f, seed++);
  for (const trans op_a : {trans::no, trans::yes}) {
    ScaledMatrix<float> out;
    const block_grid gp = block_grid::stacked(B, H, Tm, Tm), gv = block_grid::heads(B, Tm, H, d, 2 * C);
    const block_grid go = block_grid::heads(B, Tm, H, d);
    scalify::batched_matmul(out, go, p, gp, op_a, qkv, gv, trans::no);
    REQUIRE(out.rows() == B * Tm);
    REQUIRE(out.cols() == C);
    CHECK(out.scale() == static_cast<float>(0.5 * 0.375 * factor_down(Tm)));
    check_blocks<float>(scalify_test::values_d(out), go, scalify_test::values_d(p), gp, op_a, v, gv, trans::no,
                        out.scale(), op_a == trans::yes ? "P^T V" : "P V");
  }
}

TEST_CASE("batched_matmul: every pair of input formats, odd sizes, column-major operands", "[ops][batched]") {
  const auto run = [&]<class TA, class TB>() {
    // Grid of 2 x 3 blocks with gaps between the blocks of the inputs.
    const block_grid ga{2, 3, 7, 9, 1, 2, 20, 0, 0, 11};   // blocks 7 x 9 at (1 + 20 i, 2 + 11 j)
    const block_grid gb{2, 3, 9, 5, 0, 0, 0, 15, 10, 0};   // 9 x 5 at (10 j, 15 i)
    const block_grid gc = block_grid::stacked(2, 3, 7, 5);
    const ScaledMatrix<TA> a = random_matrix<TA>(41, 35, 2.0f, 1);
    // b column-major.
    const scalify::ScaledArray<Eigen::Matrix<TB, Eigen::Dynamic, Eigen::Dynamic>> b(
        scalify_test::random_data<TB>(30, 35, 2), 0.25f);
    ScaledMatrix<float> c;
    scalify::batched_matmul(c, gc, a, ga, trans::no, b, gb, trans::no);
    CHECK(c.scale() == static_cast<float>(0.5 * factor_down(9)));
    check_blocks<float>(scalify_test::values_d(c), gc, scalify_test::values_d(a), ga, trans::no,
                        scalify_test::values_d(b), gb, trans::no, c.scale(),
                        std::string(scalify::detail::type_name<TA>()) + " x " + scalify::detail::type_name<TB>());
  };
  const auto for_b = [&]<class TA>() {
    run.template operator()<TA, float>();
    run.template operator()<TA, float16>();
    run.template operator()<TA, bfloat16>();
    run.template operator()<TA, float8_e4m3fn>();
    run.template operator()<TA, float8_e5m2>();
  };
  for_b.template operator()<float>();
  for_b.template operator()<float16>();
  for_b.template operator()<bfloat16>();
  for_b.template operator()<float8_e4m3fn>();
  for_b.template operator()<float8_e5m2>();
}

TEMPLATE_TEST_CASE("batched_matmul: each block equals the 2-D scaled matmul of that block, stored into every type",
                   "[ops][batched]", SCALIFY_STORAGE_FORMATS) {
  // Large enough blocks for the blocked GEMM (not the streaming one), 8 blocks: split across threads.
  const Eigen::Index B = 2, Tm = 48, H = 4, d = 40, C = H * d;
  const auto x = random_matrix<float8_e4m3fn>(B * Tm, 2 * C, 1.0f, 3);
  const auto y = random_matrix<float8_e4m3fn>(B * Tm, 2 * C, 2.0f, 4);
  float amax = -1.0f;
  ScaledMatrix<TestType> out;
  scalify::batched_matmul(out, block_grid::stacked(B, H, Tm, Tm), x, block_grid::heads(B, Tm, H, d, 0), trans::no, y,
                          block_grid::heads(B, Tm, H, d, C), trans::yes, {.amax = &amax});
  float max_abs = 0.0f;
  for (Eigen::Index b = 0; b < B; ++b) {
    for (Eigen::Index h = 0; h < H; ++h) {
      const ScaledMatrix<float8_e4m3fn> xb(x.data().block(b * Tm, h * d, Tm, d), x.scale());
      const ScaledMatrix<float8_e4m3fn> yb(y.data().block(b * Tm, C + h * d, Tm, d), y.scale());
      const ScaledMatrix<TestType> expected = scalify::matmul(xb, yb, trans::no, trans::yes);
      const Eigen::Index t = b * H + h;
      INFO("block " << t);
      CHECK(out.scale() == expected.scale());
      const auto got = out.data().block(t * Tm, 0, Tm, Tm);
      for (Eigen::Index i = 0; i < Tm; ++i) {
        for (Eigen::Index j = 0; j < Tm; ++j) {
          REQUIRE(same_bits(got(i, j), expected.data()(i, j)));
          max_abs = std::max(max_abs, std::fabs(static_cast<float>(got(i, j))));
        }
      }
    }
  }
  CHECK(amax == max_abs);
}

TEST_CASE("batched_matmul: the amax is of the stored data when the store takes two passes", "[ops][batched]") {
  // Stochastic and toward-zero stores into float8 go through a float32 result
  // first; the amax must be max |stored data| after the store cast, its
  // saturation and the rebasing onto an E8M0 scale (not of the float32 data).
  const Eigen::Index B = 2, Tm = 12, H = 2, d = 16, C = H * d;
  const auto x = random_matrix<float8_e4m3fn>(B * Tm, 2 * C, 3.0f, 13);
  const auto y = random_matrix<float8_e4m3fn>(B * Tm, 2 * C, 1.0f, 14);
  for (const auto round : {scalify::rounding::stochastic, scalify::rounding::toward_zero}) {
    INFO("rounding " << static_cast<int>(round));
    scalify::scalify_config config = scalify::current_config();
    config.store = {.saturate = true, .round = round, .seed = 5};
    const scalify::config_scope scope(config);
    const auto check = [&](auto out) {
      float amax = -1.0f;
      scalify::batched_matmul(out, block_grid::stacked(B, H, Tm, Tm), x, block_grid::heads(B, Tm, H, d, 0),
                              trans::no, y, block_grid::heads(B, Tm, H, d, C), trans::yes, {.amax = &amax});
      const float stored_max = out.data().template cast<float>().cwiseAbs().maxCoeff();
      CHECK(amax == stored_max);
    };
    check(ScaledMatrix<float8_e4m3fn>());
    check(ScaledMatrix<float8_e4m3fn, scalify::float8_e8m0fnu>());
  }
}

TEST_CASE("batched_matmul: a scale below float's normal range times scale_factor keeps the values exact to float",
          "[ops][batched]") {
  // sa * sb * R(sqrt K) = 2^-70 * 2^-70 * 2 is a float subnormal; times 0.3 it
  // would keep 9 bits: the scale stays a power of two, the data takes the rest.
  // Reference: the same product on scales 1 (the same float sums), times 2^-140.
  const Eigen::MatrixXf a = Eigen::MatrixXf::Random(4, 8), b = Eigen::MatrixXf::Random(8, 4);
  const auto product = [&](auto out, float s) {
    scalify::batched_matmul(out, block_grid::whole(4, 4), ScaledMatrix<float>(a, s), block_grid::whole(4, 8),
                            trans::no, ScaledMatrix<float>(b, s), block_grid::whole(8, 4), trans::no,
                            {.scale_factor = 0.3});
    return scalify_test::values_d(out);
  };
  const Eigen::MatrixXd want = product(ScaledMatrix<float>(), 1.0f) * 0x1p-140;
  scalify_test::check_close(product(ScaledMatrix<float>(), 0x1p-70f), want, 4e-7, 0.0, "float scale");
  scalify_test::check_close(product(ScaledMatrix<float, double>(), 0x1p-70f), want, 4e-7, 0.0, "double scale");
}

TEST_CASE("batched_matmul: the same bits with 1 and 2 threads, and with few blocks", "[ops][batched][threads]") {
  const Eigen::Index B = 3, Tm = 33, H = 2, d = 24;
  const auto q = random_matrix<float8_e4m3fn>(B * Tm, H * d, 1.0f, 5);
  const auto k = random_matrix<float8_e5m2>(B * Tm, H * d, 1.0f, 6);
  const auto compute = [&](int threads, Eigen::Index batch) {
    scalify::config_scope scope({.threads = threads});
    ScaledMatrix<float> s;
    scalify::batched_matmul(s, block_grid::stacked(batch, H, Tm, Tm), q, block_grid::heads(batch, Tm, H, d),
                            trans::no, k, block_grid::heads(batch, Tm, H, d), trans::yes);
    return s;
  };
  for (const Eigen::Index batch : {Eigen::Index{1}, B}) {
    const auto one = compute(1, batch), two = compute(2, batch);
    CHECK(one.scale() == two.scale());
    CHECK(one.data() == two.data());
  }
}

TEST_CASE("batched_matmul: scale_factor goes into the scale only; E8M0 and narrow outputs; empty batches",
          "[ops][batched]") {
  const auto a = random_matrix<float>(12, 8, 1.0f, 8);
  const auto b = random_matrix<float>(12, 8, 4.0f, 9);
  const block_grid g = block_grid::heads(3, 4, 2, 4);
  const block_grid gs = block_grid::stacked(3, 2, 4, 4);
  ScaledMatrix<float> plain, folded;
  scalify::batched_matmul(plain, gs, a, g, trans::no, b, g, trans::yes);
  scalify::batched_matmul(folded, gs, a, g, trans::no, b, g, trans::yes, {.scale_factor = 1.0 / std::sqrt(4.0)});
  CHECK(folded.data() == plain.data());
  CHECK(folded.scale() == plain.scale() * 0.5f);

  // An E8M0 scale holds powers of two only: 3 * 0.75 -> the data is rebased.
  scalify::ScaledArray<Eigen::Matrix<float, -1, -1, Eigen::RowMajor>, scalify::float8_e8m0fnu> e8;
  scalify::batched_matmul(e8, gs, a, g, trans::no, b, g, trans::yes, {.scale_factor = 0.75});
  scalify_test::check_close(scalify_test::values_d(e8), scalify_test::values_d(plain) * 0.75, 1e-6, 0.0, "E8M0");

  // Stochastic stores go through float32 then the store cast: values within one e4m3fn ulp.
  {
    scalify::config_scope scope({.store = {.round = scalify::rounding::stochastic, .seed = 3}});
    ScaledMatrix<float8_e4m3fn> s;
    scalify::batched_matmul(s, gs, a, g, trans::no, b, g, trans::yes);
    CHECK(s.scale() == plain.scale());
    scalify_test::check_close(scalify_test::values_d(s), scalify_test::values_d(plain), 2.0 * 0x1p-3,
                              static_cast<double>(std::numeric_limits<float8_e4m3fn>::denorm_min()) * plain.scale(),
                              "stochastic e4m3fn");
  }

  // No blocks: an empty output, amax 0.
  float amax = -1.0f;
  ScaledMatrix<float> empty;
  scalify::batched_matmul(empty, block_grid::stacked(0, 2, 4, 4), a, block_grid::heads(0, 4, 2, 4), trans::no, b,
                          block_grid::heads(0, 4, 2, 4), trans::yes, {.amax = &amax});
  CHECK(empty.size() == 0);
  CHECK(amax == 0.0f);
  // K = 0: zeros.
  ScaledMatrix<float> zeros;
  scalify::batched_matmul(zeros, block_grid::stacked(1, 2, 4, 3), a, block_grid{1, 2, 4, 0, 0, 0, 0, 0, 4, 0},
                          trans::no, b, block_grid{1, 2, 0, 3}, trans::no);
  CHECK(zeros.rows() == 8);
  CHECK(zeros.data().isZero());
}

TEST_CASE("batched_matmul: bad grids, shapes and arguments throw and leave the output alone", "[ops][batched]") {
  const auto a = random_matrix<float>(8, 8, 1.0f, 10);
  const auto b = random_matrix<float>(8, 8, 1.0f, 11);
  ScaledMatrix<float> out(Eigen::Matrix<float, -1, -1, Eigen::RowMajor>::Constant(2, 2, 7.0f), 2.0f);
  const block_grid g4 = block_grid::heads(2, 4, 2, 4);  // (8 x 8) in 4 blocks of 4 x 4
  const block_grid s4 = block_grid::stacked(2, 2, 4, 4);
  const auto unchanged = [&] {
    CHECK(out.rows() == 2);
    CHECK(out.scale() == 2.0f);
    CHECK(out.data()(0, 0) == 7.0f);
  };
  const auto shape_err = [&](const block_grid& gc, const block_grid& ga, const block_grid& gb,
                             std::vector<std::string> parts, trans op_a = trans::no, trans op_b = trans::no) {
    scalify_test::require_shape_error([&] { scalify::batched_matmul(out, gc, a, ga, op_a, b, gb, op_b); }, parts);
    unchanged();
  };
  // Counts differ.
  shape_err(s4, block_grid::heads(1, 4, 2, 4), g4, {"same counts"});
  // Out of bounds: a's grid reaches column 12.
  shape_err(s4, block_grid::heads(2, 4, 2, 4, 4), g4, {"does not fit in a", "(8 x 8)"});
  // Inner sizes differ.
  shape_err(block_grid::stacked(2, 2, 4, 3), g4, block_grid{2, 2, 3, 3, 0, 0, 4, 0, 0, 4}, {"inner sizes differ"});
  // Output block shape wrong.
  shape_err(block_grid::stacked(2, 2, 4, 3), g4, g4, {"output blocks must be (4 x 4)"});
  // Overlapping output blocks.
  shape_err(block_grid{2, 2, 4, 4, 0, 0, 4, 0, 2, 0}, g4, g4, {"may overlap"});
  // A gap in the output (blocks 4 x 4 every 5 rows).
  shape_err(block_grid{2, 2, 4, 4, 0, 0, 10, 0, 5, 0}, g4, g4, {"cover", "exactly"});
  // Not from the origin.
  shape_err(block_grid{2, 2, 4, 4, 1, 0, 8, 0, 4, 0}, g4, g4, {"cover", "exactly"});
  // Negative fields and overflowing extents.
  shape_err(block_grid{2, 2, 4, -4}, g4, g4, {"negative field"});
  const Eigen::Index huge = std::numeric_limits<Eigen::Index>::max() / 2;
  shape_err(s4, block_grid{2, 2, 4, 4, 0, 0, huge, 0, 4, 0}, g4, {"more elements than Eigen::Index holds"});

  // Invalid arguments.
  const auto invalid = [&](auto f, const std::string& part) {
    try {
      f();
      FAIL("no std::invalid_argument thrown");
    } catch (const std::invalid_argument& e) {
      CHECK_THAT(std::string(e.what()), Catch::Matchers::Contains(part));
    }
    unchanged();
  };
  invalid([&] { scalify::batched_matmul(out, s4, a, g4, static_cast<trans>(5), b, g4, trans::no); }, "unknown trans");
  for (const double f : {0.0, -1.0, std::numeric_limits<double>::infinity(), std::nan("")}) {
    invalid([&] { scalify::batched_matmul(out, s4, a, g4, trans::no, b, g4, trans::no, {.scale_factor = f}); },
            "scale_factor");
  }
  // The output is an operand.
  ScaledMatrix<float> self = a;
  try {
    scalify::batched_matmul(self, s4, self, g4, trans::no, b, g4, trans::no);
    FAIL("no std::invalid_argument thrown");
  } catch (const std::invalid_argument& e) {
    CHECK_THAT(std::string(e.what()), Catch::Matchers::Contains("shares memory"));
  }
  CHECK(self.data() == a.data());
}
