// CPU path detection and forcing (scalify/cpu.hpp).
#include <catch2/catch.hpp>

#include <atomic>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

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

TEST_CASE("the best path is avx512bf16 only where BF16 dot products are fast (AMD), else avx512", "[cpu]") {
  // An independent view of the CPU: the kernel's /proc/cpuinfo, not cpuid.
  std::ifstream in("/proc/cpuinfo");
  if (!in) {
    WARN("skipping: no /proc/cpuinfo");
    return;
  }
  std::string line, vendor;
  bool has_bf16_flag = false, has_avx512f_flag = false;
  while (std::getline(in, line) && (vendor.empty() || line.rfind("flags", 0) != 0)) {
    if (line.rfind("vendor_id", 0) == 0) vendor = line.substr(line.find(':') + 2);
  }
  has_bf16_flag = line.find(" avx512_bf16") != std::string::npos;
  has_avx512f_flag = line.find(" avx512f") != std::string::npos;
  INFO("vendor " << vendor << ", avx512f " << has_avx512f_flag << ", avx512_bf16 " << has_bf16_flag);
  CHECK(scalify::cpu_supports(scalify::cpu_path::avx512bf16) == has_bf16_flag);
  if (!scalify::cpu_supports(scalify::cpu_path::avx512)) {
    CHECK(scalify::best_cpu_path() != scalify::cpu_path::avx512bf16);
    return;
  }
  const auto expected = has_bf16_flag && vendor == "AuthenticAMD" ? scalify::cpu_path::avx512bf16
                                                                    : scalify::cpu_path::avx512;
  CHECK(scalify::best_cpu_path() == expected);
}

TEST_CASE("scoped_cpu_path guards ending out of order restore the path before the first", "[cpu]") {
  const scalify::cpu_path before = scalify::active_cpu_path();
  const scalify::cpu_path other =
      before == scalify::cpu_path::scalar ? scalify::best_cpu_path() : scalify::cpu_path::scalar;
  std::optional<scalify::scoped_cpu_path> first(std::in_place, scalify::cpu_path::scalar);
  std::optional<scalify::scoped_cpu_path> second(std::in_place, other);
  CHECK(scalify::active_cpu_path() == other);
  first.reset();  // the older guard ends first: the newer one still decides
  CHECK(scalify::active_cpu_path() == other);
  second.reset();
  CHECK(scalify::active_cpu_path() == before);
}

TEST_CASE("scoped_cpu_path from two threads at once leaves the process on its path", "[cpu]") {
  const scalify::cpu_path before = scalify::active_cpu_path();
  std::vector<scalify::cpu_path> supported;
  for (scalify::cpu_path p : scalify::all_cpu_paths) {
    if (scalify::cpu_supports(p)) supported.push_back(p);
  }
  std::atomic<int> unsupported{0};
  auto churn = [&](std::size_t offset) {
    for (std::size_t i = 0; i < 20000; ++i) {
      scalify::scoped_cpu_path guard(supported[(i + offset) % supported.size()]);
      if (!scalify::cpu_supports(scalify::active_cpu_path())) ++unsupported;
    }
  };
  std::thread other(churn, 1);
  churn(0);
  other.join();
  CHECK(unsupported == 0);
  CHECK(scalify::active_cpu_path() == before);
}
