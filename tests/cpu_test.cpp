// CPU path detection and forcing (scalify/cpu.hpp).
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <iterator>
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

TEST_CASE("scoped_cpu_path from two threads at once leaves the process on its path", "[cpu][threads]") {
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

TEST_CASE("the first dispatch takes SCALIFY_CPU_PATH's path, or throws if this CPU lacks it", "[cpu][env]") {
  // Run alone in a fresh process (scripts/test_avx512_emulated.sh does, with
  // SCALIFY_CPU_PATH=avx512bf16 on a CPU without BF16), the first call below is
  // the process's first dispatch. In a full run the earlier test cases have
  // dispatched already and restored the start-up path, which is the same one.
  const char* env = std::getenv("SCALIFY_CPU_PATH");
  if (env == nullptr || *env == '\0') {
    CHECK(scalify::active_cpu_path() == scalify::best_cpu_path());
    return;
  }
  const std::string name = env;
  INFO("SCALIFY_CPU_PATH=" << name);
  const bool known = std::any_of(std::begin(scalify::all_cpu_paths), std::end(scalify::all_cpu_paths),
                                 [&](scalify::cpu_path p) { return scalify::to_string(p) == name; });
  if (!known) {
    CHECK_THROWS_WITH(scalify::active_cpu_path(), Catch::Contains("unknown CPU path '" + name + "'"));
    return;
  }
  const scalify::cpu_path p = scalify::parse_cpu_path(name);
  if (scalify::cpu_supports(p)) {
    CHECK(scalify::active_cpu_path() == p);
    return;
  }
  WARN("SCALIFY_CPU_PATH=" << name << " names a path this CPU lacks: checking that dispatch refuses it");
  CHECK_THROWS_AS(scalify::active_cpu_path(), std::invalid_argument);
  CHECK_THROWS_WITH(scalify::active_cpu_path(),
                    Catch::Contains("SCALIFY_CPU_PATH=" + name + " but this CPU does not support it"));
  CHECK_THROWS_AS(scalify::reset_cpu_path(), std::invalid_argument);
}

namespace {

// Sets an environment variable for a scope, then restores it.
class scoped_env {
 public:
  scoped_env(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    set(name, value);
  }
  ~scoped_env() { set(name_, old_ ? old_->c_str() : nullptr); }
  scoped_env(const scoped_env&) = delete;
  scoped_env& operator=(const scoped_env&) = delete;

 private:
  static void set(const char* name, const char* value) {  // value null: unset
#if defined(_WIN32)
    ::_putenv_s(name, value != nullptr ? value : "");
#else
    if (value != nullptr) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
#endif
  }

  const char* name_;
  std::optional<std::string> old_;
};

}  // namespace

TEST_CASE("a CPU with AVX-512 but without BF16 runs avx512 and refuses avx512bf16", "[cpu]") {
  // Such CPUs: Intel Skylake-SP, Cascade Lake, Ice Lake, Tiger Lake; and the Bochs emulator of
  // scripts/test_avx512_emulated.sh (which has no AVX512_BF16).
  if (!scalify::cpu_supports(scalify::cpu_path::avx512)) {
    WARN("skipping: this CPU has no AVX-512");
    return;
  }
  if (scalify::cpu_supports(scalify::cpu_path::avx512bf16)) {
    WARN("skipping: this CPU has AVX512_BF16");
    return;
  }
  CHECK(scalify::best_cpu_path() == scalify::cpu_path::avx512);
  const scalify::cpu_path before = scalify::active_cpu_path();
  CHECK_THROWS_AS(scalify::force_cpu_path(scalify::cpu_path::avx512bf16), std::invalid_argument);
  CHECK_THROWS_WITH(scalify::force_cpu_path(scalify::cpu_path::avx512bf16),
                    Catch::Contains("force_cpu_path: this CPU does not support path avx512bf16"));
  CHECK_THROWS_WITH(scalify::scoped_cpu_path(scalify::cpu_path::avx512bf16),
                    Catch::Contains("scoped_cpu_path: this CPU does not support path avx512bf16"));
  CHECK(scalify::active_cpu_path() == before);  // a refused path changes nothing
  {
    // SCALIFY_CPU_PATH is read again by reset_cpu_path(), as at the first dispatch.
    const scoped_env env("SCALIFY_CPU_PATH", "avx512bf16");
    CHECK_THROWS_WITH(scalify::reset_cpu_path(),
                      Catch::Contains("SCALIFY_CPU_PATH=avx512bf16 but this CPU does not support it"));
    CHECK(scalify::active_cpu_path() == before);
  }
  {
    const scoped_env env("SCALIFY_CPU_PATH", "avx512");
    scalify::reset_cpu_path();
    CHECK(scalify::active_cpu_path() == scalify::cpu_path::avx512);
  }
  scalify::reset_cpu_path();
  CHECK(scalify::active_cpu_path() == before);
}
