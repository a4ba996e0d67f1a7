"""Figure helpers: one function per figure kind, each returning a matplotlib Figure (saved by Run.figure)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import seaborn as sns

sns.set_theme(style="whitegrid", context="notebook")


def norm_profile(df: Any, title: str = "") -> plt.Figure:
    """Residual norm per layer, first position vs the rest (log scale)."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    sns.lineplot(data=df, x="layer", y="norm", hue="position", marker="o", ax=ax)
    ax.set_yscale("log")
    ax.set_ylabel("mean L2 norm of resid_post")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def layer_curve(df: Any, x: str, ys: Sequence[str], *, chance: float | None = None, ylabel: str = "",
                title: str = "", mark: int | None = None) -> plt.Figure:
    """One line per column of ``ys`` against ``x`` (e.g. accuracy per layer), optional chance line."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    colours: dict[str, str] = {}
    for y in ys:
        base = y.removeprefix("null_")
        colour = colours.setdefault(base, f"C{len(colours)}")
        dashed = y.startswith("null_")
        ax.plot(df[x], df[y], marker="" if dashed else "o", ms=3, label=y, color=colour, ls="--" if dashed else "-",
                alpha=0.6 if dashed else 1.0)
    if chance is not None:
        ax.axhline(chance, color="grey", ls="--", lw=1, label="chance")
    if mark is not None:
        ax.axvline(mark, color="black", ls=":", lw=1, label=f"chosen layer {mark}")
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def heatmap(mat: Any, labels: Sequence[str], *, title: str = "", cmap: str = "viridis", size: float = 7,
            xlabel: str = "", ylabel: str = "", center: float | None = None) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    sns.heatmap(mat, xticklabels=labels, yticklabels=labels, cmap=cmap, ax=ax, center=center, square=True,
                cbar_kws={"shrink": 0.7})
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def scatter_rho(df: Any, x: str, ys: Sequence[str], *, title: str = "", xlog: bool = False) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for y in ys:
        ax.plot(df[x], df[y], marker="o", label=y)
    if xlog:
        ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
