#!/usr/bin/env python3
"""Assemble the permissively licensed Python corpus used to train unmask's embedded model.

Sources (all permissive):
  * the CPython 3.11 standard library of the interpreter running this script (PSF-2.0)
  * pinned source distributions of well-known pure-Python projects from PyPI (see PACKAGES)

Every .py file is kept only if it decodes as UTF-8, parses with ast.parse (Python 3.11 grammar),
is not huge/generated-looking, and its content hash was not seen before (dedup).  Files are split
into train / held-out BY FILE, deterministically from the SHA-256 of their content
(held-out iff int(sha[:8], 16) % 100 < HELDOUT_PERCENT).

Outputs (git-ignored):  data/sdists/*.tar.gz|zip   downloaded sdists (cache)
                        data/corpus/train.jsonl     {"id","source","path","sha256","text"} per file
                        data/corpus/heldout.jsonl
                        data/corpus/manifest.json   sizes, licences, versions, filters
Usage: python3 scripts/build_corpus.py [--out data/corpus] [--jobs 4]
"""
import argparse, ast, concurrent.futures as cf, hashlib, io, json, os, subprocess, sys, sysconfig
import tarfile, warnings, zipfile
from pathlib import Path

# name, pinned version, licence (SPDX), as declared by the project
PACKAGES = [
    ("Django", "4.2.16", "BSD-3-Clause"),
    ("sympy", "1.12", "BSD-3-Clause"),
    ("networkx", "3.2.1", "BSD-3-Clause"),
    ("Pygments", "2.16.1", "BSD-2-Clause"),
    ("SQLAlchemy", "2.0.23", "MIT"),
    ("requests", "2.31.0", "Apache-2.0"),
    ("Flask", "3.0.0", "BSD-3-Clause"),
    ("Werkzeug", "3.0.1", "BSD-3-Clause"),
    ("Jinja2", "3.1.2", "BSD-3-Clause"),
    ("click", "8.1.7", "BSD-3-Clause"),
    ("attrs", "23.1.0", "MIT"),
    ("rich", "13.6.0", "MIT"),
    ("tornado", "6.3.3", "Apache-2.0"),
    ("Twisted", "23.10.0", "MIT"),
    ("pytest", "7.4.3", "MIT"),
    ("black", "23.11.0", "MIT"),
    ("httpx", "0.25.2", "BSD-3-Clause"),
    ("starlette", "0.33.0", "BSD-3-Clause"),
    ("fastapi", "0.104.1", "MIT"),
    ("pydantic", "2.5.2", "MIT"),
    ("Babel", "2.13.1", "BSD-3-Clause"),
    ("pyparsing", "3.1.1", "MIT"),
    ("more-itertools", "10.1.0", "MIT"),
    ("dask", "2023.12.0", "BSD-3-Clause"),
    ("xarray", "2023.12.0", "Apache-2.0"),
    ("Sphinx", "7.2.6", "BSD-2-Clause"),
    ("ipython", "8.18.1", "BSD-3-Clause"),
    ("urllib3", "2.1.0", "MIT"),
    ("celery", "5.3.6", "BSD-3-Clause"),
    ("Scrapy", "2.11.0", "BSD-3-Clause"),
    ("aiohttp", "3.9.1", "Apache-2.0"),
    ("toolz", "0.12.0", "BSD-3-Clause"),
    ("marshmallow", "3.20.1", "MIT"),
    ("sqlparse", "0.4.4", "BSD-3-Clause"),
    ("mypy", "1.7.1", "MIT"),
]

HELDOUT_PERCENT = 2
MAX_BYTES = 200_000        # skip huge files
MIN_BYTES = 64             # skip near-empty files
MAX_LINE = 1000            # skip files with very long lines (data blobs, minified, generated tables)
MAX_MEAN_LINE = 100        # skip files whose mean line length is this large


def download(name, ver, dest):
    # one folder per project, so that parallel downloads never see each other's files
    dest = dest / f"{name}-{ver}"
    dest.mkdir(parents=True, exist_ok=True)
    got = sorted(f for f in dest.iterdir() if f.name.endswith((".tar.gz", ".zip")))
    if len(got) == 1:
        return got[0]
    # `--no-binary NAME` forces the sdist of this project but lets pip use wheels for the build
    # backend it runs to read the metadata (with `:all:` it would compile setuptools/Cython from source).
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", name,
           "--disable-pip-version-check", "-q", "-d", str(dest), f"{name}=={ver}"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    got = sorted(f for f in dest.iterdir() if f.name.endswith((".tar.gz", ".zip")))
    if len(got) != 1:
        raise RuntimeError(f"{name}: expected one sdist, got {got}")
    return got[0]


