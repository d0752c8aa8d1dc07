#!/usr/bin/env bash
# Run the avx512 path's machine code for real on a CPU without AVX-512: the
# GEMM, bulk-cast, Eigen-packet and CPU-detection tests, built statically, each
# run under the Bochs AVX-512 emulator of ../shared/tools/avx512-emu with
# SCALIFY_CPU_PATH=avx512 (docs/testing.md, "AVX-512 under emulation").
#
#   bash scripts/test_avx512_emulated.sh                 builds build-avx512emu/, runs every selection
#   bash scripts/test_avx512_emulated.sh --emulator DIR  the emulator rig in DIR (DIR/run.sh)
#   bash scripts/test_avx512_emulated.sh --only REGEX    only the runs whose label matches REGEX
#   bash scripts/test_avx512_emulated.sh --native        the same binaries and selections on this CPU
#   bash scripts/test_avx512_emulated.sh --list          print the runs (label, program, selection)
#   bash scripts/test_avx512_emulated.sh -j N            build with N jobs (default 2; runs are serial)
#
# Without the emulator (no DIR/run.sh) it says so and exits 0 without building.
# A whole run took 7.5 minutes under the emulator on a free core on 2026-12-02
# (11-14 next to other jobs); kernels_gemm_test's four runs alone took 55
# (2026-12-07, next to a CI run): see docs/testing.md. Plus a 3.5-minute build on
# a 2-core VM; the emulator builds a small Linux kernel on its first use (about
# 8 minutes more, once).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD

usage() { sed -n '2,17s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

emulator="$repo/../shared/tools/avx512-emu"
only=""
jobs=2
native=0
list=0
while (($#)); do
  case "$1" in
    --emulator) emulator="${2:?--emulator needs a directory}"; shift ;;
    --emulator=*) emulator="${1#*=}" ;;
    --only) only="${2:?--only needs a regex}"; shift ;;
    --only=*) only="${1#*=}" ;;
    --native) native=1 ;;
    -j) jobs="${2:?-j needs a number}"; shift ;;
    -j*) jobs="${1#-j}" ;;
    --list) list=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "test_avx512_emulated.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

build="build-avx512emu"
tests="$repo/$build/tests"

# ------------------------------------------------------------------------------
# The runs. Every run gets SCALIFY_CPU_PATH=avx512 unless its environment names
# another path; the tests that loop over every path (GEMM, bulk casts) then run
# scalar and avx2 under the emulator too, as the paths they compare against.
# The two knobs below cut the sizes of what is kept (override them from the
# environment, e.g. SCALIFY_TEST_EXHAUSTIVE_STRIDE=127 for 4x more inputs):
#   SCALIFY_TEST_EXHAUSTIVE_STRIDE  [exhaustive] passes check every 509th chunk of the
#                                   2^32 floats (~8.5 million inputs per check, all over the range)
#   SCALIFY_TEST_STATS_INPUTS       convert_with_stats checks 300 000 random inputs, not
#                                   3 million (plus every threshold and special)
# Left out, as each is slow under Bochs and runs no AVX-512 instruction (portable
# or scalar code: the native suite covers it):
#   "float8 exhaustive: scalar casts of every float"   scalar casts
#   "float16 scalar casts: ..."                        scalar casts
#   "SIMD cast kernels at 16 lanes ... float32 sweep"  the kernel source over a plain-C++
#                                                      vector (~130 s per format)
: "${SCALIFY_TEST_EXHAUSTIVE_STRIDE:=509}" "${SCALIFY_TEST_STATS_INPUTS:=300000}"
knobs="SCALIFY_TEST_EXHAUSTIVE_STRIDE=$SCALIFY_TEST_EXHAUSTIVE_STRIDE SCALIFY_TEST_STATS_INPUTS=$SCALIFY_TEST_STATS_INPUTS"

# Catch2 test-spec escaping: ',' '[' ']' '\' in a test name are literal after a '\'.
exclude() { printf '~%s' "$1" | sed 's/[],[\\]/\\&/g'; }

