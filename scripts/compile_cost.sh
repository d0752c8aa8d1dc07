#!/usr/bin/env bash
# What including scalify costs a user's translation unit: for each public
# header alone, for a small float8 matmul program beside its Eigen float32
# twin and for examples/custom_layer.cpp, header-only and in the compiled mode
# (-DSCALIFY_COMPILED_LIB: the GEMM's instantiations come from the
# scalify::compiled library), the preprocessed lines, the compiler's CPU
# seconds (user + system) and its peak memory, compiling to an object file
# with g++ -O2.
#
#   bash scripts/compile_cost.sh               the table, as Markdown, on stdout
#   bash scripts/compile_cost.sh --quick       only the programs and the umbrella header
#   CXX=clang++ CXXFLAGS=-O0 bash scripts/compile_cost.sh
#
# Nothing is asserted: CPU seconds vary with the machine and its load (run
# it on an idle machine and compare rows of one run; memory and line counts
# are stable). docs/testing.md ("Compile cost") has a measured table.
# Installs the Debian packages it needs first (only those missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

quick=0
case "${1:-}" in
  --quick) quick=1 ;;
  -h | --help) sed -n '2,17s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
  "") ;;
  *) echo "compile_cost.sh: unknown argument '$1'" >&2; exit 2 ;;
esac

source scripts/install_missing.sh  # install_missing
install_missing g++ libeigen3-dev time

cxx=${CXX:-g++}
read -r -a flags <<< "${CXXFLAGS:--O2}"
eigen_dir=$(pkg-config --cflags-only-I eigen3 2>/dev/null | sed 's/^-I//; s/ *$//')
eigen_dir=${eigen_dir:-/usr/include/eigen3}
[[ -f "$eigen_dir/Eigen/Core" ]] || { echo "compile_cost.sh: Eigen not found (Debian: libeigen3-dev)" >&2; exit 1; }
[[ -x /usr/bin/time ]] || { echo "compile_cost.sh: needs /usr/bin/time (Debian: time)" >&2; exit 1; }
common=(-std=c++20 "${flags[@]}" -Iinclude -I"$eigen_dir" -w)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The issue's programs: a 64 x 64 float8 matmul through the umbrella header,
# and the same product in Eigen float32.
cat > "$work/fp8_matmul.cpp" <<'EOF'
#include <scalify/scalify.hpp>

#include <cstdio>

int main() {
  scalify::ScaledMatrix<scalify::float8_e4m3fn> a = scalify::as_scaled(Eigen::MatrixXf::Random(64, 64));
  scalify::ScaledMatrix<scalify::float8_e4m3fn> b = scalify::as_scaled(Eigen::MatrixXf::Random(64, 64));
  scalify::ScaledMatrix<float> c = scalify::matmul(a, b);
  std::printf("%g\n", static_cast<double>(c.to_dense()(0, 0)));
}
EOF
cat > "$work/f32_matmul.cpp" <<'EOF'
#include <Eigen/Core>

#include <cstdio>

int main() {
  Eigen::MatrixXf a = Eigen::MatrixXf::Random(64, 64);
  Eigen::MatrixXf b = Eigen::MatrixXf::Random(64, 64);
  Eigen::MatrixXf c = a * b;
  std::printf("%g\n", static_cast<double>(c(0, 0)));
}
EOF
printf 'int main() {}\n' > "$work/empty.cpp"

# One row: name, preprocessed lines, CPU seconds, peak MiB.
# Extra compiler arguments after the source (e.g. -DSCALIFY_COMPILED_LIB).
measure() {
  local name=$1 src=$2
  shift 2
  local lines
  lines=$("$cxx" "${common[@]}" "$@" -E "$src" | wc -l)
  /usr/bin/time -f '%U %S %M' -o "$work/time" "$cxx" "${common[@]}" "$@" -c "$src" -o "$work/out.o"
  read -r user sys kib < "$work/time"
  printf '| %s | %s | %s | %d |\n' "$name" "$lines" "$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')" \
    $((kib / 1024))
}

header_tu() {  # a TU that includes header $1 and nothing else
  local tu="$work/h_$(echo "$1" | tr '/.' '__').cpp"
  printf '#include <%s>\nint main() {}\n' "$1" > "$tu"
  echo "$tu"
}

echo "Compiler: $("$cxx" --version | head -1), flags: ${flags[*]}"
echo
echo "| translation unit | preprocessed lines | CPU s | peak MiB |"
echo "|---|---|---|---|"
measure "empty program" "$work/empty.cpp"
measure "Eigen/Core alone" "$(header_tu Eigen/Core)"
measure "64x64 float32 matmul, Eigen" "$work/f32_matmul.cpp"
measure "64x64 e4m3fn matmul, scalify/scalify.hpp" "$work/fp8_matmul.cpp"
measure "64x64 e4m3fn matmul, scalify/scalify.hpp, compiled mode" "$work/fp8_matmul.cpp" -DSCALIFY_COMPILED_LIB
measure "scalify/scalify.hpp alone" "$(header_tu scalify/scalify.hpp)"
measure "scalify/nn.hpp alone" "$(header_tu scalify/nn.hpp)"
measure "examples/custom_layer.cpp (a custom layer, nn)" examples/custom_layer.cpp
measure "examples/custom_layer.cpp, compiled mode" examples/custom_layer.cpp -DSCALIFY_COMPILED_LIB
if ((!quick)); then
  # Every public header: not detail/, not the -inl files (included per SIMD path).
  while IFS= read -r h; do
    measure "${h#include/}" "$(header_tu "${h#include/}")"
  done < <(find include/scalify -name '*.hpp' ! -path '*/detail/*' ! -name '*-inl.hpp' | sort)
fi
