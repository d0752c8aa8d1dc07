#!/usr/bin/env bash
# Build the libFuzzer targets (tests/fuzz/) with clang, ASan and UBSan, and run
# each one for a while on its corpus.
#
#   bash scripts/fuzz.sh                   every target for 20 s (what CI runs), in build-fuzz/
#   bash scripts/fuzz.sh 300               every target for 300 s, one after the other
#   bash scripts/fuzz.sh 600 fuzz_gemm     one target (fuzz_idx, fuzz_convert, fuzz_gemm, fuzz_safetensors)
#
# 20 s per target by default: enough for the seeds and a few thousand
# mutations in CI; run longer by hand. Each target reads its committed seeds
# (tests/fuzz/corpus/<target>/, never written) and the corpus it grew before
# (build-fuzz/corpus/<target>/, where new inputs go). A finding (crash,
# sanitizer report, failed check, timeout, out-of-memory) stops that target
# and is written to build-fuzz/findings/<target>/ (crash-*, timeout-*, oom-*;
# reproduce with `build-fuzz/tests/fuzz/<target> <file>`); the log is
# build-fuzz/findings/<target>.log. Exits non-zero if any target found
# something. Installs the Debian packages it needs first (only those missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() { sed -n '2,18s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

seconds=20
targets=()
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    [0-9]*) seconds=$1 ;;
    fuzz_idx | fuzz_convert | fuzz_gemm | fuzz_safetensors) targets+=("$1") ;;
    *) echo "fuzz.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
((${#targets[@]})) || targets=(fuzz_idx fuzz_convert fuzz_gemm fuzz_safetensors)

# --- Debian packages ----------------------------------------------------------
source scripts/install_missing.sh  # install_missing
install_missing cmake make clang libclang-rt-14-dev libeigen3-dev zlib1g-dev nlohmann-json3-dev

# --- configure, build ---------------------------------------------------------
build=build-fuzz
jobs=$(nproc 2>/dev/null || echo 2)
echo "==> configuring $build (clang, libFuzzer + ASan + UBSan)"
# -O1 -g1: line numbers in reports; the sanitizers make -O2 compile much longer.
CC=clang CXX=clang++ cmake -S . -B "$build" -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1" \
  -DSCALIFY_BUILD_FUZZERS=ON -DSCALIFY_BUILD_TESTS=OFF -DSCALIFY_BUILD_EXAMPLES=OFF \
  -DSCALIFY_BUILD_BENCHMARKS=OFF -DSCALIFY_INSTALL=OFF
echo "==> building ${targets[*]} with $jobs jobs"
cmake --build "$build" --parallel "$jobs" --target "${targets[@]}"

# --- run ----------------------------------------------------------------------
export ASAN_OPTIONS="${ASAN_OPTIONS:-halt_on_error=1:detect_stack_use_after_return=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
failed=()
for target in "${targets[@]}"; do
  corpus="$build/corpus/$target" findings="$build/findings/$target" log="$build/findings/$target.log"
  mkdir -p "$corpus" "$findings"
  echo "==> $target for $seconds s (corpus $corpus, findings $findings/)"
  status=0
  dict=()  # a dictionary of the input's tokens, where the target has one
  [[ -f tests/fuzz/$target.dict ]] && dict=("-dict=tests/fuzz/$target.dict")
  # -timeout: seconds per input (a large GEMM takes ~2 s under the sanitizers).
  "$build/tests/fuzz/$target" -max_total_time="$seconds" -timeout=60 -rss_limit_mb=4096 -max_len=4096 \
    -print_final_stats=1 -artifact_prefix="$findings/" "${dict[@]}" "$corpus" "tests/fuzz/corpus/$target" >"$log" 2>&1 ||
    status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  echo "    exit $status, ${runs:-?} executions, corpus $(find "$corpus" -type f | wc -l) grown +" \
       "$(find "tests/fuzz/corpus/$target" -type f | wc -l) seed inputs"
  if ((status != 0)); then
    failed+=("$target")
    echo "    FINDING: see $log and $findings/" >&2
    grep -E "finding:|ERROR:|runtime error:|SUMMARY:|Test unit written" "$log" | head -20 >&2 || true
  fi
done
if ((${#failed[@]})); then
  echo "==> fuzzing found problems in: ${failed[*]}" >&2
  exit 1
fi
echo "==> fuzzing found nothing (${targets[*]}, $seconds s each)"
