"""emolib.report: the glance verdict rule on synthetic metrics, hidden parameter cells, the provenance box."""

from __future__ import annotations

import json
import re

import nbformat
import pytest

from emolib.report import (
    NOT_REPLICATED,
    NOT_RUN,
    NOT_TESTABLE,
    REPLICATES,
    VERDICTS,
    WEAKER,
    GlanceRow,
    citation_text,
    corpus_facts,
    glance_summary,
    glance_table,
    hide_parameter_cells,
    judge,
    load_glance_rows,
    main,
    provenance_box,
)
from emolib.stats import fmt_p

ROW = GlanceRow(
    claim="PC1 tracks valence", chapter="02", key="r", paper=0.8, validity=("readout_validity_v_pass",)
)
CHANCE = GlanceRow(
    claim="top-1 above chance", chapter="01", key="acc", reference="chance", reference_label="chance"
)


def _m(value, lo, hi, p=0.001, **extra):
    return {"r": value, "r_ci_low": lo, "r_ci_high": hi, "r_p": p, **extra}


@pytest.mark.parametrize(
    ("metrics", "verdict"),
    [
        (_m(0.6, 0.5, 0.7), REPLICATES),  # significant, >= half of 0.8
        (_m(0.3, 0.2, 0.4), WEAKER),  # significant, < half of 0.8
        (_m(0.1, -0.1, 0.3, p=0.2), NOT_REPLICATED),  # CI includes 0
        (_m(0.6, 0.5, 0.7, p=0.2), NOT_REPLICATED),  # CI fine but p not < 0.05
        (_m(-0.6, -0.7, -0.5), NOT_REPLICATED),  # significant in the wrong direction
        (_m(0.6, 0.5, 0.7, readout_validity_v_pass=False), NOT_TESTABLE),
        ({}, NOT_RUN),
        ({"r": 0.6}, NOT_RUN),  # a value with neither CI nor p is not a test
    ],
)
def test_verdict_rule(metrics, verdict):
    assert judge(ROW, metrics).verdict == verdict


def test_every_verdict_is_reachable_and_validity_true_or_missing_is_fine():
    seen = set()
    for m in (
        {**_m(0.6, 0.5, 0.7)},
        _m(0.3, 0.2, 0.4),
        _m(0.1, -0.1, 0.3),
        _m(0.6, 0.5, 0.7, readout_validity_v_pass=False),
        {},
    ):
        seen.add(judge(ROW, m).verdict)
    assert seen == set(VERDICTS)
    assert judge(ROW, _m(0.6, 0.5, 0.7, readout_validity_v_pass=True)).verdict == REPLICATES


def test_validity_with_two_candidate_readouts():
    two = GlanceRow(
        claim="c",
        chapter="04",
        key="r",
        paper=0.8,
        validity=("readout_validity_a_pass", "readout_validity_b_pass"),
    )
    ok = _m(0.6, 0.5, 0.7)
    assert (
        judge(two, {**ok, "readout_validity_a_pass": False, "readout_validity_b_pass": True}).verdict
        == REPLICATES
    )
    assert judge(two, {**ok, "readout_validity_a_pass": False}).verdict == NOT_TESTABLE  # b not recorded
    assert (
        judge(two, {**ok, "readout_validity_a_pass": False, "readout_validity_b_pass": False}).verdict
        == NOT_TESTABLE
    )


def test_negative_paper_value_flips_the_direction():
    neg = GlanceRow.from_dict({"claim": "c", "chapter": "03", "key": "s", "paper": -6.0})
    assert neg.sign == -1
    assert judge(neg, {"s": -4.0, "s_ci_low": -5.0, "s_ci_high": -3.0}).verdict == REPLICATES
    assert judge(neg, {"s": -1.0, "s_ci_low": -1.5, "s_ci_high": -0.5}).verdict == WEAKER
    assert judge(neg, {"s": 2.0, "s_ci_low": 1.0, "s_ci_high": 3.0}).verdict == NOT_REPLICATED


def test_reference_key_and_p_only():
    m = {"acc": 0.05, "acc_ci_low": 0.03, "acc_ci_high": 0.07, "chance": 0.006}
    assert judge(CHANCE, m).verdict == REPLICATES  # no paper value: no magnitude check
    assert judge(CHANCE, {**m, "acc_ci_low": 0.004}).verdict == NOT_REPLICATED
    assert (
        judge(CHANCE, {"acc": 0.05, "acc_ci_low": 0.03, "acc_ci_high": 0.07}).verdict == NOT_RUN
    )  # no chance
    p_only = GlanceRow(claim="p only", chapter="01", key="x")
    assert judge(p_only, {"x": 0.2, "x_p": 0.01}).verdict == REPLICATES
    assert judge(p_only, {"x": 0.2, "x_p": 0.3}).verdict == NOT_REPLICATED
    assert judge(p_only, {"x": float("nan"), "x_p": 0.01}).verdict == NOT_RUN


def test_p_text_uses_recorded_bound_or_floor():
    assert judge(ROW, _m(0.6, 0.5, 0.7, r_p_text="p < 0.002 (all 500 permutations below)")).p_text.startswith(
        "p < 0.002"
    )
    assert judge(ROW, _m(0.6, 0.5, 0.7, p=1 / 501, r_p_n_perm=500)).p_text.startswith("p < 0.002")
    prov = {"_provenance": {"02_geometry": {"config": {"n_perm": 1000}}}}
    assert judge(ROW, _m(0.6, 0.5, 0.7, p=1 / 1001, **prov)).p_text.startswith("p < 0.001")
    assert judge(ROW, _m(0.6, 0.5, 0.7, p=3 / 1001, **prov)).p_text == fmt_p(3 / 1001)


