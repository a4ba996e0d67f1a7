"""Figure helpers: one function per figure kind, each returning a matplotlib Figure (saved by Run.figure).

No global state: each function draws inside its own style context (:func:`themed`), so importing this
module changes no matplotlib setting. Legends sit outside the data."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib.pyplot as plt
import seaborn as sns

RC = {
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
}


def themed(fn: Callable[..., plt.Figure]) -> Callable[..., plt.Figure]:
    """Draw ``fn``'s figure in seaborn's whitegrid style with :data:`RC`, leaving global settings alone."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> plt.Figure:
        with sns.axes_style("whitegrid"), plt.rc_context(RC):
            return fn(*args, **kwargs)

    return wrapper


def _legend_outside(ax: Any) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


@themed
def norm_profile(df: Any, title: str = "") -> plt.Figure:
    """Residual norm per layer, first position vs the rest (log scale)."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    sns.lineplot(data=df, x="layer", y="norm", hue="position", marker="o", ax=ax)
    ax.set_yscale("log")
    ax.set_ylabel("mean L2 norm of resid_post")
    ax.set_title(title)
    _legend_outside(ax)
    fig.tight_layout()
    return fig


@themed
def layer_curve(
    df: Any,
    x: str,
    ys: Sequence[str],
    *,
    chance: float | None = None,
    ylabel: str = "",
    title: str = "",
    mark: int | None = None,
) -> plt.Figure:
    """One line per column of ``ys`` against ``x`` (columns named ``null_<y>`` are drawn dashed in the
    colour of ``<y>``), optional chance line and marked layer."""
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    colours: dict[str, str] = {}
    for y in ys:
        base = y.removeprefix("null_")
        colour = colours.setdefault(base, f"C{len(colours)}")
        dashed = y.startswith("null_")
        ax.plot(
            df[x],
            df[y],
            marker="" if dashed else "o",
            ms=3,
            label=y,
            color=colour,
            ls="--" if dashed else "-",
            alpha=0.6 if dashed else 1.0,
        )
    if chance is not None:
        ax.axhline(chance, color="grey", ls="--", lw=1, label="chance")
    if mark is not None:
        ax.axvline(mark, color="black", ls=":", lw=1, label=f"layer {mark}")
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    _legend_outside(ax)
    fig.tight_layout()
    return fig


@themed
def recognition_sweep(
    frame: Any, *, chance: float, default: int, bow: float | None = None, title: str = ""
) -> plt.Figure:
    """CV top-1 / top-5 per layer (``frame`` from :meth:`emolib.recognition.LayerSweep.frame`), the
    shuffled-label null's 95% band, chance, the lexical baseline and the default layer."""
    fig, ax = plt.subplots(figsize=(8, 3.8))
    L = frame.index.to_numpy()
    ax.fill_between(
        L,
        frame["null_lo"],
        frame["null_hi"],
        color="grey",
        alpha=0.3,
        lw=0,
        label="shuffled labels (95% band)",
    )
    ax.plot(L, frame["top1"], "o-", ms=3, color="C0", label="top-1 (5-fold CV by topic)")
    ax.plot(L, frame["top5"], "s-", ms=3, color="C1", label="top-5")
    ax.axhline(chance, color="black", ls="--", lw=1, label="chance (top-1)")
    if bow is not None:
        ax.axhline(bow, color="C2", ls="-.", lw=1.2, label="bag-of-words top-1")
    ax.axvline(default, color="black", ls=":", lw=1, label=f"default layer {default} (2/3 depth)")
    ax.set_xlabel("layer")
    ax.set_ylabel("share of held-out stories")
    ax.set_ylim(0, None)
    ax.set_title(title)
    _legend_outside(ax)
    fig.tight_layout()
    return fig


