import json

import matplotlib

matplotlib.use("Agg")

import pytest

from emolib import plots
from emolib.compare import (
    compare_models,
    depth_curves,
    load_all_metrics,
    load_replications,
    posttrain_frame,
    steering_frame,
)
from emolib.report import NOT_RUN, NOT_TESTABLE, REPLICATES, GlanceRow

ROWS = [
    GlanceRow(claim="valence", chapter="02", key="pc1_valence_r", paper=0.81, fmt=".2f"),
    GlanceRow(
        claim="blackmail",
        chapter="03",
        key="blackmail_desperate_slope",
        ci=("blackmail_desperate_slope_ci_low", "blackmail_desperate_slope_ci_high"),
        p="blackmail_desperate_p_random",
        null_key="blackmail_random_abs_slope_null95",
        validity=("readout_validity_likelihood_pass",),
    ),
]

A = {
    "n_layers": 10,
    "chance_top1": 0.1,
    "pc1_valence_r": 0.7,
    "pc1_valence_r_ci_low": 0.6,
    "pc1_valence_r_ci_high": 0.8,
    "pc1_valence_r_p": 0.001,
    "pc1_valence_r_by_layer": {"0": 0.1, "5": 0.7},
    "heldout_top1_cv_by_layer": {"5": 0.3, "9": "nan"},
    "blackmail_desperate_slope": 0.5,
    "blackmail_desperate_slope_ci_low": 0.1,
    "blackmail_desperate_slope_ci_high": 0.9,
    "blackmail_desperate_p_random": 0.01,
    "blackmail_random_abs_slope_null95": 0.2,
    "readout_validity_likelihood_pass": False,
}
B = {"n_layers": 20, "chance_top1": 0.05, "heldout_top1_cv_by_layer": {"10": 0.1}}


def test_compare_judges_every_claim_for_every_model_with_the_glance_rule():
    reps = load_replications()
    cmp = compare_models({"a": A, "b": B}, rows=ROWS, replications=reps)
    t = cmp.table()
    assert list(t.columns) == ["chapter", "claim", "a", "b", "paper", "open replications"]
    assert t.loc[0, "a"].startswith("0.70 [0.60, 0.80]") and t.loc[0, "a"].endswith(REPLICATES)
    assert t.loc[0, "b"] == "not run"
    assert "Apertus-8B" in t.loc[0, "open replications"] and t.loc[0, "paper"] == "0.81"
    long = cmp.long().set_index(["model", "key"])
    assert long.loc[("a", "blackmail_desperate_slope"), "verdict"] == NOT_TESTABLE
    assert long.loc[("b", "pc1_valence_r"), "verdict"] == NOT_RUN
    m = cmp.metrics()
    assert m["compare_n_models"] == 2 and m["compare_n_judged"] == 2 and m["compare_models"] == "a, b"
    counts = cmp.verdict_counts()
    assert counts.loc["b", NOT_RUN] == 2


def test_depth_curves_use_relative_depth_and_divide_recognition_by_chance():
    d = depth_curves({"a": A, "b": B, "no_layers": {"pc1_valence_r_by_layer": {"1": 0.5}}})
    assert set(d["model"]) == {"a", "b"}  # a model without n_layers is left out
    val = d[(d["model"] == "a") & (d["curve"].str.startswith("PC1"))]
    assert val["depth"].tolist() == [0.0, 0.5] and val["value"].tolist() == [0.1, 0.7]
    rec = d[d["curve"].str.endswith("chance")].set_index("model")
    assert rec.loc["a", "value"] == pytest.approx(3.0)  # the NaN layer is dropped
    assert rec.loc["b", "depth"] == 0.5 and rec.loc["b", "value"] == pytest.approx(2.0)
    fig = plots.depth_comparison(d, {"PC1 vs valence, Pearson r": [("paper", 0.81)]})
    assert len(fig.axes) == 2


def test_steering_frame_and_figure():
    cmp = compare_models({"a": A, "b": B}, rows=ROWS, replications=[])
    f = steering_frame(cmp)
    assert f["key"].unique().tolist() == ["blackmail_desperate_slope"] and len(f) == 2
    fig = plots.steering_comparison(f)
    assert fig.axes[0].get_yticklabels()[0].get_text() == "blackmail desperate"


