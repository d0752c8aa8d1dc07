import json, glob, statistics as st
rows = {}
for f in sorted(glob.glob("*_seed*.json")):
    if f.startswith("abl_") or f.startswith("adamw_"): continue
    d = json.load(open(f))
    rows.setdefault(d["precision"], {})[d["seed"]] = d
seeds = sorted({s for r in rows.values() for s in r})
print("| precision | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | mean - fp32 | final train loss (mean) | s/epoch (median) |")
print("|---|" + "---|" * (len(seeds) + 4))
base = st.mean(rows["fp32"][s]["test_accuracy"] for s in seeds if s in rows["fp32"])
for p in ["fp32", "fp16", "fp8", "fp16-naive"]:
    if p not in rows: continue
    r = rows[p]
    accs = [r[s]["test_accuracy"] for s in seeds if s in r]
    m = st.mean(accs)
    loss = st.mean(r[s]["epoch_results"][-1]["loss"] for s in seeds if s in r)
    secs = st.median(e["seconds"] for s in seeds if s in r for e in r[s]["epoch_results"])
    cells = [f"{r[s]['test_accuracy']:.4f}" if s in r else "-" for s in seeds]
    print(f"| {p} | " + " | ".join(cells) + f" | {m:.4f} | {100*(m-base):+.2f} pt | {loss:.4f} | {secs:.1f} |")
# per-seed differences
print()
for p in ["fp16", "fp8", "fp16-naive"]:
    if p not in rows: continue
    diffs = [100*(rows[p][s]["test_accuracy"] - rows["fp32"][s]["test_accuracy"]) for s in seeds if s in rows[p] and s in rows["fp32"]]
    print(p, "minus fp32 per seed (points):", " ".join(f"{d:+.2f}" for d in diffs))

# Ablation: matmul formats x optimizer storage
abl = {}
for f in sorted(glob.glob("abl_*_seed*.json")):
    d = json.load(open(f))
    abl.setdefault((d["precision"], d["state"]), {})[d["seed"]] = d["test_accuracy"]
if abl:
    print()
    print("| matmuls | optimizer state | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | mean - fp32 |")
    print("|---|---|" + "---|" * (len(seeds) + 2))
    for (p, stt), r in sorted(abl.items()):
        cells = [f"{r[s]:.4f}" if s in r else "-" for s in seeds]
        m = st.mean(r.values())
        b = st.mean(rows["fp32"][s]["test_accuracy"] for s in r)
        print(f"| {p} | {stt} | " + " | ".join(cells) + f" | {m:.4f} | {100*(m-b):+.2f} pt (same seeds) |")

ad = {}
for f in sorted(glob.glob("adamw_*_seed*.json")):
    d = json.load(open(f))
    ad.setdefault(d["precision"], {})[d["seed"]] = d["test_accuracy"]
if ad:
    print()
    print("| AdamW, matmuls | " + " | ".join(f"seed {s}" for s in seeds[:2]) + " | mean |")
    print("|---|" + "---|" * 3)
    for p, r in sorted(ad.items(), key=lambda kv: kv[0] != "fp32"):
        print(f"| {p} | " + " | ".join(f"{r[s]:.4f}" if s in r else "-" for s in seeds[:2]) + f" | {st.mean(r.values()):.4f} |")
