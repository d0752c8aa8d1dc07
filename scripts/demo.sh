#!/usr/bin/env bash
# scalify demo (the README's main command): build the examples and benchmarks
# in build/ (Release), run the quickstart example, one epoch of float8 training
# on Fashion-MNIST, a short run of the cast benchmark and a short fp8-vs-fp32
# GEMM table (bench_matmul). Installs the Debian packages it needs first (only
# those missing).
#
#   bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source scripts/install_missing.sh  # install_missing
install_missing cmake make g++ libeigen3-dev libfmt-dev libbenchmark-dev zlib1g-dev \
  nlohmann-json3-dev dataset-fashion-mnist

jobs=$(nproc 2>/dev/null || echo 2)
echo "==> configuring build/ (Release)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release \
  -DSCALIFY_BUILD_TESTS=OFF -DSCALIFY_BUILD_EXAMPLES=ON -DSCALIFY_BUILD_BENCHMARKS=ON
echo "==> building with $jobs jobs"
cmake --build build --parallel "$jobs"

echo
echo "==> build/examples/quickstart"
build/examples/quickstart

if [[ -x build/examples/train_fashion_mnist ]]; then
  echo
  echo "==> build/examples/train_fashion_mnist --precision fp8 --epochs 1 (about 20 s)"
  build/examples/train_fashion_mnist --precision fp8 --epochs 1
fi

if [[ -x build/benchmarks/bench_cast ]]; then
  echo
  echo "==> build/benchmarks/bench_cast (short run)"
  build/benchmarks/bench_cast --benchmark_min_time=0.1
fi

if [[ -x build/benchmarks/bench_matmul ]]; then
  echo
  echo "==> fp8 vs fp32 GEMM: build/benchmarks/bench_matmul (two shapes, 1 thread)"
  build/benchmarks/bench_matmul \
    --benchmark_filter='BM_Gemm/(eigen_f32|openblas_f32|scalify_f32|scalify_e4m3|scalify_e5m2)/(1024/1024/1024|1/4096/4096)/t:1' \
    --benchmark_min_time=0.2 --benchmark_out=build/matmul_demo.json --benchmark_out_format=json
  if command -v python3 > /dev/null; then
    # GFLOP/s and speed-up over Eigen float32 as a table (a PNG too if matplotlib is installed).
    python3 scripts/plot_matmul.py build/matmul_demo.json build/matmul_demo.png
  fi
fi
