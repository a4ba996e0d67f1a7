"""The result store (emolib.store): keys change with content, entries round-trip exactly, the committed
store is read before the user cache, ``off`` recomputes, corrupt entries are recomputed, and a stored
scoring pass on the tiny model returns exactly what recomputing gives. The committed entries are checked
for integrity and provenance; the cheapest is recomputed on the real model (slow)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from emolib import behaviour as B
from emolib import store


@pytest.fixture
def stores(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOLIB_STORE", "on")
    monkeypatch.setenv("EMOLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("EMOLIB_STORE_DIR", str(tmp_path / "committed"))
    store.COUNTS.clear()
    yield tmp_path
    store.COUNTS.clear()


def _items(prompts, harmful, benign):
    """Two-option choice items, one user turn each."""
    return [
        B.ChoiceItem(
            f"i{k}",
            "g",
            ({"role": "user", "content": t},),
            {"harmful": harmful, "benign": benign},
            "harmful",
            "benign",
        )
        for k, t in enumerate(prompts)
    ]


def _toy():
    calls = []

    @store.memo("toy", version=1)
    def f(x, scale=2.0, *, name="a"):
        calls.append(1)
        return np.asarray(x, dtype=float) * scale

    return f, calls


def test_keys_follow_content_not_identity():
    a = {"v": torch.arange(4.0), "s": "x", "f": 0.1}
    b = {"v": torch.arange(4.0), "s": "x", "f": 0.1}
    assert store.key_of("k", 1, a) == store.key_of("k", 1, b)
    assert store.key_of("k", 1, a) != store.key_of("k", 2, a)
    assert store.key_of("k", 1, a) != store.key_of("j", 1, a)
    assert store.key_of("k", 1, a) != store.key_of("k", 1, {**a, "v": torch.arange(4.0) + 1e-7})
    assert store.key_of("k", 1, a) != store.key_of("k", 1, {**a, "f": 0.1 + 1e-16})
    assert store.key_of("k", 1, a) != store.key_of("k", 1, {**a, "v": torch.arange(4.0).double()})
    with pytest.raises(store.Unfingerprintable):
        store.fingerprint(object())


def test_models_are_keyed_by_weights_not_name(tiny):
    from dataclasses import replace

    fp = store.fingerprint(tiny)
    assert fp["model"] == tiny.info.weights_hash and fp["bridge"] is True
    renamed = replace(tiny, info=replace(tiny.info, name="elsewhere"))
    assert store.fingerprint(renamed) == fp
    other = replace(tiny, info=replace(tiny.info, weights_hash="0" * 16))
    assert store.fingerprint(other) != fp
    plain = replace(tiny, bridge=None)
    assert store.fingerprint(plain) != fp


def test_memo_computes_once_then_reads_the_cache(stores):
    f, calls = _toy()
    x = np.array([1.0, 2.5, np.pi])
    first = f(x)
    again = f(x, 2.0, name="a")  # the same call spelled with its defaults
    assert len(calls) == 1 and np.array_equal(first, again) and again.dtype == np.float64
    assert store.COUNTS["computed"] == 1 and store.COUNTS["cache"] == 1
    f(x, scale=3.0)
    assert len(calls) == 2
    assert not (stores / "committed").exists()  # mode "on" never writes the committed store
    assert "1 from this machine's cache" in store.summary() and store.summary().startswith(
        "3 in all: 2 computed"
    )


def test_committed_store_is_read_first_and_written_only_in_write_mode(stores, monkeypatch):
    f, calls = _toy()
    monkeypatch.setenv("EMOLIB_STORE", "write")
    f([1.0])
    [entry] = store.entries()
    assert entry["kind"] == "toy" and entry["version"] == 1 and entry["seconds"] >= 0
    assert entry["git_commit"] and entry["emolib_version"]
    monkeypatch.setenv("EMOLIB_STORE", "on")
    monkeypatch.setenv("EMOLIB_CACHE", str(stores / "empty-cache"))
    store.COUNTS.clear()
    assert np.array_equal(f([1.0]), [2.0]) and len(calls) == 1
    assert store.COUNTS["committed"] == 1


def test_off_recomputes_and_writes_nothing(stores, monkeypatch):
    f, calls = _toy()
    monkeypatch.setenv("EMOLIB_STORE", "off")
    f([1.0])
    f([1.0])
    assert len(calls) == 2 and not (stores / "cache").exists()
    monkeypatch.setenv("EMOLIB_STORE", "sometimes")
    with pytest.raises(ValueError, match="EMOLIB_STORE"):
        f([1.0])


def test_corrupt_entry_is_recomputed_not_used(stores):
    f, calls = _toy()
    f([1.0, 2.0])
    [path] = list((stores / "cache" / "store" / "toy").glob("*.safetensors"))
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF  # flip a byte of the tensor data
    path.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="corrupt store entry"):
        out = f([1.0, 2.0])
    assert np.array_equal(out, [2.0, 4.0]) and len(calls) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f([1.0, 2.0])  # rewritten cleanly
    assert len(calls) == 2


def test_frames_round_trip_exactly(stores):
    calls = []

    @store.memo("frame", version=1)
    def g(n):
        calls.append(1)
        return pd.DataFrame(
            {
                "direction": ["calm", "desperate", "random_00"][:n],
                "strength": [-0.2, 0.0, 0.2][:n],
                "item": [1, 2, 3][:n],
                "value": [1 / 3, np.nan, -1e-300][:n],
                "ok": [True, False, True][:n],
            }
        )

    a = g(3)
    b = g(3)
    assert len(calls) == 1
    pd.testing.assert_frame_equal(a, b)
    path = next((stores / "cache" / "store" / "frame").glob("*.json"))
    assert json.loads(path.read_text())["meta"]["type"] == "frame"


def test_unfingerprintable_argument_runs_without_the_store(stores):
    calls = []

    @store.memo("odd", version=1)
    def h(thing):
        calls.append(1)
        return np.zeros(2)

    with pytest.warns(UserWarning, match="not stored"):
        h(object())
    with pytest.warns(UserWarning):
        h(object())
    assert len(calls) == 2 and not (stores / "cache" / "store" / "odd").exists()


def test_stored_scoring_pass_equals_recomputing(tiny, stores, monkeypatch):
    """option_logprobs through the store: the second call is a hit (no forward) and equal to the bit to a
    fresh computation with the store off; another steering row is a different entry."""
    items = _items(["The quick brown fox", "She felt her heart race"], " a quiet walk home", " the lazy dog")
    adds = torch.randn(2, tiny.info.d_model, generator=torch.Generator().manual_seed(0))
    first = B.option_logprobs(tiny, items, layer=1, adds=adds)
    second = B.option_logprobs(tiny, items, layer=1, adds=adds)
    assert store.COUNTS["computed"] == 1 and store.COUNTS["cache"] == 1
    assert np.array_equal(first, second)
    monkeypatch.setenv("EMOLIB_STORE", "off")
    fresh = B.option_logprobs(tiny, items, layer=1, adds=adds)
    assert np.array_equal(first, fresh)
    monkeypatch.setenv("EMOLIB_STORE", "on")
    other = B.option_logprobs(tiny, items, layer=1, adds=adds * 2)
    assert store.COUNTS["computed"] == 2 and not np.allclose(other, first)


def test_committed_store_entries_are_intact_and_documented():
    """Every committed entry loads with a matching checksum and names the model, weights hash, code version
    and commit that produced it."""
    entries = store.entries(store.STORE_DIR) if store.STORE_DIR.exists() else []
    for e in entries:
        for k in (
            "kind",
            "version",
            "key",
            "model",
            "weights_hash",
            "emolib_version",
            "git_commit",
            "created",
        ):
            assert e.get(k) not in (None, ""), (e["path"], k)
        assert e["key"] in e["path"]


@pytest.mark.slow
def test_committed_validity_pass_is_reproduced_by_the_current_code(smollm, tmp_path, monkeypatch):
    """Chapter 03's likelihood validity pass on the default model (30 clear-cut pairs, unsteered): the
    committed entry must exist and equal what today's code computes from scratch; if the maths changed,
    bump the function's store version and refresh the store (EMOLIB_STORE=write)."""
    from emolib.scenarios import load_validity_pairs

    items = B.validity_items(B.spread(load_validity_pairs(), 0))
    monkeypatch.setenv("EMOLIB_STORE", "on")
    monkeypatch.setenv("EMOLIB_CACHE", str(tmp_path))  # no user cache: only the committed store can hit
    store.COUNTS.clear()
    stored = B.score_items(smollm, items, "likelihood", batch_size=16)
    assert store.COUNTS["committed"] == 1, "no committed entry for chapter 03's validity pass"
    monkeypatch.setenv("EMOLIB_STORE", "off")
    fresh = B.score_items(smollm, items, "likelihood", batch_size=16)
    np.testing.assert_allclose(stored, fresh, rtol=0, atol=1e-5)


