"""Paired per-seed comparison of the Fashion-MNIST runs in this directory.

Each file is the --json output of examples/train_fashion_mnist (784-512-512-10,
SGD momentum 0.9, lr 0.05, batch 128, 5 epochs, --threads 1). Files are named
<config>_seed<N>.json; fp32 is the baseline. For every other config, prints the
mean over seeds of (config - fp32) in test-accuracy points, with the standard
deviation and the standard error of that mean, and the same for the final
training loss (in thousandths).

    python3 summarize.py
"""
import glob
import json
import math
import re
from collections import defaultdict

runs = defaultdict(dict)  # config -> seed -> result
for path in glob.glob("*_seed*.json"):
    config, seed = re.fullmatch(r"(.+)_seed(\d+)\.json", path).groups()
    runs[config][int(seed)] = json.load(open(path))


def mean_sd_se(xs):
    n = len(xs)
    m = sum(xs) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else float("nan")
    return m, sd, sd / math.sqrt(n)


base = runs["fp32"]
print("| config | seeds | mean test accuracy | mean - fp32 (points) | sd | standard error | final loss - fp32 (x1e-3) |")
print("|---|---|---|---|---|---|---|")
m, _, _ = mean_sd_se([r["test_accuracy"] for r in base.values()])
print(f"| fp32 | {len(base)} | {m:.4f} | | | | |")
for config in sorted(c for c in runs if c != "fp32"):
    seeds = sorted(set(runs[config]) & set(base))
    acc = [100 * (runs[config][s]["test_accuracy"] - base[s]["test_accuracy"]) for s in seeds]
    loss = [1000 * (runs[config][s]["epoch_results"][-1]["loss"] - base[s]["epoch_results"][-1]["loss"]) for s in seeds]
    a_m, a_sd, a_se = mean_sd_se(acc)
    l_m, _, l_se = mean_sd_se(loss)
    mean_acc = sum(runs[config][s]["test_accuracy"] for s in seeds) / len(seeds)
    print(f"| {config} | {len(seeds)} | {mean_acc:.4f} | {a_m:+.2f} | {a_sd:.2f} | {a_se:.2f} | {l_m:+.2f} ± {l_se:.2f} |")
