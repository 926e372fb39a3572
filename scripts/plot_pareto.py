#!/usr/bin/env python3
"""Speed–quality plot (Seed Diffusion's Pareto figure at unmask's scale) from `unmask eval --json`.

Usage: python3 scripts/plot_pareto.py docs/eval/embedded.json docs/pareto.png
Needs matplotlib (`pip install matplotlib`); an offline docs step, not part of the app.
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, dst):
    r = json.load(open(src))
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=120)
    ar = next((s for s in r["settings"] if s["block_size"] == 1), None)
    if ar:
        # The target region: at least 80% of AR validity at 2x AR speed or more.
        ax.axvline(2 * ar["tokens_per_second"], color="grey", ls="--", lw=0.8)
        ax.axhline(0.8 * 100 * ar["validity"], color="grey", ls="--", lw=0.8)
        ax.text(2 * ar["tokens_per_second"], 97, " 2x AR speed", fontsize=7, color="grey", va="top")
        ax.text(1, 0.8 * 100 * ar["validity"] + 1, "80% of AR validity", fontsize=7, color="grey")
    for i, s in enumerate(r["settings"], 1):
        is_ar = s["block_size"] == 1
        ax.scatter(s["tokens_per_second"], 100 * s["validity"], s=90 if is_ar else 60,
                   marker="s" if is_ar else "o", color="#d62728" if is_ar else "#1f77b4", zorder=3,
                   label=f"{i}. {s['name']} ({s['tokens_per_forward']:.2f} tok/fwd)")
        ax.annotate(str(i), (s["tokens_per_second"], 100 * s["validity"]), textcoords="offset points",
                    xytext=(5, 5), fontsize=8)
    ax.set_xlabel("decoding speed (generated tokens / s, CPU)")
    ax.set_ylabel("syntactically valid completions (%)")
    ax.set_title(f"{r['model']}: speed vs validity ({r['settings'][0]['total']} held-out prompts)")
    ax.grid(alpha=0.3)
    ax.set_ylim(0, 100)
    ax.set_xlim(left=0)
    ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(1.01, 0.0), frameon=False)
    fig.tight_layout()
    fig.savefig(dst)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