# add_run LABEL PROGRAM ENV EXPECT ARG...: EXPECT, if not empty, is a regex the
# log must match under the emulator (a check that ran the intended branch).
RUNS=()
add_run() {
  local IFS='|'
  RUNS+=("$*")
}
add_run cpu-natural cpu_test "SCALIFY_CPU_PATH="
add_run cpu-avx512 cpu_test
add_run cpu-force-bf16 cpu_test "SCALIFY_CPU_PATH=avx512bf16" "names a path this CPU lacks" "[env]"
# kernels_gemm_test in four runs, each inside the emulator's timeout (the whole
# program took over 1800 s under Bochs on 2026-12-07): the blocked GEMM, its
# [threads] cases, the streaming loop (M <= 4, B's rows contiguous), the
# streaming dot form.
add_run gemm kernels_gemm_test "" "" "~[threads]~gemm: streaming*"
add_run gemm-threads kernels_gemm_test "" "" "[threads]"
add_run gemm-streaming kernels_gemm_test "" "" "gemm: streaming path*"
add_run gemm-dot kernels_gemm_test "" "" "gemm: streaming dot*"
add_run convert formats_convert_test
add_run convert-kernels formats_convert_kernels_test "" "" \
  "$(exclude 'SIMD cast kernels at 16 lanes match the scalar codec on a float32 sweep')*"
add_run eigen-packet formats_eigen_packet_test "$knobs"
add_run float8-bulk formats_float8_exhaustive_test "$knobs" "" \
  "$(exclude 'float8 exhaustive: scalar casts of every float')*"
add_run float16-bulk formats_float16_exhaustive_test "$knobs" "" "$(exclude 'float16 scalar casts:')*"

programs() {
  local r
  for r in "${RUNS[@]}"; do
    IFS='|' read -r -a f <<<"$r"
    if [[ -z $only || ${f[0]} =~ $only ]]; then echo "${f[1]}"; fi
  done | sort -u
}

if ((list)); then
  for r in "${RUNS[@]}"; do
    IFS='|' read -r -a f <<<"$r"
    printf '%-15s %-31s %s%s\n' "${f[0]}" "${f[1]}" "${f[2]:+${f[2]} }" "$( ((${#f[@]} > 4)) && printf "'%s' " "${f[@]:4}")"
  done
  exit 0
fi

# ------------------------------------------------------------------------------
# Where to run

if ((native)); then
  if ! grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
    echo "test_avx512_emulated.sh --native: this CPU has no AVX-512F" >&2
    exit 2
  fi
else
  if [[ ! -x $emulator/run.sh ]]; then
    echo "test_avx512_emulated.sh: no AVX-512 emulator at $emulator (expected $emulator/run.sh):"
    echo "  nothing run. Pass --emulator DIR, or see docs/testing.md (\"AVX-512 under emulation\")."
    exit 0
  fi
  emulator="$(cd "$emulator" && pwd)"
fi

# ------------------------------------------------------------------------------
# Build: static programs (the guest has no shared libraries), optimized, with
# assert() and eigen_assert kept (no -DNDEBUG), no sanitizers.

# shellcheck source=scripts/install_missing.sh
source scripts/install_missing.sh  # install_missing
install_missing cmake make g++ libeigen3-dev catch2 libfmt-dev

# Debian's libfmt-dev has no libfmt.a: a stand-in fmt package makes fmt::fmt
# header-only (FMT_HEADER_ONLY), so nothing links libfmt.so.
mkdir -p "$build/fmt-header-only" "$build/logs"
cat >"$build/fmt-header-only/fmt-config.cmake" <<'EOF'
# Written by scripts/test_avx512_emulated.sh: fmt::fmt as header-only fmt, for static programs.
find_path(_fmt_include fmt/format-inl.h REQUIRED)
add_library(fmt::fmt INTERFACE IMPORTED)
set_target_properties(fmt::fmt PROPERTIES
  INTERFACE_COMPILE_DEFINITIONS "FMT_HEADER_ONLY=1" INTERFACE_INCLUDE_DIRECTORIES "${_fmt_include}")
set(fmt_VERSION 9)
EOF

echo "==> configuring $build (static, Release -O2 with assertions)"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release "-DCMAKE_CXX_FLAGS_RELEASE=-O2" \
  -DCMAKE_EXE_LINKER_FLAGS=-static -DSCALIFY_SANITIZE=OFF -DSCALIFY_BUILD_TESTS=ON \
  -DSCALIFY_BUILD_EXAMPLES=OFF -DSCALIFY_BUILD_BENCHMARKS=OFF -DSCALIFY_INSTALL=OFF \
  "-Dfmt_DIR=$repo/$build/fmt-header-only" >"$build/logs/configure.log" \
  || { cat "$build/logs/configure.log"; exit 1; }