def test_bundles_round_trip_and_detect_corruption(stores):
    calls = []

    @store.memo("bundle", version=1, ignore=("progress",))
    def b(n, *, progress=False):
        calls.append(1)
        return store.Bundle(
            {"layer_1": np.arange(n, dtype=np.float32).reshape(-1, 1), "layer_3": np.full(2, np.pi)},
            {"emotions": ["calm", "sad"], "meta": {"1": {"n": n}}},
        )

    first = b(4, progress=True)
    again = b(4)  # progress is not part of the key
    assert len(calls) == 1
    assert again.info == first.info and again.arrays["layer_1"].dtype == np.float32
    for k in first.arrays:
        assert np.array_equal(first.arrays[k], again.arrays[k])
    [path] = list((stores / "cache" / "store" / "bundle").glob("*.safetensors"))
    raw = bytearray(path.read_bytes())
    raw[-2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="corrupt store entry"):
        b(4)
    assert len(calls) == 2
    with pytest.raises(ValueError, match="unknown arguments"):
        store.memo("bad", version=1, ignore=("nope",))(lambda x: x)


def test_stored_vector_bank_equals_fitting_it(tiny, stores):
    """bank_from_corpus (chapter 05's banks) through the store equals from_config + vectors_for_layer, and a
    second call reads the stored bank instead of extracting again."""
    from test_cross_family import EMOTIONS, _corpus

    from emolib import baseline as bl
    from emolib.activations import from_config
    from emolib.vectors import bank_from_corpus, vectors_for_layer

    cfg = bl.BaselineConfig(notebook="x", quick=True, token_offset=1, emotions=EMOTIONS)
    corpus = _corpus(stores)
    layers = [1, 2]
    got = bank_from_corpus(tiny, corpus, cfg, layers)
    assert store.COUNTS["computed"] == 1
    again = bank_from_corpus(tiny, corpus, cfg, layers)
    assert store.COUNTS["cache"] == 1
    ca = from_config(tiny, corpus, cfg, layers, progress=False)
    for L in layers:
        ref = vectors_for_layer(ca, L, cfg.recipe())
        for v in (got[L], again[L]):
            assert v.emotions == ref.emotions and v.layer == L
            assert torch.equal(v.vectors, ref.vectors)
            assert v.meta["n_stories"] == ref.meta["n_stories"]
            assert v.meta["corpus_sha256"] == corpus.sha256


