#!/usr/bin/env python3
"""Parallelism–quality plot (Seed Diffusion's Pareto figure at unmask's scale) from `unmask eval --json`.

Usage: python3 scripts/plot_pareto.py docs/eval/embedded.json docs/pareto.png
Needs matplotlib (`pip install matplotlib`); an offline docs step, not part of the app.

x: tokens committed per forward pass (the parallelism a setting buys, independent of the machine);
y: syntactically valid completions. Filled markers: prompts ending in a newline (as people type
them), X = the same without prompt healing; hollow: the prompts stripped of the newline. Dashed lines: the issue's target region, at least
2.5 tokens per forward keeping 90% of the autoregressive validity on newline-ended prompts.
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, dst):
    r = json.load(open(src))
    rows = r["settings"]
    forms = sorted({s.get("form") or "stripped" for s in rows}, key=lambda f: f != "newline")
    fig, ax = plt.subplots(figsize=(8.5, 4.8), dpi=120)
    ar = next((s for s in rows if s["block_size"] == 1 and (s.get("form") or "") == forms[0]), None)
    if ar:
        ax.axvline(2.5, color="grey", ls="--", lw=0.8)
        ax.axhline(0.9 * 100 * ar["validity"], color="grey", ls="--", lw=0.8)
        ax.text(2.5, 98, " 2.5 tokens/forward", fontsize=7, color="grey", va="top")
        ax.text(0.05, 0.9 * 100 * ar["validity"] + 1, "90% of AR validity", fontsize=7, color="grey")
    names = []
    for s in rows:
        if s["name"] not in names:
            names.append(s["name"])
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for s in rows:
        i = names.index(s["name"])
        form = s.get("form") or "stripped"
        filled = form == "newline"
        c = colors[i % len(colors)]
        marker = "s" if s["block_size"] == 1 else "o"
        if filled and not s.get("heal", True):
            marker = "X"  # newline-ended prompts without healing
        ax.scatter(s["tokens_per_forward"], 100 * s["validity"], s=70, marker=marker,
                   facecolors=c if filled else "none", edgecolors=c, zorder=3,
                   label=f"{s['name']} · {form}" + ("" if s.get("heal", True) else " · no heal"))
        ax.annotate(str(i + 1), (s["tokens_per_forward"], 100 * s["validity"]),
                    textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel("tokens committed per forward pass")
    ax.set_ylabel("syntactically valid completions (%)")
    ax.set_title(f"{r['model']}: parallelism vs validity ({rows[0]['total']} held-out prompts)")
    ax.grid(alpha=0.3)
    ax.set_ylim(0, 100)
    ax.set_xlim(left=0)
    ax.legend(fontsize=6.5, loc="lower left", bbox_to_anchor=(1.01, 0.0), frameon=False)
    fig.tight_layout()
    fig.savefig(dst)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
