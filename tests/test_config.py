"""The run configuration: validation with clear errors, quick mode applied inside, the shared rules."""

from __future__ import annotations

import numpy as np
import pytest

from emolib.config import (
    N_FOLDS,
    RunConfig,
    VectorsConfig,
    default_layer,
    quick_layers,
    spaced_layers,
    topic_fold,
)


def test_quick_mode_is_applied_inside_and_recorded():
    cfg = VectorsConfig(notebook="01", quick=True, n_null=50, n_boot=1000)
    assert cfg.n_null == 5 and cfg.n_boot == 200 and cfg.emotions and cfg.stories_per_emotion == 8
    prov = cfg.provenance()
    assert prov["n_null"] == 5 and prov["quick"] is True and isinstance(prov["emotions"], list)
    full = VectorsConfig(notebook="01")
    assert full.n_null == 50 and full.emotions is None and full.stories_per_emotion is None


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(seed=-1), "seed"),
        (dict(quick="yes"), "quick"),
        (dict(dtype="float64"), "dtype"),
        (dict(device="tpu"), "device"),
        (dict(token_offset=0), "token_offset"),
        (dict(denoise_variance=1.0), "denoise_variance"),
        (dict(layer="best"), "layer"),
        (dict(model=""), "model"),
        (dict(n_boot=-5), "n_boot"),
    ],
)
def test_bad_settings_are_clear_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        VectorsConfig(notebook="01", **kw)


def test_layer_rules():
    assert default_layer(30) == 20 and default_layer(18) == 12 and default_layer(1) == 0
    cfg = VectorsConfig(notebook="02")
    assert cfg.resolve_layer(30) == 20
    assert VectorsConfig(notebook="02", layer=-1).resolve_layer(30) == 29
    with pytest.raises(ValueError, match="out of range"):
        VectorsConfig(notebook="02", layer=30).resolve_layer(30)
    with pytest.raises(ValueError, match="chapter 01"):
        VectorsConfig(notebook="02", layer="heldout").resolve_layer(30, {})
    assert VectorsConfig(notebook="02", layer="heldout").resolve_layer(30, {"heldout_layer": 17}) == 17
    assert 20 in quick_layers(30) and max(quick_layers(30)) < 30
    assert VectorsConfig(notebook="x", quick=True).sweep_layers(30) == quick_layers(30)
    assert VectorsConfig(notebook="x").sweep_layers(4) == [0, 1, 2, 3]


def test_fold_rule_keeps_topics_apart():
    topics = np.arange(100)
    folds = topic_fold(topics)
    assert set(folds) == set(range(N_FOLDS))
    for f in range(N_FOLDS):
        assert not set(topics[folds == f]) & set(topics[folds != f])


def test_slug_and_recipe():
    cfg = VectorsConfig(notebook="01", model="org/name", mask_leaks=False)
    assert cfg.slug == "org--name"
    assert cfg.recipe() == {
        "token_offset": 50,
        "mask_leaks": False,
        "denoise_variance": 0.5,
        "standardize": False,
    }
    assert RunConfig(notebook="00").slug == "smollm2-135m-instruct"


def test_spaced_layers_end_at_the_last_and_hold_the_default():
    assert spaced_layers(30) == [2, 5, 8, 11, 14, 17, 20, 23, 26, 29]
    for n in (1, 2, 6, 18, 26, 30, 32, 80):
        got = spaced_layers(n)
        assert got[-1] == n - 1 and default_layer(n) in got and len(got) <= 11
        assert got == sorted(set(got)) and got[0] >= 0
    with pytest.raises(ValueError):
        spaced_layers(0)


def test_profile_rounds_read_the_corpus_at_the_analysed_layer_and_the_profile_on_a_subset():
    full = VectorsConfig(notebook="x")
    assert full.analysis_layers(30) == full.sweep_layers(30) == list(range(30))
    assert full.profile_subset() is None and full.chunked is False
    big = VectorsConfig(notebook="x", profile_rounds=6, chunked=True)
    assert big.analysis_layers(30) == [20, 24] and big.analysis_layers(30, (12,)) == [12, 20, 24]
    assert big.sweep_layers(30) == spaced_layers(30) and big.profile_subset() == 6
    quick = VectorsConfig(notebook="x", profile_rounds=6, quick=True)  # quick runs keep their few layers
    assert quick.analysis_layers(30) == quick.sweep_layers(30) == quick_layers(30)
    assert quick.profile_subset() is None
    for bad in (1, 2.5, True, "6"):
        with pytest.raises(ValueError, match="profile_rounds"):
            VectorsConfig(notebook="x", profile_rounds=bad)
    with pytest.raises(ValueError, match="chunked"):
        VectorsConfig(notebook="x", chunked="yes")
