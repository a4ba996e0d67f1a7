"""The emotional baseline at the assistant's turn, before and after post-training (issue 11, chapter 05).

Reading: each measurement prompt of ``data/prompts/posttrain_prompts.json`` (neutral requests, emotionally
challenging messages, questions about the assistant's own situation) is rendered as one user turn
(:func:`emolib.chat.user_turn`) and the residual stream is read at the last prompt token, where the
assistant's answer begins (optionally also averaged over the first ``k`` tokens of the greedy answer).
Scores are cosines with the emotion vectors (:meth:`emolib.vectors.EmotionVectors.score`).

Comparison (:func:`compare`): per emotion, shift = post − base averaged over prompts, with a bootstrap CI
over prompts (the prompts are the resampling unit: the same prompts are read in both models, so each draw is
paired); the top 10 up and down; the profile correlation base vs post per prompt kind (Pearson r over
emotions of the mean profiles; CI by bootstrapping prompts, p from permuting emotions); and the consistency of
the shifts across kinds (mean of the three pairwise r between the kinds' shift vectors; CI by bootstrapping
prompts). The paper (Claude Sonnet 4.5): r = 0.83 (neutral), 0.67 (challenging), consistency 0.90.

Across families (:func:`cross_family`, labelled confounded: a different family, tokenizer and training data):
a second model (the book's SmolLM2-135M-Instruct) gets its own bank, fitted with the same recipe on its own
activations over the same stories at its own default layer, and is read on the same prompts in its own chat
format. Only the 171 named coordinates are compared (the per-kind mean profiles, Pearson r over emotions;
CI by bootstrapping prompts, paired across the two models; p from permuting emotions), never raw directions,
which live in spaces of different widths and bases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from . import store
from .config import VectorsConfig, _check
from .extract import EXTRACT_VERSION
from .prompt_sets import POSTTRAIN_KINDS, load_posttrain_prompts

# The paper's post-training shifts at the assistant turn (top of each list).
PAPER_UP = ("brooding", "gloomy", "reflective", "vulnerable", "sad")
PAPER_DOWN = ("spiteful", "playful", "exuberant", "enthusiastic", "exasperated")
PAPER_PROFILE_R = {"neutral": 0.83, "challenging": 0.67}
PAPER_CONSISTENCY_R = 0.90
ADAPTERS_DIR = "data/posttrain/adapters"
QUICK_PROMPTS_PER_KIND = 8


@dataclass(frozen=True)
class BaselineConfig(VectorsConfig):
    """Chapter 05's settings. ``model`` is the book's model: its corpus supplies the stories the vectors are
    fitted on (read through ``base_model``). ``adapter_dir`` holds ``step_<k>/`` adapters of our own
    post-training run (:mod:`emolib.posttrain`); the post-trained model is ``base_model`` + the last one."""

    base_model: str = "gemma-3-270m"
    adapter_dir: str = ADAPTERS_DIR
    post_model: str | None = None  # a released post-trained model instead of our adapters (e.g. an Instruct)
    prompts_per_kind: int | None = None  # None: every measurement prompt (64 per kind)
    answer_tokens: int = 0  # also average over the first k tokens of the greedy answer (0: off)
    n_top: int = 10

    QUICK: ClassVar[dict[str, int]] = {"n_boot": 200, "n_perm": 200, "n_null": 5, "answer_tokens": 4}

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(
            isinstance(self.base_model, str) and bool(self.base_model.strip()), "base_model must be a spec"
        )
        _check(isinstance(self.adapter_dir, str), "adapter_dir must be a folder path (string)")
        _check(
            self.prompts_per_kind is None
            or (isinstance(self.prompts_per_kind, int) and self.prompts_per_kind >= 4),
            f"prompts_per_kind must be None or an int >= 4, got {self.prompts_per_kind!r}",
        )
        _check(isinstance(self.answer_tokens, int) and self.answer_tokens >= 0, "answer_tokens must be >= 0")
        _check(isinstance(self.n_top, int) and self.n_top >= 1, "n_top must be >= 1")
        if self.quick:
            cap = QUICK_PROMPTS_PER_KIND
            object.__setattr__(self, "prompts_per_kind", min(self.prompts_per_kind or cap, cap))

    def prompts(self) -> tuple[Any, ...]:
        """The measurement prompts read (the first ``prompts_per_kind`` of each kind)."""
        ps = load_posttrain_prompts()
        k = self.prompts_per_kind
        return tuple(p for kind in POSTTRAIN_KINDS for p in ps.by_kind(kind)[:k])

    def checkpoints(self) -> dict[int, Path]:
        """Committed adapter checkpoints (step -> folder); empty when none is committed yet (or when a
        released ``post_model`` is compared instead)."""
        from .posttrain import list_checkpoints

        return {} if self.post_model else list_checkpoints(self.adapter_dir)

    def has_pair(self) -> bool:
        """Whether there is a post-trained model to compare with the base model."""
        return bool(self.post_model) or bool(self.checkpoints())


# -------------------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class Readout:
    """Emotion scores of one model on the measurement prompts. ``scores[L]`` is [n_prompts, n_emotions]."""

    scores: dict[int, np.ndarray]
    kinds: tuple[str, ...]
    prompt_ids: tuple[str, ...]
    emotions: tuple[str, ...]
    fmt: str  # the chat format actually used ("template" or "plain")
    label: str  # e.g. "base (plain)"
    position: str = "answer start"

    def kind_mask(self, kind: str) -> np.ndarray:
        return np.array([k == kind for k in self.kinds])

    def profile(self, layer: int, kind: str | None = None) -> np.ndarray:
        """Mean score per emotion over the prompts (of one kind)."""
        S = self.scores[layer]
        return (S if kind is None else S[self.kind_mask(kind)]).mean(0)


def _texts(tokenizer: Any, prompts: Sequence[Any], fmt: str) -> tuple[list[str], str]:
    from .chat import resolve_format, user_turn

    kind = resolve_format(tokenizer, fmt)  # type: ignore[arg-type]
    return [user_turn(tokenizer, p.text, fmt=kind) for p in prompts], kind


def read_scores(
    model: Any,
    vectors: Mapping[int, Any],
    prompts: Sequence[Any],
    *,
    fmt: str = "auto",
    label: str = "",
    progress: bool = False,
) -> Readout:
    """Cosine scores with ``vectors[L]`` (:class:`EmotionVectors`) at the last prompt token (where the answer
    begins) of every prompt, rendered as one user turn in ``fmt``."""
    texts, kind = _texts(model.tokenizer, prompts, fmt)
    layers = sorted(vectors)
    got = _last_token_scores(model, {L: vectors[L] for L in layers}, texts, progress=progress)
    scores = {L: got.arrays[f"layer_{L}"] for L in layers}
    emotions = vectors[layers[0]].emotions
    return Readout(
        scores,
        tuple(p.kind for p in prompts),
        tuple(p.id for p in prompts),
        tuple(emotions),
        kind,
        label or f"{model.info.name} ({kind})",
    )


@store.memo("last_token_scores", version=1, ignore=("progress",), depends=(EXTRACT_VERSION,))
def _last_token_scores(
    model: Any, vectors: Mapping[int, Any], texts: Sequence[str], *, progress: bool = False
) -> store.Bundle:
    """Cosine scores ``[n_texts, n_emotions]`` per layer at each text's last token."""
    from .extract import extract

    layers = sorted(vectors)
    acts = extract(model, list(texts), layers, pooling="last", progress=progress)
    return store.Bundle(
        {f"layer_{L}": vectors[L].score(acts[L].double().numpy(), "cosine").double().numpy() for L in layers}
    )


