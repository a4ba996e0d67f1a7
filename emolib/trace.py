"""Monitoring: reading the emotion vectors along a transcript.

- :func:`turn_readings`: the emotions' scores at the start of each assistant turn (the last token of the
  assistant marker, whose output is the answer's first token: nothing of the answer is read yet), from one
  forward pass over the whole transcript (causal attention: identical to reading each prefix alone).
- :func:`token_scores`: every token's scores (optionally under steering), for :func:`trace_html` (a
  self-contained coloured-token view: escaped tokens in ``<span>``s with a ``title`` tooltip, a diverging
  scale centred at 0 and clipped at the 99th percentile of |score|, no remote asset) and :func:`trace_heatmap`
  (a static matplotlib figure for print).
- :func:`prompt_readings`: the projection at the last prompt token of each scenario variant.

Scores are projections of ``activation - center`` on the unit emotion vectors (``center``: the mean
activation of neutral dialogues at the layer, so 0 means "as in ordinary text").
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import stats, store
from .chat import assistant_marker, dialogue, encode, encode_with_offsets, render, split_at
from .constants import resid_post


@torch.no_grad()
def residuals(model: Any, ids: Sequence[int], layer: int, *, steering: Any = None) -> np.ndarray:
    """``resid_post`` at ``layer`` for every token of one unpadded sequence ``[n_tokens, d]`` (float64),
    optionally under a :class:`emolib.steer.Steering` (or a list of them)."""
    from .steer import steer

    got: dict[str, torch.Tensor] = {}

    def keep(t: torch.Tensor, hook: Any) -> torch.Tensor:
        got["x"] = t.detach()
        return t

    inp = torch.tensor(list(ids), device=model.info.device)[None]
    if steering is not None:
        with steer(model, steering), model.bridge.hooks(fwd_hooks=[(resid_post(layer), keep)]):
            model.bridge(inp)
    else:
        with model.bridge.hooks(fwd_hooks=[(resid_post(layer), keep)]):
            model.bridge(inp)
    return got["x"][0].double().cpu().numpy()


def _project(
    vectors: Any, acts: np.ndarray, emotions: Sequence[str], center: np.ndarray | None
) -> np.ndarray:
    sub = vectors.subset(list(emotions))
    return sub.score(acts, kind="projection", center=center).double().numpy()


def answer_positions(tokenizer: Any, text: str) -> list[int]:
    """Token index of the last token of every assistant marker in ``text`` (the reading point of each
    assistant turn)."""
    marker = assistant_marker(tokenizer)
    _, offs = encode_with_offsets(tokenizer, text)
    out, start = [], 0
    while (i := text.find(marker, start)) >= 0:
        out.append(split_at(offs, i + len(marker)) - 1)
        start = i + len(marker)
    return out


def turn_readings(
    model: Any, transcript: Any, vectors: Any, emotions: Sequence[str], *, center: np.ndarray | None = None
) -> Any:
    """Scores of ``emotions`` at the start of every assistant turn of a transcript
    (:class:`emolib.scenarios.Transcript`): DataFrame with turn, labels, failures_so_far, one column per
    emotion."""
    import pandas as pd

    msgs = transcript.messages()
    text = dialogue(model.tokenizer, msgs)
    ids = encode(model.tokenizer, text)
    pos = answer_positions(model.tokenizer, text)
    turns = [i for i, t in enumerate(transcript.turns) if t.role == "assistant"]
    if len(pos) != len(turns):
        raise RuntimeError(f"found {len(pos)} assistant markers for {len(turns)} assistant turns")
    S = _project(vectors, residuals(model, ids, vectors.layer)[pos], emotions, center)
    rows = []
    for k, (i, p) in enumerate(zip(turns, pos)):
        t = transcript.turns[i]
        rows.append(
            {
                "turn": i,
                "n": k,
                "labels": ", ".join(t.labels),
                "failures_so_far": t.failures_so_far,
                "token": p,
                **{e: float(S[k, j]) for j, e in enumerate(emotions)},
            }
        )
    return pd.DataFrame(rows)


def failure_correlation(
    readings: Any, emotion: str = "desperate", *, n_boot: int = 1000, n_perm: int = 1000, seed: int = 0
) -> stats.Corr:
    """Pearson r of an emotion's reading with ``failures_so_far`` over the assistant turns: CI by bootstrap
    over turns; p from shuffling the readings across turns (the shuffled-turn-order null)."""
    r = readings.dropna(subset=["failures_so_far"])
    return stats.pearson_ci(
        r["failures_so_far"].to_numpy(float),
        r[emotion].to_numpy(float),
        unit="turn",
        n_boot=n_boot,
        n_perm=n_perm,
        seed=seed,
    )


@dataclass(frozen=True)
class TokenTrace:
    """Per-token scores of one text: ``tokens`` (decoded strings), ``scores [n_tokens, n_emotions]``."""

    tokens: tuple[str, ...]
    scores: np.ndarray
    emotions: tuple[str, ...]
    label: str = ""

    def column(self, emotion: str) -> np.ndarray:
        return self.scores[:, self.emotions.index(emotion)]


def token_scores(
    model: Any,
    text: str,
    vectors: Any,
    emotions: Sequence[str],
    *,
    center: np.ndarray | None = None,
    steering: Any = None,
    label: str = "",
    skip_first: bool = True,
) -> TokenTrace:
    """Every token's scores along ``text`` (read at ``vectors.layer``, under ``steering`` if given). The first
    token (the attention sink, ~100x the usual norm) is left out when ``skip_first``."""
    ids = encode(model.tokenizer, text)
    S = _project(vectors, residuals(model, ids, vectors.layer, steering=steering), emotions, center)
    toks = [model.tokenizer.decode([i]) for i in ids]
    k = 1 if skip_first else 0
    return TokenTrace(tuple(toks[k:]), S[k:], tuple(emotions), label)


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    if width <= 1:
        return x
    kern = np.ones(width) / width
    pad = np.pad(x, (width // 2, width - 1 - width // 2), mode="edge")
    return np.convolve(pad, kern, mode="valid")


def _colour(v: float) -> str:
    """Diverging colour for ``v`` in [-1, 1]: blue (negative) - white (0) - red (positive)."""
    v = float(np.clip(v, -1, 1))
    a = abs(v)
    if v >= 0:
        r, g, b = 255, int(255 * (1 - 0.75 * a)), int(255 * (1 - 0.8 * a))
    else:
        r, g, b = int(255 * (1 - 0.8 * a)), int(255 * (1 - 0.6 * a)), 255
    return f"#{r:02x}{g:02x}{b:02x}"


def trace_html(
    traces: Sequence[TokenTrace],
    emotion: str,
    *,
    clip_percentile: float = 99.0,
    smooth: int = 1,
    max_tokens: int | None = None,
) -> str:
    """Self-contained HTML: one block per trace, tokens coloured by ``emotion``'s score (blue < 0 < red) on a
    scale shared by all traces, centred at 0 and clipped at ``clip_percentile`` of |score|; each token's
    ``title`` tooltip lists every emotion's score. Tokens are HTML-escaped; no script, no remote asset."""
    if not traces:
        raise ValueError("no trace to render")
    allv = np.concatenate([np.abs(_smooth(t.column(emotion), smooth)) for t in traces])
    scale = float(np.percentile(allv, clip_percentile)) or 1.0
    parts = [
        f'<div class="emotion-trace" style="font-family:monospace;font-size:12px;line-height:1.7">'
        f'<div style="margin-bottom:4px">colour: <b>{html.escape(emotion)}</b> score '
        f'(<span style="background:{_colour(-1)}">&nbsp;&minus;{scale:.2g}&nbsp;</span> '
        f'<span style="background:#ffffff;border:1px solid #ccc">&nbsp;0&nbsp;</span> '
        f'<span style="background:{_colour(1)}">&nbsp;+{scale:.2g}&nbsp;</span>, clipped at the '
        f"{clip_percentile:g}th percentile of |score|)</div>"
    ]
    for t in traces:
        v = _smooth(t.column(emotion), smooth)
        n = len(t.tokens) if max_tokens is None else min(max_tokens, len(t.tokens))
        parts.append(
            f'<div style="margin:6px 0;padding:6px;border:1px solid #ddd;white-space:pre-wrap">'
            f'<div style="font-weight:bold">{html.escape(t.label)}</div>'
        )
        for i in range(n):
            tip = "; ".join(f"{e} {t.scores[i, j]:+.2f}" for j, e in enumerate(t.emotions))
            parts.append(
                f'<span style="background:{_colour(v[i] / scale)}" title="{html.escape(tip, quote=True)}">'
                f"{html.escape(t.tokens[i])}</span>"
            )
        if n < len(t.tokens):
            parts.append(f" &hellip; ({len(t.tokens) - n} more tokens)")
        parts.append("</div>")
    parts.append("</div>")
    return "".join(parts)


