"""Benchmark: the whole book run from a cold cache, wall time per notebook.

Runs every ``notebooks/[0-9]*.ipynb`` through papermill in order, as ``make notebooks`` does, with an empty
cache folder (``EMOLIB_CACHE``: converted weights, activation caches) and an empty results folder
(``EMOLIB_RESULTS_DIR``), so nothing computed by an earlier run is reused. Prints one line per notebook
(seconds, share of the total) and the total against the 30-minute budget; ``--results PATH`` appends the
table to a Markdown file with the machine it ran on. ``--warm`` keeps this process's cache between runs (to
see what caching saves); ``--quick`` runs the smoke-test mode; ``--store off`` also ignores the committed
result store (``data/store``, see :mod:`emolib.store`), so every scoring pass is recomputed (default ``on``:
what ``make book`` does, reading the committed passes). Nothing here asserts a time.

    python benchmarks/book_time.py [--model smollm2-135m-instruct] [--quick] [--only 01_emotion_vectors ...]
        [--device cpu] [--dtype float32] [--results benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

import common

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 30 * 60


def notebooks(only: list[str] | None = None) -> list[Path]:
    nbs = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    if only:
        unknown = set(only) - {p.stem for p in nbs}
        if unknown:
            raise SystemExit(f"unknown notebooks: {sorted(unknown)}; have {[p.stem for p in nbs]}")
        nbs = [p for p in nbs if p.stem in only]
    return nbs


def run_book(
    model: str,
    quick: bool,
    device: str,
    dtype: str,
    only: list[str] | None,
    cache: Path | None,
    store: str = "on",
) -> list[dict]:
    import papermill as pm

    work = Path(tempfile.mkdtemp(prefix="emolib-book-time-"))
    env = {
        "EMOLIB_RESULTS_DIR": str(work / "results"),
        "EMOLIB_CACHE": str(cache or work / "cache"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "EMOLIB_STORE": store,
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    rows = []
    try:
        for nb in notebooks(only):
            t0 = time.perf_counter()
            pm.execute_notebook(
                str(nb),
                str(work / nb.name),
                parameters={"model": model, "quick": quick, "seed": 0, "device": device, "dtype": dtype},
                kernel_name="python3",
                cwd=str(ROOT),
                progress_bar=False,
            )
            s = time.perf_counter() - t0
            rows.append({"notebook": nb.stem, "seconds": s})
            print(f"{nb.stem:<24} {s:8.1f} s", flush=True)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return rows


def table(rows: list[dict]) -> str:
    total = sum(r["seconds"] for r in rows)
    lines = ["| notebook | wall time (s) | share |", "|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['notebook']} | {r['seconds']:.0f} | {r['seconds'] / total:.0%} |")
    lines.append(f"| **total** | **{total:.0f}** ({total / 60:.1f} min; budget {BUDGET_S // 60} min) | |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--only", nargs="*", default=None, help="notebook stems to run (default: all)")
    ap.add_argument("--warm", action="store_true", help="use the user's cache instead of an empty one")
    ap.add_argument("--store", choices=("on", "off"), default="on", help="the committed result store")
    ap.add_argument("--results", default=None, help="append the table to this Markdown file")
    a = ap.parse_args()
    cache = Path(os.environ.get("EMOLIB_CACHE") or Path.home() / ".cache" / "emolib") if a.warm else None
    info = common.machine()
    rows = run_book(a.model, a.quick, a.device, a.dtype, a.only, cache, a.store)
    text = table(rows)
    print(text)
    if a.results:
        head = (
            f"\n## Book run, wall time per notebook ({dt.date.today()}; {a.model}, "
            f"{'quick' if a.quick else 'default'} mode, {a.device}/{a.dtype}, "
            f"{'warm' if a.warm else 'cold'} cache, result store {a.store})\n\nMachine: {info}\n\n"
        )
        with open(a.results, "a", encoding="utf-8") as f:
            f.write(head + text + "\n")


if __name__ == "__main__":
    main()