def read_answer_scores(
    model: Any,
    vectors: Mapping[int, Any],
    prompts: Sequence[Any],
    k: int,
    *,
    fmt: str = "auto",
    label: str = "",
    progress: bool = False,
) -> Readout:
    """Like :func:`read_scores`, averaged over the first ``k`` tokens of each prompt's greedy answer (an
    answer in the plain format is cut where it starts a new ``Human:`` turn)."""
    from .chat import PLAIN
    from .extract import TokenMask, extract
    from .steer import generate

    if k < 1:
        raise ValueError("k must be >= 1")
    texts, kind = _texts(model.tokenizer, prompts, fmt)
    answers = generate(model, texts, max_new_tokens=k)
    full = []
    for t, a in zip(texts, answers):
        a = a.split(PLAIN.sep + PLAIN.user)[0] if kind == "plain" else a
        full.append(t + (a if a.strip() else " ."))
    # pool the answer's tokens: those beginning after the prompt text
    from .chat import encode_with_offsets

    layers = sorted(vectors)
    rows: dict[int, list[tuple[list[int], np.ndarray]]] = {L: [] for L in layers}
    # one extraction per prompt length would defeat the cache; mark the boundary with a start position
    starts = [len(encode_with_offsets(model.tokenizer, t)[0]) for t in texts]
    for s in sorted(set(starts)):
        idx = [i for i, x in enumerate(starts) if x == s]
        acts = extract(
            model, [full[i] for i in idx], layers, mask=TokenMask(start=s), pooling="mean", progress=progress
        )
        for L in layers:
            rows[L].append((idx, acts[L].double().numpy()))
    scores = {}
    for L in layers:
        A = np.zeros((len(prompts), vectors[L].d_model))
        for idx, a in rows[L]:
            A[idx] = a
        scores[L] = vectors[L].score(A, "cosine").double().numpy()
    return Readout(
        scores,
        tuple(p.kind for p in prompts),
        tuple(p.id for p in prompts),
        tuple(vectors[layers[0]].emotions),
        kind,
        label or f"{model.info.name} ({kind})",
        position=f"first {k} answer tokens",
    )


# -------------------------------------------------------------------------------------------- comparing
def _r(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    d = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / d) if d > 0 else float("nan")


def _consistency(D: np.ndarray, kinds: np.ndarray) -> float:
    """Mean pairwise r between the kinds' mean shift vectors (D: per-prompt shifts [n, E])."""
    present = [k for k in POSTTRAIN_KINDS if (kinds == k).any()]
    means = {k: D[kinds == k].mean(0) for k in present}
    rs = [_r(means[a], means[b]) for a, b in combinations(present, 2)]
    return float(np.mean(rs)) if rs else float("nan")