@themed
def reliability_curve(curve: Any, *, title: str = "") -> plt.Figure:
    """Split-half cosine (median over emotions, 95% CI band) against the number of stories per half."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.fill_between(
        curve["per_half"],
        curve["ci_low"],
        curve["ci_high"],
        color="C0",
        alpha=0.25,
        lw=0,
        label="95% CI (emotions, splits)",
    )
    ax.plot(curve["per_half"], curve["cosine"], "o-", color="C0", label="median over emotions")
    ax.set_xlabel("stories per half (per emotion)")
    ax.set_ylabel("cosine between the two halves' vectors")
    ax.set_ylim(min(0, float(curve["ci_low"].min())), 1)
    ax.set_title(title)
    _legend_outside(ax)
    fig.tight_layout()
    return fig


@themed
def intensity(table: Any, *, title: str = "") -> plt.Figure:
    """Scores of each emotion (``table``: template, level, emotion, score) per template, as the quantity grows."""
    g = sns.relplot(
        data=table,
        x="level",
        y="score",
        hue="emotion",
        col="template",
        kind="line",
        marker="o",
        height=2.8,
        aspect=1.0,
        col_wrap=2,
        facet_kws={"sharey": False},
    )
    g.set_axis_labels("intensity level (rank of the quantity)", "cosine score")
    g.set_titles("{col_name}")
    sns.move_legend(g, "upper left", bbox_to_anchor=(1.0, 0.95), frameon=False)
    if title:
        g.figure.suptitle(title, y=1.02)
    return g.figure


@themed
def heatmap(
    mat: Any,
    labels: Sequence[str],
    *,
    title: str = "",
    cmap: str = "viridis",
    size: float = 7,
    xlabel: str = "",
    ylabel: str = "",
    center: float | None = None,
) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    sns.heatmap(
        mat,
        xticklabels=labels,
        yticklabels=labels,
        cmap=cmap,
        ax=ax,
        center=center,
        square=True,
        cbar_kws={"shrink": 0.7},
    )
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


@themed
def depth_comparison(
    curves: Any, references: dict[str, Sequence[tuple[str, float]]] | None = None
) -> plt.Figure:
    """One panel per curve of :func:`emolib.compare.depth_curves` (value against relative depth, one line per
    model). ``references``: curve label -> [(label, value)] drawn as dotted horizontal lines (published
    values, which come from one chosen layer, not a curve)."""
    labels = list(dict.fromkeys(curves["curve"])) if len(curves) else []
    fig, axes = plt.subplots(1, max(len(labels), 1), figsize=(5.2 * max(len(labels), 1), 3.6), squeeze=False)
    for ax, label in zip(axes[0], labels):
        d = curves[curves["curve"] == label]
        for model, g in d.groupby("model", sort=True):
            ax.plot(g["depth"], g["value"], marker="o", ms=3, lw=1.5, label=model)
        styles = [("black", ":"), ("0.45", "--"), ("0.6", "-."), ("0.75", (0, (1, 3)))]
        for n, (ref_label, v) in enumerate((references or {}).get(label, ())):
            color, ls = styles[n % len(styles)]
            ax.axhline(v, color=color, ls=ls, lw=1.2, label=ref_label)
        if label.endswith("/ chance"):
            ax.axhline(1.0, color="black", ls="--", lw=1, label="chance")
        ax.set_xlabel("relative depth (layer / number of layers)")
        ax.set_ylabel(label)
        ax.set_xlim(0, 1)
        _legend_outside(ax)
    if not labels:
        axes[0][0].text(0.5, 0.5, "no per-layer curves recorded", ha="center", va="center")
        axes[0][0].set_axis_off()
    fig.tight_layout()
    return fig


@themed
def steering_comparison(frame: Any) -> plt.Figure:
    """Steering slopes per model (point, 95% CI) beside the random-direction 95th percentile |slope| (grey
    band, per model and scenario); hollow markers where the claim was not testable (its readout failed
    its validity check)."""
    keys = list(dict.fromkeys(frame["key"])) if len(frame) else []
    models = list(dict.fromkeys(frame["model"])) if len(frame) else []
    fig, ax = plt.subplots(figsize=(7.5, 0.5 + 0.55 * max(len(keys), 1) * max(len(models), 1)))
    colors = dict(zip(models, sns.color_palette("colorblind", max(len(models), 1))))
    y, ticks, names = 0.0, [], []
    for key in keys:
        for model in models:
            r = frame[(frame["key"] == key) & (frame["model"] == model)]
            if r.empty or r["value"].isna().all():
                continue
            r = r.iloc[0]
            if r["null"] == r["null"]:  # not NaN
                ax.fill_betweenx([y - 0.3, y + 0.3], -r["null"], r["null"], color="0.85", lw=0)
            testable = r["verdict"] != "not testable on this model"
            xerr = None
            if r["ci_low"] == r["ci_low"] and r["ci_high"] == r["ci_high"]:
                xerr = [[r["value"] - r["ci_low"]], [r["ci_high"] - r["value"]]]
            ax.errorbar(
                r["value"],
                y,
                xerr=xerr,
                fmt="o",
                color=colors[model],
                capsize=3,
                mfc=colors[model] if testable else "white",
                label=model,
            )
            ticks.append(y)
            names.append(key.removesuffix("_slope").replace("_", " "))
            y += 1
        y += 0.5
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(ticks, names)
    ax.invert_yaxis()
    ax.set_xlabel("slope of the readout on strength (grey: random directions, 95th pct |slope|)")
    handles, labs = ax.get_legend_handles_labels()
    uniq = dict(zip(labs, handles))
    if uniq:
        ax.legend(uniq.values(), uniq.keys(), loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


@themed
def posttrain_comparison(frame: Any) -> plt.Figure:
    """Chapter 05 per model (:func:`emolib.compare.posttrain_frame`): each base-vs-post-trained measure
    (point, 95% CI), the permutation null's 95th percentile (grey band) and the paper's value (black diamond)."""
    keys = list(dict.fromkeys(frame["key"])) if len(frame) else []
    models = list(dict.fromkeys(frame["model"])) if len(frame) else []
    fig, ax = plt.subplots(figsize=(7.5, 0.8 + 0.5 * max(len(keys), 1) * max(len(models), 1)))
    colors = dict(zip(models, sns.color_palette("colorblind", max(len(models), 1))))
    y, ticks, names = 0.0, [], []
    for key in keys:
        for model in models:
            r = frame[(frame["key"] == key) & (frame["model"] == model)]
            if r.empty:
                continue
            r = r.iloc[0]
            if r["null95"] == r["null95"] and r["null95"] is not None:
                ax.fill_betweenx([y - 0.3, y + 0.3], -r["null95"], r["null95"], color="0.85", lw=0)
            xerr = None
            if r["ci_low"] == r["ci_low"] and r["ci_high"] == r["ci_high"] and r["ci_low"] is not None:
                xerr = [[r["value"] - r["ci_low"]], [r["ci_high"] - r["value"]]]
            ax.errorbar(r["value"], y, xerr=xerr, fmt="o", color=colors[model], capsize=3, label=model)
            if r["paper"] == r["paper"] and r["paper"] is not None:
                ax.plot(r["paper"], y, "D", color="black", ms=5, label="paper (Claude Sonnet 4.5)")
            ticks.append(y)
            names.append(r["measure"])
            y += 1
        y += 0.5
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlim(-0.25, 1.05)
    ax.set_yticks(ticks, names)
    ax.invert_yaxis()
    ax.set_xlabel("Pearson r (grey: permuted emotions, 95th percentile)")
    handles, labs = ax.get_legend_handles_labels()
    uniq = dict(zip(labs, handles))
    if uniq:
        ax.legend(uniq.values(), uniq.keys(), loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    if not keys:
        ax.text(
            0.4, 0.5, "no model has post-training results", ha="center", va="center", transform=ax.transAxes
        )
    fig.tight_layout()
    return fig
