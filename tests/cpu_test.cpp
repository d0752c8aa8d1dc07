// CPU path detection and forcing (scalify/cpu.hpp).
#include <catch2/catch.hpp>

#include <string>

#include "scalify/cpu.hpp"

TEST_CASE("path names round-trip and unknown names are rejected", "[cpu]") {
  for (scalify::cpu_path p : scalify::all_cpu_paths) {
    CHECK(scalify::parse_cpu_path(scalify::to_string(p)) == p);
  }
  CHECK_THROWS_AS(scalify::parse_cpu_path("avx1024"), std::invalid_argument);
  CHECK_THROWS_WITH(scalify::parse_cpu_path(""), Catch::Contains("expected scalar, avx2"));
}

TEST_CASE("the scalar path is always supported and the best path is supported", "[cpu]") {
  CHECK(scalify::cpu_supports(scalify::cpu_path::scalar));
  CHECK(scalify::cpu_supports(scalify::best_cpu_path()));
  // Paths are nested: each needs the one before it.
  if (scalify::cpu_supports(scalify::cpu_path::avx512bf16)) CHECK(scalify::cpu_supports(scalify::cpu_path::avx512));
  if (scalify::cpu_supports(scalify::cpu_path::avx512)) CHECK(scalify::cpu_supports(scalify::cpu_path::avx2));
  for (scalify::cpu_path p : scalify::all_cpu_paths) {
    WARN("CPU path " << scalify::to_string(p) << (scalify::cpu_supports(p) ? ": supported" : ": not supported"));
  }
}

TEST_CASE("force_cpu_path and scoped_cpu_path switch paths and restore them", "[cpu]") {
  const scalify::cpu_path before = scalify::active_cpu_path();
  {
    scalify::scoped_cpu_path guard(scalify::cpu_path::scalar);
    CHECK(scalify::active_cpu_path() == scalify::cpu_path::scalar);
  }
  CHECK(scalify::active_cpu_path() == before);
  for (scalify::cpu_path p : scalify::all_cpu_paths) {
    if (scalify::cpu_supports(p)) {
      scalify::force_cpu_path(p);
      CHECK(scalify::active_cpu_path() == p);
    } else {
      CHECK_THROWS_WITH(scalify::force_cpu_path(p), Catch::Contains(std::string(scalify::to_string(p))));
      CHECK_THROWS_AS(scalify::scoped_cpu_path(p), std::invalid_argument);
    }
  }
  scalify::reset_cpu_path();
  CHECK(scalify::active_cpu_path() == before);
}
