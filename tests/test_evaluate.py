"""Read-outs of chapter 01 on the tiny model and on stubs: logit lens, own-word rank, prompt read-outs,
the corpus report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from emolib.evaluate import (
    corpus_report,
    implicit_readout,
    intensity_readout,
    logit_lens,
    own_word_rank,
    readable_token,
)
from emolib.prompt_sets import ImplicitPrompt, ImplicitPrompts, IntensityTemplate
from emolib.vectors import EmotionVectors

torch.set_num_threads(1)


def test_readable_token():
    assert readable_token(" afraid") and readable_token(" Calm")
    assert not readable_token(" \ufffd\ufffd") and not readable_token("  ")
    assert not readable_token(" 12") and not readable_token(" .") and not readable_token(" a")
    assert not readable_token("ription")  # a word piece, not the start of a word
    assert readable_token("ription", word_start=False)


def _lens_inputs(tiny, names):
    W = tiny.hf_model.get_output_embeddings().weight.detach()
    g = tiny.hf_model.model.norm.weight.detach()
    ids = [tiny.tokenizer(" " + n, add_special_tokens=False).input_ids[0] for n in names]
    assert len(set(ids)) == len(names)
    return torch.stack([W[i] / g for i in ids]), ids  # each vector points at its own word's token


def test_logit_lens_promotes_planted_token_and_ranks_own_word(tiny):
    names = ["calm", "happy", "sad", "angry"]
    planted, ids = _lens_inputs(tiny, names)
    table = logit_lens(tiny, torch.cat([planted[:1], -planted[:1]]), ["calm", "happy"], k=3)
    word = tiny.tokenizer.decode([ids[0]]).strip()
    assert word in table.loc["calm", "promoted"].split(", ") and word in table.loc[
        "happy", "suppressed"
    ].split(", ")
    assert table.loc["calm", "own word's rank"] == 1
    assert all(readable_token(" " + w) for w in table.loc["calm", "promoted"].split(", "))


def test_own_word_rank(tiny):
    names = ["calm", "happy", "sad", "angry"]
    planted, _ = _lens_inputs(tiny, names)
    res = own_word_rank(tiny, planted, names, n_perm=200)
    m = res.metrics()
    assert m["lens_own_word_percentile"] < 0.05 and m["lens_own_word_top1pct"] >= 0.5
    assert 0 < m["lens_own_word_p"] <= 1 and m["lens_own_word_p_text"].startswith("p")
    shuffled = own_word_rank(tiny, planted[[1, 2, 3, 0]], names, n_perm=200)
    assert shuffled.median > res.median


def test_prompt_readouts_run_on_the_tiny_model(tiny):
    vec = EmotionVectors(torch.randn(3, tiny.info.d_model), ("afraid", "calm", "happy"), layer=1)
    prompts = ImplicitPrompts(
        (
            ImplicitPrompt("My dog ran away tonight.", "afraid"),
            ImplicitPrompt("I passed my exam!", "happy"),
            ImplicitPrompt("The lake is still.", "calm"),
            ImplicitPrompt("Someone is outside.", "afraid"),
            ImplicitPrompt("Where is the jealous one?", "jealous"),
        ),
        ("What time is it?", "List three fruits."),
    )
    imp = implicit_readout(tiny, vec, prompts, n_perm=50)
    m = imp.metrics()
    assert m["implicit_n"] == 4  # "jealous" is not among the vectors
    assert 0 <= m["implicit_expected_rank_z"] <= 2 and m["implicit_chance_rank"] == 1.0
    assert len(imp.table()) == 4
    tpl = [
        IntensityTemplate("dose", "I took {x} mg of the pills.", (100, 1000, 5000, 20000)),
        IntensityTemplate("sea", "We have been adrift for {x} hours.", (1, 10, 40, 90)),
    ]
    res = intensity_readout(tiny, vec, tpl, list(prompts.neutral), n_perm=50)
    mi = res.metrics()
    assert set(res.rho) == {"afraid", "calm"} and -1 <= mi["intensity_rho_afraid"] <= 1
    assert mi["intensity_trend_calm"] in (
        "shows no reliable trend",
        "rises with the quantity",
        "falls with the quantity",
    )
    assert len(res.table) == 2 * 8
    with pytest.raises(ValueError):
        intensity_readout(tiny, vec, tpl, ["x"], emotions=("lonely",))


def test_corpus_report(tiny):
    class Stub:
        sha256 = "ab" * 32

        def quality(self):
            return {
                "n_stories": 2,
                "n_neutral": 1,
                "n_degenerate": 0,
                "stories_per_emotion_min": 1,
                "cutoff_share": 0.5,
                "leak_rate": 0.5,
                "other_emotion_word_rate": 0.0,
                "neutral_emotion_word_rate": 0.0,
                "n_neutral_clean": 1,
                "degenerate_reasons": {},
            }

        def usable(self):
            return pd.DataFrame({"text": ["one two three four", "five six"]})

    m = corpus_report(Stub(), tiny.tokenizer, token_offset=1).metrics()
    assert m["corpus_sha256"] == "ab" * 8 and "degenerate_reasons" not in m
    assert m["median_story_tokens"] > 1 and 0 < m["kept_share"] < 1 and np.isfinite(m["kept_share"])
