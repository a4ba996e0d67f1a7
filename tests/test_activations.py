"""Chunked, stored corpus means (emolib.activations, chunked=True): the same means as a direct extraction up
to float16 rounding, chunks independent of row order, filled by shards and read back without a forward."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from emolib import activations as A
from emolib import store

EMOTIONS = ("afraid", "calm", "happy")
TOPICS = ("the harbour", "the letter", "the exam", "the garden", "the storm")


def _corpus(tmp_path, rounds=5, n_neutral=4):
    from emolib.corpus import Corpus

    stories = pd.DataFrame(
        [
            {
                "id": f"story-{i:03d}-{j:03d}",
                "emotion": e,
                "text": f"At {TOPICS[j]} she felt {e}; {e} was all she knew as the day went on and on.",
                "topic_index": j,
                "degenerate": None,
            }
            for j in range(rounds)
            for i, e in enumerate(EMOTIONS)
        ]
    )
    neutral = pd.DataFrame(
        [
            {
                "id": f"neutral-{k:04d}",
                "text": f"Human: What is {k} plus {k}? Assistant: It is {2 * k}.",
                "degenerate": None,
                "emotion_words": [],
            }
            for k in range(n_neutral)
        ]
    )
    return Corpus(stories, neutral, EMOTIONS, "cd" * 8, tmp_path)


@pytest.fixture
def stores(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOLIB_STORE", "write")
    monkeypatch.setenv("EMOLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("EMOLIB_STORE_DIR", str(tmp_path / "committed"))
    store.COUNTS.clear()
    yield tmp_path
    store.COUNTS.clear()


def test_chunk_of_groups_rounds_and_neutral_blocks():
    ids = ["story-000-000", "story-170-002", "story-005-003", "story-001-059"]
    assert A.chunk_of(ids, "story").tolist() == [0, 0, 1, 19]
    assert A.chunk_of(["neutral-0000", "neutral-0299", "neutral-0300"], "neutral").tolist() == [0, 0, 1]
    other = A.chunk_of(["b", "a", "c"], "story")  # another design: rank in id order
    assert other.tolist() == [0, 0, 0]


def test_chunked_means_match_a_direct_extraction_and_are_read_back(tiny, stores):
    corpus = _corpus(stores)
    kw = dict(token_offset=2, progress=False)
    direct = A.corpus_activations(tiny, corpus, [1, 2], **kw)
    got = A.corpus_activations(tiny, corpus, [1, 2], chunked=True, **kw)
    assert store.COUNTS["computed"] == 6  # per layer: stories rounds 0-2 and 3-4, one neutral block
    assert got.settings["chunked"] is True and "chunked" not in direct.settings
    assert got.stories["id"].tolist() == direct.stories["id"].tolist()
    for L in (1, 2):
        for a, b in ((got.acts[L], direct.acts[L]), (got.neutral[L], direct.neutral[L])):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-3 * np.abs(b).max())
            assert not np.array_equal(a, b)  # float16 rounding is real, so the check above means something
    again = A.corpus_activations(tiny, corpus, [1, 2], chunked=True, **kw)
    assert store.COUNTS["computed"] == 6 and store.COUNTS["committed"] == 6  # write mode reads it first
    for L in (1, 2):
        assert np.array_equal(again.acts[L], got.acts[L])
    assert len(list((stores / "committed" / "story_means").glob("*.safetensors"))) == 6
    store.COUNTS.clear()  # the whole corpus is stored a layer at a time: a layer alone is read back
    one = A.corpus_activations(tiny, corpus, [2], chunked=True, **kw)
    assert store.COUNTS["computed"] == 0 and np.array_equal(one.acts[2], got.acts[2])
    prof = A.corpus_activations(tiny, corpus, [1, 2], chunked=True, rounds=3, **kw)
    assert store.COUNTS["computed"] == 2  # a profile on the first rounds: every layer in one entry
    assert A.layer_groups([1, 2], None) == [[1], [2]] and A.layer_groups([1, 2], 3) == [[1, 2]]
    for L in (1, 2):
        assert np.array_equal(prof.neutral[L], got.neutral[L])


def test_chunks_do_not_depend_on_row_order_and_shards_fill_them(tiny, stores):
    corpus = _corpus(stores)
    A.fill_store(tiny, corpus, [2], token_offset=2, shard=(1, 2), progress=False)
    assert store.COUNTS["computed"] == 1  # the second story chunk only (the neutral block is chunk 0)
    A.fill_store(tiny, corpus, [2], token_offset=2, shard=(0, 2), progress=False)
    assert store.COUNTS["computed"] == 3
    shuffled = type(corpus)(
        corpus.stories.sample(frac=1.0, random_state=3).reset_index(drop=True),
        corpus.neutral.iloc[::-1].reset_index(drop=True),
        corpus.emotions,
        corpus.sha256,
        corpus.path,
    )
    store.COUNTS.clear()
    a = A.corpus_activations(tiny, corpus, [2], token_offset=2, chunked=True, progress=False)
    b = A.corpus_activations(tiny, shuffled, [2], token_offset=2, chunked=True, progress=False)
    assert store.COUNTS["computed"] == 0 and store.COUNTS["committed"] == 6  # nothing extracted again
    order = {k: n for n, k in enumerate(a.stories["id"])}
    rows = [order[k] for k in b.stories["id"]]
    assert np.array_equal(b.acts[2], a.acts[2][rows])
    with pytest.raises(ValueError, match="shard"):
        A.fill_store(tiny, corpus, [2], shard=(2, 2))
    with pytest.raises(ValueError, match="kinds"):
        A.fill_store(tiny, corpus, [2], kinds=("stories",))
    store.COUNTS.clear()
    A.fill_store(tiny, corpus, [1], token_offset=2, kinds=("neutral",), progress=False)
    assert store.COUNTS["computed"] == 1  # the neutral block only


def test_chunk_means_keeps_float32_when_float16_would_overflow(tiny, stores, monkeypatch):
    monkeypatch.setattr(A, "FLOAT16_MAX", 1e-3)
    got = A.chunk_means(tiny, ("Some words to read here.",), (1,), A.TokenMask(start=1), ((),))
    assert got.dtype == np.float32 and got.shape == (1, 1, tiny.info.d_model)


def test_rounds_keep_the_first_rounds_and_share_their_chunks(tiny, stores):
    corpus = _corpus(stores)
    full = A.corpus_activations(tiny, corpus, [2], token_offset=2, chunked=True, progress=False)
    store.COUNTS.clear()
    part = A.corpus_activations(tiny, corpus, [2], token_offset=2, chunked=True, rounds=3, progress=False)
    assert store.COUNTS["computed"] == 0  # rounds 0-2 are the first stored chunk of the full run
    assert sorted({int(k[-3:]) for k in part.stories["id"]}) == [0, 1, 2]
    rows = [full.stories["id"].tolist().index(k) for k in part.stories["id"]]
    assert np.array_equal(part.acts[2], full.acts[2][rows])
    two = A.corpus_activations(tiny, corpus, [2], token_offset=2, rounds=2, progress=False)
    assert len(two.stories) == 2 * len(EMOTIONS)
    bad = type(corpus)(corpus.stories.assign(id="x"), corpus.neutral, EMOTIONS, corpus.sha256, corpus.path)
    with pytest.raises(ValueError, match="story-<emotion>-<round>"):
        A.corpus_activations(tiny, bad, [2], rounds=2, progress=False)


def test_from_config_reads_stored_chunks_when_the_config_says_so(tiny, stores):
    from emolib.activations import from_config
    from emolib.config import VectorsConfig

    corpus = _corpus(stores)
    cfg = VectorsConfig(notebook="x", token_offset=2, emotions=EMOTIONS, chunked=True, profile_rounds=3)
    ca = from_config(tiny, corpus, cfg, [2], progress=False, rounds=cfg.profile_subset())
    assert ca.settings["chunked"] is True and store.COUNTS["computed"] == 2  # one story chunk, one neutral
    assert len(ca.stories) == 3 * len(EMOTIONS)
    plain = from_config(tiny, corpus, VectorsConfig(notebook="x", token_offset=2), [2], progress=False)
    assert "chunked" not in plain.settings and len(plain.stories) == 5 * len(EMOTIONS)


def test_reliability_command_reads_a_corpus_folder_through_the_store(tiny_dir, stores, monkeypatch):
    """``python -m emolib.recognition --corpus DIR``: the split-half figures of a corpus not yet swapped in,
    computed once through the stored chunks and read back (no forward) on a second call."""
    import json

    import emolib.corpus
    from emolib import recognition

    corpus = _corpus(stores)
    corpus.stories["leak"] = False
    corpus.stories["other_emotion_word"] = False
    corpus.stories["hit_eos"] = [True] * (len(corpus.stories) - 1) + [False]
    asked = []
    monkeypatch.setattr(emolib.corpus, "load_corpus", lambda folder, emotions: asked.append(folder) or corpus)
    out = stores / "rel.json"
    argv = [
        "--model",
        str(tiny_dir),
        "--corpus",
        "somewhere",
        "--layer",
        "1",
        "--token-offset",
        "2",
        "--out",
        str(out),
    ]
    first = recognition._main(argv)
    assert str(asked[0]) == "somewhere" and first["layer"] == 1 and first["n_stories_used"] == 15
    assert first["provenance"]["config"]["token_offset"] == 2 and first["provenance"]["emolib_version"]
    assert first["split_half_per_half"] == 2 and first["cutoff_share"] == pytest.approx(1 / 15)
    assert -1 <= first["split_half_cosine"] <= 1
    assert (
        first["split_half_cosine_ci_low"] <= first["split_half_cosine"] <= first["split_half_cosine_ci_high"]
    )
    assert json.loads(out.read_text())["split_half_cosine"] == first["split_half_cosine"]
    computed = store.COUNTS["computed"]
    assert computed >= 2
    again = recognition._main(argv)
    assert store.COUNTS["computed"] == computed and again["split_half_cosine"] == first["split_half_cosine"]
    with pytest.raises(ValueError, match="layer"):
        recognition._main([*argv[:4], "--layer", "9"])
    with pytest.raises(ValueError, match="too few"):
        recognition._main([*argv[:6], "--token-offset", "60"])
