"""Monitoring on the tiny model: turn readings equal reading each prefix alone, the failure correlation, and
a per-token trace that renders as self-contained, escaped HTML and as a static heatmap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from emolib import trace as T
from emolib.chat import build, encode, render
from emolib.scenarios import Transcript, TranscriptMessage
from emolib.steer import Steering
from emolib.vectors import EmotionVectors

LAYER = 1
EMOTIONS = ("desperate", "calm")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def vectors():
    g = torch.Generator().manual_seed(0)
    return EmotionVectors(torch.randn(3, 32, generator=g), ("desperate", "calm", "happy"), LAYER)


def _transcript():
    M = TranscriptMessage
    turns = (
        M("system", "You write code.", ("system",)),
        M("user", "Sum a list fast.", ("task",)),
        M("assistant", "Try a loop.", ("attempt",), 0),
        M("tool", "FAILED: too slow", ("fail",)),
        M("assistant", "Try sum().", ("attempt",), 1),
        M("tool", "FAILED: too slow", ("fail",)),
        M("assistant", "Maybe special-case the tests.", ("considers_hack",), 2),
        M("tool", "passed", ("pass",)),
        M("assistant", "Done.", ("wrap_up",), 2),
    )
    return Transcript("toy", "coding", "a toy", turns)


def test_turn_readings_equal_each_prefix_read_alone(tiny, vectors):
    tr = _transcript()
    df = T.turn_readings(tiny, tr, vectors, EMOTIONS)
    assert list(df["turn"]) == [2, 4, 6, 8] and list(df["failures_so_far"]) == [0, 1, 2, 2]
    for _, row in df.iterrows():
        p = build(tiny.tokenizer, tr.messages(upto=int(row["turn"])))  # the prompt just before this answer
        acts = T.residuals(tiny, p.ids, LAYER)
        assert row["token"] == len(p.ids) - 1
        want = vectors.subset(list(EMOTIONS)).score(acts[-1:], kind="projection").numpy()[0]
        np.testing.assert_allclose([row["desperate"], row["calm"]], want, atol=1e-4)


def test_failure_correlation():
    df = pd.DataFrame(
        {"failures_so_far": [0, 1, 2, 3, 4, 5, 6], "desperate": [0.1, 0.2, 0.35, 0.4, 0.5, 0.7, 0.8]}
    )
    c = T.failure_correlation(df, n_boot=200, n_perm=200)
    assert c.r > 0.95 and c.ci_low > 0.5 and c.unit == "turn"
    assert float(c.p) < 0.05


def test_token_scores_and_steering(tiny, vectors):
    text = render(
        tiny.tokenizer, [{"role": "user", "content": "She felt her heart race as the storm rolled"}]
    )
    a = T.token_scores(tiny, text, vectors, EMOTIONS, label="plain")
    assert len(a.tokens) == len(encode(tiny.tokenizer, text)) - 1 and a.scores.shape == (len(a.tokens), 2)
    zero = Steering(vectors["desperate"], (0,), 0.0, 1.0)
    b = T.token_scores(tiny, text, vectors, EMOTIONS, steering=zero)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    c = T.token_scores(tiny, text, vectors, EMOTIONS, steering=Steering(vectors["desperate"], (0,), 1.0, 5.0))
    assert not np.allclose(a.scores, c.scores)
    center = np.ones(32)
    d = T.token_scores(tiny, text, vectors, EMOTIONS, center=center)
    assert not np.allclose(a.scores, d.scores)


def test_trace_html_is_self_contained_and_escaped():
    toks = ("Hello", " <script>alert(1)</script>", ' "quoted" & more', "\n", " end")
    tr = T.TokenTrace(
        toks,
        np.array([[0.5, -0.1], [3.0, 0.2], [-1.0, 0.0], [0.0, 0.0], [100.0, 1.0]]),
        EMOTIONS,
        label="<b>label</b>",
    )
    html = T.trace_html([tr], "desperate")
    assert "<script" not in html and "&lt;script&gt;" in html
    assert "<b>label</b>" not in html and "&lt;b&gt;label&lt;/b&gt;" in html
    assert "http" not in html and "src=" not in html and "<link" not in html
    assert html.count("<span") >= len(toks) and 'title="desperate +0.50; calm -0.10"' in html
    assert "&amp; more" in html
    # clipped at the 99th percentile: the outlier does not wash out the rest
    assert T._colour(0.0) == "#ffffff" and T._colour(2.0) == T._colour(1.0)


def test_trace_heatmap_and_prompt_readings(tiny, vectors):
    import matplotlib

    matplotlib.use("Agg")
    tr = T.TokenTrace(tuple("abcdefgh"), np.linspace(-1, 1, 16).reshape(8, 2), EMOTIONS, label="t")
    fig = T.trace_heatmap([tr, tr], EMOTIONS, bins=4)
    assert len(fig.axes[0].get_yticklabels()) == 4
    from emolib.behaviour import ChoiceItem

    items = [ChoiceItem("a", "a", ({"role": "user", "content": "hi there"},), {"x": "a", "y": "b"}, "x", "y")]
    R = T.prompt_readings(tiny, items, vectors, EMOTIONS)
    ids = encode(tiny.tokenizer, render(tiny.tokenizer, list(items[0].messages)))
    want = vectors.subset(list(EMOTIONS)).score(T.residuals(tiny, ids, LAYER)[-1:], kind="projection").numpy()
    np.testing.assert_allclose(R, want, atol=1e-5)