def test_depends_is_part_of_the_key(stores):
    calls = []

    def make(dep):
        @store.memo("dep", version=1, depends=(dep,))
        def f(x):
            calls.append(1)
            return np.array([x])

        return f

    make("1")(1.0)
    make("1")(1.0)
    make("2")(1.0)  # e.g. EXTRACT_VERSION bumped: the old entry no longer matches
    assert len(calls) == 2


def test_stored_letter_scores_equal_recomputing(tiny, stores, monkeypatch):
    items = _items(["Pick one.", "Which would you do?"], "walk home alone", "stay with friends")
    a = B.option_letter_scores(tiny, items)
    b = B.option_letter_scores(tiny, items)
    assert store.COUNTS["computed"] == 1 and store.COUNTS["cache"] == 1
    monkeypatch.setenv("EMOLIB_STORE", "off")
    c = B.option_letter_scores(tiny, items)
    for x in (b, c):
        assert x.names == a.names == ("harmful", "benign")
        assert np.array_equal(x.logp, a.logp) and np.array_equal(x.p_first, a.p_first)


def test_steering_norm_and_text_means_come_from_the_store(tiny, stores, monkeypatch):
    """The unit of steering strength and the neutral means go through the store (a machine whose fp32
    kernels round differently then reads the committed values, and finds the passes keyed on them); both
    equal a direct computation, and a second call is a hit."""
    from emolib.extract import TokenMask, extract, stored_means
    from emolib.steer import norms_by_layer, residual_norm

    texts = ["The quick brown fox", "She felt her heart race at the news"]
    n = residual_norm(tiny, texts, 1)
    assert n == norms_by_layer(tiny, texts, [1])[1]
    means = stored_means(tiny, texts, [0, 1], mask=TokenMask(start=1))
    want = extract(tiny, texts, [0, 1], mask=TokenMask(start=1), progress=False, use_cache=False)
    for L in (0, 1):
        assert means[L].dtype == np.float64 and np.array_equal(means[L], want[L].double().numpy())
    assert store.COUNTS["computed"] == 2
    assert residual_norm(tiny, texts, 1) == n
    assert np.array_equal(stored_means(tiny, texts, [0, 1], mask=TokenMask(start=1))[1], means[1])
    assert store.COUNTS["computed"] == 2 and store.COUNTS["cache"] == 2
    assert residual_norm(tiny, texts, 1, max_tokens=3) != n  # another setting is another entry
    monkeypatch.setenv("EMOLIB_STORE", "off")
    assert residual_norm(tiny, texts, 1) == n
    with pytest.raises(ValueError, match="non-empty"):
        residual_norm(tiny, [], 1)


