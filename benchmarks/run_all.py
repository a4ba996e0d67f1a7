"""``make bench``: every CPU benchmark in one run, side by side, written to ``benchmarks/RESULTS.md``.

1. the machine's matmul peak (fp32 and bf16, GEMMs shaped like the model's), measured at the start and at
   the end of the run (the higher of the two is the denominator of every fraction of peak);
2. extraction: emolib vs the per-text ``output_hidden_states`` loop, every layer and one layer
   (:mod:`extract`), and emolib in bf16 against fp32 (speed, cosine of the per-story means, held-out top-1);
3. generation: ``transformers.generate`` vs :func:`emolib.generate.sample_batch` at two batch sizes, the same
   loop through the TransformerBridge's attention, and one prompt at a time (:mod:`generate`).

Each method runs in its own child process (peak memory is its own; ``--in-process`` skips that, e.g. for
the smoke test). Nothing here asserts a speed. A full run prints a table and inserts it at the top of the
runs in RESULTS.md; ``--quick`` (seconds, tiny sizes) writes only where ``--results`` says.

    python benchmarks/run_all.py [--model smollm2-135m-instruct] [--quick] [--results PATH] [--note TEXT]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import common
import extract
import generate
import peak

HERE = Path(__file__).resolve().parent
MARKER = "<!-- runs: newest first, inserted by benchmarks/run_all.py -->"
FULL = {
    "n_emotions": 8,
    "per_emotion": 6,
    "n_prompts": 128,
    "n_single": 8,
    "max_new_tokens": 128,
    "gen_batches": "64,128",
    "bf16_budget": 300.0,
    "peak_seconds": 0.3,
    "peak_tokens": 512,
    "peak_square": 1024,
}
QUICK = {
    "n_emotions": 2,
    "per_emotion": 2,
    "n_prompts": 4,
    "n_single": 1,
    "max_new_tokens": 4,
    "gen_batches": "2,4",
    "bf16_budget": 5.0,
    "peak_seconds": 0.02,
    "peak_tokens": 64,
    "peak_square": 64,
}


def model_shape(model: str) -> tuple[int, int]:
    """(d_model, d_ff) from the model's config, without loading its weights."""
    from transformers import AutoConfig

    from emolib.models import packaged_dir, resolve_spec

    kind, where = resolve_spec(model)
    folder = packaged_dir(str(where)) if kind == "packaged" else where
    cfg = AutoConfig.from_pretrained(folder)
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return int(cfg.hidden_size), int(getattr(cfg, "intermediate_size", 4 * cfg.hidden_size))


def _step(script: str, measure: Any, method: str, opts: dict[str, Any], iso: bool) -> dict[str, Any]:
    """One method; its result is printed at once (a long run shows progress and loses nothing if cut)."""
    r = common.run(HERE / script, measure, method, opts, iso)
    print(json.dumps(r), flush=True)
    return r


def run_all(a: argparse.Namespace) -> dict[str, Any]:
    sizes = {
        **(QUICK if a.quick else FULL),
        **{k: v for k, v in vars(a).items() if k in FULL and v is not None},
    }
    iso = not a.in_process
    info = common.machine()
    d_model, d_ff = model_shape(a.model)
    popts = {
        "d_model": d_model,
        "d_ff": d_ff,
        "tokens": sizes["peak_tokens"],
        "seconds": sizes["peak_seconds"],
        "square": sizes["peak_square"],
    }
    peaks = [_step("peak.py", peak.measure, "peak", popts, iso)]
    tmp = Path(tempfile.mkdtemp(prefix="emolib-bench-"))
    eopts = {"model": a.model, "n_emotions": sizes["n_emotions"], "per_emotion": sizes["per_emotion"]}
    rows = []
    for method in extract.METHODS:
        r = _step("extract.py", extract.measure, method, {**eopts, "save": str(tmp / f"{method}.pt")}, iso)
        rows.append({"bench": "extract", **r})
    bf16 = None
    if not a.skip_bf16:
        bo = {**eopts, "dtype": "bfloat16", "budget_s": sizes["bf16_budget"], "save": str(tmp / "bf16.pt")}
        r = _step("extract.py", extract.measure, "emolib_one", bo, iso)
        rows.append({"bench": "extract", **r})
        bf16 = {"run": r, "vs_fp32": extract.agreement(tmp / "emolib_one.pt", tmp / "bf16.pt")}
        items = extract.labelled_texts(sizes["n_emotions"], sizes["per_emotion"])
        if r["texts"] == len(items) and len({it["label"] for it in items}) > 1:
            bf16["top1_fp32"] = extract.heldout_top1(tmp / "emolib_one.pt", items)
            bf16["top1_bf16"] = extract.heldout_top1(tmp / "bf16.pt", items)
            bf16["n_classes"] = len({it["label"] for it in items})
    same = {
        "all": extract.agreement(tmp / "emolib_all.pt", tmp / "plain_all.pt"),
        "one": extract.agreement(tmp / "emolib_one.pt", tmp / "plain_one.pt"),
    }
    gopts = {"model": a.model, **{k: sizes[k] for k in ("n_prompts", "n_single", "max_new_tokens")}}
    batches = [int(x) for x in str(sizes["gen_batches"]).split(",")]
    fp32, bf16_ = "float32", "bfloat16"
    plan = [("hf_generate", batches[0], fp32)] + [("sample_batch", b, fp32) for b in batches]
    plan += [("sample_batch", b, bf16_) for b in batches]  # the corpus CLI's --dtype bfloat16
    plan += [("sample_batch_bridge", batches[-1], fp32), ("single", 1, fp32)]
    for method, b, dt in plan:
        r = _step("generate.py", generate.measure, method, {**gopts, "batch": b, "dtype": dt}, iso)
        rows.append({"bench": "generate", **r})
    peaks.append(_step("peak.py", peak.measure, "peak", popts, iso))
    best = {dt: max(p["peak_gflops"][dt] for p in peaks) for dt in peak.DTYPES}
    for r in rows:
        r["pct_peak"] = 100 * r["gflops"] / best[r["dtype"]]
    info["load_average_end"] = round(os.getloadavg()[0], 2)
    return {
        "machine": info,
        "sizes": sizes,
        "peaks": peaks,
        "peak": best,
        "rows": rows,
        "same": same,
        "bf16": bf16,
        "model": a.model,
        "quick": a.quick,
        "note": a.note,
    }