def iter_archive(path):
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path) as z:
            for info in sorted(z.infolist(), key=lambda i: i.filename):
                if info.filename.endswith(".py") and not info.is_dir():
                    yield info.filename, z.read(info)
    else:
        with tarfile.open(path) as t:
            members = sorted((m for m in t.getmembers() if m.isfile() and m.name.endswith(".py")),
                             key=lambda m: m.name)
            for m in members:
                yield m.name, t.extractfile(m).read()


def iter_stdlib():
    root = Path(sysconfig.get_paths()["stdlib"])
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).as_posix()
        if rel.startswith(("site-packages/", "dist-packages/")) or "/site-packages/" in rel:
            continue
        yield "Lib/" + rel, p.read_bytes()


def keep(raw):
    """Return (text, None) or (None, reason)."""
    if len(raw) > MAX_BYTES:
        return None, "too_big"
    if len(raw) < MIN_BYTES:
        return None, "too_small"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not_utf8"
    text = text.replace("\r\n", "\n").lstrip("\ufeff")
    lines = text.split("\n")
    if max(len(l) for l in lines) > MAX_LINE or len(text) / max(1, len(lines)) > MAX_MEAN_LINE:
        return None, "long_lines"
    if "\x00" in text:
        return None, "nul"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None, "syntax"
    return text, None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="data/corpus")
    ap.add_argument("--sdists", default="data/sdists")
    ap.add_argument("--jobs", type=int, default=4)
    args = ap.parse_args()
    out, sd = Path(args.out), Path(args.sdists)
    out.mkdir(parents=True, exist_ok=True)

    with cf.ThreadPoolExecutor(args.jobs) as ex:
        futs = {ex.submit(download, n, v, sd): (n, v, l) for n, v, l in PACKAGES}
        archives = {}
        for f in cf.as_completed(futs):
            n, v, l = futs[f]
            try:
                archives[n] = f.result()
                print(f"downloaded {n}=={v}: {archives[n].name}", flush=True)
            except Exception as e:  # a failed download is recorded, not fatal
                err = getattr(e, "stderr", b"") or b""
                print(f"FAILED {n}=={v}: {e} {err.decode(errors='replace')[-300:]}", flush=True)

    sources = [("cpython-3.11-stdlib", sys.version.split()[0], "PSF-2.0", None)]
    sources += [(n, v, l, archives[n]) for n, v, l in PACKAGES if n in archives]

    seen = set()
    manifest = {"python": sys.version, "heldout_percent": HELDOUT_PERCENT,
                "filters": {"max_bytes": MAX_BYTES, "min_bytes": MIN_BYTES, "max_line": MAX_LINE,
                            "max_mean_line": MAX_MEAN_LINE, "must_parse": "ast.parse (3.11)",
                            "dedup": "sha256 of normalised text"},
                "sources": [], "totals": {}}
    fout = {"train": open(out / "train.jsonl", "w"), "heldout": open(out / "heldout.jsonl", "w")}
    tot = {"train": [0, 0], "heldout": [0, 0]}
    for name, ver, lic, arch in sources:
        it = iter_stdlib() if arch is None else iter_archive(arch)
        st = {"name": name, "version": ver, "license": lic,
              "archive": None if arch is None else arch.name,
              "archive_sha256": None if arch is None else hashlib.sha256(arch.read_bytes()).hexdigest(),
              "files_seen": 0, "files_kept": 0, "bytes_kept": 0, "dropped": {}}
        for path, raw in it:
            st["files_seen"] += 1
            text, why = keep(raw)
            if text is None:
                st["dropped"][why] = st["dropped"].get(why, 0) + 1
                continue
            h = hashlib.sha256(text.encode()).hexdigest()
            if h in seen:
                st["dropped"]["duplicate"] = st["dropped"].get("duplicate", 0) + 1
                continue
            seen.add(h)
            split = "heldout" if int(h[:8], 16) % 100 < HELDOUT_PERCENT else "train"
            rec = {"id": h[:16], "source": f"{name}=={ver}", "path": path, "sha256": h, "text": text}
            fout[split].write(json.dumps(rec, ensure_ascii=False) + "\n")
            n = len(text.encode())
            tot[split][0] += 1; tot[split][1] += n
            st["files_kept"] += 1; st["bytes_kept"] += n
        print(f"{name}=={ver} ({lic}): kept {st['files_kept']}/{st['files_seen']} files, "
              f"{st['bytes_kept']/1e6:.1f} MB, dropped {st['dropped']}", flush=True)
        manifest["sources"].append(st)
    for f in fout.values():
        f.close()
    manifest["totals"] = {k: {"files": v[0], "bytes": v[1]} for k, v in tot.items()}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print("totals:", json.dumps(manifest["totals"]))


if __name__ == "__main__":
    main()
