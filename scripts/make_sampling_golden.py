#!/usr/bin/env python3
"""Golden filtered distributions from the reference samplers' own functions.

For a few seeded logits rows and sampler settings, this records the probability vector each
reference computes from one position's logits before it draws a token or ranks positions:

* Dream  (NVlabs/Fast-dLLM ``dream/model/generation_utils.py``, ``sample_tokens``),
* SDAR   (JetAstra/SDAR ``generate.py``, ``sample_with_temperature_topk_topp``),
* LLaDA  (ML-GSAI/LLaDA ``generate.py``, ``generate`` with ``remasking='low_confidence'``,
  driven by a stand-in model that returns the row as the logits of its one masked position).

The reference functions run unchanged: the vector is taken from the softmax they call (the
module's ``torch`` / ``F`` is wrapped to keep a copy of the last softmax output). With
temperature 0 the greedy token is recorded too. Output: ``tests/fixtures/sampling_golden.json``.

The reference code is not part of this repository; ``--refcode DIR`` (outside the repo) holds

    dream/generation_utils.py   NVlabs/Fast-dLLM dream/model/generation_utils.py  (24cc59e75f20)
    sdar/generate.py            JetAstra/SDAR generate.py                         (c2041a833333)
    llada/generate.py           ML-GSAI/LLaDA generate.py                         (b7e6c3565f19)

Run:  python scripts/make_sampling_golden.py --refcode /tmp/refcode
(torch and transformers as in scripts/requirements-fixtures.txt; no GPU needed).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import types
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "sampling_golden.json"
VOCAB = 32
TIE_ROW = 3

# (temperature, top_k, top_p); 0 / 1.0 mean "off" as in unmask's SamplerParams.
SETTINGS = [
    (0.0, 0, 1.0),
    (1.0, 0, 0.9),
    (0.7, 5, 1.0),
    (0.7, 5, 0.9),
    (1.5, 10, 0.8),
    (0.5, 3, 0.95),
    (0.0, 4, 0.7),
]


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


class Capture:
    """Stands in for a module (``torch`` or ``torch.nn.functional``): forwards everything, and
    keeps the output of the last ``softmax`` call."""

    def __init__(self, real):
        self._real = real
        self.last = None

    def __getattr__(self, name):
        return getattr(self._real, name)

    def softmax(self, *args, **kwargs):
        out = self._real.softmax(*args, **kwargs)
        self.last = out.detach().clone()
        return out


def rows() -> list[list[float]]:
    g = torch.Generator().manual_seed(1234)
    out = []
    out.append((torch.randn(VOCAB, generator=g) * 2.0).tolist())
    peaked = torch.randn(VOCAB, generator=g)
    peaked[7] += 6.0
    out.append(peaked.tolist())
    out.append((torch.randn(VOCAB, generator=g) * 0.3).tolist())
    # Ties at the top-k boundaries: values on a coarse grid.
    out.append(((torch.randn(VOCAB, generator=g) * 2.0) * 2).round().div(2).tolist())
    # Exactly representable in f32, so Rust reads the same numbers.
    return [[float(torch.tensor(x, dtype=torch.float32)) for x in r] for r in out]


def dream_probs(gu, capture, logits, t, k, p):
    capture.last = None
    gu.sample_tokens(
        logits.unsqueeze(0),
        temperature=t,
        top_p=p if p < 1.0 else None,
        top_k=k if k > 0 else None,
    )
    return capture.last[0]


def sdar_probs(sg, capture, logits, t, k, p):
    capture.last = None
    sg.sample_with_temperature_topk_topp(logits.view(1, 1, -1), temperature=t, top_k=k, top_p=p)
    return capture.last[0]


class StandIn:
    """A 'model' whose logits at the masked position are the row (and zeros at the prompt)."""

    device = torch.device("cpu")

    def __init__(self, row):
        self.row = row

    def __call__(self, x, **_kwargs):
        logits = torch.zeros(1, x.shape[1], VOCAB)
        logits[0, -1] = self.row
        return types.SimpleNamespace(logits=logits)


def llada_probs(lg, capture, logits, t):
    capture.last = None
    x = lg.generate(StandIn(logits), torch.tensor([[0]]), steps=1, gen_length=1, block_length=1,
                    temperature=t, remasking="low_confidence", mask_id=VOCAB - 1)
    return capture.last[0, -1], int(x[0, -1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--refcode", type=Path, default=Path("/tmp/refcode"))
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    gu = load(args.refcode / "dream" / "generation_utils.py", "ref_dream_generation_utils")
    sg = load(args.refcode / "sdar" / "generate.py", "ref_sdar_generate")
    lg = load(args.refcode / "llada" / "generate.py", "ref_llada_generate")
    dream_cap, sdar_cap, llada_cap = Capture(torch), Capture(sg.F), Capture(lg.F)
    gu.torch, sg.F, lg.F = dream_cap, sdar_cap, llada_cap

    torch.manual_seed(0)
    data = rows()
    cases = []
    for i, row in enumerate(data):
        logits = torch.tensor(row, dtype=torch.float32)
        for t, k, p in SETTINGS:
            # torch.sort orders equal values arbitrarily (it is not stable), so where top-p cuts
            # inside a group of tied logits the kept set is the sort's accident: the tie row
            # checks top-k's ties only.
            if i == TIE_ROW and p < 1.0:
                continue
            probs = dream_probs(gu, dream_cap, logits, t, k, p)
            case = {"reference": "dream", "row": i, "temperature": t, "top_k": k, "top_p": p,
                    "probs": probs.tolist()}
            if t == 0.0:
                conf, x0 = gu.sample_tokens(logits.unsqueeze(0), temperature=0.0,
                                            top_p=p if p < 1.0 else None,
                                            top_k=k if k > 0 else None)
                case["token"], case["confidence"] = int(x0[0]), float(conf[0])
            cases.append(case)
            # SDAR divides by the temperature unconditionally: 0 is not a setting it has.
            if t > 0.0:
                cases.append({"reference": "sdar", "row": i, "temperature": t, "top_k": k,
                              "top_p": p, "probs": sdar_probs(sg, sdar_cap, logits, t, k, p).tolist()})
        # LLaDA filters nothing; its confidence is the plain softmax whatever the temperature.
        for t in (0.0, 0.8):
            probs, tok = llada_probs(lg, llada_cap, logits, t)
            case = {"reference": "llada", "row": i, "temperature": t, "top_k": 0, "top_p": 1.0,
                    "probs": probs.tolist()}
            if t == 0.0:
                case["token"] = tok
            cases.append(case)
    doc = {
        "note": "written by scripts/make_sampling_golden.py; probability vectors the reference "
                "samplers compute from one position's logits (rows) before drawing or ranking",
        "torch": torch.__version__,
        "rows": data,
        "cases": cases,
    }
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {len(cases)} cases to {args.out}")


if __name__ == "__main__":
    main()