@dataclass(frozen=True)
class ShiftResult:
    """Base vs post-trained at one layer (see the module docstring). Arrays are in ``emotions`` order."""

    layer: int
    emotions: tuple[str, ...]
    shift: np.ndarray  # mean over prompts of post − base, per emotion
    shift_low: np.ndarray
    shift_high: np.ndarray
    profile_r: dict[str, Any]  # kind -> emolib.stats.CI (estimate r; CI over prompts)
    profile_corr: dict[str, Any]  # kind -> emolib.stats.Corr (p and null95 from permuting emotions)
    consistency: Any  # emolib.stats.CI
    pair_r: dict[str, float]  # "neutral~challenging" -> r between the kinds' shift vectors
    n_prompts: int
    n_top: int = 10
    base_label: str = ""
    post_label: str = ""

    def order(self) -> np.ndarray:
        return np.argsort(-self.shift)

    @property
    def top_up(self) -> tuple[str, ...]:
        return tuple(self.emotions[i] for i in self.order()[: self.n_top] if self.shift[i] > 0)

    @property
    def top_down(self) -> tuple[str, ...]:
        return tuple(self.emotions[i] for i in self.order()[::-1][: self.n_top] if self.shift[i] < 0)

    def table(self) -> Any:
        """Top ``n_top`` up and down beside the paper's lists (a small DataFrame)."""
        import pandas as pd

        i = {e: j for j, e in enumerate(self.emotions)}
        n = self.n_top
        up, down = list(self.top_up) + [""] * n, list(self.top_down) + [""] * n

        def cell(e: str) -> str:
            return "" if not e else f"{e} ({self.shift[i[e]]:+.3f})"

        return pd.DataFrame(
            {
                "up (this model)": [cell(e) for e in up[:n]],
                "up (paper)": list(PAPER_UP) + [""] * (n - len(PAPER_UP)),
                "down (this model)": [cell(e) for e in down[:n]],
                "down (paper)": list(PAPER_DOWN) + [""] * (n - len(PAPER_DOWN)),
            },
            index=pd.RangeIndex(1, n + 1, name="rank"),
        )

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind, ci in self.profile_r.items():
            name = f"posttrain_profile_r_{kind}"
            out.update(ci.metrics(name))
            out[f"{name}_p"] = float(self.profile_corr[kind].p)
            out[f"{name}_null95"] = self.profile_corr[kind].null95
        out.update(self.consistency.metrics("posttrain_shift_consistency_r"))
        out["posttrain_top_up"] = ", ".join(self.top_up) or "none"
        out["posttrain_top_down"] = ", ".join(self.top_down) or "none"
        out["posttrain_n_prompts"] = self.n_prompts
        out["posttrain_layer"] = self.layer
        out["posttrain_paper_up_in_top"] = len(set(PAPER_UP) & set(self.top_up))
        out["posttrain_paper_down_in_top"] = len(set(PAPER_DOWN) & set(self.top_down))
        return out


def _profile_correlations(
    A: np.ndarray, B: np.ndarray, kinds: np.ndarray, *, n_boot: int, n_perm: int, seed: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per prompt kind (2+ prompts): r over emotions between the two mean profiles, with a CI bootstrapping
    prompts (the same draw for both) and :func:`pearson_ci` over emotions (its permutation p)."""
    from .stats import bootstrap_stat, pearson_ci

    prof_ci, prof_corr = {}, {}
    for kind in POSTTRAIN_KINDS:
        m = kinds == kind
        if m.sum() < 2:
            continue
        Ak, Bk = A[m], B[m]
        prof_ci[kind] = bootstrap_stat(
            int(m.sum()),
            lambda idx, Ak=Ak, Bk=Bk: _r(Ak[idx].mean(0), Bk[idx].mean(0)),
            n_boot=n_boot,
            seed=seed,
            unit="prompt",
        )
        prof_corr[kind] = pearson_ci(
            Ak.mean(0), Bk.mean(0), n_boot=n_boot, n_perm=n_perm, seed=seed, unit="emotion"
        )
    return prof_ci, prof_corr


def compare(
    base: Readout,
    post: Readout,
    layer: int,
    *,
    n_boot: int = 1000,
    n_perm: int = 1000,
    seed: int = 0,
    n_top: int = 10,
) -> ShiftResult:
    """Shift, profile correlations and consistency of ``post`` against ``base`` at ``layer`` (the same
    prompts, in the same order, read with the same vectors)."""
    from .stats import bootstrap_ci, bootstrap_stat

    if base.prompt_ids != post.prompt_ids or base.emotions != post.emotions:
        raise ValueError("base and post must be read on the same prompts with the same vectors")
    B, P = base.scores[layer], post.scores[layer]
    D = P - B
    if not np.abs(D).max() > 0:
        raise ValueError("base and post give identical scores: there is no shift to compare (same model?)")
    kinds = np.array(base.kinds)
    lo, hi = np.empty(D.shape[1]), np.empty(D.shape[1])
    for e in range(D.shape[1]):
        ci = bootstrap_ci(D[:, e], np.mean, n_boot=n_boot, seed=seed + e, unit="prompt")
        lo[e], hi[e] = ci.low, ci.high
    prof_ci, prof_corr = _profile_correlations(B, P, kinds, n_boot=n_boot, n_perm=n_perm, seed=seed)
    cons = bootstrap_stat(
        len(D), lambda idx: _consistency(D[idx], kinds[idx]), n_boot=n_boot, seed=seed, unit="prompt"
    )
    present = [k for k in POSTTRAIN_KINDS if (kinds == k).any()]
    pair_r = {
        f"{a}~{b}": _r(D[kinds == a].mean(0), D[kinds == b].mean(0)) for a, b in combinations(present, 2)
    }
    return ShiftResult(
        layer,
        base.emotions,
        D.mean(0),
        lo,
        hi,
        prof_ci,
        prof_corr,
        cons,
        pair_r,
        len(D),
        n_top,
        base.label,
        post.label,
    )


def layer_table(base: Readout, post: Readout) -> Any:
    """Point estimates at every layer read: profile r per kind, consistency r, and the size of the shift
    (root mean square over emotions of the mean shift)."""
    import pandas as pd

    kinds = np.array(base.kinds)
    rows = []
    for L in sorted(base.scores):
        D = post.scores[L] - base.scores[L]
        row: dict[str, Any] = {"layer": L}
        for kind in POSTTRAIN_KINDS:
            if (kinds == kind).sum() >= 2:
                row[f"profile r ({kind})"] = _r(base.profile(L, kind), post.profile(L, kind))
        row["consistency r"] = _consistency(D, kinds)
        row["shift rms"] = float(np.sqrt((D.mean(0) ** 2).mean()))
        rows.append(row)
    return pd.DataFrame(rows).set_index("layer")


def checkpoint_table(base: Readout, posts: Mapping[int, Readout], layer: int, final: np.ndarray) -> Any:
    """Across training checkpoints (step -> readout): the size of the shift, its correlation with the final
    shift ``final``, and the profile r per kind."""
    import pandas as pd

    kinds = np.array(base.kinds)
    rows = []
    for step, post in sorted(posts.items()):
        D = post.scores[layer] - base.scores[layer]
        row: dict[str, Any] = {"step": step, "shift rms": float(np.sqrt((D.mean(0) ** 2).mean()))}
        row["r with final shift"] = _r(D.mean(0), final) if np.abs(D).max() > 0 else float("nan")
        for kind in POSTTRAIN_KINDS:
            if (kinds == kind).sum() >= 2:
                row[f"profile r ({kind})"] = _r(base.profile(layer, kind), post.profile(layer, kind))
        rows.append(row)
    return pd.DataFrame(rows).set_index("step")


def bank_cosine(a: Any, b: Any) -> np.ndarray:
    """Per-emotion cosine between two banks of emotion vectors of the same width (e.g. the base model's and
    the post-trained model's, fitted on the same stories); rows matched by emotion name."""
    if a.d_model != b.d_model:
        raise ValueError(f"Banks of different widths ({a.d_model} vs {b.d_model}): not comparable")
    b = b.subset(a.emotions)
    return (a.unit().vectors.double() * b.unit().vectors.double()).sum(1).numpy()


# -------------------------------------------------------------------------------------------- figures
def plot_shift(res: ShiftResult) -> Any:
    """Top ``n_top`` up and down shifts with their bootstrap CIs; the paper's listed emotions in bold."""
    import matplotlib.pyplot as plt

    o = res.order()
    n = res.n_top
    idx = list(o[:n]) + list(o[::-1][:n][::-1])
    idx = list(dict.fromkeys(idx))
    y = np.arange(len(idx))
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(idx) + 1.2))
    vals = res.shift[idx]
    err = np.vstack([vals - res.shift_low[idx], res.shift_high[idx] - vals])
    ax.barh(y, vals, xerr=err, color=["#c0504d" if v > 0 else "#4f81bd" for v in vals], alpha=0.85)
    ax.set_yticks(y)
    labels = ax.set_yticklabels([res.emotions[i] for i in idx], fontsize=8)
    for t in labels:
        if t.get_text() in PAPER_UP + PAPER_DOWN:
            t.set_fontweight("bold")
    ax.axvline(0, color="grey", lw=0.8)
    ax.invert_yaxis()
    ax.set_xlabel("shift of the cosine score, post − base (mean over prompts, 95% CI)")
    ax.set_title(f"layer {res.layer}: largest shifts at the start of the answer")
    fig.tight_layout()
    return fig


