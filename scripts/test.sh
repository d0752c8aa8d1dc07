#!/usr/bin/env bash
# Build scalify and run its whole test suite (the README's test command).
#
#   bash scripts/test.sh              optimized build with assertions on, in build-test/
#   bash scripts/test.sh --sanitize   the tests under ASan + UBSan, in build-asan/
#                                     (all but the consumer ones; exhaustive ones sampled)
#   bash scripts/test.sh --tsan       the test cases tagged [threads] under ThreadSanitizer,
#                                     in build-tsan/ (only the programs that have them)
#
# Installs the Debian packages it needs first (only those missing). Extra
# arguments after -- go to ctest, e.g. `bash scripts/test.sh -- -L formats`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() { sed -n '2,11s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

sanitize=0
ctest_args=()
while (($#)); do
  case "$1" in
    --sanitize) sanitize=1 ;;
    --tsan) sanitize=2 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; ctest_args=("$@"); break ;;
    *) echo "test.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

# --- Debian packages ----------------------------------------------------------
source scripts/install_missing.sh  # install_missing
install_missing cmake make g++ libeigen3-dev catch2 libfmt-dev libbenchmark-dev zlib1g-dev fortunes \
  nlohmann-json3-dev python3-numpy libopenmpi-dev openmpi-bin

# --- configure, build, test -----------------------------------------------------
jobs=$(nproc 2>/dev/null || echo 2)
# Optimized, but without -DNDEBUG: assert() and eigen_assert stay on.
config=(-DSCALIFY_BUILD_TESTS=ON -DSCALIFY_BUILD_EXAMPLES=ON)
targets=()  # empty: everything
if ((sanitize == 2)); then
  # Only the programs with [threads] test cases, and in them only those cases:
  # the rest is single-threaded and covered by the other two runs.
  targets=(cpu_test core_config_scope_test core_evaluation_test formats_eigen_packet_test kernels_gemm_test
           kernels_thread_pool_test ops_batched_test nn_layers_test nn_optim_test)
  build=build-tsan
  config+=(-DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1"
           -DSCALIFY_SANITIZE_THREAD=ON -DSCALIFY_BUILD_BENCHMARKS=OFF -DSCALIFY_BUILD_EXAMPLES=OFF)
  export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}"
elif ((sanitize)); then
  build=build-asan
  # -O1 -g1: line numbers in reports, and compiles several times faster than -O2 -g
  # under ASan. Benchmarks are only compiled by the tests: the plain build covers them.
  config+=(-DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1"
           -DSCALIFY_SANITIZE=ON -DSCALIFY_BUILD_BENCHMARKS=OFF)
  export ASAN_OPTIONS="${ASAN_OPTIONS:-halt_on_error=1:detect_stack_use_after_return=1}"
  export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
  # Skipped here, covered by the plain run: the cmake.* consumer tests (they build
  # plain programs). The [exhaustive] tests do run under the sanitizers; there they
  # check every 17th chunk of the 2^32 float32 inputs unless
  # SCALIFY_TEST_EXHAUSTIVE_STRIDE says otherwise (=1: all of them).
  ctest_args=(-LE '^cmake$' "${ctest_args[@]}")
else
  build=build-test
  config+=(-DCMAKE_BUILD_TYPE=Release "-DCMAKE_CXX_FLAGS_RELEASE=-O2"
           -DSCALIFY_SANITIZE=OFF -DSCALIFY_BUILD_BENCHMARKS=ON)
fi

echo "==> configuring $build"
cmake -S . -B "$build" "${config[@]}"
echo "==> building $build${targets[*]:+ (${targets[*]})} with $jobs jobs"
cmake --build "$build" --parallel "$jobs" ${targets[@]:+--target "${targets[@]}"}
if ((sanitize == 2)); then
  for program in "${targets[@]}"; do
    echo "==> $program [threads] under ThreadSanitizer"
    "$build/tests/$program" "[threads]"
  done
  exit 0
fi
echo "==> testing $build"
# Tests tagged [exhaustive] use every core and are marked RUN_SERIAL, so
# running the rest in parallel is safe.
ctest --test-dir "$build" --output-on-failure --parallel "$jobs" "${ctest_args[@]}"
