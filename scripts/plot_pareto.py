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
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for s in r["settings"]:
        ar = s["block_size"] == 1
        ax.scatter(s["tokens_per_second"], 100 * s["validity"], s=90 if ar else 60,
                   marker="s" if ar else "o", color="#d62728" if ar else "#1f77b4", zorder=3)
        ax.annotate(s["name"], (s["tokens_per_second"], 100 * s["validity"]), textcoords="offset points",
                    xytext=(6, 4), fontsize=8)
    ax.set_xlabel("decoding speed (generated tokens / s, CPU)")
    ax.set_ylabel("syntactically valid completions (%)")
    ax.set_title(f"{r['model']}: speed vs validity ({r['settings'][0]['total']} held-out prompts)")
    ax.grid(alpha=0.3)
    ax.set_ylim(0, 100)
    ax.set_xlim(left=0)
    fig.tight_layout()
    fig.savefig(dst)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
