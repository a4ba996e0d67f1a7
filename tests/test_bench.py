"""``make bench`` plumbing: the quick smoke run of benchmarks/run_all.py on the tiny model, in-process.

Prints nothing about speed and asserts none: it checks that every method ran, that emolib's activations
equal the plain loop's, and that the Markdown block is written where asked."""

from __future__ import annotations

import sys

import torch

from emolib.constants import REPO_ROOT

torch.set_num_threads(1)
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))


def test_bench_quick_runs_every_method(tiny_dir, tmp_path):
    import run_all

    out = tmp_path / "RESULTS.md"
    res = run_all.main(["--quick", "--in-process", "--model", str(tiny_dir), "--results", str(out)])
    methods = {r["method"] for r in res["rows"]}
    assert {"emolib_all", "plain_all", "emolib_one", "plain_one", "single"} <= methods
    assert any(m.startswith("hf_generate") for m in methods) and any(
        m.startswith("sample_batch") for m in methods
    )
    assert any(m.startswith("sample_batch_bridge") for m in methods)
    assert any(r["bench"] == "generate" and r["dtype"] == "bfloat16" for r in res["rows"])
    assert all(r["tokens"] > 0 and r["tok_per_s"] > 0 and r["pct_peak"] >= 0 for r in res["rows"])
    assert res["same"]["all"]["cos_min"] > 0.9999 and res["same"]["one"]["cos_min"] > 0.9999
    assert res["bf16"]["vs_fp32"]["cos_min"] > 0.99
    text = out.read_text()
    assert run_all.MARKER in text and "| extract | emolib_all |" in text and "Matmul peak" in text
    assert "the issue's goal is 3x" in text


def test_book_time_table_and_notebook_selection():
    import book_time
    import pytest

    t = book_time.table([{"notebook": "01_a", "seconds": 90.0}, {"notebook": "02_b", "seconds": 30.0}])
    assert "| 01_a | 90 | 75% |" in t and "**120** (2.0 min; budget 30 min)" in t
    assert [p.stem for p in book_time.notebooks(["99_summary"])] == ["99_summary"]
    with pytest.raises(SystemExit, match="unknown notebooks"):
        book_time.notebooks(["nope"])
