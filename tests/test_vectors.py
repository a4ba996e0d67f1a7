"""Emotion vectors: recipe on planted data, denoising, the typed object, save/load, scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emolib.vectors import EmotionVectors, fit_vectors, load_checked, neutral_components, project_out

EMO = ("afraid", "calm", "happy", "sad")


def planted(n_per=30, d=24, seed=0, noise_dir_scale=0.0):
    """Stories whose activations = emotion direction + a shared nuisance direction + noise."""
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(len(EMO), d))
    nuisance = rng.normal(size=d)
    nuisance /= np.linalg.norm(nuisance)
    labels = np.repeat(np.arange(len(EMO)), n_per)
    acts = dirs[labels] + 0.1 * rng.normal(size=(len(labels), d))
    acts += noise_dir_scale * rng.normal(size=(len(labels), 1)) * nuisance
    neutral = 5 * rng.normal(size=(80, 1)) * nuisance + 0.05 * rng.normal(size=(80, d))
    return acts, labels, neutral, dirs, nuisance


def test_recipe_recovers_planted_directions():
    acts, labels, _, dirs, _ = planted()
    fit = fit_vectors(acts, labels, len(EMO), None, denoise_variance=0)
    assert fit.components.shape[0] == 0
    V = torch.as_tensor(fit.vectors)
    expected = dirs - dirs.mean(0)
    cos = torch.nn.functional.cosine_similarity(V, torch.as_tensor(expected), dim=1)
    assert (cos > 0.99).all()
    assert torch.allclose(V.sum(0), torch.zeros(V.shape[1], dtype=torch.float64), atol=1e-5)


def test_denoising_removes_the_neutral_direction():
    acts, labels, neutral, _, nuisance = planted(noise_dir_scale=3.0)
    C = neutral_components(neutral, 0.5)
    assert C.shape[0] == 1  # one dominant neutral direction explains > 50%
    assert abs(float(C[0].double() @ torch.as_tensor(nuisance))) > 0.99
    fit = fit_vectors(acts, labels, len(EMO), neutral, denoise_variance=0.5)
    assert fit.components.shape[0] == 1
    V = torch.as_tensor(fit.vectors)
    assert (V @ C[0].double()).abs().max() < 1e-5  # exactly orthogonal to the removed PC
    assert (V @ torch.as_tensor(nuisance)).abs().max() < 0.02  # and nearly to the planted one
    V0 = torch.as_tensor(fit_vectors(acts, labels, len(EMO), neutral, denoise_variance=0).vectors)
    assert (V0 @ torch.as_tensor(nuisance)).abs().max() > 0.1  # not trivially small before


def test_refit_keeps_scaling_and_denoising():
    acts, labels, neutral, _, nuisance = planted(noise_dir_scale=3.0)
    fit = fit_vectors(acts, labels, len(EMO), neutral, denoise_variance=0.5, standardize=True)
    assert np.allclose(fit.refit(acts, labels), fit.vectors)
    half = np.arange(len(labels)) % 2 == 0
    Vh = fit.refit(acts[half], labels[half])
    assert np.abs(Vh @ fit.components.T).max() < 1e-8  # the same components are projected out
    shuffled = fit.refit(acts, np.random.default_rng(0).permutation(labels))
    assert np.linalg.norm(shuffled) < 0.5 * np.linalg.norm(fit.vectors)


def test_neutral_components_errors():
    with pytest.raises(ValueError):
        neutral_components(np.zeros((5, 3)), 1.0)
    with pytest.raises(ValueError):
        neutral_components(np.zeros((1, 3)), 0.5)
    assert neutral_components(np.ones((4, 3)), 0).shape == (0, 3)
    X = torch.randn(6, 4, dtype=torch.float64)
    assert torch.equal(project_out(X, torch.zeros((0, 4), dtype=torch.float64)), X)


def test_object_access_arithmetic_and_errors():
    ev = EmotionVectors(torch.eye(4), EMO, layer=3)
    assert torch.equal(ev["Calm"], torch.eye(4)[1])
    assert torch.equal((-ev)["calm"], -torch.eye(4)[1])
    assert torch.equal((2 * ev)["sad"], 2 * torch.eye(4)[3])
    assert ev.subset(["sad", "afraid"]).emotions == ("sad", "afraid")
    with pytest.raises(ValueError, match="Unknown emotion 'hangry'"):
        ev["hangry"]
    with pytest.raises(ValueError):
        EmotionVectors(torch.eye(3), EMO, layer=0)
    with pytest.raises(ValueError):
        EmotionVectors(torch.eye(2), ("a", "a"), layer=0)


def test_scoring():
    ev = EmotionVectors(torch.eye(4) * 3, EMO, layer=0)
    acts = torch.tensor([[0.0, 2.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    cos = ev.score(acts)
    assert torch.allclose(cos[0], torch.tensor([0.0, 1.0, 0.0, 0.0]))
    assert torch.allclose(cos[1, :2], torch.tensor([2**-0.5, 2**-0.5]))
    proj = ev.score(acts, "projection")
    assert torch.allclose(proj[0], torch.tensor([0.0, 2.0, 0.0, 0.0]))
    centred = ev.score(acts, "projection", center=torch.tensor([1.0, 1.0, 0.0, 0.0]))
    assert torch.allclose(centred[1], torch.zeros(4))
    with pytest.raises(ValueError, match="width"):
        ev.score(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="kind"):
        ev.score(acts, "dot")


def test_save_load_roundtrip(tmp_path):
    ev = EmotionVectors(torch.randn(4, 8), EMO, layer=5, meta={"model": "m", "token_offset": 50})
    path = ev.save(tmp_path)
    assert path.name == "layer_5.safetensors" and path.with_suffix(".json").exists()
    back = EmotionVectors.load(tmp_path, 5)
    assert torch.equal(back.vectors, ev.vectors) and back.emotions == EMO and back.meta["token_offset"] == 50
    assert "emolib_version" in back.meta
    with pytest.raises(FileNotFoundError, match="layer_5"):
        EmotionVectors.load(tmp_path, 7)
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="Malformed"):
        EmotionVectors.load(tmp_path, 5)


def test_load_checked_refuses_other_settings(tmp_path):
    meta = {
        "corpus_sha256": "abc",
        "token_offset": 50,
        "mask_leaks": True,
        "denoise_variance": 0.5,
        "standardize": False,
        "weights_hash": "w1",
    }
    EmotionVectors(torch.randn(4, 8), EMO, layer=2, meta=meta).save(tmp_path)
    ok = load_checked(tmp_path, 2, dict(meta), producer="chapter 01")
    assert ok.layer == 2 and ok.meta["token_offset"] == 50
    with pytest.raises(ValueError, match="token_offset: saved 50, here 10"):
        load_checked(tmp_path, 2, {**meta, "token_offset": 10}, producer="chapter 01")
    with pytest.raises(FileNotFoundError, match="Run chapter 01"):
        load_checked(tmp_path, 3, meta, producer="chapter 01")
