#!/usr/bin/env python3
"""Tables and a plot of train_char_gpt runs (their --json files).

    build/examples/train_char_gpt --precision fp8 --seed 1 --json runs/fp8_1.json
    ...
    python3 scripts/plot_gpt.py runs/*.json --png docs/gpt_val_loss.png

Prints Markdown: the final validation loss per precision and seed with the
mean over seeds and its gap to fp32, tokens per second and the time ratio to
fp32. With --png, plots the validation loss against the step, one line per
precision (the mean over its seeds; one per seed for a precision with a
diverged run, each up to its divergence). The PNG needs matplotlib (Debian:
python3-matplotlib); the tables do not.
"""
import argparse
import json
import statistics
import sys

ORDER = ["fp32", "fp16", "fp8", "fp8-naive"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="JSON files written by train_char_gpt --json")
    parser.add_argument("--png", help="write the plot of validation loss vs step here")
    args = parser.parse_args()

    runs = {}
    for path in args.runs:
        with open(path) as f:
            r = json.load(f)
        runs.setdefault(r["precision"], []).append(r)
    precisions = [p for p in ORDER if p in runs] + sorted(p for p in runs if p not in ORDER)
    seeds = sorted({r["seed"] for rs in runs.values() for r in rs})

    def finite(x):
        return x is not None and x == x and abs(x) != float("inf")

    def mean(p, key):
        """Mean over the seeds of precision p; None if a run diverged (non-finite or null)."""
        xs = [r[key] for r in runs[p]]
        return statistics.mean(xs) if all(finite(x) for x in xs) else None

    base_loss = mean("fp32", "val_loss") if "fp32" in runs else None
    base_time = mean("fp32", "seconds") if "fp32" in runs else None
    head = "| precision | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | vs fp32 | tokens/s | time vs fp32 |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for p in precisions:
        by_seed = {r["seed"]: r for r in runs[p]}
        def cell(s):
            if s not in by_seed:
                return ""
            v = by_seed[s]["val_loss"]
            return f"{v:.4f}" if finite(v) else "diverged"

        cells = [cell(s) for s in seeds]
        loss = mean(p, "val_loss")
        gap = f"{100 * (loss / base_loss - 1):+.2f} %" if base_loss and loss is not None else ""
        ratio = f"{mean(p, 'seconds') / base_time:.2f}x" if base_time else ""
        loss_text = f"{loss:.4f}" if loss is not None else "diverged"
        print(f"| {p} | " + " | ".join(cells) + f" | {loss_text} | {gap} | {mean(p, 'tokens_per_second'):.0f} | {ratio} |")

    if args.png:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            sys.exit("plot_gpt.py: --png needs matplotlib (Debian: python3-matplotlib)")
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for p in precisions:
            steps = [e["step"] for e in runs[p][0]["evals"]]
            curves = [[e["val_loss"] for e in r["evals"]] for r in runs[p]]
            if all(finite(x) for c in curves for x in c):
                mean_curve = [statistics.mean(c[i] for c in curves) for i in range(len(steps))]
                ax.plot(steps, mean_curve, marker="o", markersize=3, label=f"{p} (mean of {len(curves)} seeds)")
            else:  # a diverged run: each seed, up to where it stops being finite
                for r, c in zip(runs[p], curves):
                    ys = [x if finite(x) else float("nan") for x in c]
                    end = "" if all(finite(x) for x in c) else ", diverged"
                    ax.plot(steps, ys, marker="x", markersize=3, linewidth=1, label=f"{p} seed {r['seed']}{end}")
        ax.set_xlabel("step")
        ax.set_ylabel("validation loss (nats / character)")
        r0 = runs[precisions[0]][0]
        ax.set_title(f"train_char_gpt: {r0['layers']} layers, dim {r0['dim']}, batch {r0['batch']} x {r0['seq']}")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.png, dpi=120)


if __name__ == "__main__":
    main()
