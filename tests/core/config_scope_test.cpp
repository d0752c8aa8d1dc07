// The thread-local configuration scope (core/config_scope.hpp).
#include <catch2/catch.hpp>

#include <stdexcept>
#include <thread>

#include "scalify/core/config_scope.hpp"

using scalify::pow2_mode;

TEST_CASE("config_scope sets, nests and restores the thread's configuration", "[core][config]") {
  CHECK(scalify::current_config().rounding == pow2_mode::down);
  CHECK(scalify::current_config().store.saturate);  // the one overflow default: saturating stores
  {
    scalify::config_scope outer({.rounding = pow2_mode::up, .store = {.saturate = false}});
    CHECK(scalify::current_config().rounding == pow2_mode::up);
    CHECK(scalify::config_pow2_round(3.0f) == 4.0f);
    CHECK_FALSE(scalify::current_config().store.saturate);
    {
      scalify::config_scope inner({.rounding = pow2_mode::none});  // store: the default again
      CHECK(scalify::config_pow2_round(3.0f) == 3.0f);
      CHECK(scalify::current_config().store.saturate);
    }
    CHECK(scalify::current_config().rounding == pow2_mode::up);
    CHECK_FALSE(scalify::current_config().store.saturate);
  }
  CHECK(scalify::current_config().store.saturate);
  CHECK(scalify::current_config().rounding == pow2_mode::down);
  CHECK(scalify::config_pow2_round(3.0f) == 2.0f);
}

TEST_CASE("config_scope is per thread", "[core][config][threads]") {
  scalify::config_scope scope({.rounding = pow2_mode::up});
  pow2_mode seen = pow2_mode::none;
  std::thread t([&] { seen = scalify::current_config().rounding; });
  t.join();
  CHECK(seen == pow2_mode::down);
  CHECK(scalify::current_config().rounding == pow2_mode::up);
}

TEST_CASE("stochastic scale rounding is reproducible given the seed", "[core][config]") {
  auto draw = [](uint64_t seed) {
    scalify::config_scope scope({.rounding = pow2_mode::stochastic, .seed = seed});
    std::vector<float> out;
    for (int i = 0; i < 64; ++i) out.push_back(scalify::config_pow2_round(3.0f));
    return out;
  };
  const auto a = draw(5), b = draw(5), c = draw(6);
  CHECK(a == b);
  CHECK(a != c);
  int ups = 0;
  for (float v : a) {
    CHECK((v == 2.0f || v == 4.0f));
    ups += v == 4.0f;
  }
  CHECK(ups > 10);
  CHECK(ups < 54);
}

TEST_CASE("config_scope rejects invalid settings and keeps the configuration in force",
          "[core][config][errors]") {
  const auto check = [](const scalify::scalify_config& c, const char* part) {
    CHECK_THROWS_AS(scalify::config_scope(c), std::invalid_argument);
    CHECK_THROWS_WITH(scalify::config_scope(c),
                      Catch::Contains("scalify::config_scope") && Catch::Contains(part));
  };
  scalify::config_scope outer({.rounding = pow2_mode::up});
  check({.rounding = static_cast<pow2_mode>(9)}, "rounding 9");
  check({.store = {.round = static_cast<scalify::rounding>(5)}}, "rounding 5");
  check({.scale = static_cast<scalify::scale_format>(2)}, "scale 2");
  check({.threads = -1}, "threads -1");
  CHECK(scalify::current_config().rounding == pow2_mode::up);
  CHECK(scalify::config_pow2_round(3.0f) == 4.0f);
  CHECK_NOTHROW(scalify::config_scope(
      {.rounding = pow2_mode::stochastic, .store = {.saturate = true}, .threads = 2}));
}