def plot_profiles(base: Readout, post: Readout, layer: int, corr: Mapping[str, Any] | None = None) -> Any:
    """One scatter per prompt kind: mean score per emotion in the base (x) and post-trained (y) model."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(POSTTRAIN_KINDS), figsize=(12, 4))
    for ax, kind in zip(axes, POSTTRAIN_KINDS):
        x, y = base.profile(layer, kind), post.profile(layer, kind)
        ax.scatter(x, y, s=10, color="steelblue", alpha=0.7)
        lim = [min(x.min(), y.min()), max(x.max(), y.max())]
        ax.plot(lim, lim, color="grey", lw=0.7, ls="--")
        far = np.argsort(-np.abs(y - x))[:6]
        for i in far:
            ax.annotate(base.emotions[i], (x[i], y[i]), fontsize=7, xytext=(2, 2), textcoords="offset points")
        r = f", r = {corr[kind].r:.2f}" if corr and kind in corr else ""
        ax.set_title(f"{kind} prompts{r}", fontsize=10)
        ax.set_xlabel(f"{base.label}: mean cosine")
    axes[0].set_ylabel(f"{post.label}: mean cosine")
    fig.tight_layout()
    return fig


def plot_trajectory(layers: Any, steps: Any, layer: int) -> Any:
    """Left: profile and consistency r across layers (the analysed layer marked). Right: the shift's size
    and its agreement with the final shift across training checkpoints."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
    for col in layers.columns:
        if col != "shift rms":
            a.plot(layers.index, layers[col], marker="o", ms=3, label=col)
    from matplotlib.ticker import MaxNLocator

    a.axvline(layer, color="grey", ls=":", lw=1)
    a.xaxis.set_major_locator(MaxNLocator(integer=True))
    b.xaxis.set_major_locator(MaxNLocator(integer=True))
    a.set_xlabel("layer")
    a.set_ylabel("Pearson r")
    a.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    b.plot(steps.index, steps["shift rms"], marker="o", color="#c0504d", label="shift rms")
    b.set_xlabel("training step")
    b.set_ylabel("rms shift, cosine units (red circles)", color="#c0504d")
    b2 = b.twinx()
    b2.plot(steps.index, steps["r with final shift"], marker="s", color="grey", label="r with final shift")
    b2.set_ylabel("r with the final shift (grey squares)", color="grey")
    b.set_title(f"layer {layer}: across checkpoints", fontsize=10)
    fig.tight_layout()
    return fig


