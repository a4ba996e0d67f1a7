"""Model loading: spec resolution, clear errors, and logits parity of the TransformerLens bridge."""

from __future__ import annotations

import pytest

from emolib.models import PACKAGED, check_layers, load_model, logits_parity, resolve_spec

PARITY_TOL = 1e-4  # fp32; MODELS.md measured exactly 0.0 for both packaged models


def test_unknown_spec_lists_accepted():
    with pytest.raises(ValueError) as e:
        resolve_spec("no-such-model")
    msg = str(e.value)
    assert "no-such-model" in msg
    for name in PACKAGED:
        assert name in msg


@pytest.mark.parametrize("bad", ["", "   ", "./missing/dir/x", "a/b/c"])
def test_bad_specs(bad):
    with pytest.raises(ValueError):
        resolve_spec(bad)


def test_spec_kinds(tmp_path, tiny_dir):
    assert resolve_spec("SmolLM2-135M-Instruct") == ("packaged", "smollm2-135m-instruct")
    assert resolve_spec("HuggingFaceTB/SmolLM2-360M") == ("hub", "HuggingFaceTB/SmolLM2-360M")
    assert resolve_spec(str(tiny_dir))[0] == "local"
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        resolve_spec(str(tmp_path / "empty"))


def test_hub_offline_gives_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises((ValueError, OSError)):
        load_model("emolib-test/definitely-not-a-model")


def test_tiny_local_model(tiny):
    info = tiny.info
    assert info.source == "local" and info.n_layers == 3 and info.d_model == 32
    assert info.has_chat_template
    assert logits_parity(tiny) <= PARITY_TOL


def test_check_layers(tiny):
    assert check_layers(tiny.info, [2, 0, -1]) == [0, 2]
    for bad in ([3], [-4], 7, [], [1.5]):
        with pytest.raises(ValueError):
            check_layers(tiny.info, bad)


def test_bad_device_and_dtype(tiny_dir):
    with pytest.raises(ValueError, match="dtype"):
        load_model(str(tiny_dir), dtype="float8")


def test_smollm2_parity(smollm):
    assert smollm.info.n_layers == 30 and smollm.info.d_model == 576
    assert smollm.info.has_chat_template
    assert logits_parity(smollm) <= PARITY_TOL


@pytest.mark.slow
def test_gemma_parity():
    m = load_model("gemma-3-270m")
    assert m.info.n_layers == 18 and m.info.d_model == 640
    assert not m.info.has_chat_template
    assert logits_parity(m) <= PARITY_TOL