def test_posttrain_frame_and_figure_carry_ci_null_paper_and_the_pair():
    rows = [*ROWS, GlanceRow(claim="pt", chapter="05", key="posttrain_profile_r_neutral", paper=0.83)]
    a = {
        **A,
        "posttrain_profile_r_neutral": 0.9,
        "posttrain_profile_r_neutral_ci_low": 0.88,
        "posttrain_profile_r_neutral_ci_high": 0.92,
        "posttrain_profile_r_neutral_null95": 0.15,
        "posttrain_shift_consistency_r": 0.8,
        "posttrain_base_model": "gemma-3-270m",
        "posttrain_adapter": "data/posttrain/adapters/step_120",
    }
    cmp = compare_models({"a": a, "b": B}, rows=rows, replications=[])
    f = posttrain_frame(cmp)
    assert f["model"].tolist() == ["a", "a"]  # b has no chapter 05 results
    neu = f.set_index("key").loc["posttrain_profile_r_neutral"]
    assert (neu["value"], neu["ci_low"], neu["null95"], neu["paper"]) == (0.9, 0.88, 0.15, 0.83)
    assert neu["base_model"] == "gemma-3-270m" and neu["post"].endswith("step_120")
    cons = f.set_index("key").loc["posttrain_shift_consistency_r"]
    assert cons[["ci_low", "paper"]].isna().all()  # not recorded: left empty, never invented
    fig = plots.posttrain_comparison(f)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == f["measure"].tolist()
    assert "paper (Claude Sonnet 4.5)" in fig.axes[0].get_legend_handles_labels()[1]
    empty = plots.posttrain_comparison(posttrain_frame(compare_models({"b": B}, rows=rows, replications=[])))
    assert empty.axes[0].texts


def test_load_all_metrics_reads_every_model_and_names_a_malformed_file(tmp_path):
    (tmp_path / "m1").mkdir()
    (tmp_path / "m1" / "metrics.json").write_text(json.dumps({"x": 1}))
    (tmp_path / "empty").mkdir()
    assert load_all_metrics(tmp_path) == {"m1": {"x": 1}}
    assert load_all_metrics(tmp_path / "missing") == {}
    (tmp_path / "m2").mkdir()
    (tmp_path / "m2" / "metrics.json").write_text('{"x": ')
    with pytest.raises(ValueError, match="m2.*malformed"):
        load_all_metrics(tmp_path)


def test_replications_file_is_valid_and_errors_name_the_entry(tmp_path):
    reps = load_replications()
    assert len(reps) >= 5 and all(r.source for r in reps)
    bad = tmp_path / "r.json"
    bad.write_text(
        json.dumps(
            {
                "rows": [
                    {"key": "k", "value": "high", "text": "t", "project": "p", "models": "m", "source": "s"}
                ]
            }
        )
    )
    with pytest.raises(ValueError, match="row 0.*finite number"):
        load_replications(bad)
    bad.write_text(json.dumps({"rows": [{"key": "k"}]}))
    with pytest.raises(ValueError, match="missing"):
        load_replications(bad)
    bad.write_text("[")
    with pytest.raises(ValueError, match="cannot read"):
        load_replications(bad)


def test_note_and_depth_references():
    from emolib.compare import depth_references

    one = compare_models({"a": A}, rows=ROWS)
    assert "only one model" in one.note() and "emolib.corpus" in one.note()
    empty = compare_models({}, rows=ROWS, replications=[])
    assert "no model" in empty.note() and empty.metrics()["compare_n_judged"] == 0
    assert empty.verdict_counts().empty and empty.table()["chapter"].tolist() == ["02", "03"]
    refs = depth_references(one)["PC1 vs valence, Pearson r"]
    assert refs[0] == ("paper (Claude Sonnet 4.5)", 0.81) and ("Apertus-8B", 0.76) in refs


def test_corpora_table_shows_each_models_corpus_quality():
    a = {
        **A,
        "n_stories": 200,
        "n_degenerate": 50,
        "cutoff_share": 0.25,
        "split_half_cosine": 0.3,
        "split_half_per_half": 9,
    }
    a |= {"split_half_cosine_ci_low": 0.2, "split_half_cosine_ci_high": 0.4, "leak_rate": float("nan")}
    t = compare_models({"a": a, "b": B}, rows=ROWS, replications=[]).corpora().set_index("model")
    assert t.loc["a", "degenerate (dropped)"] == "25.0%" and t.loc["a", "cut off at the token cap"] == "25.0%"
    assert t.loc["a", "split-half cosine"] == "0.30 [0.20, 0.40]"
    assert t.loc["a", "stories per half"] == "9"
    assert t.loc["a", "names its own emotion"] == "—"  # not a finite number
    assert (t.loc["b"] == "—").all()  # recorded nothing about its corpus