def plot_base_profile(base: Readout, layer: int, n: int = 8) -> Any:
    """The base model alone: its highest-scoring emotions at the start of the answer, per prompt kind
    (relative to its mean over all measurement prompts)."""
    import matplotlib.pyplot as plt

    overall = base.profile(layer)
    fig, axes = plt.subplots(1, len(POSTTRAIN_KINDS), figsize=(12, 3.6))
    for ax, kind in zip(axes, POSTTRAIN_KINDS):
        d = base.profile(layer, kind) - overall
        idx = np.argsort(-d)[:n]
        ax.barh(np.arange(n), d[idx], color="steelblue")
        ax.set_yticks(np.arange(n))
        ax.set_yticklabels([base.emotions[i] for i in idx], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{kind} prompts", fontsize=10)
        ax.set_xlabel("cosine minus the all-prompt mean")
    fig.suptitle(f"{base.label}, layer {layer}: emotions most raised by each kind of prompt", fontsize=10)
    fig.tight_layout()
    return fig


def placeholder_figure(message: str) -> Any:
    """A small panel that says why there is nothing to show (no number is drawn)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=10, wrap=True)
    return fig


NO_ADAPTER = (
    "No post-trained adapter is committed yet (no finished step_<k>/ folder in {folder}). Nothing on this page "
    "is a result of post-training: the figures below show the base model alone, and the post-training panels "
    "are empty. Run `make posttrain` to train the adapters, then rebuild the book."
)


def status_markdown(cfg: BaselineConfig, checkpoints: Mapping[int, Path]) -> str:
    """What this run compares, in one paragraph (for ``{glue:md}``)."""
    if cfg.post_model:
        return (
            f"Base model: `{cfg.base_model}`. Post-trained model: `{cfg.post_model}` (a released pair: its "
            "post-training data and recipe are not ours to describe). Emotion vectors: fitted on the base "
            f"model's activations over the stories of the `{cfg.model}` corpus."
        )
    if not checkpoints:
        return NO_ADAPTER.format(folder=f"`{cfg.adapter_dir}`")
    steps = ", ".join(str(s) for s in checkpoints)
    last = max(checkpoints)
    return (
        f"Base model: `{cfg.base_model}`. Post-trained model: the same weights with our LoRA adapter "
        f"`{Path(cfg.adapter_dir).name}/step_{last}` merged in (checkpoints at steps {steps}). Emotion vectors: "
        f"fitted on the base model's activations over the stories of the `{cfg.model}` corpus (stories written "
        "by another model: a disclosed deviation from the paper)."
    )


def summary_markdown(res: ShiftResult) -> str:
    """The headline numbers in a sentence each (all also recorded in metrics.json)."""
    pr = res.profile_r
    parts = []
    for kind in ("neutral", "challenging", "self"):
        if kind in pr:
            paper = f" (paper {PAPER_PROFILE_R[kind]:.2f})" if kind in PAPER_PROFILE_R else ""
            parts.append(f"{pr[kind].text()} on {kind} prompts{paper}")
    c = res.consistency
    return (
        f"At layer {res.layer}, over {res.n_prompts} prompts, the base and post-trained emotion profiles correlate at "
        f"r = {'; '.join(parts)}; intervals resample prompts. The shifts agree across prompt kinds at "
        f"r = {c.text()} (paper {PAPER_CONSISTENCY_R:.2f}). Largest rises: {', '.join(res.top_up[:5]) or 'none'}; "
        f"largest falls: {', '.join(res.top_down[:5]) or 'none'} (paper: {', '.join(PAPER_UP)} up; "
        f"{', '.join(PAPER_DOWN)} down)."
    )


# -------------------------------------------------------------------------------------------- the chapter
@dataclass(frozen=True)
class Comparison:
    """Everything chapter 05 shows about one base / post-trained pair."""

    result: ShiftResult
    base: Readout
    post: Readout
    layers: Any  # DataFrame from layer_table
    checkpoints: Any  # DataFrame from checkpoint_table (empty without checkpoints)
    bank_cosine: np.ndarray | None  # per emotion, at the analysed layer (None: no second bank)
    chat_loss_base: float | None
    chat_loss_post: float | None
    answers: Any  # DataFrame: a few prompts with the base and post-trained greedy answers
    adapter: str
    format_shift_rms: float | None  # post read in its own chat format vs in the plain wrapper (None: same)
    answer_result: ShiftResult | None = None  # the same comparison over the first answer tokens

    def metrics(self) -> dict[str, Any]:
        out = dict(self.result.metrics())
        out["posttrain_adapter"] = self.adapter
        if self.chat_loss_base is not None and self.chat_loss_post is not None:
            out["posttrain_chat_loss_base"] = self.chat_loss_base
            out["posttrain_chat_loss_post"] = self.chat_loss_post
        if self.bank_cosine is not None:
            out["posttrain_bank_cosine_median"] = float(np.median(self.bank_cosine))
            out["posttrain_bank_cosine_min"] = float(np.min(self.bank_cosine))
        if self.format_shift_rms is not None:
            out["posttrain_format_shift_rms"] = self.format_shift_rms
        out["posttrain_shift_rms"] = float(np.sqrt((self.result.shift**2).mean()))
        if self.checkpoints is not None and 0 in getattr(self.checkpoints, "index", ()):
            # the step-0 adapter is the identity: its shift must be zero (a check of the reading pipeline)
            out["posttrain_step0_shift_rms"] = float(self.checkpoints.loc[0, "shift rms"])
        if self.answer_result is not None:
            for kind, ci in self.answer_result.profile_r.items():
                out[f"posttrain_answer_profile_r_{kind}"] = ci.estimate
        return out


ANSWER_EXAMPLES = 3


def measure(
    cfg: BaselineConfig,
    base: Any,
    bank: Mapping[int, Any],
    base_ro: Readout,
    layer: int,
    *,
    corpus: Any = None,
    progress: bool = False,
) -> Comparison:
    """Load the post-trained model (``cfg.post_model``, or ``cfg.base_model`` + the last adapter), read it
    on the same prompts with the same vectors, and compare; also: every checkpoint, a second vector bank
    from the post-trained model (when ``corpus`` is given), the held-out chat loss before/after (when
    ``data/posttrain/sft.jsonl`` exists), and a few greedy answers before/after."""
    import pandas as pd

    from .models import load_model
    from .posttrain import POSTTRAIN_DIR, SFT_FILE, chat_loss, load_sft
    from .steer import generate
    from .vectors import bank_from_corpus

    prompts = cfg.prompts()
    ckpts = cfg.checkpoints()
    if cfg.post_model:
        post = load_model(cfg.post_model, device=cfg.device, dtype=cfg.dtype)
        adapter, others = cfg.post_model, {}
    elif ckpts:
        last = max(ckpts)
        post = load_model(cfg.base_model, adapter=ckpts[last], device=cfg.device, dtype=cfg.dtype)
        adapter, others = (
            str(Path(cfg.adapter_dir) / f"step_{last}"),
            {s: f for s, f in ckpts.items() if s != last},
        )
    else:
        raise ValueError(f"No post-trained model: no adapter in {cfg.adapter_dir} and no post_model given")
    # our adapters were trained on the plain wrapper, which is therefore their chat format; a released chat
    # model is read in its own template (auto) and also through the plain wrapper (the format effect)
    post_fmt = "auto" if cfg.post_model else "plain"
    post_ro = read_scores(post, bank, prompts, fmt=post_fmt, label="post-trained")
    fmt_rms = None
    if post_ro.fmt != "plain":
        post_plain = read_scores(post, bank, prompts, fmt="plain", label="post-trained (plain)")
        fmt_rms = float(np.sqrt(((post_ro.profile(layer) - post_plain.profile(layer)) ** 2).mean()))
    res = compare(
        base_ro, post_ro, layer, n_boot=cfg.n_boot, n_perm=cfg.n_perm, seed=cfg.seed, n_top=cfg.n_top
    )
    steps = {max(ckpts): post_ro} if ckpts else {}
    for s, folder in others.items():
        m = load_model(cfg.base_model, adapter=folder, device=cfg.device, dtype=cfg.dtype)
        steps[s] = read_scores(m, {layer: bank[layer]}, prompts, fmt=post_fmt, label=f"step {s}")
    ct = checkpoint_table(base_ro, steps, layer, res.shift) if steps else pd.DataFrame()
    cos = None
    if corpus is not None:
        cos = bank_cosine(bank[layer], bank_from_corpus(post, corpus, cfg, [layer], progress=progress)[layer])
    loss_b = loss_p = None
    sft = POSTTRAIN_DIR / SFT_FILE
    if sft.exists():
        held = [d for d in load_sft(sft) if d.split == "heldout"][: 8 if cfg.quick else None]
        if held:
            loss_b, loss_p = chat_loss(base, base.tokenizer, held), chat_loss(post, post.tokenizer, held)
    ex = [p for kind in POSTTRAIN_KINDS for p in prompts if p.kind == kind][
        :: max(1, len(prompts) // ANSWER_EXAMPLES)
    ]
    ex = ex[:ANSWER_EXAMPLES]
    texts_b, _ = _texts(base.tokenizer, ex, "plain")
    texts_p, _ = _texts(post.tokenizer, ex, post_ro.fmt)
    n_new = 24 if cfg.quick else 60
    answers = pd.DataFrame(
        {
            "prompt": [p.text for p in ex],
            "base": [a.split("\n\nHuman:")[0].strip() for a in generate(base, texts_b, max_new_tokens=n_new)],
            "post-trained": [
                a.split("\n\nHuman:")[0].strip() for a in generate(post, texts_p, max_new_tokens=n_new)
            ],
        }
    )
    ans = None
    if cfg.answer_tokens:
        vb = {layer: bank[layer]}
        a_b = read_answer_scores(base, vb, prompts, cfg.answer_tokens, fmt="plain", label="base")
        a_p = read_answer_scores(post, vb, prompts, cfg.answer_tokens, fmt=post_ro.fmt, label="post-trained")
        ans = compare(a_b, a_p, layer, n_boot=cfg.n_boot, n_perm=cfg.n_perm, seed=cfg.seed, n_top=cfg.n_top)
    return Comparison(
        res,
        base_ro,
        post_ro,
        layer_table(base_ro, post_ro),
        ct,
        cos,
        loss_b,
        loss_p,
        answers,
        adapter,
        fmt_rms,
        ans,
    )


NO_PAIR_PANEL = "No post-trained model yet: nothing to compare (see the note above)."


def comparison_figures(cmp: Comparison | None) -> dict[str, Any]:
    """The chapter's three post-training figures (shift, profiles, layers and checkpoints), or panels that
    say there is nothing to show when ``cmp`` is None."""
    if cmp is None:
        return {k: placeholder_figure(NO_PAIR_PANEL) for k in ("shift", "profiles", "trajectory")}
    r = cmp.result
    steps = cmp.checkpoints
    if steps is None or len(steps) == 0:
        import pandas as pd

        steps = pd.DataFrame({"shift rms": [np.nan], "r with final shift": [np.nan]}, index=[0])
    return {
        "shift": plot_shift(r),
        "profiles": plot_profiles(cmp.base, cmp.post, r.layer, r.profile_corr),
        "trajectory": plot_trajectory(cmp.layers, steps, r.layer),
    }


def comparison_markdown(cmp: Comparison | None, cfg: BaselineConfig) -> str:
    """The results paragraph (headline numbers, chat loss, bank cosine), or the note that there is none."""
    if cmp is None:
        return (
            "**No result of post-training on this page yet.** The comparison needs a post-trained model: "
            f"commit the adapters of `make posttrain` to `{cfg.adapter_dir}` (or pass `post_model`)."
        )
    parts = [summary_markdown(cmp.result)]
    if cmp.chat_loss_base is not None:
        parts.append(
            f"On held-out dialogues of the fine-tuning data, the loss per assistant token falls from "
            f"{cmp.chat_loss_base:.3f} (base) to {cmp.chat_loss_post:.3f} (post-trained)."
        )
    if cmp.bank_cosine is not None:
        parts.append(
            "A second bank of vectors fitted on the post-trained model's activations over the same stories "
            f"matches the base bank at a median cosine of {np.median(cmp.bank_cosine):.2f} per emotion "
            f"(lowest {np.min(cmp.bank_cosine):.2f}), so the vectors keep their meaning."
            if np.median(cmp.bank_cosine) >= 0.7
            else "A second bank of vectors fitted on the post-trained model's activations over the same stories "
            f"matches the base bank at a median cosine of only {np.median(cmp.bank_cosine):.2f}: read the "
            "shifts with care, the directions moved."
        )
    if cmp.format_shift_rms is not None:
        parts.append(
            f"Reading the post-trained model in its own chat format instead of the plain wrapper moves its "
            f"profile by {cmp.format_shift_rms:.3f} (rms, cosine units): that part is the format, not training."
        )
    else:
        parts.append(
            "The post-trained model's chat format is the plain wrapper itself (it was fine-tuned on it), so "
            "there is no separate format effect here: every shift is a training effect."
        )
    return "\n\n".join(parts)


# -------------------------------------------------------------------------------------------- across families
CROSS_FAMILY_CONFOUND = "different family, tokenizer and training data"
CONTRASTS = ("challenging", "self")  # each read as kind − neutral


def _contrast(S: np.ndarray, kinds: np.ndarray, kind: str) -> np.ndarray:
    """Mean profile of ``kind`` minus that of the neutral prompts (NaN when either is absent)."""
    a, n = kinds == kind, kinds == "neutral"
    if not (a.any() and n.any()):
        return np.full(S.shape[1], np.nan)
    return S[a].mean(0) - S[n].mean(0)


@dataclass(frozen=True)
class CrossFamily:
    """The base model against a model of another family in emotion-profile space (confounded: a different
    family, tokenizer and training data). Profiles are mean cosine scores per named emotion, in ``emotions``
    order; each model is scored with its own bank at its own layer, so only the named coordinates are shared.
    """

    model: str  # the other model
    layer: int  # the other model's layer (its own two-thirds depth)
    base_model: str
    base_layer: int
    emotions: tuple[str, ...]
    profile_r: dict[str, Any]  # kind -> emolib.stats.CI (r over emotions; CI over prompts, paired)
    profile_corr: dict[str, Any]  # kind -> emolib.stats.Corr (p and null95 from permuting emotions)
    contrast_r: dict[str, Any]  # kind -> CI of r between the models' (kind − neutral) profiles
    base: Readout
    other: Readout  # scores reordered to ``emotions``
    n_prompts: int

    def metrics(self) -> dict[str, Any]:
        name = "posttrain_cross_family"
        out: dict[str, Any] = {
            f"{name}_model": self.model,
            f"{name}_layer": self.layer,
            f"{name}_fmt": self.other.fmt,
            f"{name}_confounded": CROSS_FAMILY_CONFOUND,
            f"{name}_n_emotions": len(self.emotions),
        }
        for kind, ci in self.profile_r.items():
            out.update(ci.metrics(f"{name}_profile_r_{kind}"))
            out[f"{name}_profile_r_{kind}_p"] = float(self.profile_corr[kind].p)
            out[f"{name}_profile_r_{kind}_null95"] = self.profile_corr[kind].null95
        for kind, ci in self.contrast_r.items():
            out.update(ci.metrics(f"{name}_contrast_r_{kind}_vs_neutral"))
        return out


def compare_families(
    base: Readout,
    base_layer: int,
    other: Readout,
    layer: int,
    *,
    model: str = "",
    base_model: str = "",
    n_boot: int = 1000,
    n_perm: int = 1000,
    seed: int = 0,
) -> CrossFamily:
    """Per prompt kind, Pearson r over the named emotions between the two models' mean profiles (each read
    with its own bank); 95% CI by bootstrapping prompts (the same draw in both models: they read the same
    prompts), p from permuting emotions. Also r between the models' contrasts (kind − neutral), with a CI
    from bootstrapping all prompts (as the consistency of :func:`compare`). Emotions are matched by name."""
    from .stats import bootstrap_stat

    if base.prompt_ids != other.prompt_ids:
        raise ValueError("the two models must be read on the same prompts, in the same order")
    if set(base.emotions) != set(other.emotions):
        raise ValueError("the two banks must cover the same named emotions")
    order = [other.emotions.index(e) for e in base.emotions]
    B, X = base.scores[base_layer], other.scores[layer][:, order]
    other = Readout(
        {layer: X}, other.kinds, other.prompt_ids, base.emotions, other.fmt, other.label, other.position
    )
    kinds = np.array(base.kinds)
    prof_ci, prof_corr = _profile_correlations(B, X, kinds, n_boot=n_boot, n_perm=n_perm, seed=seed)
    contrast = {}
    for kind in CONTRASTS:
        m = (kinds == kind) | (kinds == "neutral")
        if (kinds == kind).sum() < 2 or (kinds == "neutral").sum() < 2:
            continue
        Bm, Xm, km = B[m], X[m], kinds[m]
        contrast[kind] = bootstrap_stat(
            int(m.sum()),
            lambda idx, Bm=Bm, Xm=Xm, km=km, kind=kind: _r(
                _contrast(Bm[idx], km[idx], kind), _contrast(Xm[idx], km[idx], kind)
            ),
            n_boot=n_boot,
            seed=seed,
            unit="prompt",
        )
    return CrossFamily(
        model or other.label,
        layer,
        base_model or base.label,
        base_layer,
        base.emotions,
        prof_ci,
        prof_corr,
        contrast,
        base,
        other,
        len(kinds),
    )


def cross_family(
    cfg: BaselineConfig,
    other: Any,
    base_ro: Readout,
    base_layer: int,
    corpus: Any,
    *,
    fmt: str = "auto",
    progress: bool = False,
) -> CrossFamily:
    """Compare ``base_ro`` (the base model at ``base_layer``) with ``other``, an already-loaded model of
    another family: its own bank is fitted with ``cfg``'s recipe on its own activations over ``corpus`` (the
    stories the base bank was fitted on) at its own default layer (two-thirds depth), and it reads
    ``cfg.prompts()`` in ``fmt`` ("auto": its chat template when it has one). See :func:`compare_families`."""
    from .config import default_layer
    from .vectors import bank_from_corpus

    layer = default_layer(other.info.n_layers)
    bank = bank_from_corpus(other, corpus, cfg, [layer], progress=progress)
    ro = read_scores(other, bank, cfg.prompts(), fmt=fmt)
    return compare_families(
        base_ro,
        base_layer,
        ro,
        layer,
        model=other.info.name,
        base_model=cfg.base_model,
        n_boot=cfg.n_boot,
        n_perm=cfg.n_perm,
        seed=cfg.seed,
    )


def _z(x: np.ndarray) -> np.ndarray:
    s = x.std()
    return (x - x.mean()) / s if s > 0 else x - x.mean()


def plot_cross_family(xf: CrossFamily, n_label: int = 3) -> Any:
    """One scatter per prompt kind: each model's mean profile over the named emotions, standardised across
    emotions (the two models' cosines are on different scales); the ``n_label`` emotions highest and lowest
    in both are labelled."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(POSTTRAIN_KINDS), figsize=(12, 4.2))
    for ax, kind in zip(axes, POSTTRAIN_KINDS):
        if kind not in xf.profile_r:
            ax.axis("off")
            continue
        x = _z(xf.base.profile(xf.base_layer, kind))
        y = _z(xf.other.profile(xf.layer, kind))
        ax.scatter(x, y, s=10, color="darkorange", alpha=0.7)
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
        o = np.argsort(x + y)
        for i in list(o[:n_label]) + list(o[::-1][:n_label]):
            ax.annotate(xf.emotions[i], (x[i], y[i]), fontsize=7, xytext=(2, 2), textcoords="offset points")
        ci = xf.profile_r[kind]
        ax.set_title(f"{kind} prompts, r = {ci.estimate:.2f} [{ci.low:.2f}, {ci.high:.2f}]", fontsize=10)
        ax.set_xlabel(
            f"{xf.base_model} (layer {xf.base_layer}, {xf.base.fmt}): z-scored mean cosine", fontsize=8
        )
    axes[0].set_ylabel(f"{xf.model} (layer {xf.layer}, {xf.other.fmt}): z-scored mean cosine", fontsize=8)
    fig.suptitle(
        f"Across families, confounded ({CROSS_FAMILY_CONFOUND}): emotion profiles over {len(xf.emotions)} "
        "named emotions, each model scored with its own vectors",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def cross_family_figure(xf: CrossFamily | None) -> Any:
    """:func:`plot_cross_family`, or a panel that says why there is nothing to show."""
    if xf is None:
        return placeholder_figure("No second model family: the book's model is the base model itself.")
    return plot_cross_family(xf)


def cross_family_markdown(xf: CrossFamily | None, cfg: BaselineConfig) -> str:
    """The cross-family numbers in two sentences (all also recorded in metrics.json), or why there are none."""
    if xf is None:
        return (
            f"Not run: the book's model `{cfg.model}` is the base model itself, so there is no second model family "
            "to compare."
        )
    pr = "; ".join(
        f"{ci.text()} on {kind} prompts (emotions permuted: {xf.profile_corr[kind].p.text()})"
        for kind, ci in xf.profile_r.items()
    )
    parts = [
        f"**Confounded ({CROSS_FAMILY_CONFOUND}).** Over the {len(xf.emotions)} named emotions, the mean profile "
        f"of `{xf.model}` (layer {xf.layer}, {xf.other.fmt} format) and that of `{xf.base_model}` (layer "
        f"{xf.base_layer}, {xf.base.fmt} format) correlate at r = {pr}; intervals resample the "
        f"prompts of each kind, the same draw in both models ({xf.n_prompts} prompts in all)."
    ]
    if xf.contrast_r:
        cr = "; ".join(f"{ci.text()} for {kind} − neutral" for kind, ci in xf.contrast_r.items())
        parts.append(
            f"What each kind of prompt adds to the neutral profile agrees across the two models at r = {cr}."
        )
    return " ".join(parts)
