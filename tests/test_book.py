"""End to end: every notebook runs under papermill in quick mode, its parameter cells are hidden, then the book
builds with ``-W`` and its HTML is checked (chapters, figures, glued numbers, the results-at-a-glance table in
the introduction, hidden parameter cells, a provenance box on every chapter, no error output, nothing loaded
from another host).

Results go to a temporary EMOLIB_RESULTS_DIR, so the committed results/ are never touched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill as pm
import pytest

from emolib.report import HIDE_TAG, VERDICTS, hide_parameter_cells

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
# Chapters that load a second real model (Gemma-3-270m, converted from its GGUF on a cold cache) are left out of
# the default build, which drops them from the table of contents; chapter 05 runs end to end on a tiny model
# pair in tests/test_baseline.py's slow test (make test-slow).
SLOW_CHAPTERS = {"05_posttraining"}
FAST = [nb for nb in NOTEBOOKS if nb.stem not in SLOW_CHAPTERS]
MODEL = "smollm2-135m-instruct"
PARAMETERS = {"model": MODEL, "quick": True, "seed": 0, "device": "cpu", "dtype": "float32"}
SUMMARY = "99_summary"


@pytest.fixture(scope="session")
def book(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("book")
    shutil.copy(ROOT / "_config.yml", tmp)
    toc = (ROOT / "_toc.yml").read_text().splitlines()
    (tmp / "_toc.yml").write_text("\n".join(x for x in toc if not any(s in x for s in SLOW_CHAPTERS)) + "\n")
    shutil.copytree(ROOT / "book", tmp / "book", ignore=shutil.ignore_patterns("_generated"))
    gen = tmp / "book" / "_generated"
    gen.mkdir()
    old = os.environ.get("EMOLIB_RESULTS_DIR")
    os.environ["EMOLIB_RESULTS_DIR"] = str(tmp / "results")
    try:
        for nb in FAST:  # sorted: the summary (99) runs after every chapter
            pm.execute_notebook(
                str(nb),
                str(gen / nb.name),
                parameters=PARAMETERS,
                kernel_name="python3",
                cwd=str(ROOT),
                progress_bar=False,
            )
            hide_parameter_cells(gen / nb.name)
    finally:
        if old is None:
            os.environ.pop("EMOLIB_RESULTS_DIR", None)
        else:
            os.environ["EMOLIB_RESULTS_DIR"] = old
    jb = Path(sys.executable).parent / "jupyter-book"
    out = subprocess.run(
        [str(jb), "build", "-W", "--keep-going", "--path-output", str(tmp / "site"), str(tmp)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return tmp


def _glued(nb) -> dict[str, str]:
    vals = {}
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            name = o.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:
                vals[name] = o["data"].get("application/papermill.record/text/plain")
    return vals


def _parameter_cell(nb) -> nbformat.NotebookNode:
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    return tagged[0]


def test_notebooks_exist_and_are_clean_sources():
    names = {p.name for p in NOTEBOOKS}
    assert {"00_model_card.ipynb", "01_emotion_vectors.ipynb", "02_valence_geometry.ipynb"} <= names
    assert NOTEBOOKS[-1].stem == SUMMARY  # the summary reads every chapter's metrics: it must run last
    for p in NOTEBOOKS:
        nb = nbformat.read(p, as_version=4)
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), p.name
        params = _parameter_cell(nb)
        assert params.metadata["tags"] == ["parameters"], p.name  # the build hides it after execution
        for name in PARAMETERS:
            assert f"\n{name} = " in f"\n{params.source}", f"{p.name}: no parameter {name}"
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), p.name
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert "provenance_box(run" in code[-1].source, f"{p.name}: last cell must show the provenance box"


@pytest.mark.parametrize("name", [p.name for p in FAST])
def test_executed_notebook_has_no_error_and_hidden_parameters(book, name):
    nb = nbformat.read(book / "book" / "_generated" / name, as_version=4)
    assert nb.metadata.papermill.exception is None or nb.metadata.papermill.exception is False
    assert nb.metadata.papermill.parameters["quick"] is True
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    for tag in ("parameters", "injected-parameters"):
        cells = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
        assert len(cells) == 1 and HIDE_TAG in cells[0].metadata["tags"], (name, tag)


def test_glued_numbers_and_metrics(book):
    g0 = _glued(nbformat.read(book / "book" / "_generated" / "00_model_card.ipynb", as_version=4))
    assert float(g0["parity_max_abs_diff"]) <= 1e-4
    assert float(g0["sink_norm_ratio_default_layer"]) > 10  # the attention sink is real
    assert 100 < float(g0["n_params_millions"]) < 200
    metrics = json.loads((book / "results" / MODEL / "metrics.json").read_text())
    for key in (
        "parity_max_abs_diff",
        "weights_hash",
        "n_params",
        "default_layer",
        "heldout_top1_cv",
        "heldout_layer",
        "split_half_cosine",
        "bow_top1_cv",
        "chance_top1",
        "pc1_valence_r",
        "pc2_arousal_r",
        "glance_n_claims",
        "corpus_stories_per_emotion",
    ):
        assert key in metrics, key
    for key in ("heldout_top1_cv", "bow_top1_cv", "chance_top1"):
        assert 0 <= metrics[key] <= 1, key
    assert 0 <= metrics["heldout_layer"] < metrics["n_layers"]
    assert set(metrics["_provenance"]) >= {p.stem for p in FAST}
    assert list((book / "results" / MODEL / "vectors").glob("layer_*.safetensors"))
    g99 = _glued(nbformat.read(book / "book" / "_generated" / f"{SUMMARY}.ipynb", as_version=4))
    assert int(g99["glance_n_claims"]) == sum(
        int(g99[k]) for k in g99 if k.startswith("glance_n_") and k != "glance_n_claims"
    )
    assert int(g99["glance_n_not_run"]) < int(g99["glance_n_claims"])  # chapters 01 and 02 did fill rows
    g06 = _glued(nbformat.read(book / "book" / "_generated" / "06_comparison.ipynb", as_version=4))
    assert g06["compare_models"].strip("'") == MODEL  # only this run's results folder exists
    assert "only one model" in g06["compare_note"]
    assert metrics["compare_n_judged"] > 0


def test_html(book):
    from bs4 import BeautifulSoup

    html = book / "site" / "_build" / "html"
    pages = {"intro": html / "book" / "intro.html"}
    for nb in FAST:
        pages[nb.stem] = html / "book" / "_generated" / f"{nb.stem}.html"
    hidden_lines = set()  # every line of every parameters cell (the provenance box shows the values instead)
    for nb in NOTEBOOKS:
        src = _parameter_cell(nbformat.read(nb, as_version=4)).source
        hidden_lines |= {line.strip() for line in src.splitlines() if " = " in line}
    for name, page in pages.items():
        assert page.exists(), name
        raw = page.read_text()
        soup = BeautifulSoup(raw, "html5lib")
        assert not soup.select(".traceback, .output.error, #papermill-error-cell"), name
        text = soup.get_text()
        assert "Traceback (most recent call last)" not in text, name
        for tag, attr in (("script", "src"), ("img", "src"), ("link", "href")):
            for el in soup.find_all(tag):
                url = el.get(attr) or ""
                if tag == "link" and "stylesheet" not in (el.get("rel") or []):
                    continue
                assert not url.startswith(("http://", "https://", "//")), f"{name}: remote {tag} {url}"
        for line in hidden_lines:
            assert line not in text, f"{name}: parameter cell line shown: {line!r}"
        assert "quick = " not in text, name
        if name == "intro":
            continue
        box = soup.select("div.emolib-provenance")
        assert len(box) == 1, f"{name}: no provenance box"
        box_text = box[0].get_text()
        assert "How to cite this page" in box_text and MODEL in box_text, name
        assert not box[0].select("[src], link"), name
        if name != SUMMARY:
            imgs = soup.select("img[src$='.png']")
            assert imgs, f"{name}: no figure"
            for img in imgs:
                assert (page.parent / img["src"]).exists(), img["src"]
    intro_soup = BeautifulSoup(pages["intro"].read_text(), "html5lib")
    intro = intro_soup.get_text()
    assert "0.0e+00" in intro or "e-" in intro  # the glued parity number reached the intro
    # the results-at-a-glance table (glued from the summary notebook) reached the intro
    table = intro_soup.select("table.dataframe")
    assert table, "no glance table in intro.html"
    headers = [th.get_text(strip=True) for th in table[0].select("th")]
    assert {"ours", "95% CI", "null", "p", "paper", "verdict"} <= set(headers), headers
    verdicts = {td.get_text(strip=True) for td in table[0].select("td")} & set(VERDICTS)
    assert verdicts, "no verdict in the glance table"
    assert "Limitations" in intro and "Results at a glance" in intro