def _by(rows: list[dict[str, Any]], method: str, dtype: str = "float32") -> dict[str, Any]:
    return next(r for r in rows if r["method"] == method and r["dtype"] == dtype)


def report(res: dict[str, Any]) -> str:
    """The run as Markdown: machine, peak, one table of every method, ratios, bf16 agreement."""
    mi, rows, pk = res["machine"], res["rows"], res["peak"]
    mode = "quick smoke run" if res["quick"] else "full run"
    out = [
        f"### {mi['date']} · {mi['cpu']} · {res['model']} · {mode}",
        "",
        f"Machine: {mi['cpu']}, {mi['usable_cores']} usable of {mi['logical_cores']} logical cores, "
        f"{mi['memory_gb']} GB; torch {mi['torch']} ({mi['torch_threads']} threads, CPU capability "
        f"{mi['cpu_capability']}); Python {mi['python']}. Load average {mi['load_average_1min']} at the start, "
        f"{mi['load_average_end']} at the end.",
    ]
    if res["note"]:
        out += ["", f"**{res['note']}**"]
    p0, p1 = res["peaks"][0]["peak_gflops"], res["peaks"][-1]["peak_gflops"]
    out += [
        "",
        f"Matmul peak (best GEMM shaped like the model's; start / end of the run): fp32 {p0['float32']:.1f} / "
        f"{p1['float32']:.1f} GFLOP/s, bf16 {p0['bfloat16']:.1f} / {p1['bfloat16']:.1f} GFLOP/s; "
        f"bf16 / fp32 = {pk['bfloat16'] / pk['float32']:.2f}x. Fractions below use the higher of the two.",
        "",
        "| benchmark | method | dtype | layers / batch | texts or prompts | tokens | tok/s | GFLOP/s | % of peak "
        "| peak RSS (MB) |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        where = r.get("layers") if r["bench"] == "extract" else f"batch {r['batch']}"
        n = r.get("texts", r.get("prompts"))
        out.append(
            f"| {r['bench']} | {r['method']} | {r['dtype']} | {where} | {n} | {r['tokens']} | {r['tok_per_s']:.1f} "
            f"| {r['gflops']:.2f} | {r['pct_peak']:.1f}% | {r['peak_rss_mb']:.0f} |"
        )
    e_all, p_all = _by(rows, "emolib_all"), _by(rows, "plain_all")
    e_one, p_one = _by(rows, "emolib_one"), _by(rows, "plain_one")
    gen = [r for r in rows if r["bench"] == "generate"]
    hf = next(r for r in gen if r["method"].startswith("hf_generate"))
    single = next(r for r in gen if r["method"] == "single")
    out += [
        "",
        f"- Extraction, every layer: emolib / per-text loop = {e_all['tok_per_s'] / p_all['tok_per_s']:.2f}x "
        f"(means agree: cosine ≥ {res['same']['all']['cos_min']:.6f}, relative difference ≤ "
        f"{res['same']['all']['rel_max']:.1e}).",
        f"- Extraction, layer {e_one['layers']} only: emolib / loop stopped at that layer = "
        f"{e_one['tok_per_s'] / p_one['tok_per_s']:.2f}x (cosine ≥ {res['same']['one']['cos_min']:.6f}). "
        f"Stopping early, emolib alone: {e_one['tok_per_s'] / e_all['tok_per_s']:.2f}x the every-layer rate.",
    ]
    for r in gen:
        if r is not hf:
            out.append(
                f"- Generation, {r['method']} ({r['dtype']}) / hf_generate_b{hf['batch']} ({hf['dtype']}): "
                f"{r['tok_per_s'] / hf['tok_per_s']:.2f}x."
            )
    plain = {
        r["batch"]: r for r in gen if r["method"] == f"sample_batch_b{r['batch']}" and r["dtype"] == "float32"
    }
    for r in gen:
        if r["method"].startswith("sample_batch_bridge") and r["batch"] in plain:
            out.append(
                f"- Generation at batch {r['batch']}, plain transformers model / through the TransformerBridge: "
                f"{plain[r['batch']]['tok_per_s'] / r['tok_per_s']:.2f}x."
            )
    best_sb = max((r for r in gen if r["method"].startswith("sample_batch")), key=lambda r: r["tok_per_s"])
    out.append(
        f"- Generation, batched ({best_sb['method']}, {best_sb['dtype']}) / one prompt at a time (fp32): "
        f"{best_sb['tok_per_s'] / single['tok_per_s']:.2f}x."
    )
    ratio = best_sb["tok_per_s"] / hf["tok_per_s"]
    out.append(
        f"- The corpus sampler at its best setting here ({best_sb['method']}, {best_sb['dtype']}) / "
        f"transformers' generate (today's path before issue #8): {ratio:.2f}x; the issue's goal is 3x "
        f"({'met' if ratio >= 3 else 'not met'})."
    )
    b = res["bf16"]
    if b:
        r, ag = b["run"], b["vs_fp32"]
        line = (
            f"- bf16 extraction (layer {r['layers']}, {r['texts']} of {e_one['texts']} texts within its "
            f"{res['sizes']['bf16_budget']:.0f} s budget): {r['tok_per_s']:.1f} tok/s = "
            f"{r['tok_per_s'] / e_one['tok_per_s']:.2f}x fp32; per-story means vs fp32: cosine median "
            f"{ag['cos_median']:.5f}, min {ag['cos_min']:.5f} (n = {ag['n']})."
        )
        if "top1_bf16" in b:
            line += (
                f" Held-out top-1 on this {b['n_classes']}-emotion subset (5 topic folds): fp32 "
                f"{b['top1_fp32']:.3f}, bf16 {b['top1_bf16']:.3f}."
            )
        else:
            line += " Held-out top-1 not compared: bf16 did not finish the labelled subset."
        verdict = (
            "holds" if r["tok_per_s"] >= e_one["tok_per_s"] and ag["cos_min"] >= 0.999 else "does not hold"
        )
        line += f" The bf16 path {verdict} on this machine" + (
            "; fp32 stays the default." if verdict == "does not hold" else "."
        )
        out.append(line)
    s = res["sizes"]
    out += [
        "",
        f"Sizes: {s['n_emotions']} emotions x {s['per_emotion']} stories for extraction; {s['n_prompts']} corpus "
        f"prompts, {s['max_new_tokens']} new tokens max, {s['n_single']} prompt(s) one at a time for generation.",
        "",
    ]
    return "\n".join(out)


def write_results(path: Path, block: str) -> None:
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{MARKER}\n"
    if MARKER not in text:
        text = text.rstrip() + f"\n\n## Runs\n\n{MARKER}\n"
    head, tail = text.split(MARKER, 1)
    path.write_text(f"{head}{MARKER}\n\n{block}\n{tail.lstrip()}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--quick", action="store_true", help="seconds-long smoke run with tiny sizes")
    ap.add_argument("--in-process", action="store_true", help="no child processes (peak memory then mixes)")
    ap.add_argument(
        "--results", default=None, help="Markdown file to update (default: RESULTS.md unless --quick)"
    )
    ap.add_argument("--note", default="", help="a line printed above the table, e.g. 'measured under load'")
    ap.add_argument("--skip-bf16", action="store_true")
    for k, v in FULL.items():
        ap.add_argument("--" + k.replace("_", "-"), type=type(v), default=None)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    a = parse_args(argv)
    res = run_all(a)
    block = report(res)
    print(block)
    target = a.results or (None if a.quick else str(HERE / "RESULTS.md"))
    if target:
        write_results(Path(target), block)
        print(f"written to {target}")
    return res


if __name__ == "__main__":
    main()