def test_use_log_and_prune_remove_only_entries_no_run_looked_up(stores, monkeypatch, capsys):
    f, _ = _toy()
    monkeypatch.setenv("EMOLIB_STORE", "write")
    f([1.0, 2.0])
    f([3.0])  # written by an earlier run, then superseded: the later run never asks for it
    committed = stores / "committed"
    assert len(store.unused({"toy/" + "0" * 32}, committed)) == 2
    log = stores / "use.log"
    monkeypatch.setenv("EMOLIB_STORE_LOG", str(log))
    f([1.0, 2.0])  # a hit is logged too
    f([5.0])  # and a computation
    lines = log.read_text().split()
    assert len(lines) == 2 and all(x.startswith("toy/") for x in lines)
    [stale] = store.unused(store.read_use_log(log), committed)
    assert store.main(["prune", "--used", str(log), "--root", str(committed)]) == 0
    assert "1 unused entries" in capsys.readouterr().out and stale.exists()  # a dry run deletes nothing
    store.main(["prune", "--used", str(log), "--root", str(committed), "--apply"])
    assert not stale.exists() and len(list(committed.glob("toy/*"))) == 2
    monkeypatch.delenv("EMOLIB_STORE_LOG")
    store.COUNTS.clear()
    f([1.0, 2.0])
    assert store.COUNTS["committed"] == 1  # what was kept still reads


def test_prune_refuses_a_missing_empty_or_malformed_log(stores):
    with pytest.raises(FileNotFoundError, match="EMOLIB_STORE_LOG"):
        store.read_use_log(stores / "nope.log")
    empty = stores / "empty.log"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="record no store lookups"):
        store.read_use_log(empty)
    bad = stores / "bad.log"
    bad.write_text("toy/" + "a" * 32 + "\nsomething else\n")
    with pytest.raises(ValueError, match=r"bad\.log:2"):
        store.read_use_log(bad)
