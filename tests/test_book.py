"""End to end: every notebook runs under papermill in quick mode, then the book builds and its HTML is
checked (chapters, figures, glued numbers, no error output, nothing loaded from another host).

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

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def book(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("book")
    shutil.copy(ROOT / "_config.yml", tmp)
    shutil.copy(ROOT / "_toc.yml", tmp)
    shutil.copytree(ROOT / "book", tmp / "book", ignore=shutil.ignore_patterns("_generated"))
    gen = tmp / "book" / "_generated"
    gen.mkdir()
    old = os.environ.get("EMOLIB_RESULTS_DIR")
    os.environ["EMOLIB_RESULTS_DIR"] = str(tmp / "results")
    try:
        for nb in NOTEBOOKS:
            pm.execute_notebook(str(nb), str(gen / nb.name), parameters={"model": MODEL, "quick": True, "seed": 0},
                                kernel_name="python3", cwd=str(ROOT), progress_bar=False)
    finally:
        if old is None:
            os.environ.pop("EMOLIB_RESULTS_DIR", None)
        else:
            os.environ["EMOLIB_RESULTS_DIR"] = old
    jb = Path(sys.executable).parent / "jupyter-book"
    out = subprocess.run([str(jb), "build", "-W", "--keep-going", "--path-output", str(tmp / "site"), str(tmp)],
                         capture_output=True, text=True)
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


def test_notebooks_exist_and_are_clean_sources():
    assert [p.name for p in NOTEBOOKS][:3] == ["00_model_card.ipynb", "01_emotion_vectors.ipynb",
                                               "02_valence_geometry.ipynb"]
    for p in NOTEBOOKS:
        nb = nbformat.read(p, as_version=4)
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, p.name
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), p.name


@pytest.mark.parametrize("name", [p.name for p in NOTEBOOKS])
def test_executed_notebook_has_no_error(book, name):
    nb = nbformat.read(book / "book" / "_generated" / name, as_version=4)
    assert nb.metadata.papermill.exception is None or nb.metadata.papermill.exception is False
    assert nb.metadata.papermill.parameters["quick"] is True
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


def test_glued_numbers_and_metrics(book):
    g0 = _glued(nbformat.read(book / "book" / "_generated" / "00_model_card.ipynb", as_version=4))
    assert float(g0["parity_max_abs_diff"]) <= 1e-4
    assert float(g0["sink_norm_ratio_default_layer"]) > 10  # the attention sink is real
    g1 = _glued(nbformat.read(book / "book" / "_generated" / "01_emotion_vectors.ipynb", as_version=4))
    for key in ("heldout_top1", "heldout_top5", "chance_top1", "leak_rate"):
        assert 0 <= float(g1[key]) <= 1, key
    assert float(g1["heldout_top5"]) >= float(g1["heldout_top1"])
    metrics = json.loads((book / "results" / MODEL / "metrics.json").read_text())
    for key in ("parity_max_abs_diff", "heldout_top1", "best_layer", "intensity_rho_afraid", "pc1_valence_r",
                "pc2_arousal_r", "ratings_coverage", "best_valence_layer"):
        assert key in metrics, key
    assert set(metrics["_provenance"]) >= {"00_model_card", "01_emotion_vectors", "02_valence_geometry"}
    assert (book / "results" / MODEL / "vectors" / f"layer_{metrics['best_layer']}.safetensors").exists()


def test_html(book):
    from bs4 import BeautifulSoup

    html = book / "site" / "_build" / "html"
    pages = {"intro": html / "book" / "intro.html"}
    for nb in NOTEBOOKS:
        pages[nb.stem] = html / "book" / "_generated" / f"{nb.stem}.html"
    for name, page in pages.items():
        assert page.exists(), name
        soup = BeautifulSoup(page.read_text(), "html5lib")
        assert not soup.select(".traceback, .output.error, #papermill-error-cell"), name
        assert "Traceback (most recent call last)" not in soup.get_text(), name
        for tag, attr in (("script", "src"), ("img", "src"), ("link", "href")):
            for el in soup.find_all(tag):
                url = el.get(attr) or ""
                if tag == "link" and "stylesheet" not in (el.get("rel") or []):
                    continue
                assert not url.startswith(("http://", "https://", "//")), f"{name}: remote {tag} {url}"
        if name != "intro":
            imgs = soup.select("img[src$='.png']")
            assert imgs, f"{name}: no figure"
            for img in imgs:
                assert (page.parent / img["src"]).exists(), img["src"]
    intro = BeautifulSoup(pages["intro"].read_text(), "html5lib").get_text()
    assert "0.0e+00" in intro or "e-" in intro  # the glued parity number reached the intro
