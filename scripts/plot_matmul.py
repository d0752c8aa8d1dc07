#!/usr/bin/env python3
"""Plot bench_matmul results: GFLOP/s per shape, one bar per implementation.

    build/benchmarks/bench_matmul --benchmark_format=json > matmul.json
    python3 scripts/plot_matmul.py matmul.json matmul.png [--threads 1]

Also prints a Markdown table (GFLOP/s and the x_eigen ratio) to stdout, which
works without matplotlib; the PNG needs matplotlib (pip install matplotlib,
or Debian: python3-matplotlib). Not a build dependency.
"""
import argparse
import json
import re
import sys

NAME = re.compile(r"^BM_Gemm/(?P<impl>[^/]+)/(?P<m>\d+)/(?P<n>\d+)/(?P<k>\d+)/t:(?P<t>\d+)")
ORDER = ["eigen_f32", "openblas_f32", "scalify_f32", "scalify_f16", "scalify_bf16", "scalify_e5m2", "scalify_e4m3",
         "scalify_f32_packed", "scalify_e4m3_packed"]


def load(path):
    with open(path) as f:
        data = json.load(f)
    rows = {}
    for b in data.get("benchmarks", []):
        if b.get("run_type") == "aggregate":
            continue
        m = NAME.match(b["name"])
        if not m:
            continue
        shape = (int(m["m"]), int(m["n"]), int(m["k"]))
        rows[(m["impl"], shape, int(m["t"]))] = (b.get("GFLOPS", 0.0), b.get("x_eigen", 0.0))
    return data.get("context", {}), rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("json")
    p.add_argument("png", nargs="?", default="matmul.png")
    p.add_argument("--threads", type=int, default=None, help="plot only this thread count")
    args = p.parse_args()
    context, rows = load(args.json)
    impls = [i for i in ORDER if any(k[0] == i for k in rows)]
    shapes = sorted({k[1] for k in rows}, key=lambda s: (s[0] == 1, s[0] * s[1] * s[2]))
    threads = sorted({k[2] for k in rows}) if args.threads is None else [args.threads]

    for t in threads:
        print(f"\n{t} thread(s), GFLOP/s (x Eigen f32):\n")
        print("| M x N x K | " + " | ".join(impls) + " |")
        print("|---|" + "---|" * len(impls))
        for s in shapes:
            cells = []
            for i in impls:
                v = rows.get((i, s, t))
                cells.append("" if v is None else f"{v[0]:.1f} ({v[1]:.2f}x)")
            print(f"| {s[0]}x{s[1]}x{s[2]} | " + " | ".join(cells) + " |")

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("\nmatplotlib is missing: no PNG (pip install matplotlib, or apt install python3-matplotlib)",
              file=sys.stderr)
        return 0
    fig, axes = plt.subplots(len(threads), 1, figsize=(max(8, 1.6 * len(shapes)), 4 * len(threads)), squeeze=False)
    width = 0.8 / max(1, len(impls))
    for ax, t in zip(axes[:, 0], threads):
        for j, i in enumerate(impls):
            xs = [x + j * width for x in range(len(shapes))]
            ys = [rows.get((i, s, t), (0.0, 0.0))[0] for s in shapes]
            ax.bar(xs, ys, width, label=i)
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(shapes))])
        ax.set_xticklabels([f"{s[0]}x{s[1]}x{s[2]}" for s in shapes], rotation=20)
        ax.set_ylabel("GFLOP/s")
        ax.set_title(f"bench_matmul, {t} thread(s), path {context.get('scalify_cpu_path', '?')}")
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, not over them
    fig.tight_layout()
    fig.savefig(args.png, dpi=120)
    print(f"\nwrote {args.png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