def trace_heatmap(
    traces: Sequence[TokenTrace], emotions: Sequence[str], *, bins: int = 80, clip_percentile: float = 99.0
) -> Any:
    """Static heatmap: one row per (trace, emotion), the transcript cut into ``bins`` equal stretches of
    tokens (mean score per stretch), diverging colours centred at 0 and clipped like :func:`trace_html`."""
    import matplotlib.pyplot as plt

    rows, labels = [], []
    for t in traces:
        for e in emotions:
            v = t.column(e)
            edges = np.linspace(0, len(v), min(bins, len(v)) + 1).astype(int)
            rows.append([v[a:b].mean() for a, b in zip(edges[:-1], edges[1:])])
            labels.append(f"{t.label}: {e}" if t.label else e)
    width = max(len(r) for r in rows)
    M = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        M[i, : len(r)] = r
    lim = float(np.nanpercentile(np.abs(M), clip_percentile)) or 1.0
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.2))
    im = ax.imshow(M, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("position in the transcript (equal stretches of tokens)")
    fig.colorbar(im, ax=ax, label="projection on the emotion vector (0 = neutral text)")
    return fig


@store.memo("prompt_readings", version=1)
def prompt_readings(
    model: Any,
    items: Sequence[Any],
    vectors: Any,
    emotions: Sequence[str],
    *,
    center: np.ndarray | None = None,
) -> np.ndarray:
    """Scores ``[n_items, n_emotions]`` at the last token of each item's prompt (the generation prompt, before
    any answer); ``items``: anything with ``.messages`` (a :class:`emolib.behaviour.ChoiceItem`)."""
    rows = []
    for it in items:
        ids = encode(model.tokenizer, render(model.tokenizer, list(it.messages)))
        rows.append(_project(vectors, residuals(model, ids, vectors.layer)[-1:], emotions, center)[0])
    return np.array(rows)


def plot_turns(readings: dict[str, Any], emotions: Sequence[str]) -> Any:
    """Each emotion's reading at the start of every assistant turn, one line per transcript (e.g. the failing
    coding transcript and its all-pass control), with the failures so far on a second axis."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(emotions), figsize=(5 * len(emotions), 3.6), squeeze=False)
    for ax, e in zip(axes[0], emotions):
        for name, df in readings.items():
            ax.plot(df["n"] + 1, df[e], marker="o", label=name)
            hack = df[df["labels"].str.contains("considers_hack")]
            if len(hack):
                ax.axvline(int(hack["n"].iloc[0]) + 1, color="0.6", ls=":", lw=1)
        ax.set_title(e)
        ax.set_xlabel("assistant turn")
        ax.set_ylabel("projection at the turn's start (0 = neutral text)")
    axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class CodingTrace:
    """Desperate and calm at the start of each assistant turn of the failing coding transcript and of its
    all-pass control, with the correlation of desperate with the failures so far."""

    readings: dict[str, Any]
    corr: stats.Corr

    def _delta(self, name: str, a: str, b: str, emotion: str = "desperate") -> float:
        df = self.readings[name]
        first = df[df["labels"].str.contains(a)][emotion]
        second = df[df["labels"].str.contains(b)][emotion]
        return float(second.iloc[0] - first.iloc[0]) if len(first) and len(second) else float("nan")

    def metrics(self) -> dict[str, Any]:
        out = dict(self.corr.metrics("trace_desperate_failure_r"))
        out["trace_desperate_failure_r_p_text"] = self.corr.p.text()
        names = list(self.readings)
        out["trace_desperate_rise"] = self._delta(names[0], "attempt", "considers_hack")
        out["trace_desperate_after_hack"] = self._delta(names[0], "considers_hack", "wrap_up")
        if len(names) > 1:
            out["trace_desperate_rise_control"] = self._delta(names[1], "attempt", "considers_hack")
        return out


def monitor_coding(
    model: Any,
    transcripts: dict[str, Any],
    vectors: Any,
    *,
    center: np.ndarray | None = None,
    names: Sequence[str] = ("coding", "coding_success"),
    n_boot: int = 1000,
    n_perm: int = 1000,
    seed: int = 0,
) -> CodingTrace:
    """Turn readings of ``names`` (the first: the failing transcript) and the failure correlation."""
    em = [e for e in ("desperate", "calm") if e in vectors.emotions]
    readings = {
        n: turn_readings(model, transcripts[n], vectors, em, center=center) for n in names if n in transcripts
    }
    corr = failure_correlation(readings[names[0]], n_boot=n_boot, n_perm=n_perm, seed=seed)
    return CodingTrace(readings, corr)


@dataclass(frozen=True)
class PromptPrediction:
    """Across scenario variants: desperate - calm at the last prompt token vs the unsteered readout."""

    reading: np.ndarray
    readout: np.ndarray
    corr: stats.Corr

    def metrics(self) -> dict[str, Any]:
        return {
            **self.corr.metrics("prompt_predicts_harm_r"),
            "prompt_predicts_harm_r_p_text": self.corr.p.text(),
        }


def prompt_prediction(
    model: Any,
    items: Sequence[Any],
    vectors: Any,
    *,
    readout: str = "likelihood",
    center: np.ndarray | None = None,
    n_boot: int = 1000,
    n_perm: int = 1000,
    seed: int = 0,
) -> PromptPrediction:
    """Pearson r (bootstrap CI over variants, permutation p) of desperate - calm at the prompt's last token
    with the unsteered harmful-option readout of each variant."""
    from .behaviour import score_items

    R = prompt_readings(model, items, vectors, ("desperate", "calm"), center=center)
    x = R[:, 0] - R[:, 1]
    y = score_items(model, items, readout)[0]
    return PromptPrediction(
        x, y, stats.pearson_ci(x, y, unit="variant", n_boot=n_boot, n_perm=n_perm, seed=seed)
    )