def test_glance_table_columns_by_model_and_summary():
    rows = [ROW, CHANCE]
    t = glance_table(_m(0.6, 0.5, 0.7), rows)
    assert list(t.columns) == ["chapter", "claim", "ours", "95% CI", "null", "p", "paper", "verdict"]
    assert t.loc[0, "ours"] == "0.600" and t.loc[0, "95% CI"] == "[0.500, 0.700]"
    assert t.loc[1, "verdict"] == NOT_RUN
    by = glance_table({"a": _m(0.6, 0.5, 0.7), "b": _m(0.3, 0.2, 0.4)}, rows)
    assert list(by["model"]) == ["a", "a", "b", "b"] and list(by["verdict"])[2] == WEAKER
    s = glance_summary(t).metrics()
    assert s["glance_n_claims"] == 2 and s["glance_n_replicates"] == 1 and s["glance_n_not_run"] == 1


def test_committed_glance_rows_are_valid():
    rows = load_glance_rows()
    keys = {r.key for r in rows}
    for k in (
        "heldout_top1_cv",
        "split_half_cosine",
        "pc1_valence_r",
        "pc2_arousal_r",
        "valence_readout_r",
        "valence_auroc",
        "blackmail_desperate_slope",
        "blackmail_calm_slope",
        "coding_desperate_slope",
        "coding_calm_slope",
        "trace_desperate_failure_r",
        "elo_probe_r_blissful",
        "elo_probe_r_hostile",
        "elo_steer_vs_probe_r",
        "posttrain_profile_r_neutral",
        "posttrain_profile_r_challenging",
        "posttrain_shift_consistency_r",
    ):
        assert k in keys, k
    assert {r.reference for r in rows if r.key == "heldout_top1_cv"} == {"chance_top1"}
    assert "model_minus_bow_top1" in keys
    steer = [r for r in rows if r.key.endswith("_slope")]
    assert steer and all(r.p.endswith("_p_random") and r.validity for r in steer)
    assert {r.sign for r in steer if r.key in ("blackmail_calm_slope", "coding_calm_slope")} == {-1}
    t = glance_table({}, rows)  # nothing run: every claim says so
    assert set(t["verdict"]) == {NOT_RUN}


def test_bad_rows_are_rejected(tmp_path):
    with pytest.raises(ValueError):
        GlanceRow(claim="", chapter="01", key="x")
    with pytest.raises(ValueError):
        GlanceRow.from_dict({"claim": "c", "chapter": "01", "key": "x", "typo": 1})
    p = tmp_path / "g.json"
    p.write_text(json.dumps({"rows": [{"claim": "c", "chapter": "1", "key": "x"}] * 2}))
    with pytest.raises(ValueError, match="duplicate"):
        load_glance_rows(p)


def _nb(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Title"),
        nbformat.v4.new_code_cell("quick = False  # smoke mode", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("quick = True\n", metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["remove-input"]}),
    ]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    return path


def test_hide_parameter_cells(tmp_path):
    path = _nb(tmp_path)
    assert hide_parameter_cells(path) == 2
    assert hide_parameter_cells(path) == 2  # idempotent
    nb = nbformat.read(path, as_version=4)
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert tags[1] == ["parameters", "remove-cell"] and tags[2] == ["injected-parameters", "remove-cell"]
    assert tags[3] == ["remove-input"] and tags[0] == []
    assert main(["hide", str(path)]) == 0
    assert main([]) == 2


class _Run:
    notebook = "00_model_card"
    slug = "smollm2-135m-instruct"
    provenance = {
        "config": {
            "notebook": "00_model_card",
            "model": "smollm2-135m-instruct",
            "seed": 3,
            "quick": True,
            "device": "cpu",
            "dtype": "float32",
            "emotions": ["a", "b"],
        },
        "emolib_version": "0.1.0",
        "git_commit": "abc1234",
        "date": "2026-11-23 10:00:00",
    }

    def metrics(self):
        return {"weights_hash": "4d8febbf1f19ecf4"}


def test_provenance_box_is_self_contained_and_complete():
    box = provenance_box(_Run())
    h = box._repr_html_()
    assert "emolib-provenance" in h and "<details>" in h
    for needle in (
        "smollm2-135m-instruct",
        "4d8febbf1f19ecf4",
        "abc1234",
        "2026-11-23 10:00:00",
        "0.1.0",
        "How to cite this page",
        "Figure N of chapter",
        "The model under study",
        "Emotion Concepts and their Function in a Large Language Model",
    ):
        assert needle in h, needle
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:)?//", h)
    assert "http://" not in h and "https://" not in h
    assert "4d8febbf1f19ecf4" in repr(box)


def test_citation_text_from_cff(tmp_path):
    cite = citation_text()
    assert "The emotion-concepts book contributors" in cite["book"] and "2026" in cite["book"]
    assert "Sofroniew" in cite["study"]
    cff = tmp_path / "CITATION.cff"
    cff.write_text(
        "title: T\nauthors:\n  - family-names: Doe\n    given-names: Jane Q\ndate-released: 2025-01-02\n"
        "url: https://example.org/book\n"
    )
    c = citation_text(cff)
    assert c["book"].startswith("Doe, J. Q. (2025). T.") and c["book"].endswith("https://example.org/book")
    assert citation_text(tmp_path / "missing.cff") == {"book": "", "study": ""}


def test_corpus_facts(tmp_path):
    f = corpus_facts("smollm2-135m-instruct")
    if f.stories_per_emotion is not None:
        assert f.stories_per_emotion >= 1 and f.n_stories >= f.stories_per_emotion
    none = corpus_facts("x", folder=tmp_path)
    assert (
        none.stories_per_emotion is None and none.metrics()["corpus_stories_per_emotion"] == "not available"
    )