mapfile -t targets < <(programs)
echo "==> building ${targets[*]} with $jobs jobs"
t0=$SECONDS
cmake --build "$build" --parallel "$jobs" --target "${targets[@]}" >"$build/logs/build.log" 2>&1 \
  || { tail -50 "$build/logs/build.log"; exit 1; }
echo "==> built in $((SECONDS - t0)) s"

# ------------------------------------------------------------------------------
# Run

if ((native)); then
  where="natively on this CPU"
else
  # The smallest AVX-512 model: F/CD/BW/DQ/VL and nothing later, the set
  # cpu_path::avx512 asks for, so an instruction from a later extension
  # (VBMI, VNNI, ...) in the avx512 path is an illegal instruction here.
  export AVX512EMU_CPU="${AVX512EMU_CPU:-corei7_skylake_x}"
  # Per run; the longest (gemm-threads) took 34 min next to a CI run on 2026-12-07.
  export AVX512EMU_TIMEOUT="${AVX512EMU_TIMEOUT:-3600}"
  where="under $emulator/run.sh ($AVX512EMU_CPU)"
  if [[ -z ${ALSA_CONFIG_PATH:-} ]]; then
    # Bochs 2.7 opens ALSA for its PC speaker; where ALSA has no default
    # device (a VM without a sound card) its mixer thread then aborts with
    # "*** buffer overflow detected ***" before the guest boots. A null
    # default device avoids that.
    printf 'pcm.!default { type null }\nctl.!default { type hw card 0 }\n' >"$build/alsa-null.conf"
    export ALSA_CONFIG_PATH="$repo/$build/alsa-null.conf"
  fi
  if [[ ! -f ${AVX512EMU_DIR:-${TMPDIR:-/tmp}/avx512-emu}/bzImage ]]; then
    echo "==> note: the emulator builds its guest kernel on first use (~8 min, once)"
  fi
fi

# Each test case's time in the log: after a timeout, the last one listed says
# how far the run got.
catch_args=(--use-colour no --durations yes)
echo "==> running $where; logs in $build/logs/"
failed=()
runs=0
start=$SECONDS
for r in "${RUNS[@]}"; do
  IFS='|' read -r -a f <<<"$r"
  label=${f[0]} program=${f[1]} env=${f[2]:-} expect=${f[3]:-}
  args=("${f[@]:4}")
  [[ -z $only || $label =~ $only ]] || continue
  [[ $env == *SCALIFY_CPU_PATH=* ]] || env="SCALIFY_CPU_PATH=avx512${env:+ $env}"
  log="$build/logs/$label.log"
  t0=$SECONDS
  set +e
  if ((native)); then
    # (an empty SCALIFY_CPU_PATH counts as unset)
    read -r -a assignments <<<"$env"
    env -u SCALIFY_CPU_PATH "${assignments[@]}" "$tests/$program" "${catch_args[@]}" "${args[@]}" >"$log" 2>&1
  else
    AVX512EMU_ENV="$env" "$emulator/run.sh" "$tests/$program" "${catch_args[@]}" "${args[@]}" >"$log" 2>&1
  fi
  rc=$?
  set -e
  seconds=$((SECONDS - t0))
  result=$(grep -aE '^(All tests passed|test cases:)' "$log" | tail -1 || true)
  why=""
  if ((rc != 0)); then
    why="exit status $rc"
  elif [[ -n $expect ]] && ((!native)) && ! grep -aqE "$expect" "$log"; then
    why="the log lacks '$expect'"
  fi
  printf '%-16s %-4s %5d s  %-31s %s\n' "$label" "$([[ -z $why ]] && echo PASS || echo FAIL)" "$seconds" \
    "$program" "${result:-(no Catch2 summary)}"
  ((++runs))
  if [[ -n $why ]]; then
    failed+=("$label")
    echo "    $why; from $log:"
    # Catch2's first failures, or what the emulator rig said.
    grep -a -m 3 -B 4 -A 8 -E 'FAILED|killed by signal|^\[avx512-emu\] (ERROR|no exit marker)' "$log" \
      | sed 's/^/    | /' || tail -5 "$log"
  fi
done

echo "==> $runs runs in $((SECONDS - start)) s $where"
if ((${#failed[@]})); then
  echo "==> FAILED: ${failed[*]} (logs in $build/logs/)"
  exit 1
fi
echo "==> all passed"
