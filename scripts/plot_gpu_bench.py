#!/usr/bin/env python3
"""Bar chart of docs/gpu/bench.md (written by scripts/gpu-bench.sh on the GPU machine).

Usage: python3 scripts/plot_gpu_bench.py docs/gpu/bench.md docs/gpu/bench.png  (needs matplotlib)
"""
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, dst):
    rows = [l.strip().strip("|").split("|") for l in open(src) if l.startswith("| ") and "---" not in l]
    rows = [[c.strip() for c in r] for r in rows if r[0].strip() != "model"]
    models = sorted({r[0] for r in rows}, key=[r[0] for r in rows].index)
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.8), dpi=120)
    for ax, m in zip(axes if len(models) > 1 else [axes], models):
        rs = [r for r in rows if r[0] == m]
        names = [r[1] for r in rs]
        tps = [float(r[2]) for r in rs]
        colors = ["#d62728" if n == "ar" else "#1f77b4" for n in names]
        ax.bar(names, tps, color=colors)
        for i, r in enumerate(rs):
            ax.text(i, tps[i], f"{float(r[5]):.1f} tok/fwd", ha="center", va="bottom", fontsize=7)
        ax.set_title(f"{m} (random bf16 weights, H100)")
        ax.set_ylabel("generated tokens / s")
        ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(dst)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
